"""`batch_size: auto`: the batch the device holds (GPU: free memory over a row's KV cache and activations;
CPU: capped at CPU_MAX), resolved by the backend when the engine starts; numbers and `auto` in configs."""

from __future__ import annotations

import types

import pytest
import torch
from fake_captioner import FakeCaptioner

from mllm.config import ConfigError, GenerationSettings, config_from_dict
from mllm.infer import batch_size
from mllm.infer.engine import CaptionEngine, EngineConfig

QWEN_1_5B = types.SimpleNamespace(num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                  hidden_size=1536, intermediate_size=8960, vocab_size=49152)


def test_a_row_costs_its_kv_cache_plus_its_prefill_and_logits():
    per_token = 2 * 28 * 2 * 128 * 2  # K and V x layers x KV heads x head size x bf16 bytes
    size = batch_size.row_bytes(QWEN_1_5B, 236, 128, torch.bfloat16)
    assert batch_size.row_bytes(QWEN_1_5B, 236, 129, torch.bfloat16) - size == per_token  # each new token: its cache
    assert size > per_token * (236 + 128) + 3 * 49152 * 4  # and more: the prefill's activations
    assert batch_size.row_bytes(QWEN_1_5B, 236, 128, torch.float32) > 1.9 * size  # fp32 holds twice the bytes


def test_the_gpu_batch_is_what_the_free_memory_holds(monkeypatch):
    free = 100 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 141 * 2**30))
    row = batch_size.row_bytes(QWEN_1_5B, 236, 128, torch.bfloat16)
    assert batch_size.fitting_batch_size(QWEN_1_5B, 236, 128, "cuda:0", torch.bfloat16) == min(
        batch_size.GPU_MAX, int(free * batch_size.GPU_SHARE) // row)
    free = 2 * 2**30
    assert batch_size.fitting_batch_size(QWEN_1_5B, 236, 128, "cuda:0", torch.bfloat16) == int(free * 0.85) // row < 256
    free = 1
    assert batch_size.fitting_batch_size(QWEN_1_5B, 236, 128, "cuda:0", torch.bfloat16) == 1


def test_the_cpu_batch_is_capped_and_shrinks_with_available_memory(monkeypatch):
    import psutil

    memory = types.SimpleNamespace(available=64 * 2**30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    assert batch_size.fitting_batch_size(QWEN_1_5B, 236, 128, "cpu", torch.float32) == batch_size.CPU_MAX
    memory.available = 2**30
    small = batch_size.fitting_batch_size(QWEN_1_5B, 236, 128, "cpu", torch.float32)
    assert 1 <= small < batch_size.CPU_MAX
    assert small == int(2**30 * batch_size.CPU_SHARE) // batch_size.row_bytes(QWEN_1_5B, 236, 128, torch.float32)


def test_the_engine_asks_the_backend_for_auto_and_keeps_numbers():
    settings = {"short": GenerationSettings(max_new_tokens=8), "detailed": GenerationSettings(batch_size=3)}
    engine = CaptionEngine(FakeCaptioner(), settings, EngineConfig())
    assert engine.settings["short"].batch_size == FakeCaptioner.auto_batch and engine.settings["detailed"].batch_size == 3
    assert CaptionEngine(FakeCaptioner(), settings, EngineConfig(batch_size="auto")).batch_size == FakeCaptioner.auto_batch
    assert CaptionEngine(FakeCaptioner(), settings, EngineConfig(batch_size=5)).batch_size == 5


def test_configs_take_a_number_or_auto():
    assert GenerationSettings().batch_size == "auto"
    cfg = config_from_dict({"generation": {"detailed": {"batch_size": 16}, "short": {"batch_size": "auto"}}})
    assert cfg.generation["detailed"].batch_size == 16 and cfg.generation["short"].batch_size == "auto"
    with pytest.raises(ConfigError, match="batch_size"):
        config_from_dict({"generation": {"detailed": {"batch_size": "big"}}})
