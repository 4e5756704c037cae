"""The recaption job: caption every input once into Parquet shards, resumable and scalable.

    summary = recaption(captioner, FolderSource("images/"), RecaptionConfig(out_dir="out"), settings)

Input row i goes to output shard i // rows_per_shard; this process handles the shards its
`WorkerSlot` owns and have no finished file yet (see `mllm.infer.shards`). The main process walks
the input and hands batches of items to DataLoader workers, which decode (`load_image`) and
preprocess (`captioner.preprocessor`) ahead of generation; batches come back in order and never
span two shards, so a shard is written as soon as its last batch is captioned. Bad inputs,
undecodable images and failed generations become rows with `error_kind` / `error`, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mllm.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image
from mllm.infer.guards import LoopGuard, cut_loop, fit_length, is_looping, retry_settings, word_count
from mllm.infer.shards import TASKS, OutputFolder, WorkerSlot
from mllm.infer.sources import ImageSource, SourceItem, describe_source


@dataclass
class RecaptionConfig:
    """How the job runs; `tasks`, `rows_per_shard` and the input must stay the same across restarts."""

    out_dir: str
    tasks: tuple[str, ...] = TASKS
    rows_per_shard: int = 1000
    batch_size: int = 8
    num_workers: int = 2
    slot: WorkerSlot = field(default_factory=WorkerSlot)
    max_pixels: int = DEFAULT_MAX_PIXELS
    loop_guard: LoopGuard = field(default_factory=LoopGuard)
    progress: bool = True


@dataclass
class RecaptionSummary:
    """What one run of the job did (this process only): rows written, of them captioned, errors by kind."""

    done: int = 0
    captioned: int = 0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    shards_written: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        rate = self.done / self.seconds if self.seconds else 0.0
        return (f"done: {self.done} rows ({self.captioned} captioned) in {self.shards_written} shards, "
                f"{self.seconds:.1f}s, {rate:.2f} img/s; skipped: {self.skipped} rows (finished earlier or "
                f"owned by other workers); errors by kind: {errors}")


@dataclass
class _Work:
    """One item on its way to a worker, tagged with its output shard."""

    shard: int
    last_of_shard: bool
    item: SourceItem


class _Planner:
    """Walks the input once and yields batches (lists of `_Work`) of this worker's unfinished shards."""

    def __init__(self, source: ImageSource, folder: OutputFolder, config: RecaptionConfig):
        self.source, self.folder, self.config = source, folder, config
        self.num_input_rows: int | None = None
        self.skipped = 0

    def _shards(self) -> Iterator[tuple[int, list[SourceItem]]]:
        rows, shard, count = [], 0, 0
        for count, item in enumerate(self.source, 1):
            rows.append(item)
            if len(rows) == self.config.rows_per_shard:
                yield shard, rows
                rows, shard = [], shard + 1
        if rows:
            yield shard, rows
        self.num_input_rows = count

    def __iter__(self) -> Iterator[list[_Work]]:
        size = self.config.batch_size
        for shard, items in self._shards():
            if not self.config.slot.owns(shard) or self.folder.is_finished(shard):
                self.skipped += len(items)
                continue
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                last = start + size >= len(items)
                yield [_Work(shard, last and i == len(chunk) - 1, item) for i, item in enumerate(chunk)]


class _DecodeImages(torch.utils.data.Dataset):
    """Indexed by `_Work` itself: decodes its image in a DataLoader worker."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels

    def __getitem__(self, work: _Work) -> tuple[_Work, Any, str | None, str | None]:
        item = work.item
        if item.error or item.image is None:
            return work, None, "input", item.error or "no image"
        try:
            image = load_image(item.image, name=item.ref or item.key, max_pixels=self.max_pixels)
        except ImageDecodeError as error:
            return work, None, "decode", str(error)
        return work, image, None, None


@dataclass
class _Batch:
    works: list[_Work]
    pixel_values: torch.Tensor | None  # rows of the works without an error, in order
    error_kinds: list[str | None]
    errors: list[str | None]


class _Preprocess:
    """collate_fn (runs in the worker): the captioner's preprocessor over the decoded images."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, decoded: list[tuple[_Work, Any, str | None, str | None]]) -> _Batch:
        works = [d[0] for d in decoded]
        kinds, errors = [d[2] for d in decoded], [d[3] for d in decoded]
        good = [i for i, d in enumerate(decoded) if d[1] is not None]
        tensors = []
        try:
            tensors = [self.preprocessor([decoded[i][1] for i in good])] if good else []
        except Exception:  # one odd image must not fail its batch: retry one by one
            for i in list(good):
                try:
                    tensors.append(self.preprocessor([decoded[i][1]]))
                except Exception as error:
                    kinds[i], errors[i] = "preprocess", f"{works[i].item.ref}: {type(error).__name__}: {error}"
        return _Batch(works, torch.cat(tensors) if tensors else None, kinds, errors)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def job_record(source: ImageSource, config: RecaptionConfig, captioner, settings: dict[str, Any]) -> dict[str, Any]:
    """What identifies a job; a restart must match it exactly."""
    return {
        "source": describe_source(source),
        "tasks": list(config.tasks),
        "rows_per_shard": config.rows_per_shard,
        "model_id": captioner.model_id,
        "model_revision": captioner.model_revision,
        "generation_settings": settings_json(settings, config.tasks),
    }


def settings_json(settings: dict[str, Any], tasks: tuple[str, ...]) -> str:
    """Per-task generation settings as JSON (batch size left out: it does not change captions)."""
    return json.dumps(
        {t: {k: v for k, v in dataclasses.asdict(settings[t]).items() if k != "batch_size"} for t in tasks},
        sort_keys=True)


def task_settings(model_dir: str | Path, tasks: tuple[str, ...], overrides: dict[str, Any]) -> dict[str, Any]:
    """task -> the run's saved GenerationSettings (`generation:` in its config.yaml) with `overrides` applied."""
    from mllm.infer.generate import with_overrides
    from mllm.run_folder import load_run_config

    saved = load_run_config(model_dir).generation
    missing = [t for t in tasks if t not in saved]
    if missing:
        raise ValueError(f"{model_dir}: no generation settings for tasks {missing} (has {sorted(saved)})")
    return {t: with_overrides(saved[t], **overrides) for t in tasks}


def default_device(env: dict[str, str] | None = None) -> str:
    """cuda:LOCAL_RANK under torchrun, cuda when there is a GPU, else cpu."""
    env = os.environ if env is None else env
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(env.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def recaption(captioner, source: ImageSource, config: RecaptionConfig, settings: dict[str, Any]) -> RecaptionSummary:
    """Run (or resume) the job; returns what this process did. `settings` maps task -> GenerationSettings."""
    unknown = [t for t in config.tasks if t not in TASKS or t not in settings]
    if unknown or not config.tasks:
        raise ValueError(f"tasks {list(config.tasks)}: each must be one of {TASKS} and have generation settings")
    if config.rows_per_shard < 1 or config.batch_size < 1:
        raise ValueError("rows_per_shard and batch_size must be >= 1")
    folder = OutputFolder(config.out_dir)
    folder.claim_job(job_record(source, config, captioner, settings))
    planner = _Planner(source, folder, config)
    loader = DataLoader(
        _DecodeImages(config.max_pixels), batch_sampler=planner, collate_fn=_Preprocess(captioner.preprocessor),
        num_workers=config.num_workers, worker_init_fn=_worker_init if config.num_workers else None,
    )
    constant = {"model_id": captioner.model_id, "model_revision": captioner.model_revision,
                "generation_settings": settings_json(settings, config.tasks)}
    summary, errors, started = RecaptionSummary(), Counter(), time.monotonic()
    progress = tqdm(total=_pending_rows(source, folder, config), unit="img", desc="recaption",
                    disable=not config.progress, dynamic_ncols=True)
    shard_rows: list[dict[str, Any]] = []
    for batch in loader:
        rows = caption_batch(captioner, batch, config, settings)
        shard_rows.extend({**row, **constant} for row in rows)
        errors.update(row["error_kind"] for row in rows if row["error_kind"])
        progress.update(len(rows))
        summary.done += len(rows)
        summary.captioned += sum(1 for row in rows if not row["error_kind"])
        if batch.works[-1].last_of_shard:
            folder.write_shard(batch.works[-1].shard, shard_rows)
            summary.shards_written += 1
            shard_rows = []
    progress.close()
    folder.update_manifest(num_input_rows=planner.num_input_rows)
    summary.skipped, summary.errors = planner.skipped, dict(errors)
    summary.seconds = time.monotonic() - started
    return summary


def _pending_rows(source: ImageSource, folder: OutputFolder, config: RecaptionConfig) -> int | None:
    """Rows this worker still has to caption, for the progress bar's ETA (None if the input size is unknown)."""
    total = source.count()
    if total is None:
        return None
    size = config.rows_per_shard
    return sum(min(size, total - s * size) for s in range(-(-total // size))
               if config.slot.owns(s) and not folder.is_finished(s))


def caption_batch(captioner, batch: _Batch, config: RecaptionConfig, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Output rows (without the model / settings columns) for one decoded batch."""
    rows = []
    for work, kind, error in zip(batch.works, batch.error_kinds, batch.errors):
        item = work.item
        rows.append({"key": item.key, "image": item.ref, "original_caption": item.original_caption,
                     "error_kind": kind, "error": error, "guard": None,
                     **{f"{t}_{c}": None for t in TASKS for c in ("caption", "tokens", "words")}})
    good = [i for i, kind in enumerate(batch.error_kinds) if kind is None]  # the rows of pixel_values
    if not good:
        return rows
    guards: dict[int, list[str]] = {}
    for task in config.tasks:
        results = _generate_guarded(captioner, batch.pixel_values, task, settings[task], config.loop_guard)
        for i, (text, tokens, actions, failure) in zip(good, results):
            row = rows[i]
            if failure:
                row["error_kind"] = "generate"
                row["error"] = "; ".join(filter(None, [row["error"], f"{task}: {failure}"]))
                continue
            row[f"{task}_caption"], row[f"{task}_tokens"] = text, tokens
            row[f"{task}_words"] = word_count(text)
            guards.setdefault(i, []).extend(f"{task}:{a}" for a in actions)
    for i, actions in guards.items():
        rows[i]["guard"] = ",".join(actions) or None
    return rows


def _generate(captioner, pixel_values: torch.Tensor, task: str, settings) -> list[Any]:
    """GeneratedText per row, or the exception for rows that fail even when generated alone."""
    try:
        return list(captioner.generate(pixel_values, task, settings))
    except Exception:
        results: list[Any] = []
        for i in range(len(pixel_values)):
            try:
                results.extend(captioner.generate(pixel_values[i:i + 1], task, settings))
            except Exception as error:
                results.append(error)
        return results


def _generate_guarded(captioner, pixel_values, task, settings, guard: LoopGuard):
    """(text, token count, guard actions, failure) per row: loops retried then cut; length fitted."""
    first = _generate(captioner, pixel_values, task, settings)
    looping = [i for i, g in enumerate(first)
               if not isinstance(g, Exception) and is_looping(g.text, g.token_ids, guard)]
    retried = dict(zip(looping, _generate(captioner, pixel_values[looping], task, retry_settings(settings, guard))
                       if looping else []))
    results = []
    for i, generated in enumerate(first):
        if isinstance(generated, Exception):
            results.append((None, None, [], f"{type(generated).__name__}: {generated}"))
            continue
        actions, text, token_ids, was_cut = [], generated.text, generated.token_ids, False
        if i in retried:
            again = retried[i]
            if not isinstance(again, Exception) and not is_looping(again.text, again.token_ids, guard):
                actions.append("retry")
                text, token_ids = again.text, again.token_ids
            else:
                actions.append("cut")
                cut = cut_loop(text, guard)  # ends on a whole word: no tail left to trim
                text, was_cut = cut, cut != text
        text, trimmed = fit_length(text, max_words=settings.max_words, min_words=settings.min_words,
                                   hit_token_limit=not was_cut and len(token_ids) >= settings.max_new_tokens)
        if trimmed:
            actions.append("trim")
        results.append((text.strip(), len(token_ids), actions, None))
    return results
