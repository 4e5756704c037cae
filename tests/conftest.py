"""Shared fixtures: tiny caption datasets and tiny-model configs (nothing downloaded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mllm.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_colour_dataset(folder: Path, n: int = 8, size: int = 32) -> Path:
    """`n` images of one coloured shape each, with detailed and short captions, as JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        image = Image.new("RGB", (size, size), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (6, 6, size - 6, size - 6)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
        image.save(folder / f"img{i}.png")
        rows.append({"key": f"img{i}", "image": f"img{i}.png",
                     "caption": f"A {colour} {shape} in the middle of a white background.",
                     "short_caption": f"A {colour} {shape}."})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(data: Path, out: Path, *overrides: str) -> Config:
    return load_config(TINY, [f"data.train={data}", f"train.output_dir={out}", *overrides])


@pytest.fixture
def colour_data(tmp_path) -> Path:
    return write_colour_dataset(tmp_path / "data")
