"""The recaption output folder: Parquet shards written exactly once, a job record and a run manifest.

Layout (see data_cards/recaption_output.md):

    OUT/job.json                          what the job is (input fingerprint, tasks, model, settings, sharding)
    OUT/input_listing.json.gz             the files the input is read from (sizes, mtimes)
    OUT/manifest.json                     finished shards with row and error counts (rebuilt under a lock)
    OUT/shards/part-UUUUUU-CCCCCC.parquet rows [C*R, (C+1)*R) of input unit U, R = rows_per_shard
    OUT/shards/.part-...parquet.lock      held (flock) by the one worker writing that shard
    OUT/shards/.part-...parquet.tmp-<host>-<pid>   a shard being written (never "finished")

An input unit is one webdataset tar, or the whole input for a folder, manifest or dataset; a row's
position in its unit never depends on what failed to read before it. A shard is finished exactly
when its final name exists: it is written by the worker holding its lock, under a temporary name,
fsynced, then renamed (atomic on POSIX), and the folder fsynced. A rerun skips finished shards and
redoes the rest; any number of workers (`--num-shards`, torchrun ranks) share one folder with no
coordination beyond these files. A finished shard is never rewritten, and a live writer's
temporary file is never touched.
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

from mllm.errors import UsageError
from mllm.infer.job import check_job, claim_job, fsync_dir, write_atomic
from mllm.infer.listing import Listing
from mllm.infer.rows import SCHEMA

FORMAT = "mllm-recaption/3"  # 3: the video columns
ShardId = tuple[int, int]
"""(input unit, chunk of rows_per_shard rows within it)."""


@dataclass(frozen=True)
class WorkerSlot:
    """This process's share of the shards: shard (u, c) is ours when (u + c) % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls, shard_index: int = 0, num_shards: int = 1, env: dict[str, str] | None = None) -> "WorkerSlot":
        """Combine `--shard-index/--num-shards` with torchrun's RANK / WORLD_SIZE."""
        env = os.environ if env is None else env
        rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
        if not 0 <= shard_index < num_shards:
            raise UsageError(f"--shard-index {shard_index} must be in [0, {num_shards}) (--num-shards {num_shards})")
        return cls(index=shard_index * world + rank, count=num_shards * world)

    def owns(self, shard: ShardId) -> bool:
        return sum(shard) % self.count == self.index


def shard_name(shard: ShardId) -> str:
    return f"part-{shard[0]:06d}-{shard[1]:06d}.parquet"


class ShardClaim:
    """The exclusive right to write one shard (an flock, released when the process dies)."""

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # later claimants re-check the final file after locking
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class OutputFolder:
    """Reads and writes one recaption output folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.shards_dir = self.root / "shards"

    def shard_path(self, shard: ShardId) -> Path:
        return self.shards_dir / shard_name(shard)

    def is_finished(self, shard: ShardId) -> bool:
        return self.shard_path(shard).is_file()

    def finished_shards(self) -> list[Path]:
        return sorted(self.shards_dir.glob("part-*.parquet"))

    def check_job(self, job: dict[str, Any], listing: Listing) -> None:
        """Before anything is written or loaded: `--out` must be a folder free for this job."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root} is a file; the recaption output is a folder")
        check_job(self.root, {"format": FORMAT, **job}, listing)

    def claim_job(self, job: dict[str, Any], listing: Listing) -> None:
        """Record the job on first use; refuse a folder that holds a different job or whose input changed."""
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            claim_job(self.root, {"format": FORMAT, **job}, listing)

    def claim_shard(self, shard: ShardId) -> ShardClaim | None:
        """The shard's lock, or None when it is finished or another live worker is writing it.
        Temporary files left by dead writers of the shard are removed."""
        if self.is_finished(shard):
            return None
        path = self.shards_dir / f".{shard_name(shard)}.lock"
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        claim = ShardClaim(handle, path)
        if self.is_finished(shard):  # finished while we waited for the lock
            claim.release()
            return None
        for stale in self.shards_dir.glob(f".{shard_name(shard)}.tmp-*"):
            stale.unlink(missing_ok=True)
        return claim

    def write_shard(self, shard: ShardId, rows: list[dict[str, Any]], claim: ShardClaim,
                    units: dict[int, int] | None = None, num_units: int | None = None) -> Path:
        """Write a claimed shard atomically (temp name, fsync, rename, fsync folder), update the
        manifest, release the claim."""
        final = self.shard_path(shard)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        temp = self.shards_dir / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        try:
            with temp.open("wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
            fsync_dir(self.shards_dir)
        finally:
            claim.release()
        self.update_manifest(units, num_units)
        return final

    def update_manifest(self, units: dict[int, int] | None = None, num_units: int | None = None) -> dict[str, Any]:
        """Rebuild manifest.json from the finished shards (under a lock; written atomically).
        `units` adds the row counts of input units read to their end; `num_units` how many there are."""
        path = self.root / "manifest.json"
        with self._lock():
            manifest = json.loads(path.read_text()) if path.is_file() else {"format": FORMAT, "shards": {}, "units": {}}
            known_units = manifest.setdefault("units", {})
            for unit, rows in (units or {}).items():
                if known_units.get(str(unit), rows) != rows:
                    raise RuntimeError(f"{self.root}: input unit {unit} now has {rows} rows, {known_units[str(unit)]} "
                                       "before: the input changed under the job")
                known_units[str(unit)] = rows
            if num_units is not None:
                manifest["num_units"] = num_units
            known = manifest["shards"]  # a finished shard never changes: summarise each once
            manifest["shards"] = {p.name: known.get(p.name) or _shard_summary(p) for p in self.finished_shards()}
            manifest["rows_done"] = sum(s["rows"] for s in manifest["shards"].values())
            all_known = manifest.get("num_units") is not None and len(known_units) == manifest["num_units"]
            manifest["num_input_rows"] = sum(known_units.values()) if all_known else None
            manifest["complete"] = all_known and manifest["rows_done"] == manifest["num_input_rows"]
            manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_atomic(path, json.dumps(manifest, indent=2).encode())
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
