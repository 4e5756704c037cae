"""The recaption job: caption every input once into Parquet shards, resumable and scalable.

    summary = recaption(captioner, FolderSource("images/"), RecaptionConfig(out_dir="out"), settings)

Row p of input unit u (one webdataset tar, or the whole input of the other kinds) goes to shard
(u, p // rows_per_shard); positions come from the input itself, never from how many items read
before it, and the input's fingerprint is recorded in `job.json`, so a rerun on changed input is
refused. This process handles the shards its `WorkerSlot` owns that are not finished and not being
written by another live worker (see `mllm.infer.shards`). The engine (`mllm.infer.engine`) decodes
in DataLoader workers and captions; batches never span two shards, so a shard is written as soon as
its last batch is captioned. A failure of the system (out of memory at batch 1, a device error)
stops the job without writing the shard it was in; a rerun retries it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from mllm.infer.engine import CaptionEngine, EngineConfig, Tally, Work
from mllm.infer.job import decode_record, job_record
from mllm.infer.shards import OutputFolder, ShardClaim, ShardId, WorkerSlot
from mllm.infer.sources import ImageSource


@dataclass
class RecaptionConfig:
    """How the job runs; `rows_per_shard`, `num_shards`, the tasks, the decode limits and the input
    must stay the same across restarts (they are in job.json)."""

    out_dir: str
    rows_per_shard: int = 1000
    slot: WorkerSlot = field(default_factory=WorkerSlot)
    num_shards: int = 1  # --num-shards, recorded in job.json (torchrun ranks split each part further)
    engine: EngineConfig = field(default_factory=EngineConfig)
    progress: bool = True


@dataclass
class RecaptionSummary(Tally):
    """What one run of the job did (this process only)."""

    skipped: int = 0
    shards_written: int = 0

    def details(self) -> list[str]:
        return [f"{self.shards_written} shards written",
                f"skipped: {self.skipped} rows (finished earlier or owned by other workers)"]


@dataclass
class _Tag:
    shard: ShardId
    last: bool = False  # the last row of its shard


class _Planner:
    """Walks the input once and yields batches of `Work` of the shards this worker claims."""

    def __init__(self, source: ImageSource, folder: OutputFolder, config: RecaptionConfig, batch_size: int):
        self.source, self.folder, self.config, self.batch_size = source, folder, config, batch_size
        self.claims: dict[ShardId, ShardClaim] = {}
        self.unit_rows: dict[int, int] = {}  # units read to their end, not yet in the manifest
        self.skipped = 0

    def _claim(self, shard: ShardId) -> bool:
        claim = self.folder.claim_shard(shard) if self.config.slot.owns(shard) else None
        if claim is not None:
            self.claims[shard] = claim
        return claim is not None

    def __iter__(self) -> Iterator[list[Work]]:
        size = self.config.rows_per_shard
        for unit in range(len(self.source.units())):
            pending: list[Work] = []
            claimed, rows = False, 0
            for position, item in enumerate(self.source.read(unit)):
                rows = position + 1
                if position % size == 0:  # a new shard starts
                    if pending:
                        pending[-1].tag.last = True
                        yield pending
                    pending = []
                    claimed = self._claim((unit, position // size))
                if not claimed:
                    self.skipped += 1
                    continue
                if len(pending) == self.batch_size:
                    yield pending
                    pending = []
                pending.append(Work(_Tag((unit, position // size)), item))
            if pending:
                pending[-1].tag.last = True
                yield pending
            self.unit_rows[unit] = rows

    def take_unit_rows(self) -> dict[int, int]:
        rows, self.unit_rows = self.unit_rows, {}
        return rows

    def release(self) -> None:
        for claim in self.claims.values():
            claim.release()
        self.claims.clear()


def default_device(env: dict[str, str] | None = None) -> str:
    """cuda:LOCAL_RANK under torchrun, cuda when there is a GPU, else cpu."""
    env = os.environ if env is None else env
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(env.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def recaption_job(source: ImageSource, config: RecaptionConfig, model_id: str, model_revision: str | None,
                  settings: dict[str, Any]) -> dict[str, Any]:
    """What identifies the job in job.json; a restart must match it exactly."""
    engine = config.engine
    return job_record(source, engine.tasks, model_id, model_revision, settings, backend=engine.backend,
                      rows_per_shard=config.rows_per_shard, num_shards=config.num_shards,
                      decode=decode_record(engine))


def recaption(captioner, source: ImageSource, config: RecaptionConfig, settings: dict[str, Any]) -> RecaptionSummary:
    """Run (or resume) the job; returns what this process did. `settings` maps task -> GenerationSettings."""
    if config.rows_per_shard < 1:
        raise ValueError("rows_per_shard must be >= 1")
    engine = CaptionEngine(captioner, settings, config.engine)
    folder = OutputFolder(config.out_dir)
    listing = source.listing()  # checks the input before anything is written
    job = recaption_job(source, replace(config, engine=engine.config), captioner.model_id, captioner.model_revision,
                        engine.settings)
    folder.claim_job(job, listing)
    planner = _Planner(source, folder, config, engine.batch_size)
    num_units = len(source.units())
    summary, started = RecaptionSummary(files_not_read=listing.skipped), time.monotonic()
    progress = tqdm(total=_pending_rows(source, folder, config), unit="img", desc="recaption",
                    disable=not config.progress, dynamic_ncols=True)
    shard_rows: list[dict[str, Any]] = []
    try:
        for works, rows in engine.run(planner):
            shard_rows.extend(rows)
            summary.count(rows)
            progress.update(len(rows))
            tag = works[-1].tag
            if tag.last:
                folder.write_shard(tag.shard, shard_rows, planner.claims.pop(tag.shard),
                                   units=planner.take_unit_rows(), num_units=num_units)
                summary.shards_written += 1
                shard_rows = []
    finally:
        planner.release()
        progress.close()
    folder.update_manifest(units=planner.take_unit_rows(), num_units=num_units)
    summary.skipped = planner.skipped
    summary.seconds = time.monotonic() - started
    return summary


def _pending_rows(source: ImageSource, folder: OutputFolder, config: RecaptionConfig) -> int | None:
    """Rows this worker still has to caption, for the progress bar's ETA (None if the input size is unknown)."""
    total = source.count() if len(source.units()) == 1 else None
    if total is None:
        return None
    size = config.rows_per_shard
    return sum(min(size, total - c * size) for c in range(-(-total // size))
               if config.slot.owns((0, c)) and not folder.is_finished((0, c)))
