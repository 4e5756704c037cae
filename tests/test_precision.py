"""The precision rule: bf16 only where the hardware does it natively, logged once with the reason."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from mllm import precision
from mllm.precision import Hardware, cpu_flags, resolve_dtype, resolve_precision
from conftest import TINY, write_colour_dataset

GPU_BF16 = Hardware(cuda=True, cuda_bf16=True, cpu_native_bf16=False, cpu_flags="")
GPU_NO_BF16 = Hardware(cuda=True, cuda_bf16=False, cpu_native_bf16=False, cpu_flags="")
CPU_NATIVE = Hardware(cuda=False, cuda_bf16=False, cpu_native_bf16=True, cpu_flags="amx_bf16, avx512_bf16")
CPU_AVX2 = Hardware(cuda=False, cuda_bf16=False, cpu_native_bf16=False, cpu_flags="torch reports AVX2")


@pytest.mark.parametrize("hardware, device, expected, why", [
    (GPU_BF16, "cuda", "bf16", "supports bf16"),
    (GPU_NO_BF16, "cuda:0", "fp16", "no bf16"),
    (CPU_NATIVE, "cpu", "bf16", "natively (amx_bf16, avx512_bf16)"),
    (CPU_AVX2, "cpu", "fp32", "no native bf16 matmul"),
    (GPU_BF16, "cpu", "fp32", "no native bf16 matmul"),  # a GPU machine training on its CPU
])
def test_auto_follows_the_hardware(hardware, device, expected, why):
    choice = resolve_precision("auto", device, hardware)
    assert choice.precision == expected and why in choice.reason
    assert choice.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[expected]


def test_explicit_choices_are_kept():
    for requested in ("fp32", "bf16", "fp16"):
        assert resolve_precision(requested, "cuda", GPU_NO_BF16).precision == requested


def test_explicit_bf16_on_a_cpu_without_it_warns_once_with_the_measured_factor(caplog, monkeypatch):
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 48.7)
    hardware = Hardware(cuda=False, cuda_bf16=False, cpu_native_bf16=False, cpu_flags="torch reports AVX2 (test)")
    with caplog.at_level(logging.WARNING, logger="mllm.precision"):
        assert resolve_precision("bf16", "cpu", hardware).precision == "bf16"
        resolve_precision("bf16", "cpu", hardware)
        resolve_dtype("bfloat16", "cpu", hardware)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "49x slower than fp32" in warnings[0], warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mllm.precision"):
        resolve_precision("bf16", "cpu", CPU_NATIVE)
        resolve_precision("bf16", "cuda", GPU_BF16)
    assert not caplog.records


def test_the_slowdown_is_measured():
    assert resolve_precision("auto", "cpu").precision in ("fp32", "bf16")
    assert precision.bf16_slowdown(size=64, repeats=1) > 0


def test_weights_dtype_follows_the_training_precision_unless_set():
    bf16 = resolve_precision("auto", "cuda", GPU_BF16)
    assert resolve_dtype("auto", "cuda", GPU_BF16, precision=resolve_precision("fp32")).dtype == torch.float32
    assert resolve_dtype("auto", "cuda", GPU_BF16).dtype == torch.bfloat16 == bf16.dtype
    assert resolve_dtype("auto", "cpu", CPU_AVX2).dtype == torch.float32
    assert resolve_dtype("float16", "cpu", CPU_AVX2).dtype == torch.float16


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\nbugs\t: none\n")
    assert {"avx2", "avx512_bf16"} <= cpu_flags(str(info))
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_mllm_train_prints_the_chosen_precision_and_why(tmp_path):
    data = write_colour_dataset(tmp_path / "data", n=4)
    out = subprocess.run(
        [sys.executable, "-m", "mllm.cli", "train", "--config", str(TINY), "--output-dir", str(tmp_path / "run"),
         f"data.train={data}", "train.max_steps=1", "train.save_steps=100"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = resolve_precision("auto", "cpu")
    assert f"training precision: {expected}" in out.stderr, out.stderr[-2000:]
