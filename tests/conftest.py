"""Shared fixtures: tiny caption datasets and tiny-model configs (nothing downloaded)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mllm.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
# vLLM's CPU attention needs a head size of 64: the tiny LLM with one attention head (and one KV head).
HEAD_64_LLM = ("model.llm.config={model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
               "num_attention_heads: 1, num_key_value_heads: 1, max_position_embeddings: 512, "
               "tie_word_embeddings: true}")
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


@functools.cache
def video_zoo():
    """tests/data/video_zoo.py (test videos written with PyAV) as a module."""
    spec = importlib.util.spec_from_file_location("video_zoo", ROOT / "tests" / "data" / "video_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def colour_change_frames(first: str, second: str, count: int = 8, size: int = 32) -> list:
    """`count` frames of a square in colour `first`, then `second` from the middle frame on."""
    import numpy as np

    frames = []
    for i in range(count):
        frame = np.full((size, size, 3), 245, np.uint8)
        frame[6:size - 6, 6:size - 6] = COLOURS[first if i < count // 2 else second]
        frames.append(frame)
    return frames


def write_clip_dataset(folder: Path, n_clips: int = 4, n_images: int = 8) -> Path:
    """`write_colour_dataset`'s images plus `n_clips` 2-second clips (4 fps, mp4 and mkv in turn) whose
    square changes colour at 1 s, captioned with the times, all in one JSONL."""
    path = write_colour_dataset(folder, n=n_images)
    names = list(COLOURS)
    rows = []
    for i in range(n_clips):
        first, second = names[i % len(names)], names[(i + 3) % len(names)]
        video = f"clip{i}.{'mp4' if i % 2 == 0 else 'mkv'}"
        video_zoo().write_video(folder / video, colour_change_frames(first, second), rate=4)
        rows.append({"key": f"clip{i}", "video": video, "caption": f"At 0.0s a {first} square; at 1.0s it turns {second}.",
                     "short_caption": f"A {first} square turning {second}."})
    with path.open("a") as lines:
        lines.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeProcessor:
    """What `CaptionDataset` uses of a processor, without a tokenizer: every sample is 3 tokens, each
    image 4x4 pixels."""

    image_seq_length = 4

    def task_prompt(self, task, key=""):
        return "Describe."

    def encode(self, prompt, caption, record="?", timestamps=None):
        from mllm.data.processor import Encoded

        return Encoded([1, 2, 3], [-100, 2, 3])

    def pixel_values(self, images):
        import torch

        return torch.zeros(len(images), 3, 4, 4)


def tiny_config(data: Path, out: Path, *overrides: str) -> Config:
    return load_config(TINY, [f"data.train={data}", f"train.output_dir={out}", *overrides])


@pytest.fixture
def colour_data(tmp_path) -> Path:
    return write_colour_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny captioner trained until it memorises 8 records: (run folder, data jsonl). Its LLM has one
    attention head of size 64, so that the vLLM engine's tests can serve it too."""
    from mllm.train.trainer import train

    root = tmp_path_factory.mktemp("overfit")
    data = write_colour_dataset(root / "data")
    run = train(tiny_config(data, root / "run", HEAD_64_LLM, "train.max_steps=160", "train.save_steps=1000",
                            "train.logging_steps=20"))
    return run, data


@pytest.fixture(scope="session")
def vllm_lora_run(overfit_run, tmp_path_factory) -> Path:
    """A LoRA run over `overfit_run` that learned the short captions as detailed ones, so its adapter
    changes every detailed caption (an engine that ignored it would be caught)."""
    from mllm.train.trainer import train

    run, data = overfit_run
    root = tmp_path_factory.mktemp("vllm_lora")
    short = root / "short.jsonl"
    short.write_text("".join(json.dumps({**r, "image": str(data.parent / r["image"]), "caption": r["short_caption"]})
                             + "\n" for r in map(json.loads, data.read_text().splitlines())))
    return train(tiny_config(short, root / "run", f"model.init_from={run}", "model.tuning.recipe=lora",
                             "model.tuning.lora_r=8", "train.max_steps=30", "train.save_steps=1000",
                             "train.logging_steps=10"))


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The Python of .venv-vllm (`scripts/setup_vllm.sh`, which `scripts/test.sh` runs); under CI its
    absence fails the tests that need it, elsewhere it skips them."""
    from mllm.infer.backends.vllm import VllmEngineError, worker_python

    try:
        return worker_python()
    except VllmEngineError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
