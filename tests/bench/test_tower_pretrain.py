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


def test_supervised_facts_follow_the_preset(tmp_path):
    from mllm.bench.tower_pretrain import cell_facts

    front = {"shape": "square", "colour": "red", "size": "small", "texture": "dotted", "layer": 2, "text": None}
    sign = {"shape": "sign", "colour": "blue", "size": "large", "texture": "plain", "layer": 1, "text": "CAT"}
    assert cell_facts([sign, front]) == {
        "colour": "red", "shape": "square", "size": "small", "texture": "dotted",
        "behind_colour": "blue", "behind_shape": "sign", "behind_size": "large", "behind_texture": "plain",
        "behind_letter_1": "C", "behind_letter_2": "A", "behind_letter_3": "T"}
    assert cell_facts([{"shape": "circle", "colour": "red", "size": None, "layer": 0, "text": None}]) == {
        "colour": "red", "shape": "circle"}

    vocab = {}
    for preset in ("quickstart", "rich"):
        scenes = tmp_path / preset
        generate_scenes(scenes, scene_preset(preset, n_train=60, n_val=8, n_test=2, seed=1, text_prob=0.6))
        cfg = TowerPretrainConfig(hidden_size=32, num_layers=1, num_heads=2, steps=2, batch_size=4,
                                  patch_size=42 if preset == "rich" else 16, image_size=126 if preset == "rich" else None)
        out = pretrain_scene_tower(scenes, tmp_path / f"tower-{preset}", cfg)
        vocab[preset] = json.loads((out / "pretraining.json").read_text())["vocab"]
    assert set(vocab["quickstart"]) == {"colour", "shape"}
    assert {"size", "texture", "letter_1", "letter_3", "behind_colour"} <= set(vocab["rich"])
    assert set(vocab["rich"]["letter_1"]) <= {w[0] for w in scene_preset("rich").words}
    tower = SiglipVisionModel.from_pretrained(tmp_path / "tower-rich")
    assert (tower.config.image_size, tower.config.patch_size) == (126, 42)  # one token per grid cell


def test_scenes_held_as_bytes_give_the_processors_pixel_values_exactly():
    """The tower's training images are kept as bytes (4x less memory): every byte value must come
    back as the processor's own float, so the quickstart's tower trains as before."""
    import numpy as np
    from transformers import SiglipImageProcessor

    from mllm.bench.tower_pretrain import bytes_to_pixels, pixels_to_bytes

    processor = SiglipImageProcessor(size={"height": 16, "width": 16})
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = processor(images=[Image.fromarray(np.stack([values, values.T, 255 - values], -1))],
                       return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels_to_bytes(pixels, processor)[0, 0], torch.from_numpy(values))
    assert torch.equal(bytes_to_pixels(pixels_to_bytes(pixels, processor), processor), pixels)
