"""Writes small test inputs: folders of flat-colour images and webdataset tars (img2dataset layout)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from fake_captioner import COLOURS
from image_zoo import encode
from PIL import Image

PALETTE = list(COLOURS.values())


def png(index: int) -> bytes:
    return encode(Image.new("RGB", (10, 10), PALETTE[index % len(PALETTE)]))


def write_images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        (folder / f"{name}.png").write_bytes(png(index))
    return folder


def tar_bytes(keys: list[str], order: list[tuple[str, str]] | None = None) -> bytes:
    """A tar with {key}.png + {key}.txt per key; `order` lists (key, suffix) members explicitly."""
    files = {(key, suffix): data for index, key in enumerate(keys)
             for suffix, data in ((".png", png(index)), (".txt", f"alt {key}".encode()))}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, suffix in order or list(files):
            info = tarfile.TarInfo(f"{key}{suffix}")
            info.size = len(files[key, suffix])
            archive.addfile(info, io.BytesIO(files[key, suffix]))
    return buffer.getvalue()


def write_tar(path: Path, keys: list[str], *, truncate_to: float | None = None) -> Path:
    """The tar, or its first `truncate_to` share of bytes (a download cut short)."""
    data = tar_bytes(keys)
    path.write_bytes(data if truncate_to is None else data[: int(len(data) * truncate_to) // 512 * 512 + 100])
    return path


def manifest_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def jsonl_row(**row) -> bytes:
    return json.dumps(row).encode()
