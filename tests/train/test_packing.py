"""Packed batches (`train.packing`): the same per-sample loss as unpacked, no attention across
samples, and a packed training run that follows the unpacked one step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mllm.data.dataset import CaptionDataset
from mllm.data.packing import PackedCollator
from mllm.data.processor import IGNORE_INDEX
from mllm.data.records import read_records
from mllm.model.build import build_captioner
from mllm.train.trainer import train
from conftest import COLOURS, tiny_config

WORDS = "and then a small round shape sits beside another one near the top left corner of it".split()


def _spread_dataset(folder: Path, n: int = 8) -> Path:
    """`n` images with captions from 3 to about 70 words, so packed rows mix very different lengths."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        image = Image.new("RGB", (32, 32), (245, 245, 245))
        ImageDraw.Draw(image).ellipse((4 + i, 4, 28, 28 - i), fill=COLOURS[colour])
        image.save(folder / f"img{i}.png")
        caption = " ".join([f"A {colour} blob"] + [WORDS[(i + j) % len(WORDS)] for j in range(i * (i + 3))]) + "."
        rows.append({"key": f"img{i}", "image": f"img{i}.png", "caption": caption, "short_caption": colour})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def model_and_samples(tmp_path):
    data = _spread_dataset(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "run", "model.tuning.recipe=lora", "data.tasks=[detailed]")
    built = build_captioner(cfg, tmp_path / "run")
    torch.manual_seed(0)
    for name, param in built.model.named_parameters():
        if "lora_B" in name:  # non-zero adapters, so that they take part in what is compared
            torch.nn.init.normal_(param, std=0.05)
    records, skipped = read_records(str(data))
    samples = list(CaptionDataset(records, built.processor, ["detailed"], skipped))
    return built.model.eval(), built.processor, samples


def _per_sample_losses(model, samples) -> list[torch.Tensor]:
    """Each sample's per-token losses from one packed forward pass."""
    batch = PackedCollator()(samples)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1]  # the last is the dummy
    losses = torch.nn.functional.cross_entropy(logits.float(), batch["labels"][0, 1:], reduction="none")
    sizes = [sum(label != IGNORE_INDEX for label in s["labels"][1:]) for s in samples]
    return list(losses.split(sizes))


def _alone_losses(model, processor, sample) -> torch.Tensor:
    batch = processor.collate([sample])
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1]
    labels = batch["labels"][0, 1:]
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")[labels != IGNORE_INDEX]


@torch.no_grad()
def test_packed_per_sample_loss_equals_the_unpacked_loss(model_and_samples):
    model, processor, samples = model_and_samples
    lengths = [len(s["input_ids"]) for s in samples]
    assert max(lengths) - min(lengths) > 60  # rows of very different lengths
    packed = _per_sample_losses(model, samples)
    for sample, got in zip(samples, packed):
        alone = _alone_losses(model, processor, sample)
        assert got.shape == alone.shape
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
    # and the batch loss (mean over every supervised token) equals the padded batch's
    batch_loss = model(**PackedCollator()(samples)).loss
    torch.testing.assert_close(batch_loss, model(**processor.collate(samples)).loss, atol=1e-5, rtol=1e-5)


def test_packed_gradients_equal_the_unpacked_gradients(model_and_samples):
    model, processor, samples = model_and_samples
    grads = []
    for batch in (PackedCollator()(samples), processor.collate(samples)):
        model.zero_grad()
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


@torch.no_grad()
def test_no_attention_across_packed_samples(model_and_samples):
    model, _, samples = model_and_samples
    before = _per_sample_losses(model, samples[:4])
    changed = dict(samples[1], pixel_values=torch.rand_like(samples[1]["pixel_values"]),
                   input_ids=[*samples[1]["input_ids"][:-3], *reversed(samples[1]["input_ids"][-3:])])
    after = _per_sample_losses(model, [samples[0], changed, *samples[2:4]])
    assert not torch.allclose(before[1], after[1], atol=1e-4)  # the change is visible where it was made
    for i in (0, 2, 3):
        torch.testing.assert_close(after[i], before[i], atol=1e-6, rtol=1e-6)


def test_a_packed_run_follows_the_unpacked_run_step_for_step(tmp_path):
    data = _spread_dataset(tmp_path / "data", n=16)
    losses = {}
    for packing in (False, True):
        run = train(tiny_config(data, tmp_path / f"packing-{packing}", "model.tuning.recipe=lora", "train.max_steps=6",
                                "train.batch_size=4", "train.logging_steps=1", "train.save_steps=1000",
                                "train.group_by_length=false", f"train.packing={str(packing).lower()}"))
        history = json.loads((run / "train_log.json").read_text())["log_history"]
        losses[packing] = [row["loss"] for row in history if "loss" in row]
    assert len(losses[True]) == 6
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    # Adam turns float-rounding differences in near-zero gradients into whole steps, so later
    # steps agree to a relative 1e-3 (a packed row that attended across samples is off by ~5%).
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
