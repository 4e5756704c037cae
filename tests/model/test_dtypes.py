"""Trainable weights stay in fp32 whatever the frozen weights' dtype; captioning uses one dtype."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mllm.model.build import build_captioner
from mllm.model.recipes import unwrap
from conftest import tiny_config


def _batch(built):
    proc = built.processor
    enc = proc.encode(proc.task_prompt("detailed"), "A red square on the left.", "r0")
    pixels = proc.pixel_values([Image.new("RGB", (40, 30), (200, 10, 10))])
    return proc.collate([{"input_ids": enc.input_ids, "labels": enc.labels, "pixel_values": pixels[0]}])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_trainable_weights_stay_fp32_and_the_fp16_scaler_accepts_them(tmp_path, colour_data, dtype):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=lora", "model.vision.trainable_layers=1")
    built = build_captioner(cfg, tmp_path / "run", dtype=dtype)
    llava = unwrap(built.model)
    trainable = {n: p.dtype for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32}, trainable
    assert any("multi_modal_projector" in n for n in trainable) and any("lora_" in n for n in trainable)
    assert llava.model.language_model.layers[0].mlp.up_proj.base_layer.weight.dtype == dtype  # frozen: low precision
    assert llava.model.vision_tower.dtype == torch.float32  # one of its layers trains
    optimizer = torch.optim.AdamW([p for p in built.model.parameters() if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast("cpu", dtype=dtype):
        loss = built.model(**_batch(built)).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # raises "Attempting to unscale FP16 gradients." for fp16 trainable weights
    scaler.step(optimizer)
    scaler.update()


def test_a_frozen_tower_and_llm_take_the_low_precision_dtype(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=lora")
    built = build_captioner(cfg, tmp_path / "run", dtype=torch.bfloat16)
    llava = unwrap(built.model)
    assert llava.model.vision_tower.dtype == torch.bfloat16
    assert llava.model.multi_modal_projector.linear_1.weight.dtype == torch.float32
    with torch.no_grad():  # no autocast: the dtype hooks bridge the bf16 tower and the fp32 connector
        assert torch.isfinite(built.model(**_batch(built)).loss)


def test_full_tuning_keeps_the_llm_in_fp32(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=full")
    built = build_captioner(cfg, tmp_path / "run", dtype=torch.bfloat16)
    assert {p.dtype for p in built.model.parameters() if p.requires_grad} == {torch.float32}
    assert unwrap(built.model).model.vision_tower.dtype == torch.bfloat16


def test_captioning_holds_every_weight_in_one_dtype(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=lora")
    built = build_captioner(cfg, tmp_path / "run", dtype=torch.bfloat16, training=False)
    llava = unwrap(built.model)
    assert {p.dtype for n, p in llava.named_parameters() if "lora_" not in n} == {torch.bfloat16}
