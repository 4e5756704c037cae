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
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
           "black": (10, 10, 10), "purple": (130, 40, 170), "orange": (245, 140, 20), "pink": (250, 150, 200)}

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_colour_dataset(folder: Path, n: int = 8, size: int = 32) -> Path:
    """`n` images of one coloured square each, with detailed and short captions, as JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        image = Image.new("RGB", (size, size), (245, 245, 245))
        ImageDraw.Draw(image).rectangle((6, 6, size - 6, size - 6), fill=COLOURS[colour])
        image.save(folder / f"img{i}.png")
        rows.append({"key": f"img{i}", "image": f"img{i}.png",
                     "caption": f"A {colour} square in the middle of a white background.",
                     "short_caption": f"A {colour} square."})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(data: Path, out: Path, *overrides: str) -> Config:
    return load_config(TINY, [f"data.train={data}", f"train.output_dir={out}", *overrides])


@pytest.fixture
def colour_data(tmp_path) -> Path:
    return write_colour_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny captioner trained until it memorises 8 records: (run folder, data jsonl)."""
    from mllm.train.trainer import train

    root = tmp_path_factory.mktemp("overfit")
    data = write_colour_dataset(root / "data")
    run = train(tiny_config(data, root / "run", "train.max_steps=160", "train.save_steps=1000",
                            "train.logging_steps=20"))
    return run, data
