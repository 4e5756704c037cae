"""`mllm caption`: caption a folder or manifest of images into one JSONL or Parquet file."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from mllm.config import GenerationSettings
from mllm.data.images import ImageDecodeError, load_image
from mllm.infer.generate import Captioner
from mllm.infer.sources import FolderSource, ManifestSource, SourceItem


def image_source(path: str | Path):
    """A folder of images, or a JSONL/CSV/Parquet manifest with an `image` column."""
    return FolderSource(str(path)) if Path(path).is_dir() else ManifestSource(str(path))


def _write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(out)


def caption_images(captioner: Captioner, items: list[SourceItem], task: str, settings: GenerationSettings,
                   out: str | Path) -> dict[str, int]:
    """Caption `items` in batches; unreadable images get an `error` instead of a caption."""
    rows: list[dict] = []
    batch: list[tuple[SourceItem, object]] = []

    def flush() -> None:
        texts = captioner.caption([image for _, image in batch], task, settings)
        rows.extend({"key": item.key, "image": item.ref, "caption": t.text, "error": None}
                    for (item, _), t in zip(batch, texts))
        batch.clear()

    for item in tqdm(items, desc=f"captioning ({task})", unit="img"):
        try:
            if item.error:
                raise ImageDecodeError(item.ref, item.error)
            batch.append((item, load_image(item.image, name=item.ref)))
        except ImageDecodeError as err:
            rows.append({"key": item.key, "image": item.ref, "caption": None, "error": str(err)})
        if len(batch) == settings.batch_size:
            flush()
    if batch:
        flush()
    _write(rows, Path(out))
    return {"captioned": sum(r["error"] is None for r in rows), "errors": sum(r["error"] is not None for r in rows)}
