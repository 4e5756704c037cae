"""A manifest (JSONL / CSV / Parquet list of image and video paths) as an input."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mllm.data.records import clip_window
from mllm.errors import UsageError
from mllm.infer.listing import Listing, stat_entry
from mllm.infer.sources.item import Reader, SourceItem, pick_caption

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
VIDEO_COLUMN = "video"  # as in training records (mllm.data.records), with `start` / `end`


@dataclass
class ManifestSource(Reader):
    """Rows of a JSONL / CSV / Parquet file. A row names an image (`image_column`) or a video (`video`,
    with optional `start` / `end` in seconds: that window of it), as training records do. Relative
    paths resolve against `image_root`, else the manifest's folder; with `image_root` set, a path
    outside it is an error row. Without a key column the key is the path without suffix. Without a
    configured caption column the first of `CAPTION_COLUMNS` present is used. A line that is not UTF-8
    or not a JSON object, or a bad window, is an error row."""

    path: str
    image_column: str = "image"
    key_column: str = "key"
    caption_column: str | None = None
    image_root: str | None = None

    def _rows(self) -> Iterator[dict[str, Any] | str]:
        """Dicts, or an error string for a row that cannot be parsed."""
        path = Path(self.path)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            with path.open("rb") as lines:
                for number, raw in enumerate(lines, 1):
                    if not raw.strip():
                        continue
                    try:
                        row = json.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError as error:
                        yield f"line {number}: not UTF-8 (byte {error.start})"
                        continue
                    except json.JSONDecodeError as error:
                        yield f"line {number}: invalid JSON ({error.msg})"
                        continue
                    yield row if isinstance(row, dict) else f"line {number}: not a JSON object"
        elif suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
                for number, row in enumerate(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","), 1):
                    text = "".join(str(v) for v in row.values()) + "".join(str(k) for k in row)
                    yield f"row {number}: not UTF-8" if _has_undecodable(text) else row
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                yield from batch.to_pylist()

    def _columns(self) -> list[str] | None:
        """The manifest's columns (None when it has no row to tell)."""
        path = Path(self.path)
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).schema_arrow.names
        first = next((row for row in self._rows() if isinstance(row, dict)), None)
        return None if first is None else list(first)

    def _check(self) -> Listing:
        path = Path(self.path)
        if not path.is_file():
            raise UsageError(f"manifest not found: {path}")
        if path.suffix.lower() not in MANIFEST_SUFFIXES:
            raise UsageError(f"{path}: unsupported manifest type {path.suffix!r} (use .jsonl, .csv or .parquet)")
        if next(iter(self._rows()), None) is None:
            raise UsageError(f"{path}: the manifest has no rows")
        columns = self._columns()
        if columns is not None and self.image_column not in columns and VIDEO_COLUMN not in columns:
            raise UsageError(f"{path}: no image column {self.image_column!r} and no {VIDEO_COLUMN!r} column "
                             f"(columns: {columns}); name the image column with --image-column")
        return Listing([stat_entry(path, path.name)])

    def listing(self) -> Listing:
        return self._cached("listing", self._check)

    def count(self) -> int | None:
        suffix = Path(self.path).suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        if suffix in (".jsonl", ".json"):  # one row per non-blank line: no need to parse them
            with open(self.path, "rb") as lines:
                return sum(1 for line in lines if line.strip())
        return sum(1 for _ in self._rows())

    def _resolve(self, image: str) -> tuple[str, str | None]:
        """(path, error): the image path against the image root, and why it is refused, if it is."""
        root = os.path.abspath(self.image_root or Path(self.path).parent)
        path = os.path.normpath(os.path.join(root, image))
        if self.image_root and os.path.commonpath([root, path]) != root:
            return path, f"{image} is outside the image root {root}"
        return path, None

    def read(self, unit: int = 0) -> Iterator[SourceItem]:
        self.listing()
        name = Path(self.path).name
        for index, row in enumerate(self._rows()):
            fallback_key = f"{name}#{index}"
            if isinstance(row, str):
                yield SourceItem(fallback_key, None, None, ref="", error=f"{name} {row}")
                continue
            caption = pick_caption(row, self.caption_column)
            video, image = _path(row.get(VIDEO_COLUMN)), _path(row.get(self.image_column))
            both, image = bool(video and image), video or image
            key = row.get(self.key_column)
            if not image or both:
                problem = (f"both an image and a video ({self.image_column!r}, {VIDEO_COLUMN!r})" if both else
                           f"missing image path (column {self.image_column!r}; a video's: {VIDEO_COLUMN!r})")
                yield SourceItem(str(key or fallback_key), None, caption, ref=str(image or ""),
                                 error=f"{name} row {index}: {problem}")
                continue
            key = str(key) if key not in (None, "") else str(Path(image).with_suffix("").as_posix())
            window = clip_window(row) if video else (None, None)
            path, refused = self._resolve(image)
            if "://" in image:
                refused = f"URLs are not fetched ({image}); download first"
            elif window is None:
                refused = f"bad start / end {row.get('start')!r} / {row.get('end')!r} (numbers, 0 <= start < end)"
            if refused:
                yield SourceItem(key, None, caption, ref=image, error=f"{name} row {index}: {refused}")
            elif video:
                yield SourceItem(key, None, caption, ref=image, video=path, start=window[0], end=window[1])
            else:
                yield SourceItem(key, path, caption, ref=image)


def _has_undecodable(text: str) -> bool:
    """True when `surrogateescape` decoding left a lone surrogate: the bytes were not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _path(value: Any) -> str | None:
    """A path cell: None when empty or missing (a null, or the NaN of a pandas-written file)."""
    return None if value is None or value == "" or value != value else str(value)
