"""Tiny test videos written with PyAV itself: every container, variable frame rate, rotation,
audio, hard cuts. Frame i of a clip shows i in binary (black / white bands in its bottom half), so
a decoded frame says which one it is, through any codec."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CONTAINERS = {  # file suffix: (muxer, video codec, pixel format)
    "mp4": ("mp4", "libx264", "yuv420p"),
    "mov": ("mov", "libx264", "yuv420p"),
    "mkv": ("matroska", "libx264", "yuv420p"),
    "webm": ("webm", "libvpx-vp9", "yuv420p"),
    "gif": ("gif", "gif", "rgb8"),
}


BITS = 5
"""Frames up to 31 can be numbered."""


def numbered_frame(i: int, width: int = 32, height: int = 32) -> np.ndarray:
    """Top half blue (so rotation shows); bottom half `BITS` bands, white where bit b of i is set."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2] = (0, 0, 255)
    band = width // BITS
    for bit in range(BITS):
        if i >> bit & 1:
            image[height // 2:, bit * band:(bit + 1) * band] = 255
    return image


def frame_index(image) -> int:
    """Which `numbered_frame` a decoded (unrotated) image is."""
    pixels = np.asarray(image).astype(int)
    height, width = pixels.shape[:2]
    band = width // BITS
    row = pixels[3 * height // 4]
    return sum(1 << bit for bit in range(BITS) if row[bit * band + band // 2].mean() > 128)


def write_video(path: Path, frames: list[np.ndarray], *, rate: int = 10, pts_ms: list[int] | None = None,
                rotation: int | None = None, audio: bool = False, options: dict | None = None,
                keyframe_every: int | None = None) -> Path:
    """Encode `frames` into `path` (container from the suffix). `pts_ms`: a variable frame rate,
    each frame's time in milliseconds. `rotation`: display matrix, degrees counter-clockwise.
    `options`: the muxer's. `keyframe_every`: the GOP size (1: every frame a keyframe, so the
    bytes spread evenly over the frames)."""
    muxer, codec, pix_fmt = CONTAINERS[path.suffix[1:]]
    container = av.open(str(path), "w", format=muxer, options=options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if keyframe_every is not None:
        stream.codec_context.gop_size = keyframe_every
    if pts_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = container.add_stream("aac", rate=16000) if audio else None
    for i, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    if sound is not None:
        _silence(container, sound, len(frames) / rate)
    container.close()
    return path


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """A file with one AAC audio stream and no video."""
    with av.open(str(path), "w") as container:
        _silence(container, container.add_stream("aac", rate=16000), seconds)
    return path


def _silence(container, sound, seconds: float) -> None:
    samples = sound.codec_context.frame_size or 1024
    for i in range(int(16000 * seconds) // samples):
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 16000, i * samples
        container.mux(sound.encode(chunk))
    container.mux(sound.encode())


def numbered_video(path: Path, count: int = 30, **kwargs) -> Path:
    return write_video(path, [numbered_frame(i) for i in range(count)], **kwargs)


def shots_video(path: Path, colours: list[tuple[int, int, int]], seconds: float = 1.0, rate: int = 10) -> Path:
    """One shot per colour, `seconds` long each, hard cuts between; stripes drift within a shot."""
    size = 64
    columns = np.arange(size)[None, :].repeat(size, axis=0)
    frames = []
    for colour in colours:
        for i in range(round(seconds * rate)):
            image = np.empty((size, size, 3), np.uint8)
            image[:] = colour
            image[((columns + i) // 8) % 2 == 0] //= 2
            frames.append(image)
    return write_video(path, frames, rate=rate)
