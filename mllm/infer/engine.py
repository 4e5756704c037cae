"""The captioning engine: decoding in DataLoader workers, guarded batched generation, error rows.

    engine = CaptionEngine(captioner, settings, EngineConfig(tasks=("short", "detailed")))
    for works, rows in engine.run(batches):      # batches: lists of Work(tag, SourceItem)
        ...                                       # one output row per work, in order

`mllm recaption` (Parquet shards, `mllm.infer.recaption`) and `mllm caption` (one file,
`mllm.infer.caption`) feed it batches and write what comes back. The batches are handed to
DataLoader workers, which decode (`load_image`) and preprocess (`captioner.preprocessor`) ahead of
generation; batches come back in order. The backend gets the loop guard and may stop a looping row
as soon as it loops (the HF backend does, `mllm.infer.backends.hf_decode`); a looping caption is cut
where its loop starts, with no second pass, and lengths are fitted to the task's word range
(`mllm.infer.guards`). A task whose `batch_size` is `auto` gets the backend's `auto_batch_size`.

Failures about one image (a bad record, decoding, preprocessing, generation failing for that image
alone) become rows with `error_kind` / `error`. Failures of the system raise `GenerationFailure`
and nothing of the batch is returned: out of memory at batch size 1 (a larger batch is first
retried in halves, and later batches stay at the size that fit), a device error, host memory
exhaustion, or the same error for every row of a batch.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from mllm.config import GenerationSettings
from mllm.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageDecodeError, load_image
from mllm.infer.guards import LoopGuard, cut_loop, find_loop, fit_length, is_looping, word_count
from mllm.infer.rows import TASKS, empty_row
from mllm.infer.settings import settings_json
from mllm.infer.sources import SourceItem

log = logging.getLogger(__name__)
SYSTEM_ERRORS = tuple(t for t in (getattr(torch, "AcceleratorError", None), MemoryError) if t)
"""Errors that are never about one image (CUDA device errors, host memory)."""


class GenerationFailure(RuntimeError):
    """Generation failed for a reason that is not about the images: nothing of the batch is kept."""


@dataclass
class EngineConfig:
    """How the engine captions; `batch_size` None means each task's `settings.batch_size`."""

    tasks: tuple[str, ...] = TASKS
    backend: str = "hf"  # the registry name of the captioner (mllm.infer.backends); part of a job's identity
    batch_size: int | Literal["auto"] | None = None
    num_workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    loop_guard: LoopGuard = field(default_factory=LoopGuard)


@dataclass
class Tally:
    """What one run wrote: rows, of them captioned, errors by kind; and a folder's files it did not read."""

    done: int = 0
    captioned: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    files_not_read: list[str] = field(default_factory=list)

    def count(self, rows: list[dict[str, Any]]) -> None:
        self.done += len(rows)
        self.captioned += sum(1 for row in rows if not row["error_kind"])
        for row in rows:
            if row["error_kind"]:
                self.errors[row["error_kind"]] = self.errors.get(row["error_kind"], 0) + 1

    def details(self) -> list[str]:
        """What a kind of run adds to the summary line."""
        return []

    def format(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        rate = self.done / self.seconds if self.seconds else 0.0
        parts = [f"done: {self.done} rows ({self.captioned} captioned), {self.seconds:.1f}s, {rate:.2f} img/s",
                 *self.details(), f"errors by kind: {errors}"]
        if self.files_not_read:
            shown = ", ".join(self.files_not_read[:5]) + (" ..." if len(self.files_not_read) > 5 else "")
            parts.append(f"{len(self.files_not_read)} files not read (not images): {shown}")
        return "; ".join(parts)


@dataclass
class Work:
    """One input on its way through the engine; `tag` is the caller's (e.g. its output shard)."""

    tag: Any
    item: SourceItem


class _DecodeImages(torch.utils.data.Dataset):
    """Indexed by `Work` itself: decodes its image in a DataLoader worker."""

    def __init__(self, max_pixels: int, max_bytes: int):
        self.max_pixels, self.max_bytes = max_pixels, max_bytes

    def __getitem__(self, work: Work) -> tuple[Work, Any, str | None, str | None]:
        item = work.item
        if item.error or item.image is None:
            return work, None, "input", item.error or "no image"
        try:
            image = load_image(item.image, name=item.ref or item.key, max_pixels=self.max_pixels,
                               max_bytes=self.max_bytes)
        except ImageDecodeError as error:
            return work, None, "decode", str(error)
        return work, image, None, None


def take(batch, indices: list[int]):
    """Rows `indices` of a preprocessed batch (a tensor, or a list with one entry per image)."""
    return batch[indices] if isinstance(batch, torch.Tensor) else [batch[i] for i in indices]


def join(parts: list):
    """Preprocessed batches one after the other."""
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else [row for part in parts for row in part]


@dataclass
class _Batch:
    works: list[Work]
    pixels: Any  # the preprocessed rows of the works without an error, in order (None when there are none)
    error_kinds: list[str | None]
    errors: list[str | None]


class _Preprocess:
    """collate_fn (runs in the worker): the captioner's preprocessor over the decoded images."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, decoded: list[tuple[Work, Any, str | None, str | None]]) -> _Batch:
        works = [d[0] for d in decoded]
        kinds, errors = [d[2] for d in decoded], [d[3] for d in decoded]
        good = [i for i, d in enumerate(decoded) if d[1] is not None]
        parts = []
        try:
            parts = [self.preprocessor([decoded[i][1] for i in good])] if good else []
        except Exception:  # one odd image must not fail its batch: retry one by one
            for i in list(good):
                try:
                    parts.append(self.preprocessor([decoded[i][1]]))
                except Exception as error:
                    kinds[i], errors[i] = "preprocess", f"{works[i].item.ref}: {type(error).__name__}: {error}"
        return _Batch(works, join(parts) if parts else None, kinds, errors)


def decode_batch(works: list[Work], preprocessor, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> _Batch:
    """What a DataLoader worker makes of one batch: decoded, preprocessed, bad items marked (for runners
    that decode elsewhere, e.g. in Ray tasks; `CaptionEngine.caption_batch` takes it)."""
    decode = _DecodeImages(max_pixels, max_bytes)
    return _Preprocess(preprocessor)([decode[work] for work in works])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class CaptionEngine:
    """Captions batches of `Work` with `captioner` (a backend from `mllm.infer.backends`)."""

    def __init__(self, captioner, settings: dict[str, GenerationSettings], config: EngineConfig | None = None):
        config = config or EngineConfig()
        unknown = [t for t in config.tasks if t not in TASKS or t not in settings]
        if unknown or not config.tasks:
            raise ValueError(f"tasks {list(config.tasks)}: each must be one of {TASKS} and have generation settings")
        if config.batch_size is not None:
            if config.batch_size != "auto" and config.batch_size < 1:
                raise ValueError("batch_size must be >= 1 or 'auto'")
            settings = {t: replace(s, batch_size=config.batch_size) for t, s in settings.items()}
        self.captioner, self.config = captioner, config
        self.settings = {t: self._sized(settings[t], t) for t in config.tasks}
        self.batch_limit = {t: self.settings[t].batch_size for t in config.tasks}  # halved on out-of-memory
        self.constant = {"model_id": captioner.model_id, "model_revision": captioner.model_revision,
                         "generation_settings": settings_json(self.settings, config.tasks)}

    def _sized(self, settings: GenerationSettings, task: str) -> GenerationSettings:
        if settings.batch_size != "auto":
            return settings
        size = self.captioner.auto_batch_size(settings, task)
        log.info("batch size auto (%s): %d", task, size)
        return replace(settings, batch_size=size)

    @property
    def batch_size(self) -> int:
        """Images decoded per batch: the largest of the tasks' batch sizes."""
        return max(s.batch_size for s in self.settings.values())

    def run(self, batches: Iterable[list[Work]]) -> Iterator[tuple[list[Work], list[dict[str, Any]]]]:
        """(works, rows) per batch, in order; raises `GenerationFailure` for a failure of the system."""
        workers = self.config.num_workers
        loader = DataLoader(
            _DecodeImages(self.config.max_pixels, self.config.max_bytes), batch_sampler=batches,
            collate_fn=_Preprocess(self.captioner.preprocessor), num_workers=workers,
            worker_init_fn=_worker_init if workers else None,
        )
        for batch in loader:
            yield batch.works, self.caption_batch(batch)

    def caption_items(self, items: list[SourceItem]) -> list[dict[str, Any]]:
        """Output rows for `items`, in order, in batches of `batch_size`."""
        size = self.batch_size
        return [row for _, rows in self.run([[Work(None, item) for item in items[i:i + size]]
                                            for i in range(0, len(items), size)]) for row in rows]

    def caption_batch(self, batch: _Batch) -> list[dict[str, Any]]:
        """One output row per work of a decoded batch."""
        rows = [{**empty_row(w.item.key, w.item.ref, w.item.original_caption, kind, error), **self.constant}
                for w, kind, error in zip(batch.works, batch.error_kinds, batch.errors)]
        good = [i for i, kind in enumerate(batch.error_kinds) if kind is None]  # the rows of batch.pixels
        if not good:
            return rows
        guards: dict[int, list[str]] = {}
        for task in self.config.tasks:
            for i, (text, tokens, actions, failure) in zip(good, self._generate_guarded(batch.pixels, task)):
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

    def _generate(self, pixels, task: str, settings: GenerationSettings) -> list[Any]:
        """GeneratedText per row, or the exception for a row that fails alone while others do not."""
        count, limit = len(pixels), self.batch_limit[task]
        if count > limit:
            return [r for start in range(0, count, limit)
                    for r in self._generate(take(pixels, list(range(start, min(start + limit, count)))), task,
                                            settings)]
        try:
            return list(self.captioner.generate(pixels, task, settings, loop_guard=self.config.loop_guard))
        except torch.OutOfMemoryError as error:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if count == 1:
                raise GenerationFailure(f"out of memory generating one image ({task}): {error}") from error
            self.batch_limit[task] = max(1, count // 2)
            log.warning("out of memory at batch size %d (%s): retrying at %d", count, task, self.batch_limit[task])
            return self._generate(pixels, task, settings)
        except SYSTEM_ERRORS as error:
            raise GenerationFailure(f"generation failed ({task}): {_describe(error)}") from error
        except Exception as error:
            if count == 1:
                return [error]
            results = [r for i in range(count) for r in self._generate(take(pixels, [i]), task, settings)]
            failures = [r for r in results if isinstance(r, Exception)]
            if len(failures) == count and len({_describe(f) for f in failures}) == 1:
                raise GenerationFailure(f"every row of a batch of {count} failed with the same error ({task}): "
                                        f"{_describe(failures[0])}; not about the images") from failures[0]
            return results

    def _generate_guarded(self, pixels, task: str) -> list[tuple[str | None, int | None, list[str], str | None]]:
        """(text, token count, guard actions, failure) per row."""
        settings = self.settings[task]
        processor = getattr(self.captioner, "processor", None)
        decode = processor.tokenizer.decode if processor is not None else None
        results = []
        for generated in self._generate(pixels, task, settings):
            if isinstance(generated, Exception):
                results.append((None, None, [], _describe(generated)))
                continue
            text, actions = finish_caption(generated.text, generated.token_ids, settings, self.config.loop_guard,
                                           decode)
            results.append((text, len(generated.token_ids), actions, None))
        return results


def finish_caption(text: str, token_ids: list[int], settings: GenerationSettings, guard: LoopGuard,
                   decode=None) -> tuple[str, list[str]]:
    """A generated caption as the engine outputs it, and the guard's actions: cut where a loop starts, then
    fitted to the task's word range. A loop seen in the token ids alone (a row the backend stopped before
    its words repeat enough) is cut at its token (`decode`: token ids -> text), back to a whole word."""
    actions, was_cut = [], False
    if is_looping(text, token_ids, guard):
        actions.append("cut")
        cut = cut_loop(text, guard)  # ends on a whole word: no tail left to trim
        at = find_loop(list(token_ids), guard)
        if cut == text and at is not None and decode is not None:
            cut = fit_length(decode(token_ids[:at], skip_special_tokens=True).strip(), hit_token_limit=True)[0]
        text, was_cut = cut, cut != text
    text, trimmed = fit_length(text, max_words=settings.max_words, min_words=settings.min_words,
                               hit_token_limit=not was_cut and len(token_ids) >= settings.max_new_tokens)
    if trimmed:
        actions.append("trim")
    return text.strip(), actions
