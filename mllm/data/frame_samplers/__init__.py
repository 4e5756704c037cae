"""Frame samplers: a registry of ways to pick the times of a clip's frames.

Each sampler maps a window `[start, end]` (seconds) and a `FrameSamplingConfig` to the times to
decode; `mllm.data.clips.load_clip` decodes the frames shown at those times, each with its own
timestamp. An entry that needs the clip's shots says so (`needs_shots`), and gets them from
`mllm.data.shots.detect_shots`. Adding a sampler: one file with `@register("name")`, its name in
`SamplerName`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

SamplerName = Literal["uniform", "fps", "scenes"]
Shot = tuple[float, float]  # (start, end) in seconds


@dataclass
class FrameSamplingConfig:
    """How a clip's frames are picked (see mllm.data.frame_samplers)."""

    sampler: SamplerName = "uniform"
    max_frames: int = 8  # uniform: this many; fps and scenes: at most this many, spread over the whole clip
    fps: float = 1.0  # fps: frames per second of video
    frames_per_shot: int = 1  # scenes: frames from each shot
    shot_threshold: float = 27.0  # scenes: PySceneDetect ContentDetector threshold (mean HSV change, 0-255)
    min_shot_seconds: float = 0.5  # scenes: a cut closer than this to the last one is merged away

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown frame sampler {self.sampler!r}; known: {sorted(SAMPLERS)}")
        for field in ("max_frames", "frames_per_shot"):
            if getattr(self, field) < 1:
                raise ValueError(f"frame sampling: {field} must be >= 1, got {getattr(self, field)}")
        if self.fps <= 0 or self.min_shot_seconds < 0:
            raise ValueError(f"frame sampling: fps must be > 0 and min_shot_seconds >= 0, got {self.fps}, "
                             f"{self.min_shot_seconds}")


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
