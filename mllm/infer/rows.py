"""The output row: one per input, the same for `mllm caption` (one file) and `mllm recaption` (shards).

Columns are documented in data_cards/recaption_output.md.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

TASKS = ("short", "detailed")

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("image", pa.string()),
    ("original_caption", pa.string()),
    ("short_caption", pa.string()),
    ("detailed_caption", pa.string()),
    ("short_tokens", pa.int32()),
    ("short_words", pa.int32()),
    ("detailed_tokens", pa.int32()),
    ("detailed_words", pa.int32()),
    ("model_id", pa.string()),
    ("model_revision", pa.string()),
    ("generation_settings", pa.string()),
    ("guard", pa.string()),
    ("error_kind", pa.string()),
    ("error", pa.string()),
    ("duration", pa.float64()),
    ("fps", pa.float64()),
    ("timestamps", pa.list_(pa.float64())),
    ("shots", pa.list_(pa.list_(pa.float64()))),
    ("truncated", pa.bool_()),
    ("windows", pa.list_(pa.struct([
        ("start", pa.float64()), ("end", pa.float64()), ("timestamps", pa.list_(pa.float64())),
        ("short_caption", pa.string()), ("detailed_caption", pa.string()), ("guard", pa.string())]))),
])
"""One row per input; captions of tasks that were not run, or failed, are null. The columns from
`duration` on describe a video and are null for an image."""


def empty_row(key: str, image: str, original_caption: str | None, error_kind: str | None = None,
              error: str | None = None) -> dict[str, Any]:
    """A row with no captions yet, columns in schema order (the engine fills in the rest)."""
    row = dict.fromkeys(SCHEMA.names)
    row.update(key=key, image=image, original_caption=original_caption, error_kind=error_kind, error=error)
    return row
