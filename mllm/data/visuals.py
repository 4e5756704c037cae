"""What a record shows the model: an image, or a clip's frames with their timestamps.

    sampling = clip_sampling(cfg.data.video, processor.image_seq_length)   # the token cap as a frame cap
    visual = load_visual(record, sampling)                                 # in a DataLoader worker
    visual.images, visual.timestamps                                       # None for an image

An image is a clip of one frame with no timestamp. A clip's timestamps are seconds from the start
of its window (`record.start`), each frame's own presentation time.

**The cap on a clip's visual tokens** (`data.video.max_visual_tokens`) is kept by sampling fewer
frames: `max_frames` becomes `max_visual_tokens // tokens per frame`, where a frame takes what an
image takes (`image_seq_length`: the tower's patches with an MLP or linear connector, the
Q-Former's `num_queries` with a Q-Former, patches / scale² with pixel shuffle: the connectors that
pool each frame's patches, and export with bundled code).
Pooling an MLP run's frame tokens instead would leave stock Llava: `LlavaForConditionalGeneration`
and vLLM's LLaVA give every `<image>` the tower's full patch count, and the stock classes that pool
frames (LLaVA-NeXT-Video's `vision_resampler`, LLaVA-OneVision's bilinear `apply_pooling`) take a
clip as one `<video>` block, with no text between frames for the timestamps, and treat images by
their own tiling (`image_newline`, grid pinpoints), so today's image prompts would change; vLLM's
LLaVA-NeXT-Video takes one video and no image per prompt. So an MLP run exports as stock Llava and
loads in vLLM, clips included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PIL import Image

from mllm.config import FrameSamplingConfig
from mllm.data.clips import Clip, load_clip
from mllm.data.images import load_image
from mllm.data.records import CaptionRecord
from mllm.data.video import VideoDecodeError
from mllm.errors import UsageError

LONGEST_TIMESTAMP = 9999.9
"""Seconds assumed for the last frame when a clip's prompt length is estimated before decoding (the
widest timestamp text a clip of under 2.8 hours has)."""


@dataclass(frozen=True)
class Visual:
    images: list[Image.Image]  # one image, or a clip's frames in time order
    timestamps: tuple[float, ...] | None = None  # seconds from the clip's start, one per frame; None: an image


def clip_sampling(sampling: FrameSamplingConfig, tokens_per_frame: int) -> FrameSamplingConfig:
    """`sampling` with `max_frames` lowered to what `max_visual_tokens` holds at `tokens_per_frame`."""
    cap = sampling.max_visual_tokens
    if cap is None:
        return sampling
    if cap < tokens_per_frame:
        raise UsageError(f"data.video.max_visual_tokens={cap} holds no frame: one frame takes {tokens_per_frame} "
                         "image tokens")
    return dataclasses.replace(sampling, max_frames=min(sampling.max_frames, cap // tokens_per_frame))


def longest_timestamps(record: CaptionRecord, sampling: FrameSamplingConfig) -> tuple[float, ...]:
    """Timestamps whose prompt is at least as long as any the clip can get: the most frames, each
    with the widest time text (a clip's decoded frames are never more than `max_frames`)."""
    last = record.end - (record.start or 0.0) if record.end is not None else LONGEST_TIMESTAMP
    return (float(last),) * sampling.max_frames


def load_visual(record: CaptionRecord, sampling: FrameSamplingConfig) -> Visual:
    """Decode what `record` shows; raises `ImageDecodeError` (a `VideoDecodeError` for a clip) naming
    the file."""
    if not record.is_clip:
        return Visual([load_image(record.image, name=record.key if isinstance(record.image, bytes) else None)])
    return clip_visual(load_clip(record.video, sampling, start=record.start, end=record.end))


def clip_visual(clip: Clip) -> Visual:
    """A clip's frames with their timestamps from the clip's start, as the prompt shows them."""
    if not clip.frames:
        raise VideoDecodeError(clip.info.name, clip.problem or "no frame decoded in the clip's window")
    return Visual([frame.image for frame in clip.frames],
                  tuple(max(0.0, frame.timestamp - clip.start) for frame in clip.frames))
