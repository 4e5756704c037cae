"""A deterministic stand-in for `mllm.infer.backends.hf.Captioner`: captions name an image's mean colour."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255),
    "black": (0, 0, 0), "yellow": (255, 255, 0), "magenta": (255, 0, 255), "cyan": (0, 255, 255),
    "gray": (128, 128, 128),
}


@dataclass
class GeneratedText:
    text: str
    token_ids: list[int]


class FakePreprocessor:
    """Picklable: images -> float tensor [N, 3, size, size] in 0..1."""

    def __init__(self, size: int = 8):
        self.size = size

    def __call__(self, images) -> torch.Tensor:
        arrays = [torch.frombuffer(bytearray(im.resize((self.size, self.size)).tobytes()), dtype=torch.uint8)
                  for im in images]
        return torch.stack([a.view(self.size, self.size, 3).permute(2, 0, 1) for a in arrays]).float() / 255


def colour_name(pixels: torch.Tensor) -> str:
    mean = (pixels.mean(dim=(1, 2)) * 255).tolist()
    return min(COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], mean)))


class FakeCaptioner:
    """`looping`: every caption loops. `calls` counts `generate` calls; `auto_batch` is its `auto` batch size."""

    model_id = "fake-captioner"
    model_revision = "v0"
    auto_batch = 8

    def __init__(self, sleep: float = 0.0, looping: bool = False, fail_colour: str | None = None):
        self.preprocessor = FakePreprocessor()
        self.sleep, self.looping, self.fail_colour = sleep, looping, fail_colour
        self.calls = 0

    def auto_batch_size(self, settings, task: str) -> int:
        return self.auto_batch

    def _text(self, colour: str, task: str, settings) -> str:
        if self.looping:
            return f"A {colour} square on a table. " + "and a cup and a cup " * 40
        if task == "short":
            return f"A {colour} square."
        return (f"A plain {colour} image filled edge to edge with one flat colour. "
                f"There are no objects, no text and no people; the background is {colour} too.")

    def generate(self, pixel_values: torch.Tensor, task: str, settings, loop_guard=None,
                 timestamps=None) -> list[GeneratedText]:
        """`timestamps[i]`: row i is a clip (its frames one after the other in `pixel_values`), captioned
        `"{t}s: {colour}; ..."` per frame; None: an image."""
        self.calls += 1
        time.sleep(self.sleep * len(pixel_values))
        out, at = [], 0
        for times in timestamps or [None] * len(pixel_values):
            frames = pixel_values[at:at + (1 if times is None else len(times))]
            at += len(frames)
            colours = [colour_name(pixels) for pixels in frames]
            if self.fail_colour in colours:
                raise RuntimeError(f"cannot caption {self.fail_colour}")
            text = self._text(colours[0], task, settings) if times is None else "; ".join(
                f"{t:.1f}s: {c}" for t, c in zip(times, colours))
            words = text.split()[: settings.max_new_tokens]
            out.append(GeneratedText(" ".join(words), [len(w) for w in words]))
        return out

    def caption(self, images, task: str, settings) -> list[GeneratedText]:
        return self.generate(self.preprocessor(images), task, settings)
