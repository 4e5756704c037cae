"""Safe image decoding: any file, path or bytes in, an RGB `PIL.Image` or an `ImageDecodeError` out.

Handles what real scraped data contains: corrupt, truncated, empty and non-image files (errors),
CMYK, 16-bit, palette and alpha images (converted; alpha is composited on white), EXIF
orientation (applied), and decompression bombs (rejected from the header, before any pixel
buffer is allocated). Never changes Pillow's global settings.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000
"""Images with more pixels than this (e.g. 8000x8000) are rejected as decompression bombs."""

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
) -> Image.Image:
    """Decode `source` (a path or the encoded bytes) to an RGB image.

    `name` labels the image in error messages (defaults to the path). `max_pixels` <= 0 disables
    the decompression-bomb guard. Raises `ImageDecodeError` for anything that is not a readable
    image.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
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


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, Path, os.PathLike)):
        raise ImageDecodeError(label, f"unsupported source type {type(source).__name__}")
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise ImageDecodeError(label, f"cannot read file ({error.strerror or error})") from error


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
