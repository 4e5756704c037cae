"""OpenVid-1M (`OpenVid-1M.csv`, `OpenVidHD.csv`): one clip a row, `video` (a file name in the
unzipped parts) and its detailed `caption` (data_cards/openvid_1m.md)."""

from __future__ import annotations

import csv
from pathlib import Path

from mllm.data.converters import Rows, Skip, register


@register("openvid_1m")
def read(path: Path) -> Rows:
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), 2):
            video, caption = (row.get("video") or "").strip(), (row.get("caption") or "").strip()
            if not video or not caption:
                yield Skip(f"{path.name}:{number}", "no video" if not video else "empty caption")
            else:
                yield {"key": Path(video).stem, "video": video, "caption": caption}
