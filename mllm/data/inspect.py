"""What the model will see: a sample rendered as text, with the supervised span marked."""

from __future__ import annotations

from dataclasses import dataclass

from mllm.data.processor import IGNORE_INDEX, CaptionProcessor


@dataclass
class SampleView:
    key: str
    task: str
    image_tokens: int
    prompt_tokens: int  # text tokens before the answer, image tokens not counted
    caption_tokens: int  # supervised tokens
    rendered: str  # the sample as text: image tokens collapsed, supervised span in ⟦ ⟧


def view_sample(processor: CaptionProcessor, key: str, task: str, prompt: str, caption: str) -> SampleView:
    encoded = processor.encode(prompt, caption, record=key)
    tok = processor.tokenizer
    supervised = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    start = supervised[0]
    head = encoded.input_ids[:start]
    n_image = head.count(processor.image_token_id)
    at = head.index(processor.image_token_id)
    text = (tok.decode(head[:at]) + f"{processor.image_token}×{n_image}" + tok.decode(head[at + n_image:])
            + "⟦" + tok.decode(encoded.input_ids[start:]) + "⟧")
    return SampleView(key, task, n_image, len(head) - n_image, len(supervised), text)


def format_view(view: SampleView) -> str:
    return (f"── {view.key} [{view.task}] image tokens: {view.image_tokens} | prompt tokens: "
            f"{view.prompt_tokens} | caption tokens (supervised): {view.caption_tokens}\n{view.rendered}")
