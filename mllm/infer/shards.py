"""The recaption output folder: Parquet shards written exactly once, a job record and a run manifest.

Layout (see data_cards/recaption_output.md):

    OUT/job.json                     what the job is (input, tasks, model, settings, rows per shard)
    OUT/manifest.json                finished shards with row and error counts (rebuilt under a lock)
    OUT/shards/part-000000.parquet   rows [0, R) of the input, R = rows_per_shard
    OUT/shards/.part-000000.parquet.tmp-<host>-<pid>   a shard being written (never "finished")

A shard is finished exactly when its final name exists: it is written under a temporary name,
fsynced, then renamed (atomic on POSIX), and the folder fsynced. Input row i always goes to shard
i // rows_per_shard, so a rerun of the same command skips finished shards and redoes the rest,
and any number of workers (`--num-shards`, torchrun ranks) share one folder with no coordination
beyond these files.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TASKS = ("short", "detailed")
FORMAT = "mllm-recaption/1"

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
])
"""One row per input; captions of tasks that were not run, or failed, are null."""


@dataclass(frozen=True)
class WorkerSlot:
    """This process's share of the shards: shard s is ours when s % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls, shard_index: int = 0, num_shards: int = 1, env: dict[str, str] | None = None) -> "WorkerSlot":
        """Combine `--shard-index/--num-shards` with torchrun's RANK / WORLD_SIZE."""
        env = os.environ if env is None else env
        rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"--shard-index {shard_index} must be in [0, {num_shards})")
        return cls(index=shard_index * world + rank, count=num_shards * world)

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index


def shard_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


class OutputFolder:
    """Reads and writes one recaption output folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.shards_dir = self.root / "shards"

    def shard_path(self, shard: int) -> Path:
        return self.shards_dir / shard_name(shard)

    def is_finished(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    def finished_shards(self) -> list[Path]:
        return sorted(self.shards_dir.glob("part-*.parquet"))

    def claim_job(self, job: dict[str, Any]) -> None:
        """Record the job on first use; refuse to resume a folder that holds a different job."""
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        path = self.root / "job.json"
        job = {"format": FORMAT, **json.loads(json.dumps(job))}
        with self._lock():
            if path.is_file():
                existing = json.loads(path.read_text())
                changed = sorted(k for k in set(job) | set(existing) if job.get(k) != existing.get(k))
                if changed:
                    raise ValueError(
                        f"{self.root} holds a different recaption job (differs in {changed}); "
                        "rerun the original command to resume, or choose a new --out folder")
            else:
                _write_atomic(path, json.dumps(job, indent=2).encode())

    def write_shard(self, shard: int, rows: list[dict[str, Any]]) -> Path:
        """Write a shard atomically (temp name, fsync, rename, fsync folder), then update the manifest."""
        final = self.shard_path(shard)
        for stale in self.shards_dir.glob(f".{final.name}.tmp-*"):  # left by a killed run; shard s has one owner
            stale.unlink(missing_ok=True)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        temp = self.shards_dir / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        with temp.open("wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(self.shards_dir)
        self.update_manifest()
        return final

    def update_manifest(self, num_input_rows: int | None = None) -> dict[str, Any]:
        """Rebuild manifest.json from the finished shards (under a lock; written atomically)."""
        path = self.root / "manifest.json"
        with self._lock():
            manifest = json.loads(path.read_text()) if path.is_file() else {"format": FORMAT, "shards": {}}
            if num_input_rows is not None:
                manifest["num_input_rows"] = num_input_rows
            known = manifest["shards"]  # a finished shard never changes: summarise each once
            manifest["shards"] = {p.name: known.get(p.name) or _shard_summary(p) for p in self.finished_shards()}
            manifest["rows_done"] = sum(s["rows"] for s in manifest["shards"].values())
            total = manifest.get("num_input_rows")
            manifest["complete"] = total is not None and manifest["rows_done"] == total
            manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_atomic(path, json.dumps(manifest, indent=2).encode())
        return manifest

    def read_table(self) -> pa.Table:
        """All finished shards as one table (a consistent view: temp files are never read)."""
        files = self.finished_shards()
        if not files:
            return SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files)

    @contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _shard_summary(path: Path) -> dict[str, Any]:
    table = pq.read_table(path, columns=["error_kind"])
    errors = table.column("error_kind").drop_null().to_pylist()
    by_kind: dict[str, int] = {}
    for kind in errors:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {"rows": table.num_rows, "errors": by_kind, "bytes": path.stat().st_size}


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
