"""Input readers for recaptioning: each yields `SourceItem(key, image, original_caption)` in a fixed order.

Readers: a folder of images, a manifest (JSONL / CSV / Parquet), a Hugging Face `datasets`
dataset (a local imagefolder / parquet folder, or a `save_to_disk` folder) and webdataset tar
shards in the img2dataset layout. Images are not decoded here (that happens in DataLoader
workers, see `mllm.infer.recaption`). A bad record becomes an item with `error` set, never an
exception, so one bad row cannot stop a long job. The order is deterministic, so a job can
assign items to output shards by position.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_COLUMNS = ("caption", "original_caption", "text")
"""Column names tried, in order, for the original caption when none is configured."""


@dataclass
class SourceItem:
    """One input: `image` is a path or the encoded bytes; `ref` is how the output names the image."""

    key: str
    image: str | bytes | None
    original_caption: str | None
    ref: str
    error: str | None = None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


@dataclass
class FolderSource:
    """Images under `root` (recursive, sorted). Key: the relative path without suffix; a sidecar
    `<name>.txt` holds the original caption. When two files share a stem (`a.jpg`, `a.png`), the
    later one keeps its suffix in the key."""

    root: str
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS

    def _paths(self) -> list[Path]:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        suffixes = {e.lower() for e in self.extensions}
        return sorted(
            p for p in root.rglob("*")
            if p.suffix.lower() in suffixes and (p.is_file() or p.is_symlink())
        )

    def count(self) -> int | None:
        return len(self._paths())

    def __iter__(self) -> Iterator[SourceItem]:
        root = Path(self.root)
        seen: set[str] = set()
        for path in self._paths():
            relative = path.relative_to(root)
            key = relative.with_suffix("").as_posix()
            if key in seen:
                key = relative.as_posix()
            seen.add(key)
            caption = _read_text(path.with_suffix(".txt"))
            yield SourceItem(key, str(path), caption, ref=str(path))


@dataclass
class ManifestSource:
    """Rows of a JSONL / CSV / Parquet file. Relative image paths resolve against the manifest's
    folder. Without a key column the key is the image path without suffix. Without a configured
    caption column the first of `CAPTION_COLUMNS` present is used."""

    path: str
    image_column: str = "image"
    key_column: str = "key"
    caption_column: str | None = None

    def _rows(self) -> Iterator[dict[str, Any] | str]:
        """Dicts, or an error string for a row that cannot be parsed."""
        path = Path(self.path)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        yield f"line {number}: invalid JSON ({error.msg})"
                        continue
                    yield row if isinstance(row, dict) else f"line {number}: not a JSON object"
        elif suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as handle:
                yield from csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                yield from batch.to_pylist()
        else:
            raise ValueError(f"{path}: unsupported manifest type {suffix!r} (use .jsonl, .csv or .parquet)")

    def count(self) -> int | None:
        if Path(self.path).suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self._rows())

    def __iter__(self) -> Iterator[SourceItem]:
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"manifest not found: {self.path}")
        base = Path(self.path).parent
        name = Path(self.path).name
        for index, row in enumerate(self._rows()):
            fallback_key = f"{name}#{index}"
            if isinstance(row, str):
                yield SourceItem(fallback_key, None, None, ref="", error=f"{name} {row}")
                continue
            caption = _pick_caption(row, self.caption_column)
            image = row.get(self.image_column)
            key = row.get(self.key_column)
            if not image:
                yield SourceItem(
                    str(key or fallback_key), None, caption, ref="",
                    error=f"{name} row {index}: missing image path (column {self.image_column!r})",
                )
                continue
            image = str(image)
            key = str(key) if key not in (None, "") else str(Path(image).with_suffix("").as_posix())
            if "://" in image:
                yield SourceItem(key, None, caption, ref=image,
                                 error=f"{name} row {index}: URLs are not fetched ({image}); download first")
                continue
            path = Path(image) if Path(image).is_absolute() else base / image
            yield SourceItem(key, str(path), caption, ref=image)


def _pick_caption(row: dict[str, Any], column: str | None) -> str | None:
    names = (column,) if column else CAPTION_COLUMNS
    for name in names:
        value = row.get(name)
        if value is not None and value == value:  # skips NaN from pandas-written files
            return str(value)
    return None


@dataclass
class HFDatasetSource:
    """A Hugging Face dataset: a `save_to_disk` folder (`load_from_disk`) or anything
    `datasets.load_dataset` reads locally (an imagefolder, a folder of parquet files). Images are
    read undecoded (`Image(decode=False)`) and decoded safely later. Key: `key_column` when the
    dataset has it, else the row index."""

    path: str
    split: str = "train"
    image_column: str | None = None  # default: the first column of type Image
    key_column: str = "key"
    caption_column: str | None = None

    def _dataset(self):
        import datasets

        path = Path(self.path)
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path), split=self.split)
        if isinstance(loaded, datasets.DatasetDict):
            if self.split not in loaded:
                raise ValueError(f"{path}: no split {self.split!r} (has {sorted(loaded)})")
            loaded = loaded[self.split]
        column = self.image_column or next(
            (n for n, f in loaded.features.items() if isinstance(f, datasets.Image)), None)
        if column is None or column not in loaded.column_names:
            raise ValueError(f"{path}: no image column (columns: {loaded.column_names})")
        return loaded.cast_column(column, datasets.Image(decode=False)), column

    def count(self) -> int | None:
        return len(self._dataset()[0])

    def __iter__(self) -> Iterator[SourceItem]:
        dataset, column = self._dataset()
        width = max(8, len(str(len(dataset))))
        for index, row in enumerate(dataset):
            key = row.get(self.key_column)
            key = str(key) if key not in (None, "") else f"{index:0{width}d}"
            caption = _pick_caption(row, self.caption_column)
            value = row.get(column) or {}
            data, path = value.get("bytes"), value.get("path")
            ref = path or f"{self.path}#{index}"
            if data:
                yield SourceItem(key, data, caption, ref=ref)
            elif path:
                yield SourceItem(key, path, caption, ref=ref)
            else:
                yield SourceItem(key, None, caption, ref=ref, error=f"{self.path} row {index}: no image")


@dataclass
class WebDatasetSource:
    """Webdataset tar shards (img2dataset layout: `00000.tar` holding `{key}.jpg`, `{key}.txt`,
    `{key}.json`), read as a stream with `tarfile`. `pattern` is a glob or a list of paths."""

    pattern: str | list[str]
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS

    def shards(self) -> list[str]:
        paths = sorted(glob.glob(self.pattern)) if isinstance(self.pattern, str) else list(self.pattern)
        if not paths:
            raise FileNotFoundError(f"no webdataset shards match {self.pattern!r}")
        return paths

    def count(self) -> int | None:
        """From img2dataset's `{shard}_stats.json` files, when every shard has one."""
        total = 0
        for shard in self.shards():
            stats = Path(shard).with_name(Path(shard).stem + "_stats.json")
            try:
                total += int(json.loads(stats.read_text())["successes"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return total

    def __iter__(self) -> Iterator[SourceItem]:
        for shard in self.shards():
            yield from self._read_shard(shard)

    def _read_shard(self, shard: str) -> Iterator[SourceItem]:
        name = Path(shard).name
        group_key, files = None, {}
        try:
            with tarfile.open(shard, mode="r|*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    directory, _, base = member.name.rpartition("/")
                    stem, dot, extension = base.partition(".")
                    key = f"{directory}/{stem}" if directory else stem
                    if key != group_key and group_key is not None:
                        yield self._item(name, group_key, files)
                        files = {}
                    group_key = key
                    handle = archive.extractfile(member)
                    files[(dot + extension).lower()] = handle.read() if handle else b""
        except (tarfile.TarError, OSError, EOFError) as error:
            if group_key is not None:
                yield self._item(name, group_key, files)
            yield SourceItem(f"{name}#unreadable", None, None, ref=shard,
                             error=f"{name}: cannot read shard past key {group_key!r} ({error})")
            return
        if group_key is not None:
            yield self._item(name, group_key, files)
        if _cut_short(shard):
            yield SourceItem(f"{name}#unreadable", None, None, ref=shard,
                             error=f"{name}: truncated (no end-of-archive blocks after key {group_key!r})")

    def _item(self, shard_name: str, key: str, files: dict[str, bytes]) -> SourceItem:
        meta: dict[str, Any] = {}
        if ".json" in files:
            try:
                meta = json.loads(files[".json"])
            except ValueError:
                meta = {}
        caption = files[".txt"].decode("utf-8", "replace").strip() if ".txt" in files else meta.get("caption")
        image_ext = next((e for e in files if e in self.image_extensions), None)
        ref = f"{shard_name}/{key}{image_ext or ''}"
        if image_ext is None:
            return SourceItem(key, None, caption, ref=ref,
                              error=f"{shard_name}: record {key!r} has no image ({sorted(files)})")
        return SourceItem(key, files[image_ext], caption, ref=ref)


def _cut_short(tar_path: str) -> bool:
    """An uncompressed tar cut at a block boundary reads as a shorter, valid archive: check that it
    ends in the two zero blocks every complete tar has. (Compressed shards report truncation themselves.)"""
    with open(tar_path, "rb") as handle:
        head = handle.read(6)
        if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")):
            return False
        size = handle.seek(0, os.SEEK_END)
        if size < 1024 or size % 512:
            return True
        handle.seek(size - 1024)
        return handle.read(1024) != bytes(1024)


ImageSource = FolderSource | ManifestSource | HFDatasetSource | WebDatasetSource


def open_source(*, images: str | None = None, manifest: str | None = None, dataset: str | None = None,
                webdataset: str | None = None, image_column: str | None = None, key_column: str = "key",
                caption_column: str | None = None, split: str = "train") -> ImageSource:
    """The source for exactly one of the four input kinds. Local paths are made absolute, so the
    job record (and the report's thumbnails) stay valid from any working directory."""
    given = {k: v for k, v in dict(images=images, manifest=manifest, dataset=dataset, webdataset=webdataset).items()
             if v}
    if len(given) != 1:
        raise ValueError(f"give exactly one input (images, manifest, dataset or webdataset), got {sorted(given)}")
    (kind, location), = given.items()
    if kind == "images":
        return FolderSource(os.path.abspath(location))
    if kind == "manifest":
        return ManifestSource(os.path.abspath(location), image_column=image_column or "image",
                              key_column=key_column, caption_column=caption_column)
    if kind == "dataset":
        local = os.path.abspath(location) if os.path.exists(location) else location  # else a Hub dataset id
        return HFDatasetSource(local, split=split, image_column=image_column,
                               key_column=key_column, caption_column=caption_column)
    return WebDatasetSource(os.path.abspath(location))


def describe_source(source: ImageSource) -> dict[str, Any]:
    """A JSON-able description, stored with a job so a restart can check it reads the same input."""
    return {"type": type(source).__name__, **asdict(source)}


def source_from_description(description: dict[str, Any]) -> ImageSource:
    """Rebuild a source from `describe_source` output (e.g. a job's `job.json`)."""
    kinds = {cls.__name__: cls for cls in (FolderSource, ManifestSource, HFDatasetSource, WebDatasetSource)}
    fields = dict(description)
    kind = kinds.get(fields.pop("type", None))
    if kind is None:
        raise ValueError(f"unknown source type in {description}")
    for name in ("extensions", "image_extensions"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return kind(**fields)
