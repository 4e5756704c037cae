"""Frame samplers: a registry of ways to pick the times of a clip's frames.

Each sampler maps a window `[start, end]` (seconds) and a `FrameSamplingConfig` to the times to
decode; `mllm.data.clips.load_clip` decodes the frames shown at those times, each with its own
timestamp. An entry that needs the clip's shots says so (`needs_shots`), and gets them from
`mllm.data.shots.detect_shots`. Adding a sampler: one file with `@register("name")`, its name in
`mllm.config.SamplerName` (the config's `data.video.sampler`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

from mllm.config import FrameSamplingConfig, SamplerName

Shot = tuple[float, float]  # (start, end) in seconds


@dataclass(frozen=True)
class FrameSampler:
    """A registry entry: `plan(start, end, config, shots)` gives the times to decode."""

    plan: Callable[[float, float, FrameSamplingConfig, list[Shot] | None], list[float]]
    needs_shots: bool = False


SAMPLERS: dict[str, FrameSampler] = {}


def register(name: str, needs_shots: bool = False):
    def add(plan):
        SAMPLERS[name] = FrameSampler(plan, needs_shots)
        return plan

    return add


def evenly(start: float, end: float, count: int) -> list[float]:
    """`count` times at the centres of `count` equal parts of [start, end]."""
    step = (end - start) / count
    return [start + (i + 0.5) * step for i in range(count)]


from mllm.data.frame_samplers import fps, scenes, uniform  # noqa: E402,F401  (registration)

if set(get_args(SamplerName)) != set(SAMPLERS):
    raise ImportError(f"SamplerName {get_args(SamplerName)} and the registry {sorted(SAMPLERS)} differ")
