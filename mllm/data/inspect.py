"""What the model will see: a sample rendered as text, with the supervised span marked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from mllm.data.processor import IGNORE_INDEX, CaptionProcessor


@dataclass
class SampleView:
    key: str
    task: str
    image_tokens: int
    prompt_tokens: int  # text tokens before the answer, image tokens not counted
    caption_tokens: int  # supervised tokens
    rendered: str  # the sample as text: each image's tokens collapsed, supervised span in ⟦ ⟧
    timestamps: tuple[float, ...] | None = None  # a clip's frames (seconds from its start); None: an image


def _collapsed(processor: CaptionProcessor, ids: list[int]) -> str:
    """`ids` as text, each image's run of image tokens written `<image>×N`."""
    parts = []
    for is_image, run in groupby(ids, key=lambda token: token == processor.image_token_id):
        run = list(run)
        parts.append(f"{processor.image_token}×{len(run)}" if is_image else processor.tokenizer.decode(run))
    return "".join(parts)


def view_sample(processor: CaptionProcessor, key: str, task: str, prompt: str, caption: str,
                timestamps: Sequence[float] | None = None) -> SampleView:
    """The sample of an image (`timestamps` None) or of a clip whose frames are at `timestamps`."""
    encoded = processor.encode(prompt, caption, record=key, timestamps=timestamps)
    supervised = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    start = supervised[0]
    head = encoded.input_ids[:start]
    n_image = head.count(processor.image_token_id)
    text = (_collapsed(processor, head) + "⟦" + processor.tokenizer.decode(encoded.input_ids[start:]) + "⟧")
    return SampleView(key, task, n_image, len(head) - n_image, len(supervised), text,
                      None if timestamps is None else tuple(timestamps))


def format_view(view: SampleView) -> str:
    frames = ("" if view.timestamps is None else
              f"{len(view.timestamps)} frames at " + ", ".join(f"{t:.2f}" for t in view.timestamps) + " s | ")
    return (f"── {view.key} [{view.task}] {frames}image tokens: {view.image_tokens} | prompt tokens: "
            f"{view.prompt_tokens} | caption tokens (supervised): {view.caption_tokens}\n{view.rendered}")
