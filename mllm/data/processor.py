"""Turning (image or clip, prompt, caption) into model inputs, with labels masked by construction.

An image is `<image>` and a newline before the instruction; a clip is a multi-image prompt, one
line per frame, its timestamp (seconds from the clip's start, `frame_label`) before its `<image>`
(`visual_text`):

    0.0s: <image>
    1.5s: <image>
    Describe this video in detail.

Each `<image>` expands to `image_seq_length` tokens, as transformers' and vLLM's LLaVA processors
expand it, so an exported stock Llava reads clips as mllm trained on them.

The prompt goes through the LLM's own chat template; the answer is the rest of the rendered
conversation (the caption plus the template's end-of-turn), tokenized on its own. Labels are
`-100` for every prompt and image token and the answer's ids for the rest: nothing is re-parsed
from a rendered template, so a new tokenizer or template cannot silently zero the loss.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

IGNORE_INDEX = -100


def frame_label(timestamp: float) -> str:
    """The text before a clip frame's image token: its time in seconds, one decimal ("1.5s: ")."""
    return f"{timestamp:.1f}s: "


def visual_text(image_token: str, timestamps: Sequence[float] | None = None) -> str:
    """What a record shows, as the user turn's text before the instruction: an image is one image
    token; a clip one `frame_label` + image token line per frame. Each ends with a newline."""
    if timestamps is None:
        return f"{image_token}\n"
    return "".join(f"{frame_label(t)}{image_token}\n" for t in timestamps)


class SampleError(ValueError):
    """A record that cannot become a training sample (named in the message)."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


def frames_of(samples: list[dict]) -> torch.Tensor:
    """The batch's `pixel_values`: every sample's frames, in order."""
    return torch.cat([s["pixel_values"] if s["pixel_values"].dim() == 4 else s["pixel_values"][None] for s in samples])


class CaptionProcessor:
    """Image processor + tokenizer + task prompts: everything between a record and the model."""

    FILE = "mllm_processor.json"

    def __init__(self, tokenizer, image_processor, image_token: str, image_seq_length: int,
                 prompts: dict[str, list[str]], max_length: int = 512, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_seq_length = image_seq_length
        self.prompts = {task: list(p) for task, p in prompts.items()}
        self.max_length = max_length
        self.system_prompt = system_prompt
        self._prompt_cache: dict[str, list[int]] = {}

    # -- images ---------------------------------------------------------------------------
    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    # -- text -----------------------------------------------------------------------------
    def task_prompt(self, task: str, key: str = "") -> str:
        """The instruction for `task`; a record's key picks one of several, deterministically."""
        try:
            choices = self.prompts[task]
        except KeyError:
            raise ValueError(f"unknown task {task!r}; known: {sorted(self.prompts)}") from None
        return choices[zlib.crc32(f"{key}|{task}".encode()) % len(choices)] if key else choices[0]

    def _messages(self, prompt: str, caption: str | None = None,
                  timestamps: Sequence[float] | None = None, visual: bool = True) -> list[dict]:
        """The conversation; `visual=False`: the user turn has the text alone (no image token)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        shown = visual_text(self.image_token, timestamps) if visual else ""
        messages.append({"role": "user", "content": shown + prompt})
        if caption is not None:
            messages.append({"role": "assistant", "content": caption})
        return messages

    def render_prompt(self, prompt: str, timestamps: Sequence[float] | None = None) -> str:
        """The chat-templated prompt with one image token per image or frame (`timestamps`: a clip's)."""
        return self.tokenizer.apply_chat_template(self._messages(prompt, timestamps=timestamps),
                                                  add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, prompt: str, timestamps: Sequence[float] | None = None) -> list[int]:
        """Prompt token ids with each image token expanded to `image_seq_length` tokens (images cached)."""
        cached = self._prompt_cache.get(prompt) if timestamps is None else None
        if cached is not None:
            return cached
        ids = self.tokenizer(self.render_prompt(prompt, timestamps), add_special_tokens=False)["input_ids"]
        images = 1 if timestamps is None else len(timestamps)
        if ids.count(self.image_token_id) != images:
            raise SampleError(f"the rendered prompt must hold {images} {self.image_token!r} token(s): {prompt!r}")
        expanded = []
        for token in ids:
            expanded += [token] * (self.image_seq_length if token == self.image_token_id else 1)
        if timestamps is None:
            self._prompt_cache[prompt] = expanded
        return expanded

    def answer_ids(self, prompt: str, caption: str, timestamps: Sequence[float] | None = None) -> list[int]:
        """The caption and the template's end-of-turn, tokenized apart from the prompt."""
        head = self.render_prompt(prompt, timestamps)
        full = self.tokenizer.apply_chat_template(self._messages(prompt, caption, timestamps), tokenize=False)
        if not full.startswith(head):
            raise SampleError("the chat template renders the prompt differently once an answer follows; "
                              "set llm.chat_template to a template that appends the answer")
        return self.tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]

    def stop_token_ids(self) -> list[int]:
        """EOS plus the template's end-of-turn token (the first special token after a caption)."""
        stops = [self.tokenizer.eos_token_id]
        special = set(self.tokenizer.all_special_ids)
        caption_len = len(self.tokenizer("x", add_special_tokens=False)["input_ids"])
        for token in self.answer_ids(self.task_prompt(next(iter(self.prompts))), "x")[caption_len:]:
            if token in special:
                stops.append(token)
                break
        return sorted(set(stops))

    def encode(self, prompt: str, caption: str, record: str = "?",
               timestamps: Sequence[float] | None = None) -> Encoded:
        """Input ids and labels for one sample (`timestamps`: a clip's frames); raises `SampleError`
        naming `record`."""
        if not caption or not caption.strip():
            raise SampleError(f"record {record}: empty caption")
        prompt_ids = self.prompt_ids(prompt, timestamps)
        if len(prompt_ids) >= self.max_length:
            frames = "" if timestamps is None else f" of {len(timestamps)} frames"
            raise SampleError(f"record {record}: the prompt with its {prompt_ids.count(self.image_token_id)} image "
                              f"tokens{frames} is {len(prompt_ids)} tokens, over data.max_length={self.max_length}; "
                              "truncation would cut image tokens")
        answer = self.answer_ids(prompt, caption, timestamps)[: self.max_length - len(prompt_ids)]
        if not answer:
            raise SampleError(f"record {record}: the caption has no tokens to supervise")
        return Encoded(prompt_ids + answer, [IGNORE_INDEX] * len(prompt_ids) + answer)

    # -- batches --------------------------------------------------------------------------
    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor | int]:
        """Right-padded training batch from samples `{input_ids, labels, pixel_values}`.

        A sample's `pixel_values` are its frames `(frames, C, H, W)` (one image: `(1, C, H, W)`, or
        `(C, H, W)`); the batch's are all of them in order, the order of the image tokens they fill.

        Logits are only needed where a label is predicted: `logits_to_keep` keeps the positions
        from just before the earliest supervised token on, and `labels` are cut to match, so the
        LM head (a large share of a small LLM's work) skips the prompt and image tokens. The loss
        is the same as with every position kept.
        """
        width = max(len(s["input_ids"]) for s in samples)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            ids[row, :n] = torch.tensor(s["input_ids"])
            labels[row, :n] = torch.tensor(s["labels"])
            mask[row, :n] = 1
        supervised = (labels != IGNORE_INDEX).any(0).nonzero()
        keep = width - max(int(supervised[0]) - 1, 0) if len(supervised) else width
        return {"input_ids": ids, "labels": labels[:, width - keep:], "logits_to_keep": keep,
                "attention_mask": mask, "pixel_values": frames_of(samples)}

    def generation_inputs(self, prompts: list[str],
                          timestamps: list[Sequence[float] | None] | None = None) -> dict[str, torch.Tensor]:
        """Left-padded prompt ids and attention mask for batched generation; `timestamps[i]`: row i's
        clip frames (None: an image)."""
        return self._left_padded([self.prompt_ids(p, timestamps[i] if timestamps else None)
                                  for i, p in enumerate(prompts)])

    def text_generation_inputs(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """As `generation_inputs` for prompts with no image (e.g. a whole-video caption from window captions)."""
        return self._left_padded([self.text_prompt_ids(p) for p in prompts])

    def text_prompt_ids(self, prompt: str) -> list[int]:
        """The chat-templated prompt of a user turn with text alone."""
        text = self.tokenizer.apply_chat_template(self._messages(prompt, visual=False), add_generation_prompt=True,
                                                  tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _left_padded(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    # -- persistence ----------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        (folder / self.FILE).write_text(json.dumps({
            "image_token": self.image_token, "image_seq_length": self.image_seq_length,
            "prompts": self.prompts, "max_length": self.max_length, "system_prompt": self.system_prompt}, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "CaptionProcessor":
        from transformers import AutoImageProcessor, AutoTokenizer

        folder = Path(folder)
        settings = json.loads((folder / cls.FILE).read_text())
        return cls(AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder), **settings)
