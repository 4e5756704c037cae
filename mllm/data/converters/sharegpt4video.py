"""ShareGPT4Video (`sharegpt4video_40k.jsonl`): one video a line, its whole-video GPT-4V caption
(`captions` entry with idx "-1") as the detailed caption (data_cards/sharegpt4video.md)."""

from __future__ import annotations

import json
from pathlib import Path

from mllm.data.converters import Rows, Skip, register


@register("sharegpt4video")
def read(path: Path) -> Rows:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield Skip(where, f"invalid JSON ({error.msg})")
                continue
            whole = [c.get("content", "") for c in row.get("captions") or [] if str(c.get("idx")) == "-1"]
            if not row.get("video_path"):
                yield Skip(where, "no video_path")
            elif not whole or not whole[0].strip():
                yield Skip(where, "no whole-video caption (idx -1)")
            else:
                yield {"key": row.get("video_id") or Path(row["video_path"]).stem, "video": row["video_path"],
                       "caption": whole[0].strip()}
