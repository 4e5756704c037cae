"""Caption records from JSONL, JSON, CSV, Parquet, LLaVA conversation JSON or a HF dataset.

A record is `{key?, image, caption, short_caption?, original_caption?}`, or a clip:
`{key?, video, start?, end?, caption, ...}` (`start` / `end` in seconds: the clip is that window of
the video); `caption` is the detailed caption (DSC), `short_caption` the short one (SSC). LLaVA-format files
(`{id, image, conversations: [{from: human, value}, {from: gpt, value}]}`) give the first answer
as the caption and its question as the prompt. Records with an empty caption, a missing image or
video file, both an image and a video, or a bad window are skipped and counted (`SkipReport`),
never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("auto", "jsonl", "json", "llava", "csv", "parquet", "hf")
"""`auto` detects by suffix (a folder is `hf`) and reads LLaVA rows in JSON files too; `llava` is a
JSON list of LLaVA conversation records only."""


@dataclass
class CaptionRecord:
    key: str
    image: str | bytes | None = None  # a local path, or encoded image bytes (HF datasets); None for a clip
    caption: str = ""
    short_caption: str = ""
    original_caption: str = ""
    prompt: str | None = None  # an instruction that came with the record (LLaVA data)
    video: str | None = None  # a clip: the video file's path (then `image` is None)
    start: float | None = None  # the clip's window in the video, seconds (None: its start / end)
    end: float | None = None

    @property
    def is_clip(self) -> bool:
        return self.video is not None

    @property
    def source(self) -> str:
        """The file the record shows, for messages."""
        return self.video if self.is_clip else (self.image if isinstance(self.image, str) else self.key)

    def text(self, task: str) -> str:
        return {"detailed": self.caption, "short": self.short_caption, "original": self.original_caption}[task]


@dataclass
class SkipReport:
    """Records left out and why; the first few are kept by name for the log."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    keep: int = 5

    def add(self, reason: str, name: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < self.keep:
            self.examples.append(f"{name}: {reason}")
            log.warning("skipping %s: %s", name, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common())
        return f"skipped {self.total} records ({parts}); first: " + "; ".join(self.examples)


def read_table_rows(path: Path, fmt: str) -> list[dict]:
    """All rows of a JSONL / JSON / CSV / Parquet file or a local HF dataset folder."""
    if fmt == "jsonl":
        rows = []
        with path.open() as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        return rows
    if fmt in ("json", "llava"):
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return data
    if fmt == "csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "hf":
        return _hf_rows(str(path))
    raise ValueError(f"unknown data format {fmt!r}; known: {FORMATS}")


def _hf_rows(source: str) -> list[dict]:
    """Rows of a local HF dataset (saved with save_to_disk, or loadable by load_dataset)."""
    import datasets

    folder = Path(source)
    if (folder / "dataset_info.json").exists() or (folder / "state.json").exists():
        ds = datasets.load_from_disk(source)
    else:
        ds = datasets.load_dataset(source)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    rows = []
    for row in ds:
        image = row.get("image")
        if isinstance(image, dict):  # {"bytes": ..., "path": ...}
            row["image"] = image.get("bytes") or image.get("path")
        rows.append(row)
    return rows


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")


def _text(value) -> str:
    """A caption cell as text: None and NaN (pandas' and JSON's missing value) are empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _from_llava(row: dict) -> dict:
    turns = row.get("conversations") or []
    question = next((t.get("value", "") for t in turns if t.get("from") in ("human", "user")), "")
    answer = next((t.get("value", "") for t in turns if t.get("from") in ("gpt", "assistant")), "")
    for placeholder in ("<image>", "<video>") if row.get("video") else ("<image>",):
        question = question.replace(placeholder, "")
    prompt = question.strip() or None
    return {"key": row.get("id"), "image": row.get("image"), "video": row.get("video"), "start": row.get("start"),
            "end": row.get("end"), "caption": answer, "prompt": prompt}


def clip_window(row: dict) -> tuple[float | None, float | None] | None:
    """A video record's `(start, end)` in seconds (either may be None); None if they are not a window."""
    bounds = []
    for value in (row.get("start"), row.get("end")):
        if value is None or value == "" or (isinstance(value, float) and value != value):
            bounds.append(None)
            continue
        try:  # CSV cells are strings
            seconds = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else -1.0
        except ValueError:
            return None
        if not seconds >= 0:  # negative or NaN
            return None
        bounds.append(seconds)
    start, end = bounds
    return None if start is not None and end is not None and end <= start else (start, end)


def read_records(path: str | Path, fmt: str = "auto", image_root: str | Path | None = None,
                 limit: int | None = None) -> tuple[list[CaptionRecord], SkipReport]:
    """Read caption records; relative image paths resolve against `image_root` or the file's folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    root = Path(image_root) if image_root else (path if path.is_dir() else path.parent)
    records, skipped = [], SkipReport()
    for index, row in enumerate(read_table_rows(path, fmt)):
        if limit is not None and len(records) >= limit:
            break
        if not isinstance(row, dict):
            skipped.add("not a record", f"{path.name}#{index}")
            continue
        if "conversations" in row:
            row = _from_llava(row)
        elif fmt == "llava":
            skipped.add("not a LLaVA record (no conversations)", f"{path.name}#{index}")
            continue
        image = row.get("image") or row.get("image_path") or row.get("path")
        image = image if isinstance(image, (str, bytes)) else None
        video = row.get("video") if isinstance(row.get("video"), str) and row.get("video") else None
        shown = video or image
        key = (_text(row.get("key")) or _text(row.get("id"))
               or (Path(shown).stem if isinstance(shown, str) else str(index)))
        name = f"{path.name}#{index} ({shown if isinstance(shown, str) else key})"
        caption = _text(row.get("caption"))
        short = _text(row.get("short_caption"))
        if not caption and not short:
            skipped.add("empty caption", name)
            continue
        if not image and not video:
            skipped.add("no image or video field", name)
            continue
        if image and video:
            skipped.add("both an image and a video", name)
            continue
        window = clip_window(row) if video else (None, None)
        if window is None:
            skipped.add("bad start/end (numbers, 0 <= start < end)", name)
            continue
        if isinstance(shown, str):
            file = Path(shown) if Path(shown).is_absolute() else root / shown
            if not file.is_file():
                skipped.add(f"missing {'video' if video else 'image'} file", f"{path.name}#{index} ({file})")
                continue
            shown = str(file)
        records.append(CaptionRecord(key=key, image=None if video else shown, caption=caption, short_caption=short,
                                     original_caption=_text(row.get("original_caption")),
                                     prompt=_text(row.get("prompt")) or None, video=shown if video else None,
                                     start=window[0], end=window[1]))
    return records, skipped
