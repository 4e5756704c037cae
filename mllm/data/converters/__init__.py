"""Converters: a registry turning the video caption sets users bring into mllm's caption records.

A converter reads one metadata file of its set and yields video records

    {key, video, start?, end?, caption?, short_caption?, original_caption?}

(`video`: the path as the set lays its videos out; `start` / `end`: seconds, for a clip cut from
a longer video; `caption`: detailed, `short_caption`: short; data_cards/caption_records.md), or a
`Skip` for a row it cannot use. `convert` resolves the paths against the videos' folder and writes
JSONL. Each set has a card, data_cards/<name>.md. Adding a set: one file with `@register`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mllm.data.records import SkipReport


@dataclass(frozen=True)
class Skip:
    """A row that gives no record: where it is and why."""

    where: str
    reason: str


Rows = Iterator["dict | Skip"]
CONVERTERS: dict[str, Callable[[Path], Rows]] = {}


def register(name: str):
    def add(read: Callable[[Path], Rows]):
        CONVERTERS[name] = read
        return read

    return add


@dataclass
class ConvertReport:
    written: int
    skipped: SkipReport

    def format(self) -> str:
        return f"{self.written} records written; {self.skipped.summary()}"


def convert(name: str, source: str | Path, out: str | Path, *, video_root: str | Path | None = None,
            limit: int | None = None) -> ConvertReport:
    """Write the records of `source` (a metadata file of set `name`) to the JSONL file `out`.

    Relative video paths are joined to `video_root` (default: `source`'s folder). Rows that give
    no record are skipped and counted, never fatal.
    """
    try:
        read = CONVERTERS[name]
    except KeyError:
        raise ValueError(f"unknown caption set {name!r}; known: {sorted(CONVERTERS)}") from None
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"metadata file not found: {source}")
    root = Path(video_root) if video_root is not None else source.parent
    skipped, written = SkipReport(), 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as lines:
        for row in read(source):
            if limit is not None and written >= limit:
                break
            if isinstance(row, Skip):
                skipped.add(row.reason, row.where)
                continue
            row["video"] = str(root / row["video"])
            lines.write(json.dumps({k: v for k, v in row.items() if v not in (None, "")}, ensure_ascii=False) + "\n")
            written += 1
    return ConvertReport(written, skipped)


from mllm.data.converters import llava_video, openvid, panda70m, sharegpt4video  # noqa: E402,F401  (registration)
