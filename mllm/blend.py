"""Blend recaption output into a text-to-image training manifest (DALL·E 3 style caption mixing).

Each image gets one caption source. Keys are ordered by a hash of (seed, key) and that order is
cut at the cumulative ratios, so the realised shares match the asked ones to within one row, the
choice for a key never depends on row order, and the same inputs always give the same file.
Default mix: 75% detailed synthetic, 20% short synthetic, 5% original (DALL·E 3 trained on 95%
synthetic captions; the short share keeps the generator usable with terse prompts, the original
share keeps it robust to real-world prompts). When the chosen caption is missing or failed, the
next source in `FALLBACK` is used (counted as a fallback); rows whose image failed to decode are
dropped before the draw.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SOURCES = ("detailed", "short", "original")
DEFAULT_RATIOS = {"detailed": 0.75, "short": 0.20, "original": 0.05}
FALLBACK = {
    "detailed": ("detailed", "short", "original"),
    "short": ("short", "detailed", "original"),
    "original": ("original", "detailed", "short"),
}
UNUSABLE_IMAGE = {"input", "decode", "preprocess"}
"""Recaption error kinds that mean the image itself is bad: such rows are left out of the blend."""
OUTPUT_SCHEMA = pa.schema([("key", pa.string()), ("image", pa.string()), ("caption", pa.string()),
                           ("source", pa.string())])


@dataclass
class BlendConfig:
    ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATIOS))
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.ratios) - set(SOURCES)
        if unknown or any(v < 0 for v in self.ratios.values()) or sum(self.ratios.values()) <= 0:
            raise ValueError(f"ratios {self.ratios}: keys must be among {SOURCES}, values >= 0, sum > 0")


@dataclass
class BlendStats:
    """Asked vs realised shares, fallbacks taken and rows dropped."""

    asked: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    @property
    def realised(self) -> dict[str, float]:
        return {s: self.counts.get(s, 0) / self.rows if self.rows else 0.0 for s in SOURCES}

    def format(self) -> str:
        shares = ", ".join(f"{s} {self.realised[s]:.3f} (asked {self.asked.get(s, 0):.3f})" for s in SOURCES)
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        return f"{self.rows} rows: {shares}; fallbacks {self.fallbacks}; dropped {dropped}"


def _hash(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()


def assign_sources(keys: list[str], config: BlendConfig) -> list[str]:
    """The caption source for each key: rank r in hash order gets the source whose cumulative-ratio
    interval holds (r + 0.5) / n, so each source gets its share of the keys to within one."""
    order = sorted(range(len(keys)), key=lambda i: (_hash(keys[i], config.seed), keys[i]))
    total = sum(config.ratios.values())
    bounds, cumulative = [], 0.0
    for source in SOURCES:
        if config.ratios.get(source, 0.0) > 0:
            cumulative += config.ratios[source] / total
            bounds.append((cumulative, source))
    chosen = [""] * len(keys)
    for rank, index in enumerate(order):
        point = (rank + 0.5) / len(keys)
        chosen[index] = next((source for bound, source in bounds if point < bound), bounds[-1][1])
    return chosen


def _caption(row: dict[str, Any], source: str) -> str | None:
    text = row.get("original_caption" if source == "original" else f"{source}_caption")
    return text.strip() if isinstance(text, str) and text.strip() else None


def blend_rows(rows: Iterable[dict[str, Any]], config: BlendConfig, stats: BlendStats) -> Iterator[dict[str, Any]]:
    """Training rows {key, image, caption, source} from recaption rows; counts go to `stats`."""
    counts, dropped, usable = Counter(), Counter(), []
    for row in rows:
        if row.get("error_kind") in UNUSABLE_IMAGE:
            dropped["bad image"] += 1
        else:
            usable.append(row)
    for row, wanted in zip(usable, assign_sources([str(r["key"]) for r in usable], config)):
        chosen = next((s for s in FALLBACK[wanted] if _caption(row, s)), None)
        if chosen is None:
            dropped["no caption"] += 1
            continue
        stats.fallbacks += chosen != wanted
        counts[chosen] += 1
        yield {"key": str(row["key"]), "image": row.get("image"), "caption": _caption(row, chosen), "source": chosen}
    stats.counts, stats.dropped = dict(counts), dict(dropped)


def read_recaption_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a recaption output folder (its finished shards) or of one Parquet file."""
    path = Path(path)
    if path.is_dir():
        from mllm.infer.shards import OutputFolder

        return OutputFolder(path).read_table().to_pylist()
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: expected a recaption output folder or a .parquet file")


def write_blend(recaption_output: str | Path, out: str | Path, config: BlendConfig | None = None) -> BlendStats:
    """Write the blended manifest (`.parquet` or `.jsonl`, by suffix) and `<out>.stats.json`; atomic."""
    config = config or BlendConfig()
    out = Path(out)
    if out.suffix not in (".parquet", ".jsonl"):
        raise ValueError(f"{out}: the blend output must end in .parquet or .jsonl")
    stats = BlendStats(asked={s: v / sum(config.ratios.values()) for s, v in config.ratios.items()})
    rows = sorted(blend_rows(read_recaption_rows(recaption_output), config, stats), key=lambda r: r["key"])
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if out.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), temp)
    else:
        temp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(temp, out)
    summary = {"asked": stats.asked, "realised": stats.realised, "counts": stats.counts,
               "fallbacks": stats.fallbacks, "dropped": stats.dropped, "seed": config.seed}
    out.with_name(out.name + ".stats.json").write_text(json.dumps(summary, indent=2))
    return stats
