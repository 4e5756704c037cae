"""A Hugging Face `datasets` dataset (local) as an input."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mllm.errors import UsageError
from mllm.infer.listing import Listing, stat_entry
from mllm.infer.sources.item import Reader, SourceItem, pick_caption


@dataclass
class HFDatasetSource(Reader):
    """A Hugging Face dataset: a `save_to_disk` folder (`load_from_disk`) or anything
    `datasets.load_dataset` reads locally (an imagefolder, a folder of parquet files). With several
    splits, `split` must name one. Images are read undecoded (`Image(decode=False)`) and decoded
    safely later. Key: `key_column` when the dataset has it, else the row index."""

    path: str
    split: str | None = None
    image_column: str | None = None  # default: the first column of type Image
    key_column: str = "key"
    caption_column: str | None = None

    def _load(self):
        import datasets

        path = Path(self.path)
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif path.exists():
            loaded = datasets.load_dataset(str(path))
        else:
            raise UsageError(f"dataset folder not found: {path}")
        if isinstance(loaded, datasets.DatasetDict):
            if self.split is None and len(loaded) != 1:
                raise UsageError(f"{path}: the dataset has splits {sorted(loaded)}; choose one with --split")
            if self.split is not None and self.split not in loaded:
                raise UsageError(f"{path}: no split {self.split!r} (has {sorted(loaded)})")
            loaded = loaded[self.split or next(iter(loaded))]
        column = self.image_column or next(
            (n for n, f in loaded.features.items() if isinstance(f, datasets.Image)), None)
        if column is None or column not in loaded.column_names:
            raise UsageError(f"{path}: no image column (columns: {loaded.column_names}); name it with --image-column")
        if len(loaded) == 0:
            raise UsageError(f"{path}: the dataset has no rows")
        return loaded.cast_column(column, datasets.Image(decode=False)), column

    def _dataset(self):
        return self._cached("dataset", self._load)

    def listing(self) -> Listing:
        def make() -> Listing:
            dataset, _ = self._dataset()
            root = Path(self.path)
            files = sorted(p for p in root.rglob("*") if p.is_file())
            return Listing([stat_entry(p, p.relative_to(root).as_posix()) for p in files]
                           + [(f"rows of split {self.split or 'the only split'}", len(dataset), 0)])

        return self._cached("listing", make)

    def count(self) -> int | None:
        return len(self._dataset()[0])

    def read(self, unit: int = 0) -> Iterator[SourceItem]:
        dataset, column = self._dataset()
        width = max(8, len(str(len(dataset))))
        for index, row in enumerate(dataset):
            key = row.get(self.key_column)
            key = str(key) if key not in (None, "") else f"{index:0{width}d}"
            caption = pick_caption(row, self.caption_column)
            value = row.get(column) or {}
            data, path = value.get("bytes"), value.get("path")
            ref = path or f"{self.path}#{index}"
            if data:
                yield SourceItem(key, data, caption, ref=ref)
            elif path:
                yield SourceItem(key, path, caption, ref=ref)
            else:
                yield SourceItem(key, None, caption, ref=ref, error=f"{self.path} row {index}: no image")
