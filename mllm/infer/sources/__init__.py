"""Input readers for captioning: each yields `SourceItem(key, image, original_caption)` in a fixed order.

Readers: a folder of images, a manifest (JSONL / CSV / Parquet), a Hugging Face `datasets`
dataset (a local imagefolder / parquet folder, or a `save_to_disk` folder) and webdataset tar
shards in the img2dataset layout, one module each. Every reader has

- `listing()`: the files it reads, with sizes and mtimes (`mllm.infer.listing`); it checks the
  input first and raises `UsageError` for a missing folder or file, an unsupported manifest, an
  empty input, a missing image column or split;
- `units()` / `read(unit)`: the input in parts that are read independently (one per webdataset
  tar; the whole input otherwise). Row p of unit u is always the same record, whatever failed to
  read before it, so a job can assign rows to output shards by (unit, position).

Images are not decoded here (that happens in DataLoader workers, see `mllm.infer.engine`). A bad
record becomes an item with `error` set, never an exception, so one bad row cannot stop a long job.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from mllm.data.images import DEFAULT_MAX_BYTES
from mllm.errors import UsageError
from mllm.infer.sources.folder import FolderSource
from mllm.infer.sources.hf import HFDatasetSource
from mllm.infer.sources.item import CAPTION_COLUMNS, SourceItem, image_extensions
from mllm.infer.sources.manifest import ManifestSource
from mllm.infer.sources.webdataset import WebDatasetSource

__all__ = ["CAPTION_COLUMNS", "FolderSource", "HFDatasetSource", "ImageSource", "ManifestSource", "SourceItem",
           "WebDatasetSource", "describe_source", "image_extensions", "open_source", "source_from_description"]

ImageSource = FolderSource | ManifestSource | HFDatasetSource | WebDatasetSource


def open_source(*, images: str | None = None, manifest: str | None = None, dataset: str | None = None,
                webdataset: str | None = None, image_column: str | None = None, key_column: str = "key",
                caption_column: str | None = None, split: str | None = None, image_root: str | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> ImageSource:
    """The source for exactly one of the four input kinds. Local paths are made absolute, so the
    job record (and the report's thumbnails) stay valid from any working directory. `max_bytes`
    caps what a webdataset reader takes from one tar member (files on disk are capped when decoded)."""
    given = {k: v for k, v in dict(images=images, manifest=manifest, dataset=dataset, webdataset=webdataset).items()
             if v}
    if len(given) != 1:
        raise UsageError(f"give exactly one input (images, manifest, dataset or webdataset), got {sorted(given)}")
    (kind, location), = given.items()
    if kind == "images":
        return FolderSource(os.path.abspath(location))
    if kind == "manifest":
        return ManifestSource(os.path.abspath(location), image_column=image_column or "image", key_column=key_column,
                              caption_column=caption_column, image_root=image_root and os.path.abspath(image_root))
    if kind == "dataset":
        return HFDatasetSource(os.path.abspath(location), split=split, image_column=image_column,
                               key_column=key_column, caption_column=caption_column)
    return WebDatasetSource(os.path.abspath(location), max_member_bytes=max_bytes)


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
    return kind(**fields)
