"""What a DataLoader worker makes of one input for the captioning engine: an image, or a video's clips.

    decoded = decode_item(item, sampling, DecodeLimits())      # raises ImageDecodeError naming the file
    decoded.visuals                                            # one Visual; a long video: one per window
    decoded.video                                              # None for an image: else duration, fps, ...

A video (or a manifest row's `start`-`end` window of one) is sampled per `sampling` (`data.video`,
its token cap already turned into a frame cap); one longer than `sampling.window_seconds` becomes
equal windows (`mllm.data.clips.load_windows`), each a clip of its own. A video whose decoding
breaks off keeps the frames up to the break and says so (`VideoFacts.truncated`).

`Frames` is a batch of such rows on their way to the backend: every row's preprocessed frames one
after the other, with each row's timestamps (None: an image).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from mllm.config import FrameSamplingConfig
from mllm.data.clips import load_windows
from mllm.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, load_image
from mllm.data.video import DEFAULT_MAX_BYTES as DEFAULT_MAX_VIDEO_BYTES
from mllm.data.visuals import Visual, clip_visual
from mllm.infer.sources import SourceItem

Span = tuple[float, float]


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS  # an image's, or a video frame's (0: no limit)
    max_bytes: int = DEFAULT_MAX_BYTES  # an image file's
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES  # a video file's


@dataclass(frozen=True)
class VideoFacts:
    """What the output row says about a video; times in seconds on the video's own timeline."""

    duration: float
    fps: float | None
    windows: list[Span]  # the spans captioned: one, or one per window
    timestamps: list[tuple[float, ...]]  # each window's sampled frame times
    shots: list[Span] | None  # shot boundaries, when the sampler split shots (`scenes`)
    truncated: bool  # the file ends before its header says or decoding broke off: frames up to the break


@dataclass(frozen=True)
class Decoded:
    visuals: list[Visual]  # one for an image or a clip; one per window of a long video
    video: VideoFacts | None = None


def decode_item(item: SourceItem, sampling: FrameSamplingConfig, limits: DecodeLimits) -> Decoded:
    """Decode `item` (its image, or its video's windows); raises `ImageDecodeError` naming the file."""
    name = item.ref or item.key
    if item.video is None:
        return Decoded([Visual([load_image(item.image, name=name, max_pixels=limits.max_pixels,
                                           max_bytes=limits.max_bytes)])])
    clips = load_windows(item.video, sampling, start=item.start, end=item.end, name=name,
                         max_bytes=limits.max_video_bytes, max_pixels=limits.max_pixels)
    visuals = [clip_visual(clip) for clip in clips]
    info = clips[0].info
    shots = None if clips[0].shots is None else _joined([shot for clip in clips for shot in clip.shots or []],
                                                        {clip.start for clip in clips[1:]})
    facts = VideoFacts(duration=info.duration, fps=info.fps, windows=[(clip.start, clip.end) for clip in clips],
                       timestamps=[tuple(clip.timestamps) for clip in clips], shots=shots,
                       truncated=any(clip.truncated for clip in clips))
    return Decoded(visuals, facts)


def _joined(shots: list[Span], window_starts: set[float]) -> list[Span]:
    """Shots of consecutive windows, a shot cut only by a window's start made whole again."""
    out: list[Span] = []
    for start, end in shots:
        if out and start in window_starts and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


@dataclass
class Frames:
    """Preprocessed rows for generation: `pixels` holds every row's frames in order (a tensor, or a list
    with one entry per frame); `timestamps[i]` row i's frame times (None: an image, one frame)."""

    pixels: Any
    timestamps: list[tuple[float, ...] | None]

    def __len__(self) -> int:
        return len(self.timestamps)

    def frame_counts(self) -> list[int]:
        return [1 if t is None else len(t) for t in self.timestamps]

    @property
    def has_clips(self) -> bool:
        return any(t is not None for t in self.timestamps)

    def take(self, rows: list[int]) -> Frames:
        """Rows `rows`, with their frames."""
        counts = self.frame_counts()
        starts = [0, *itertools.accumulate(counts)]
        frames = [f for r in rows for f in range(starts[r], starts[r] + counts[r])]
        pixels = self.pixels[frames] if isinstance(self.pixels, torch.Tensor) else [self.pixels[f] for f in frames]
        return Frames(pixels, [self.timestamps[r] for r in rows])

    def chunks(self, frame_limit: int) -> list[list[int]]:
        """Consecutive rows in groups of at most `frame_limit` frames (a row with more stands alone)."""
        groups: list[list[int]] = []
        total = 0
        for row, count in enumerate(self.frame_counts()):
            if groups and total + count <= frame_limit:
                groups[-1].append(row)
                total += count
            else:
                groups.append([row])
                total = count
        return groups


def join_frames(parts: list[Frames]) -> Frames:
    """Batches of rows one after the other."""
    pixels = [p.pixels for p in parts]
    joined = torch.cat(pixels) if isinstance(pixels[0], torch.Tensor) else [f for part in pixels for f in part]
    return Frames(joined, [t for p in parts for t in p.timestamps])
