"""`uniform`: `max_frames` frames evenly over the window, at the centres of equal parts."""

from __future__ import annotations

from mllm.data.frame_samplers import FrameSamplingConfig, evenly, register


@register("uniform")
def plan(start: float, end: float, config: FrameSamplingConfig, shots=None) -> list[float]:
    return evenly(start, end, config.max_frames)
