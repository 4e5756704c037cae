"""Safe image decoding: any file, path or bytes in, an RGB `PIL.Image` or an `ImageDecodeError` out.

Handles what real scraped data contains: corrupt, truncated, empty and non-image files (errors),
CMYK, 16-bit, palette and alpha images (converted; alpha is composited on white), EXIF
orientation (applied), decompression bombs (rejected from the header, before any pixel buffer is
allocated), and paths that are not plain files: only regular files are read (a link to a FIFO or
to /dev/zero is an error, not a hang), and no file larger than `max_bytes` is read. `max_pixels`
alone decides the pixel limit: Pillow's own `MAX_IMAGE_PIXELS` is lifted for the call when
`max_pixels` allows more (under a lock, restored after), and is otherwise left as it is.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000
"""Images with more pixels than this (e.g. 8000x8000) are rejected as decompression bombs."""
DEFAULT_MAX_BYTES = 256 * 2**20
"""Files larger than this are not read (an image that size is a scan or a mistake)."""

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An image could not be read or decoded; the message names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode `source` (a path or the encoded bytes) to an RGB image.

    `name` labels the image in error messages (defaults to the path). `max_pixels` <= 0 disables
    the decompression-bomb guard (Pillow's included); `max_bytes` <= 0 disables the file-size cap.
    Raises `ImageDecodeError` for anything that is not a readable image.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    try:
        with _pillow_pixel_limit(max_pixels), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if max_pixels > 0 and width * height > max_pixels:
                    raise ImageDecodeError(
                        label,
                        f"too large ({width}x{height} = {width * height} pixels > max_pixels "
                        f"{max_pixels}); possible decompression bomb",
                    )
                image.load()
                return _to_rgb(_apply_exif_orientation(image))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(label, f"possible decompression bomb ({error})") from error
    except Image.DecompressionBombWarning as error:
        raise ImageDecodeError(label, f"possible decompression bomb ({error})") from error
    except Image.UnidentifiedImageError as error:
        raise ImageDecodeError(label, "not an image or unsupported format") from error
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageDecodeError(label, f"corrupt or truncated image ({type(error).__name__}: {error})") from error


_PILLOW_LIMIT = threading.Lock()


def _pillow_pixel_limit(max_pixels: int):
    """Pillow's bomb check at `max_pixels` for this call when Pillow's own limit would refuse less."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or (0 < max_pixels <= current):
        return nullcontext()
    return _lifted_limit(None if max_pixels <= 0 else max_pixels)


@contextmanager
def _lifted_limit(limit: int | None):
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _too_large(size: int, max_bytes: int) -> str:
    return f"file too large ({size} bytes > max_bytes {max_bytes})"


def _read_bytes(source: str | Path | bytes, label: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if 0 < max_bytes < len(source):
            raise ImageDecodeError(label, _too_large(len(source), max_bytes))
        return bytes(source)
    if not isinstance(source, (str, Path, os.PathLike)):
        raise ImageDecodeError(label, f"unsupported source type {type(source).__name__}")
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ImageDecodeError(label, f"cannot read file ({reason})") from error
    info, problem = os.fstat(fd), None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        problem = f"cannot read file (not a regular file: {kind})"
    elif 0 < max_bytes < info.st_size:
        problem = _too_large(info.st_size, max_bytes)
    if problem:
        os.close(fd)
        raise ImageDecodeError(label, problem)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1 if max_bytes > 0 else -1)
        except OSError as error:
            raise ImageDecodeError(label, f"cannot read file ({error.strerror or error})") from error
    if 0 < max_bytes < len(data):  # it grew while we read it
        raise ImageDecodeError(label, _too_large(len(data), max_bytes))
    return data


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not cost us an otherwise good image
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale integer (16/32-bit) or float grey levels to 0..255."""
    values = values.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    top = values.max()
    if top <= 1.0 and values.min() >= 0.0 and not np.all(values == np.round(values)):
        scale = 255.0  # float image in 0..1
    elif top <= 255:
        scale = 1.0
    elif top <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return np.clip(values * scale, 0, 255).round().astype(np.uint8)
