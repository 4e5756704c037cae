"""One input item, and what every reader shares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

CAPTION_COLUMNS = ("caption", "original_caption", "text")
"""Column names tried, in order, for the original caption when none is configured."""


def image_extensions() -> frozenset[str]:
    """Every file suffix Pillow can open (so a folder reads what the decoder reads, `.avif` included)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@dataclass
class SourceItem:
    """One input: `image` is a path or the encoded bytes, or `video` is (then `image` is None, and
    `start` / `end` in seconds may name a window of it); `ref` is how the output names the file."""

    key: str
    image: str | bytes | None
    original_caption: str | None
    ref: str
    error: str | None = None
    video: str | bytes | None = None
    start: float | None = None
    end: float | None = None


def pick_caption(row: dict[str, Any], column: str | None) -> str | None:
    names = (column,) if column else CAPTION_COLUMNS
    for name in names:
        value = row.get(name)
        if value is not None and value == value:  # skips NaN from pandas-written files
            return str(value)
    return None


class Reader:
    """Readers compute their listing once, so what is read is exactly what was fingerprinted.
    Subclasses define `listing()` and `read(unit)`; one unit unless they say otherwise."""

    def _cached(self, name: str, make):
        cache = self.__dict__.setdefault("_cache", {})
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def units(self) -> list[str]:
        return [self.path]

    def __iter__(self) -> Iterator[SourceItem]:
        for unit in range(len(self.units())):
            yield from self.read(unit)
