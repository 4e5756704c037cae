"""Panda-70M (`panda70m_*.csv`): one source video a row, with its clips' `timestamp` spans and
`caption`s as Python list literals; each clip becomes a record of the downloaded source video
`<videoID>.mp4` with `start` / `end`, its caption a short one (data_cards/panda70m.md)."""

from __future__ import annotations

import ast
import csv
from datetime import datetime
from pathlib import Path

from mllm.data.converters import Rows, Skip, register


def seconds(stamp: str | float) -> float:
    """'0:01:02.500' (the set's H:MM:SS.fff) or a number of seconds -> seconds."""
    if isinstance(stamp, (int, float)):
        return float(stamp)
    moment = datetime.strptime(stamp.strip(), "%H:%M:%S.%f")
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def _listed(text: str):
    value = ast.literal_eval(text)  # literals only: never eval
    return value if isinstance(value, list) else [value]


@register("panda70m")
def read(path: Path) -> Rows:
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), 2):
            video_id = (row.get("videoID") or "").strip()
            where = f"{path.name}:{number} ({video_id})"
            try:
                spans, captions = _listed(row["timestamp"]), _listed(row["caption"])
                if spans and not isinstance(spans[0], (list, tuple)):
                    spans = [spans]
                spans = [(seconds(a), seconds(b)) for a, b in spans]
            except (KeyError, ValueError, SyntaxError, TypeError) as error:
                yield Skip(where, f"unreadable timestamp or caption ({type(error).__name__})")
                continue
            if not video_id or len(spans) != len(captions):
                yield Skip(where, "no videoID" if not video_id else "timestamp and caption lists differ in length")
                continue
            for clip, ((start, end), caption) in enumerate(zip(spans, captions)):
                if end <= start or not str(caption).strip():
                    yield Skip(f"{where} clip {clip}", "empty span or caption")
                    continue
                yield {"key": f"{video_id}_{clip}", "video": f"{video_id}.mp4", "start": start, "end": end,
                       "short_caption": str(caption).strip()}
