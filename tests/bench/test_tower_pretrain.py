"""Scene-pretrained tower: the loss falls, the folder reloads as a stock SigLIP tower + processor,
and the locality penalty keeps each token's attention inside its own grid cell."""

import json
import math

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, SiglipVisionModel

from mllm.bench.scenes import generate_scenes, scene_preset
from mllm.bench.tower_pretrain import TowerPretrainConfig, pretrain_scene_tower, probe_tower


def test_pretrain_few_steps_then_reload_and_probe(tmp_path):
    scenes = tmp_path / "scenes"
    generate_scenes(scenes, scene_preset("quickstart", n_train=96, n_val=24, n_test=4, seed=3))
    cfg = TowerPretrainConfig(hidden_size=64, num_layers=1, num_heads=2, steps=150, batch_size=32, lr=3e-3)
    out = pretrain_scene_tower(scenes, tmp_path / "tower", cfg)

    log = json.loads((out / "pretraining.json").read_text())
    losses = log["losses"]
    assert len(losses) == cfg.steps
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:5]) / 5
    assert (out / "model.safetensors").exists()
    assert not list(out.glob("*.bin"))

    tower = SiglipVisionModel.from_pretrained(out).eval()
    processor = AutoImageProcessor.from_pretrained(out)
    assert (tower.config.hidden_size, tower.config.num_hidden_layers) == (64, 1)
    record = json.loads((scenes / "val.jsonl").read_text().splitlines()[0])
    pixels = processor(images=Image.open(scenes / record["image"]), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    with torch.no_grad():
        tokens = tower(pixel_values=pixels).last_hidden_state
    assert tokens.shape == (1, 16, 64)  # 64px / patch 16 -> a 4x4 grid of tokens

    accuracy = probe_tower(out, scenes, steps=100)
    assert set(accuracy) == {"colour", "shape", "position", "other_cell_colour"}
    assert accuracy["position"] > 0.9  # which of the 3 columns hold an object


def test_without_the_locality_penalty_attention_leaves_the_cell(tmp_path):
    scenes = tmp_path / "scenes"
    generate_scenes(scenes, scene_preset("quickstart", n_train=64, n_val=8, n_test=4, seed=3, image_size=48))
    cfg = TowerPretrainConfig(hidden_size=64, num_layers=1, num_heads=2, steps=60, batch_size=16, lr=1e-2)
    leak = {}
    for weight in (0.0, 10.0):
        cfg.locality_weight = weight
        out = pretrain_scene_tower(scenes, tmp_path / f"tower-{weight}", cfg)
        leak[weight] = json.loads((out / "pretraining.json").read_text())["attention_outside_cell"]
    # 3x3 tokens in 3 columns: near-uniform attention puts two thirds of its mass in other cells.
    # (The quickstart's tower, 900 steps at weight 1, ends near 0.0004.)
    assert leak[0.0] > 0.6
    assert leak[10.0] < leak[0.0] - 0.1


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_tower_pretraining_takes_its_precision_from_the_hardware(tmp_path, monkeypatch, native, expected):
    from mllm import precision

    monkeypatch.setattr(precision, "probe_hardware", lambda: precision.Hardware(
        cuda=False, cuda_bf16=False, cpu_native_bf16=native, cpu_flags="faked"))
    scenes = tmp_path / "scenes"
    generate_scenes(scenes, scene_preset("quickstart", n_train=16, n_val=4, n_test=1, seed=3))
    cfg = TowerPretrainConfig(hidden_size=32, num_layers=1, num_heads=2, steps=3, batch_size=8)
    log = json.loads((pretrain_scene_tower(scenes, tmp_path / "tower", cfg) / "pretraining.json").read_text())
    assert log["precision"].startswith(f"{expected} (auto:")
    assert all(math.isfinite(v) for v in log["losses"])
