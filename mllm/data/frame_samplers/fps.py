"""`fps`: one frame every 1/fps seconds from the window's start; when that is more than
`max_frames`, `max_frames` frames evenly over the whole window instead (never a cut-off tail)."""

from __future__ import annotations

import math

from mllm.data.frame_samplers import FrameSamplingConfig, evenly, register


@register("fps")
def plan(start: float, end: float, config: FrameSamplingConfig, shots=None) -> list[float]:
    count = max(1, math.ceil((end - start) * config.fps - 1e-9))
    if count > config.max_frames:
        return evenly(start, end, config.max_frames)
    return [start + i / config.fps for i in range(count)]
