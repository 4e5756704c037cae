"""`scenes`: `frames_per_shot` frames evenly within each shot. Over `max_frames`, each shot gets
fewer frames (at least one); with more shots than `max_frames`, the longest shots are kept (earlier
first on ties), so the frames still come from the whole clip."""

from __future__ import annotations

from mllm.data.frame_samplers import FrameSamplingConfig, Shot, evenly, register


@register("scenes", needs_shots=True)
def plan(start: float, end: float, config: FrameSamplingConfig, shots: list[Shot] | None) -> list[float]:
    shots = shots or [(start, end)]
    per_shot = min(config.frames_per_shot, max(1, config.max_frames // len(shots)))
    if len(shots) > config.max_frames:
        longest = sorted(range(len(shots)), key=lambda i: (-(shots[i][1] - shots[i][0]), i))
        shots = [shots[i] for i in sorted(longest[:config.max_frames])]
    return [t for shot_start, shot_end in shots for t in evenly(shot_start, shot_end, per_shot)]
