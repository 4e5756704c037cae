"""Which float precision to compute in, chosen from the hardware once and logged with the reason.

    choice = resolve_precision("auto", "cpu")   # Choice("fp32", "this CPU has no native bf16 matmul ...")

The rule (`auto`): bf16 on a CUDA device that supports it (fp16 on one that does not); on a CPU,
bf16 only when it does bf16 matrix work natively (AVX512_BF16 or AMX), else fp32 - without them a
bf16 matmul is emulated and about 50x slower than fp32. An explicit `bf16` on such a CPU still runs,
with a one-time warning that gives the slowdown measured on a small matmul. Every place that picks
a dtype (training, the LLM and tower load dtype, captioning, the benchmarks) goes through here.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch

from mllm.config import DType, Precision

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_OF = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Hardware:
    """What the capability probe found; tests pass their own."""

    cuda: bool
    cuda_bf16: bool
    cpu_native_bf16: bool
    cpu_flags: str  # the relevant flags found, for the log line


@dataclass(frozen=True)
class Choice:
    """A resolved precision and why it was chosen."""

    precision: Literal["fp32", "bf16", "fp16"]
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def probe_hardware() -> Hardware:
    """CUDA and its bf16 support from torch; native CPU bf16 from the CPU flags."""
    cuda = torch.cuda.is_available()
    native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
    return Hardware(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                    cpu_native_bf16=bool(native),
                    cpu_flags=", ".join(native) or f"torch reports {torch.backends.cpu.get_cpu_capability()}")


def device_type(device: str | torch.device | None) -> str:
    """'cuda' or 'cpu' for a device spec; None means cuda when there is one."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def resolve_precision(requested: Precision, device: str | torch.device | None = None,
                      hardware: Hardware | None = None) -> Choice:
    """The precision to compute in on `device` for a requested `auto` / `fp32` / `bf16` / `fp16`."""
    hw = hardware or probe_hardware()
    kind = device_type(device)
    if requested != "auto":
        if requested == "bf16" and kind == "cpu" and not hw.cpu_native_bf16:
            _warn_slow_bf16(hw)
        return Choice(requested, "as configured")
    if kind == "cuda":
        if hw.cuda_bf16:
            return Choice("bf16", "auto: this GPU supports bf16")
        return Choice("fp16", "auto: this GPU has no bf16; fp16 with loss scaling")
    if hw.cpu_native_bf16:
        return Choice("bf16", f"auto: this CPU does bf16 matmuls natively ({hw.cpu_flags})")
    return Choice("fp32", f"auto: this CPU has no native bf16 matmul (no AVX512_BF16 or AMX; {hw.cpu_flags})")


def resolve_dtype(requested: DType, device: str | torch.device | None = None, hardware: Hardware | None = None,
                  precision: Choice | None = None) -> Choice:
    """The precision weights are held in (`.dtype`): an explicit dtype as asked (with the same warning
    as `resolve_precision`); `auto` is `precision` when given (training: the frozen weights follow
    the compute precision), else the `auto` precision on `device`."""
    if requested != "auto":
        return resolve_precision(_PRECISION_OF[requested], device, hardware)
    return precision or resolve_precision("auto", device, hardware)


_announced: set[tuple[str, str]] = set()


def announce(what: str, choice: Choice) -> None:
    """Log a choice once per process ('training precision: fp32 (auto: this CPU has ...)')."""
    if (what, str(choice)) not in _announced:
        _announced.add((what, str(choice)))
        log.info("%s: %s", what, choice)


def matmul_seconds(dtype: torch.dtype, size: int = 256, repeats: int = 3, device: str = "cpu") -> float:
    """The best of `repeats` timings of one `size`^3 matmul in `dtype` on `device`."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """How many times slower a `size`^3 bf16 matmul is than an fp32 one on this CPU (best of `repeats`)."""
    return matmul_seconds(torch.bfloat16, size, repeats) / max(matmul_seconds(torch.float32, size, repeats), 1e-9)


@functools.cache
def _warn_slow_bf16(hw: Hardware) -> None:
    log.warning("bf16 was asked for, but this CPU has no native bf16 matmul (%s): a bf16 matmul measured "
                "%.0fx slower than fp32 here. Use precision auto or fp32 unless you mean it.",
                hw.cpu_flags, bf16_slowdown())
