"""Training runs end to end: memorising, saving/loading, align -> sft, exact resume, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback

from mllm.data.records import read_records
from mllm.infer.backends.hf import Captioner
from mllm.model.build import build_captioner, load_captioner
from mllm.run_folder import WEIGHTS_FILE, save_run
from mllm.train.trainer import train
from conftest import tiny_config, write_colour_dataset


def _records(data: Path):
    return read_records(data)[0]


def test_overfit_reproduces_captions_exactly(overfit_run):
    run, data = overfit_run
    log = json.loads((run / "train_log.json").read_text())["log_history"]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[-1] < losses[0] / 10
    assert (run / "loss.png").stat().st_size > 0
    captioner = Captioner.load(run)
    records = _records(data)
    images = [Image.open(r.image) for r in records]
    for task in ("detailed", "short"):
        got = [g.text for g in captioner.caption(images, task)]
        assert got == [r.text(task) for r in records], task


def test_save_load_gives_identical_logits(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=lora")
    built = build_captioner(cfg, tmp_path / "run")
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in built.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    save_run(built, cfg, tmp_path / "run")
    proc = built.processor
    enc = proc.encode(proc.task_prompt("detailed"), "A blue circle.", "x")
    batch = proc.collate([{"input_ids": enc.input_ids, "labels": enc.labels,
                           "pixel_values": proc.pixel_values([Image.open(_records(colour_data)[2].image)])[0]}])
    built.model.eval()
    with torch.no_grad():
        expected = built.model(**batch).logits
        loaded = load_captioner(tmp_path / "run")
        assert torch.equal(loaded.model(**batch).logits, expected)
        merged = load_captioner(tmp_path / "run", merge=True)
        assert not any("lora_" in n for n, _ in merged.model.named_parameters())
        torch.testing.assert_close(merged.model(**batch).logits, expected, rtol=1e-4, atol=1e-4)


def test_align_then_sft_continues_from_align(tmp_path, colour_data):
    align = train(tiny_config(colour_data, tmp_path / "align", "train.stage=align", "train.max_steps=4"))
    align_weights = load_file(str(align / WEIGHTS_FILE))
    assert align_weights and all("multi_modal_projector" in k for k in align_weights)

    sft_cfg = tiny_config(colour_data, tmp_path / "sft", "train.stage=sft", "model.tuning.recipe=lora",
                          f"model.init_from={align}", "train.max_steps=4")
    start = build_captioner(sft_cfg, tmp_path / "probe")
    start_state = dict(start.model.named_parameters())
    for name, value in align_weights.items():
        assert torch.equal(start_state["base_model.model." + name], value), name
    sft = train(sft_cfg)
    sft_weights = load_file(str(sft / WEIGHTS_FILE))
    assert any("lora_B" in k for k in sft_weights)
    moved = [k for k in align_weights if not torch.equal(sft_weights["base_model.model." + k], align_weights[k])]
    assert moved, "the connector keeps training in sft"
    assert load_captioner(sft).model_config.connector == load_captioner(align).model_config.connector



def test_sft_may_unfreeze_the_tower_that_align_kept_frozen(tmp_path, colour_data):
    align = train(tiny_config(colour_data, tmp_path / "align", "train.stage=align", "train.max_steps=2"))
    sft_cfg = tiny_config(colour_data, tmp_path / "sft", "train.stage=sft", "model.tuning.recipe=lora",
                          f"model.init_from={align}", "model.vision.trainable_layers=-1", "train.max_steps=2")
    built = build_captioner(sft_cfg, tmp_path / "probe")
    tower = [p.requires_grad for n, p in built.model.named_parameters() if "vision_tower" in n]
    assert tower and all(tower)
    assert built.model_config.vision.trainable_layers == -1
    sft = train(sft_cfg)
    assert any("vision_tower" in k for k in load_file(str(sft / WEIGHTS_FILE))), "the trained tower is saved"

class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_interrupted_run_resumes_to_identical_weights(tmp_path, colour_data):
    common = ["model.tuning.recipe=lora", "train.max_steps=12", "train.save_steps=6", "train.batch_size=4",
              "train.scheduler=cosine", "train.lr=1e-3"]
    straight = train(tiny_config(colour_data, tmp_path / "straight", *common))
    interrupted_cfg = tiny_config(colour_data, tmp_path / "resumed", *common)
    train(interrupted_cfg, callbacks=[StopAt(6)])
    first = load_file(str(tmp_path / "resumed" / WEIGHTS_FILE))
    resumed = train(interrupted_cfg)  # same command again: continues from checkpoint-6
    a, b = load_file(str(straight / WEIGHTS_FILE)), load_file(str(resumed / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    assert any(not torch.equal(first[k], a[k]) for k in a), "the first half alone differs"
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)


def test_bad_records_are_skipped_and_counted(tmp_path):
    data = write_colour_dataset(tmp_path / "data")
    (tmp_path / "data" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = data.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows[2]["image"] = "missing.png"
    rows[3]["caption"], rows[3]["short_caption"] = "", "  "
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, skipped = read_records(data)
    assert len(records) == 6
    assert skipped.counts == {"missing image file": 1, "empty caption": 1}
    assert any("missing.png" in e for e in skipped.examples)
    run = train(tiny_config(data, tmp_path / "run", "train.max_steps=3", "train.batch_size=6"))
    log = json.loads((run / "train_log.json").read_text())
    assert log["skipped"] == {"missing image file": 1, "empty caption": 1}
    assert log["image_decode_failures"] >= 1
