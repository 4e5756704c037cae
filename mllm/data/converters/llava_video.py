"""LLaVA-Video-178K caption files (`*_cap_processed.json`): LLaVA conversation JSON with a `video`
path; the first gpt answer is the detailed caption (data_cards/llava_video_178k.md)."""

from __future__ import annotations

import json
from pathlib import Path

from mllm.data.converters import Rows, Skip, register


@register("llava_video_178k")
def read(path: Path) -> Rows:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA records")
    for index, row in enumerate(rows):
        where = f"{path.name}#{index} ({row.get('id')})"
        answer = next((t.get("value", "") for t in row.get("conversations") or []
                       if t.get("from") in ("gpt", "assistant")), "").strip()
        if not row.get("video"):
            yield Skip(where, "no video")
        elif not answer:
            yield Skip(where, "no gpt answer")
        else:
            yield {"key": str(row.get("id") or Path(row["video"]).stem), "video": row["video"], "caption": answer}
