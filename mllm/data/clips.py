"""A clip: the frames of a video (or of a window of it) picked by a frame sampler, with timestamps.

    clip = load_clip("video.mp4", FrameSamplingConfig(sampler="fps", fps=2, max_frames=32), start=5, end=20)
    [(frame.timestamp, frame.image) for frame in clip.frames], clip.shots, clip.truncated
    windows = load_windows("long.mp4", FrameSamplingConfig(window_seconds=30))   # a clip per window

One call opens, samples, decodes and closes (DataLoader-worker safe); a file that cannot be read,
or a window outside the video, raises `VideoDecodeError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from mllm.data.frame_samplers import SAMPLERS, FrameSamplingConfig, Shot
from mllm.data.images import DEFAULT_MAX_PIXELS
from mllm.data.shots import detect_shots
from mllm.data.video import DEFAULT_MAX_BYTES, Frame, VideoDecodeError, VideoFile, VideoInfo, open_video


@dataclass(frozen=True)
class Clip:
    info: VideoInfo
    start: float  # the sampled window, in seconds
    end: float
    frames: list[Frame]  # in time order, each with its presentation timestamp
    shots: list[Shot] | None = None  # (start, end) of each shot in the window, when the sampler split shots
    problem: str | None = None  # why decoding stopped early (a broken tail), if it did

    @property
    def truncated(self) -> bool:
        """The file ends before its header says, or decoding broke off: frames are those up to the break."""
        return self.info.truncated or self.problem is not None

    @property
    def timestamps(self) -> list[float]:
        return [frame.timestamp for frame in self.frames]


def load_clip(source: str | Path | bytes, sampling: FrameSamplingConfig, *, start: float | None = None,
              end: float | None = None, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Clip:
    """Decode the frames `sampling` picks from `[start, end]` of `source` (default: the whole video)."""
    with open_video(source, name=name, max_bytes=max_bytes, max_pixels=max_pixels) as video:
        window_start, window_end = _span(video, start, end)
        return _sample(video, sampling, window_start, window_end)


def load_windows(source: str | Path | bytes, sampling: FrameSamplingConfig, *, start: float | None = None,
                 end: float | None = None, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Clip]:
    """`[start, end]` of `source` as clips of at most `sampling.window_seconds` each (equal windows, so
    none is a sliver; one clip when it is shorter or `window_seconds` is None), opened once. A window
    whose decoding breaks off ends the list there (its clip says why in `problem`); raises
    `VideoDecodeError` when not even the first window decodes."""
    with open_video(source, name=name, max_bytes=max_bytes, max_pixels=max_pixels) as video:
        window_start, window_end = _span(video, start, end)
        length = window_end - window_start
        count = 1 if sampling.window_seconds is None else max(1, math.ceil(length / sampling.window_seconds - 1e-9))
        bounds = [window_start + length * i / count for i in range(count)] + [window_end]
        clips: list[Clip] = []
        for left, right in zip(bounds[:-1], bounds[1:]):
            try:
                clips.append(_sample(video, sampling, left, right))
            except VideoDecodeError:
                if not clips:
                    raise
                clips[-1] = dataclasses.replace(clips[-1], problem=clips[-1].problem or
                                                f"no frame could be decoded from {left:.3f}s on")
                break
            if clips[-1].problem:
                break
        return clips


def _span(video: VideoFile, start: float | None, end: float | None) -> tuple[float, float]:
    duration = video.info.duration
    window_start = max(0.0, start or 0.0)
    window_end = duration if end is None else min(end, duration)
    if window_end <= window_start:
        raise VideoDecodeError(video.name, f"window [{start}, {end}] s is outside the video (0 to {duration:.3f} s)")
    return window_start, window_end


def _sample(video: VideoFile, sampling: FrameSamplingConfig, start: float, end: float) -> Clip:
    sampler = SAMPLERS[sampling.sampler]
    shots = None
    if sampler.needs_shots:
        shots = detect_shots(video, start, end, threshold=sampling.shot_threshold,
                             min_shot_seconds=sampling.min_shot_seconds)
    decoded = video.frames_at(sampler.plan(start, end, sampling, shots))
    return Clip(video.info, start, end, decoded.frames, shots, decoded.problem)
