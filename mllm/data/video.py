"""Safe video decoding with PyAV: a path or the encoded bytes in, metadata and RGB frames out.

    with open_video("clip.mp4") as video:
        video.info.duration, video.info.fps               # seconds, average frames per second
        decoded = video.frames_at([0.0, 1.5, 3.0])       # seeks; never decodes more than it needs
        decoded.frames[0].image, decoded.frames[0].timestamp

Reads what real scraped data contains: mp4, mov, mkv, webm, gif and the rest FFmpeg knows;
variable frame rates (every timestamp is the frame's own presentation time, never index / fps);
files with or without audio; rotation metadata (applied, like EXIF orientation for images);
broken tails (the frames up to the break, with `problem` saying why it stopped). A file that
cannot be read at all raises `VideoDecodeError`, an `ImageDecodeError`, so every caller that turns
a bad image into an error row does the same for a bad clip. Only regular files are opened (a FIFO
would block) and files over `max_bytes` are refused before reading. Everything is per call: a
`VideoFile` is opened, used and closed inside one call (e.g. a DataLoader worker's `__getitem__`)
and never pickled.
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image

from mllm.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError

DEFAULT_MAX_BYTES = 4 * 1024**3
"""Files larger than this (4 GiB) are refused before anything is read."""

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                            ".flv", ".wmv", ".3gp", ".ogv"})
"""File suffixes a folder or webdataset input reads as videos (FFmpeg demuxes them all). `.gif` stays an
image there (Pillow reads its first frame); a manifest's `video` column takes any file, GIFs included."""

SEEK_AHEAD_SECONDS = 2.0
"""A requested time further than this past the last decoded frame is reached by seeking to the
keyframe before it; nearer ones by decoding on (`scripts/bench_video_decode.py` measures both)."""

_TIME_SLACK = 1e-4
"""A frame starting this little (0.1 ms) after a requested time still counts as on screen at it:
timestamps are rounded to the stream's time base and requested times to floating point."""

_ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class VideoDecodeError(ImageDecodeError):
    """A video could not be opened or decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, checked against the data. Times are seconds from the first frame."""

    name: str
    duration: float  # end of the last frame's data (the header's figure when the data cannot be scanned)
    fps: float | None  # average frame rate
    frame_count: int | None  # None when the container does not say
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # degrees counter-clockwise applied to each frame: 0, 90, 180 or 270
    has_audio: bool
    codec: str
    container: str
    truncated: bool  # the data ends well before the duration the header declares


@dataclass(frozen=True)
class Frame:
    image: Image.Image  # RGB, rotated for display
    timestamp: float  # presentation time in seconds from the first frame


@dataclass(frozen=True)
class DecodedFrames:
    frames: list[Frame]  # in time order, one per distinct frame
    problem: str | None = None  # why decoding stopped before the last requested time, if it did


def open_video(source: str | Path | bytes, *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoFile:
    """Open `source` (a path or encoded bytes) as a `VideoFile` context manager.

    `name` labels the video in errors (default: the path). `max_bytes` / `max_pixels` <= 0 disable
    the size and frame-size guards. Raises `VideoDecodeError` for anything that is not a readable
    video.
    """
    return VideoFile(source, name=name, max_bytes=max_bytes, max_pixels=max_pixels)


def probe_video(source: str | Path | bytes, **kwargs) -> VideoInfo:
    """The `VideoInfo` of `source` (keyword arguments as for `open_video`)."""
    with open_video(source, **kwargs) as video:
        return video.info


class VideoFile:
    """One open video: its `info`, and `frames_at` to decode the frames shown at given times."""

    def __init__(self, source, *, name, max_bytes, max_pixels):
        self.name = name or (str(source) if isinstance(source, (str, Path, os.PathLike)) else "<bytes>")
        self._input = self._checked_input(source, max_bytes)
        self._container = self._open()
        try:
            self.info = self._probe(max_pixels)
        except VideoDecodeError:
            self._container.close()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as error:
            self._container.close()
            raise VideoDecodeError(self.name, f"unreadable ({type(error).__name__}: {error})") from error
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def reader(self) -> BinaryIO:
        """A new binary file object over the same (already checked) input, for other decoders."""
        return io.BytesIO(self._input) if isinstance(self._input, bytes) else open(self._input, "rb")

    def frames_at(self, timestamps: Sequence[float]) -> DecodedFrames:
        """The frame on screen at each time (the last one starting at or before it), in time order.

        Times are clamped to [0, duration]; times that fall on the same frame give it once. Raises
        `VideoDecodeError` when not one frame decodes; a break after that stops decoding and is
        reported in `problem`.
        """
        targets = sorted({min(max(float(t), 0.0), self.info.duration) for t in timestamps})
        chosen: dict[float, Frame] = {}
        try:
            problem = self._collect(targets, chosen)
        except (av.error.FFmpegError, OSError, ValueError) as error:  # e.g. a frame that will not convert
            problem = f"decoding failed ({type(error).__name__}: {error})"
        if not chosen:
            raise VideoDecodeError(self.name, f"no frame could be decoded ({problem})")
        return DecodedFrames([chosen[t] for t in sorted(chosen)], problem)

    # -- internals --------------------------------------------------------------------------

    def _collect(self, targets: list[float], chosen: dict[float, Frame]) -> str | None:
        """Decode the frame shown at each sorted target into `chosen`; the reason if it stopped early."""
        frames: Iterator[av.VideoFrame] = iter(())
        before = after = None  # the last frame at or before the target, and the next one decoded
        problem = None
        for target in targets:
            last = after if after is not None else before
            if last is None or target - self._time(last) > SEEK_AHEAD_SECONDS:
                frames, before, after = self._seek(target), None, None
            while after is None or self._time(after) <= target + _TIME_SLACK:
                if after is not None:
                    before = after
                try:
                    after = next(frames, None)
                except (av.error.FFmpegError, OSError, ValueError) as error:
                    after, problem = None, f"decoding stopped after {self._end_of(before)} ({error})"
                if after is None:
                    break
            pick = before if before is not None else after
            if pick is None:
                return problem or f"no frame from {target:.3f}s on"
            chosen.setdefault(self._time(pick), self._to_frame(pick))
            if problem:
                return problem
        return None

    def _checked_input(self, source, max_bytes: int) -> bytes | str:
        """The bytes, or the path of a regular file within the size limit."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, size = bytes(source), len(source)
        elif isinstance(source, (str, Path, os.PathLike)):
            try:
                mode = os.stat(source)
            except OSError as error:
                raise VideoDecodeError(self.name, f"cannot read file ({error.strerror or error})") from error
            if not stat.S_ISREG(mode.st_mode):
                raise VideoDecodeError(self.name, "not a regular file")
            size, data = mode.st_size, os.fspath(source)
        else:
            raise VideoDecodeError(self.name, f"unsupported source type {type(source).__name__}")
        if size == 0:
            raise VideoDecodeError(self.name, "empty file (0 bytes)")
        if 0 < max_bytes < size:
            raise VideoDecodeError(self.name, f"too large ({size} bytes > max_bytes {max_bytes})")
        return data

    def _open(self):
        try:
            return av.open(io.BytesIO(self._input) if isinstance(self._input, bytes) else self._input, "r")
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise VideoDecodeError(self.name, f"not a video or unsupported format ({error})") from error

    def _probe(self, max_pixels: int) -> VideoInfo:
        container = self._container
        if not container.streams.video:
            raise VideoDecodeError(self.name, "no video stream")
        stream = self._stream = container.streams.video[0]
        self._base = stream.time_base
        self._start = float((stream.start_time or 0) * self._base)
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels > 0 and width * height > max_pixels:
            raise VideoDecodeError(self.name, f"frames too large ({width}x{height} > max_pixels {max_pixels})")
        declared = self._declared_duration()
        end = self._data_end()
        duration = end if end is not None else declared
        if duration is None:
            raise VideoDecodeError(self.name, "no duration and no timestamped packet")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        frame_interval = 1 / fps if fps else 0.1
        truncated = declared is not None and end is not None and declared - end > max(0.5, 2 * frame_interval)
        first = next(self._seek(0.0), None)
        if first is None:
            raise VideoDecodeError(self.name, "no frame could be decoded")
        rotation = _rotation(first)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(name=self.name, duration=duration, fps=fps, frame_count=stream.frames or None,
                         width=width, height=height, rotation=rotation, has_audio=bool(container.streams.audio),
                         codec=stream.codec_context.name, container=container.format.name, truncated=truncated)

    def _declared_duration(self) -> float | None:
        if self._stream.duration:
            return float(self._stream.duration * self._base)
        if self._container.duration:
            return self._container.duration / av.time_base - self._start
        return None

    def _data_end(self) -> float | None:
        """End time of the last packet, read from the last keyframe on (seeking to the end)."""
        try:
            self._container.seek(2**62, stream=self._stream, backward=True)
            ends = [p.pts + (p.duration or 0) for p in self._container.demux(self._stream) if p.pts is not None]
        except (av.error.FFmpegError, OSError):
            return None
        return float(max(ends) * self._base) - self._start if ends else None

    def _seek(self, target: float) -> Iterator[av.VideoFrame]:
        """Frames from the keyframe at or before `target` on."""
        offset = int(math.floor((target + self._start) / self._base))
        try:
            self._container.seek(offset, stream=self._stream, backward=True)
        except (av.error.FFmpegError, OSError):  # not seekable there: decode on from the start
            self._container.close()
            self._container = self._open()
            self._stream = self._container.streams.video[0]
        return (frame for frame in self._container.decode(self._stream) if frame.pts is not None)

    def _time(self, frame: av.VideoFrame) -> float:
        return float(frame.pts * frame.time_base) - self._start

    def _end_of(self, frame) -> str:
        return f"{self._time(frame):.3f}s" if frame is not None else "the seek point"

    def _to_frame(self, frame: av.VideoFrame) -> Frame:
        if any(component.is_alpha for component in frame.format.components):
            rgba = Image.fromarray(frame.to_ndarray(format="rgba"))
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            image = frame.to_image()
        rotation = _rotation(frame)
        if rotation:
            image = image.transpose(_ROTATIONS[rotation])
        return Frame(image=image, timestamp=round(self._time(frame), 6))


def _rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation, counter-clockwise, snapped to a multiple of 90 degrees."""
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360
