"""The captioning engine: decoding in DataLoader workers, guarded batched generation, error rows.

    engine = CaptionEngine(captioner, settings, EngineConfig(tasks=("short", "detailed")))
    for works, rows in engine.run(batches):      # batches: lists of Work(tag, SourceItem)
        ...                                       # one output row per work, in order

`mllm recaption` (Parquet shards, `mllm.infer.recaption`) and `mllm caption` (one file,
`mllm.infer.caption`) feed it batches and write what comes back. The batches are handed to
DataLoader workers, which decode (`mllm.infer.decoding`: an image, or a video's frames sampled per
`data.video`) and preprocess (`captioner.preprocessor`) ahead of generation; batches come back in
order. A clip is one row of frames with timestamps; a video longer than `data.video.window_seconds`
is a row per window, and its whole-video caption is written from the window captions
(`mllm.infer.windows`). The backend gets the loop guard and may stop a looping row
as soon as it loops (the HF backend does, `mllm.infer.backends.hf_decode`); a looping caption is cut
where its loop starts, with no second pass, and lengths are fitted to the task's word range
(`mllm.infer.guards`). A task whose `batch_size` is `auto` gets the backend's `auto_batch_size`.

Failures about one image or video (a bad record, decoding, preprocessing, generation failing for
it alone) become rows with `error_kind` / `error`. Failures of the system raise `GenerationFailure`
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

from mllm.config import FrameSamplingConfig, GenerationSettings
from mllm.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageDecodeError
from mllm.data.video import DEFAULT_MAX_BYTES as DEFAULT_MAX_VIDEO_BYTES
from mllm.data.visuals import clip_sampling
from mllm.errors import UsageError
from mllm.infer.decoding import DecodeLimits, Decoded, Frames, VideoFacts, decode_item, join_frames
from mllm.infer.guards import LoopGuard, cut_loop, find_loop, fit_length, is_looping, word_count
from mllm.infer.rows import TASKS, empty_row
from mllm.infer.settings import settings_json
from mllm.infer.sources import SourceItem
from mllm.infer.windows import summary_prompt, video_fields

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
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    loop_guard: LoopGuard = field(default_factory=LoopGuard)
    video: FrameSamplingConfig | None = None  # how videos are sampled and windowed; None: the captioner's own

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.max_bytes, self.max_video_bytes)


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


class _DecodeInputs(torch.utils.data.Dataset):
    """Indexed by `Work` itself: decodes its image or video in a DataLoader worker."""

    def __init__(self, sampling: FrameSamplingConfig, limits: DecodeLimits):
        self.sampling, self.limits = sampling, limits

    def __getitem__(self, work: Work) -> tuple[Work, Decoded | None, str | None, str | None]:
        item = work.item
        if item.error or (item.image is None and item.video is None):
            return work, None, "input", item.error or "no image"
        try:
            return work, decode_item(item, self.sampling, self.limits), None, None
        except ImageDecodeError as error:
            return work, None, "decode", str(error)
        except Exception as error:  # a video decoder's own failure is about that file: never the job's
            if item.video is None:
                raise
            return work, None, "decode", f"{item.ref or item.key}: {_describe(error)}"


def take(batch: Frames | list, indices: list[int]) -> Frames | list:
    """Rows `indices` of what `_generate` splits: `Frames`, or a list of text prompts."""
    return batch.take(indices) if isinstance(batch, Frames) else [batch[i] for i in indices]


@dataclass
class _Batch:
    works: list[Work]
    pixels: Frames | None  # the preprocessed rows of the works without an error, in order (None: none)
    error_kinds: list[str | None]
    errors: list[str | None]
    parts: list[tuple[int, int]] = field(default_factory=list)  # per row of `pixels`: (work, window of it)
    videos: dict[int, VideoFacts] = field(default_factory=dict)  # work -> what its row says of its video


class _Preprocess:
    """collate_fn (runs in the worker): the captioner's preprocessor over the decoded images and frames."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    def _frames(self, decoded: list[Decoded]) -> Frames:
        visuals = [visual for d in decoded for visual in d.visuals]
        return Frames(self.preprocessor([image for visual in visuals for image in visual.images]),
                      [visual.timestamps for visual in visuals])

    def __call__(self, decoded: list[tuple[Work, Decoded | None, str | None, str | None]]) -> _Batch:
        works = [d[0] for d in decoded]
        kinds, errors = [d[2] for d in decoded], [d[3] for d in decoded]
        good = [i for i, d in enumerate(decoded) if d[1] is not None]
        parts = []
        try:
            parts = [self._frames([decoded[i][1] for i in good])] if good else []
        except Exception:  # one odd image must not fail its batch: retry one by one
            for i in list(good):
                try:
                    parts.append(self._frames([decoded[i][1]]))
                except Exception as error:
                    good.remove(i)
                    kinds[i], errors[i] = "preprocess", f"{works[i].item.ref}: {type(error).__name__}: {error}"
        return _Batch(works, join_frames(parts) if parts else None, kinds, errors,
                      parts=[(i, w) for i in good for w in range(len(decoded[i][1].visuals))],
                      videos={i: decoded[i][1].video for i in good if decoded[i][1].video is not None})


def decode_batch(works: list[Work], preprocessor, sampling: FrameSamplingConfig | None = None,
                 limits: DecodeLimits | None = None) -> _Batch:
    """What a DataLoader worker makes of one batch: decoded, preprocessed, bad items marked (for runners
    that decode elsewhere, e.g. in Ray tasks; `CaptionEngine.caption_batch` takes it). `sampling`: the
    engine's `sampling`."""
    decode = _DecodeInputs(sampling or FrameSamplingConfig(), limits or DecodeLimits())
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
        # The video sampling asked for, else the captioner's (the run's data.video): job records name it.
        config = replace(config, video=config.video or getattr(captioner, "video", None) or FrameSamplingConfig())
        self.captioner, self.config = captioner, config
        self.sampling = self._sampling(config.video)
        self.settings = {t: self._sized(settings[t], t) for t in config.tasks}
        self.batch_limit = {t: self.settings[t].batch_size for t in config.tasks}  # halved on out-of-memory
        self.constant = {"model_id": captioner.model_id, "model_revision": captioner.model_revision,
                         "generation_settings": settings_json(self.settings, config.tasks)}

    def _sampling(self, sampling: FrameSamplingConfig) -> FrameSamplingConfig:
        """How videos are sampled: the visual-token cap as a frame cap, as in training."""
        if sampling.window_seconds is not None and not getattr(self.captioner, "writes_text", False):
            raise UsageError(f"data.video.window_seconds={sampling.window_seconds}: this captioner cannot write a "
                             "whole-video caption from window captions (the hf engine can when loaded with these "
                             "video settings: it keeps its LoRA adapter apart); set window_seconds to null")
        processor = getattr(self.captioner, "processor", None)
        return clip_sampling(sampling, processor.image_seq_length) if processor is not None else sampling

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
            _DecodeInputs(self.sampling, self.config.limits), batch_sampler=batches,
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
        """One output row per work of a decoded batch; a windowed video's row gets its window captions
        and a whole-video caption written from them."""
        rows = [{**empty_row(w.item.key, w.item.ref, w.item.original_caption, kind, error), **self.constant}
                for w, kind, error in zip(batch.works, batch.error_kinds, batch.errors)]
        if batch.pixels is None:
            return rows
        windowed = {i: facts for i, facts in batch.videos.items() if len(facts.windows) > 1}
        windows = {i: [{} for _ in facts.windows] for i, facts in windowed.items()}  # per window: task -> result
        guards: dict[int, list[str]] = {}
        for task in self.config.tasks:
            for (i, window), result in zip(batch.parts, self._generate_guarded(batch.pixels, task)):
                if i in windows:
                    windows[i][window][task] = result
                else:
                    self._fill(rows[i], task, result, guards.setdefault(i, []))
            summarized = [i for i in windowed if self._windows_captioned(rows[i], task, windows[i], windowed[i])]
            prompts = [summary_prompt(task, windowed[i].windows, [w[task][0] for w in windows[i]]) for i in summarized]
            for i, result in zip(summarized, self._generate_guarded(prompts, task, self._write) if prompts else []):
                self._fill(rows[i], task, result, guards.setdefault(i, []), what="whole video")
        for i, actions in guards.items():
            rows[i]["guard"] = ",".join(actions) or None
        for i, facts in batch.videos.items():
            rows[i].update(video_fields(facts, windows.get(i)))
        return rows

    @staticmethod
    def _fill(row: dict[str, Any], task: str, result, guard: list[str], what: str = "") -> None:
        """Put one generated caption (or its failure) into `row`."""
        text, tokens, actions, failure = result
        if failure:
            row["error_kind"] = "generate"
            row["error"] = "; ".join(filter(None, [row["error"], f"{task}{f' ({what})' if what else ''}: {failure}"]))
            return
        row[f"{task}_caption"], row[f"{task}_tokens"] = text, tokens
        row[f"{task}_words"] = word_count(text)
        guard.extend(f"{task}:{a}" for a in actions)

    @staticmethod
    def _windows_captioned(row: dict[str, Any], task: str, windows: list[dict], facts: VideoFacts) -> bool:
        """Whether every window got a `task` caption; the row becomes an error row naming those that did not."""
        failed = [f"window {n + 1} ({start:.1f}-{end:.1f}s): {w[task][3]}"
                  for n, (w, (start, end)) in enumerate(zip(windows, facts.windows)) if w[task][3]]
        if failed:
            row["error_kind"] = "generate"
            row["error"] = "; ".join(filter(None, [row["error"], f"{task}: " + "; ".join(failed)]))
        return not failed

    def _caption(self, frames: Frames, task: str, settings: GenerationSettings) -> list[Any]:
        """The backend's captions of images and clips (timestamps are passed only when there are clips)."""
        clips = {"timestamps": frames.timestamps} if frames.has_clips else {}
        return self.captioner.generate(frames.pixels, task, settings, loop_guard=self.config.loop_guard, **clips)

    def _write(self, prompts: list[str], task: str, settings: GenerationSettings) -> list[Any]:
        """The backend's text-only answers (whole-video captions), its LLM without the LoRA adapter."""
        return self.captioner.generate_text(prompts, task, settings, loop_guard=self.config.loop_guard)

    def _generate(self, pixels, task: str, settings: GenerationSettings, call=None) -> list[Any]:
        """GeneratedText per row, or the exception for a row that fails alone while others do not. `pixels`:
        `Frames` (a batch holds at most the task's batch size in frames, a clip at least alone) or a list of
        text prompts for `call` (default: the backend's captions)."""
        call = call or self._caption
        count, limit = len(pixels), self.batch_limit[task]
        groups = pixels.chunks(limit) if isinstance(pixels, Frames) else [
            list(range(start, min(start + limit, count))) for start in range(0, count, limit)]
        if len(groups) > 1:
            return [r for group in groups for r in self._generate(take(pixels, group), task, settings, call)]
        try:
            return list(call(pixels, task, settings))
        except torch.OutOfMemoryError as error:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if count == 1:
                raise GenerationFailure(f"out of memory generating one image ({task}): {error}") from error
            size = sum(pixels.frame_counts()) if isinstance(pixels, Frames) else count
            self.batch_limit[task] = max(1, size // 2)
            log.warning("out of memory at batch size %d (%s): retrying at %d", size, task, self.batch_limit[task])
            return self._generate(pixels, task, settings, call)
        except SYSTEM_ERRORS as error:
            raise GenerationFailure(f"generation failed ({task}): {_describe(error)}") from error
        except Exception as error:
            if count == 1:
                return [error]
            results = [r for i in range(count) for r in self._generate(take(pixels, [i]), task, settings, call)]
            failures = [r for r in results if isinstance(r, Exception)]
            if len(failures) == count and len({_describe(f) for f in failures}) == 1:
                raise GenerationFailure(f"every row of a batch of {count} failed with the same error ({task}): "
                                        f"{_describe(failures[0])}; not about the images") from failures[0]
            return results

    def _generate_guarded(self, pixels, task: str, call=None
                          ) -> list[tuple[str | None, int | None, list[str], str | None]]:
        """(text, token count, guard actions, failure) per row (`pixels`, `call`: as for `_generate`)."""
        settings = self.settings[task]
        processor = getattr(self.captioner, "processor", None)
        decode = processor.tokenizer.decode if processor is not None else None
        results = []
        for generated in self._generate(pixels, task, settings, call):
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
