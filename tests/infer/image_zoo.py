"""Builds the bad-file zoo on disk: every kind of image a scraped dataset throws at a captioner."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

HUGE_SIDE = 9000  # 81 Mpx: over load_image's default max_pixels, under Pillow's own bomb limit


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """40x20 stored, left half red / right half blue, EXIF orientation 6: shown 20x40, red on top."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = image.getexif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif, quality=95)


def good_images() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, colour a correct decode has on average)."""
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] * 256)
    transparent = Image.new("P", (8, 8), 0)
    transparent.putpalette([0, 0, 0] * 256)
    transparent.info["transparency"] = 0
    return {
        "good_red.png": (encode(Image.new("RGB", (16, 16), (255, 0, 0))), "red"),
        "nested/good_green.jpg": (encode(Image.new("RGB", (16, 16), (0, 255, 0)), "JPEG"), "green"),
        "cmyk.jpg": (encode(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG"), "magenta"),
        "gray16.png": (encode(Image.fromarray(np.full((8, 8), 65535, np.uint16))), "white"),
        "palette.png": (encode(palette), "blue"),
        "palette_transparent.png": (encode(transparent), "white"),
        "rgba.png": (encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0))), "white"),
        "la.png": (encode(Image.new("LA", (8, 8), (0, 0))), "white"),
        "exif_rotated.jpg": (exif_rotated_jpeg(), "mixed"),
        "tiny.png": (encode(Image.new("RGB", (1, 1), (255, 255, 0))), "yellow"),
    }


def bad_images() -> dict[str, tuple[bytes | None, str]]:
    """file name -> (bytes, or None for a dangling link; words the error must contain)."""
    jpeg = encode(Image.new("RGB", (64, 64), (0, 0, 255)), "JPEG")
    corrupt = jpeg[:200] + bytes(range(256)) * 4 + jpeg[200 + 1024:]
    return {
        "corrupt.jpg": (corrupt, "corrupt"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"this is not an image\n", "not an image"),
        "huge.png": (encode(Image.new("1", (HUGE_SIDE, HUGE_SIDE))), "decompression bomb"),
        "unreadable.jpg": (None, "cannot read"),
    }


def build_image_zoo(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the zoo; returns ({key: colour} for good images, {key: error words} for bad ones).
    Keys are paths relative to `folder` without suffix, as `FolderSource` makes them."""
    good, bad = {}, {}
    for name, (data, colour) in good_images().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        good[str(Path(name).with_suffix(""))] = colour
    for name, (data, words) in bad_images().items():
        if data is None:
            os.symlink(folder / "does-not-exist.jpg", folder / name)
        else:
            (folder / name).write_bytes(data)
        bad[str(Path(name).with_suffix(""))] = words
    return good, bad
