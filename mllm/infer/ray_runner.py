"""The recaption job on Ray (`mllm recaption --ray [ADDRESS]`): shards are Ray tasks, captioned by one actor
per GPU (or per CPU slot), images decoded in CPU tasks.

    summary = recaption_on_ray(make_captioner, source, RayConfig(recaption_config), settings, address=None)

The driver walks the input once, assigning rows to shards as the local runner does (row p of input
unit u -> shard (u, p // rows_per_shard)), and records the job (`job.json`) the same way. For each
shard not finished it starts a decoding task (a Ray CPU task: `load_image` and the captioner's
preprocessor, batch by batch) and hands the result to the next free captioner actor
(`ray.util.ActorPool`), keeping a few shards ahead so decoding overlaps captioning. The actor claims
the shard's lock, captions it and writes the shard file atomically (`mllm.infer.shards`), so the
output is the local runner's: a rerun resumes, local and Ray workers can share a folder, and every
key is written exactly once. A worker that dies mid-shard leaves no file (its lock dies with its
process): Ray restarts the actor and retries the shard `task_retries` times; a shard that still
fails is reported, the others go on, and a rerun redoes it. `address` None starts a local Ray;
otherwise the driver joins that cluster, whose nodes need mllm installed and the output folder
mounted at the same path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from mllm.infer.engine import CaptionEngine, Work, decode_batch
from mllm.infer.recaption import RecaptionConfig, RecaptionSummary, recaption_job
from mllm.infer.shards import OutputFolder, ShardId, shard_name
from mllm.infer.sources import ImageSource, SourceItem

CPU_SLOT = 4
"""CPUs one captioner actor takes on a cluster without GPUs (its torch threads); one CPU is left for decoding."""
AHEAD = 2
"""Shards decoded or waiting per actor."""
ACTOR_RESTARTS = 3
"""Times Ray restarts a captioner actor whose process died; after that its shards fail (a rerun redoes them)."""


@dataclass
class RayConfig:
    """`workers` None: one per GPU of the cluster, or without GPUs one per `CPU_SLOT` CPUs."""

    job: RecaptionConfig
    workers: int | None = None
    task_retries: int = 1  # a shard whose worker died is retried this many times on the restarted worker
    init_args: dict[str, Any] = field(default_factory=dict)  # extra `ray.init` arguments (a local Ray)


@dataclass
class RaySummary(RecaptionSummary):
    failed: list[str] = field(default_factory=list)  # shard files not written in this run
    failures: list[str] = field(default_factory=list)  # why

    def details(self) -> list[str]:
        failed = [f"{len(self.failed)} shards failed (rerun to redo them): {', '.join(self.failed[:5])}; "
                  f"{self.failures[0]}"] if self.failed else []
        return super().details() + failed


class ShardCaptioner:
    """A Ray actor: one captioner, and the shards it is handed, each written once."""

    def __init__(self, make_captioner: Callable[[], Any], settings: dict, job: RecaptionConfig):
        self.engine = CaptionEngine(make_captioner(), settings, job.engine)
        self.folder = OutputFolder(job.out_dir)

    def preprocessor(self):
        return self.engine.captioner.preprocessor

    def batch_size(self) -> int:
        return self.engine.batch_size

    def sampling(self):
        return self.engine.sampling

    def caption_shard(self, shard: ShardId, batches: list) -> dict[str, Any]:
        """Caption and write `shard`, or skip it when it is finished or another live worker holds it."""
        claim = self.folder.claim_shard(shard)
        if claim is None:
            return {"shard": shard, "rows": None}
        try:
            rows = [row for batch in batches for row in self.engine.caption_batch(batch)]
        except BaseException:
            claim.release()
            raise
        self.folder.write_shard(shard, rows, claim)
        return {"shard": shard, "rows": rows}


def _decode_shard(items: list[SourceItem], preprocessor, batch_size: int, sampling, limits) -> list:
    works = [Work(None, item) for item in items]
    return [decode_batch(works[i:i + batch_size], preprocessor, sampling, limits)
            for i in range(0, len(works), batch_size)]


def _shards(source: ImageSource, folder: OutputFolder, rows_per_shard: int, unit_rows: dict[int, int],
            summary: RaySummary) -> Iterator[tuple[ShardId, list[SourceItem]]]:
    """(shard, its items) for every shard not finished, walking the input once; `unit_rows` gets each unit's size."""
    for unit in range(len(source.units())):
        items, shard, rows = [], None, 0
        for position, item in enumerate(source.read(unit)):
            rows = position + 1
            if position % rows_per_shard == 0:
                if items:
                    yield shard, items
                shard, items = (unit, position // rows_per_shard), []
            if folder.is_finished(shard):
                summary.skipped += 1
            else:
                items.append(item)
        if items:
            yield shard, items
        unit_rows[unit] = rows


def _actor_resources(ray, workers: int | None) -> tuple[int, dict[str, float]]:
    """How many captioner actors, and what each takes."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus:
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}
    count = workers or max(1, (cpus - 1) // CPU_SLOT)
    return count, {"num_cpus": max(1, min(CPU_SLOT, (cpus - 1) // count))}


def recaption_on_ray(make_captioner: Callable[[], Any], source: ImageSource, config: RayConfig, settings: dict,
                     model_id: str, model_revision: str | None, address: str | None = None) -> RaySummary:
    """Run (or resume) the recaption job on Ray; `make_captioner` (picklable) loads the captioner in an actor."""
    import ray
    from ray.util import ActorPool

    job = config.job
    folder = OutputFolder(job.out_dir)
    listing = source.listing()
    folder.claim_job(recaption_job(source, job, model_id, model_revision, settings), listing)
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=address, **({"include_dashboard": False, **config.init_args} if address is None else {}))
    count, resources = _actor_resources(ray, config.workers)
    actor_class = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=config.task_retries,
                             **resources)(ShardCaptioner)
    actors = [actor_class.remote(make_captioner, settings, job) for _ in range(count)]
    preprocessor = ray.put(ray.get(actors[0].preprocessor.remote()))
    batch_size = ray.get(actors[0].batch_size.remote())
    sampling = ray.get(actors[0].sampling.remote())
    decode = ray.remote(num_cpus=1)(_decode_shard)
    pool = ActorPool(actors)
    summary, started = RaySummary(files_not_read=listing.skipped), time.monotonic()
    unit_rows: dict[int, int] = {}
    shards = _shards(source, folder, job.rows_per_shard, unit_rows, summary)
    submitted: dict[ShardId, int] = {}  # shard -> its rows; what stays after the loop failed (errors do not say which)
    progress = tqdm(unit="img", desc=f"recaption on ray ({count} workers)", disable=not job.progress, dynamic_ncols=True)
    try:
        while True:
            while len(submitted) - len(summary.failures) < AHEAD * count and (pending := next(shards, None)):
                shard, items = pending
                batches = decode.remote(items, preprocessor, batch_size, sampling, job.engine.limits)
                pool.submit(lambda actor, value: actor.caption_shard.remote(*value), (shard, batches))
                submitted[shard] = len(items)
            if not pool.has_next():
                break
            try:
                result = pool.get_next_unordered()
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                summary.failures.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
                continue
            shard, rows = tuple(result["shard"]), result["rows"]
            size = submitted.pop(shard)
            if rows is None:
                summary.skipped += size
            else:
                summary.count(rows)
                summary.shards_written += 1
            progress.update(size)
    finally:
        progress.close()
        for actor in actors:
            ray.kill(actor)
        if own_ray:
            ray.shutdown()
    summary.failed = [shard_name(shard) for shard in submitted]  # what succeeded or was skipped has left
    folder.update_manifest(units=unit_rows, num_units=len(source.units()))
    summary.seconds = time.monotonic() - started
    return summary
