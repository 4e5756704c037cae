"""The export's chat template: the LLM's own template behind a preamble that accepts multimodal messages.

An LLM's template concatenates `message['content']` as a string, so the standard multimodal form
(`content: [{"type": "image"}, {"type": "text", "text": ...}]`, what vLLM's chat and most clients
send) fails in it. The preamble rewrites each message to the string form the run trained on (an
image part becomes the image token and a newline, text parts are joined, so a clip is
`[{"type": "text", "text": "0.0s: "}, {"type": "image"}, {"type": "text", "text": "1.5s: "}, ...]`)
and, when the run set a system prompt and the conversation has none, puts it first. Then the LLM's template runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mllm.data.processor import frame_label, visual_text

IMAGE_PARTS = ("image", "image_url", "image_pil")

PREAMBLE = """\
{%- set mllm = namespace(messages=[]) -%}
{%- if SYSTEM is not none and (messages | length == 0 or messages[0]['role'] != 'system') -%}
{%- set mllm.messages = [{'role': 'system', 'content': SYSTEM}] -%}
{%- endif -%}
{%- for mllm_message in messages -%}
{%- if mllm_message['content'] is string or mllm_message['content'] is none -%}
{%- set mllm.messages = mllm.messages + [mllm_message] -%}
{%- else -%}
{%- set mllm_text = namespace(value='') -%}
{%- for mllm_part in mllm_message['content'] -%}
{%- if mllm_part['type'] in IMAGE_PARTS -%}
{%- set mllm_text.value = mllm_text.value + IMAGE_TOKEN + '\\n' -%}
{%- elif mllm_part['type'] == 'text' -%}
{%- set mllm_text.value = mllm_text.value + mllm_part['text'] -%}
{%- endif -%}
{%- endfor -%}
{%- set mllm.messages = mllm.messages + [dict(mllm_message, content=mllm_text.value)] -%}
{%- endif -%}
{%- endfor -%}
{%- set messages = mllm.messages -%}
"""


def _literal(value) -> str:
    """A Jinja literal for a string, a list of strings or None (JSON string syntax is Jinja's)."""
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


def multimodal_chat_template(text_template: str, image_token: str, system_prompt: str | None) -> str:
    """`text_template` (the LLM's) made to take string and list message content alike."""
    constants = (f"{{%- set IMAGE_TOKEN = {_literal(image_token)} -%}}\n"
                 f"{{%- set IMAGE_PARTS = {_literal(list(IMAGE_PARTS))} -%}}\n"
                 f"{{%- set SYSTEM = {_literal(system_prompt)} -%}}\n")
    return constants + PREAMBLE + text_template


def message_forms(image_token: str, prompt: str, timestamps: Sequence[float] | None = None) -> dict[str, list[dict]]:
    """One user turn with one image (`timestamps` None) or a clip's frames, in each form the template
    accepts: the list form puts each frame's time label as a text part before its image part."""
    parts = [{"type": "image"}] if timestamps is None else [
        part for t in timestamps for part in ({"type": "text", "text": frame_label(t)}, {"type": "image"})]
    return {
        "string": [{"role": "user", "content": visual_text(image_token, timestamps) + prompt}],
        "list": [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}],
    }
