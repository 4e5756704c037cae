"""The vLLM engine: offline `vllm.LLM` on the run's stock LLaVA export, in vLLM's own virtualenv.

    captioner = VllmCaptioner.load("runs/quickstart")           # duck-types mllm.infer.backends.hf.Captioner
    recaption(captioner, source, config, settings)                # the recaption job, unchanged

vLLM pins its own torch and transformers, so it runs in `.venv-vllm` (`scripts/setup_vllm.sh`)
as a worker process (`vllm_worker.py`) that speaks JSON lines; nothing is pickled across.
A run folder is exported once into the cache (`$MLLM_CACHE/vllm/<run>-<weights revision>`);
LoRA runs keep their adapter unmerged and vLLM serves it with its LoRA support (Llava's
language model supports it). Prompts go over as token ids rendered by the run's own processor
and captions come back as token ids decoded by its tokenizer, so both match the HF engine's.
A clip is one prompt with an image per frame (vLLM's LLaVA takes several); a text prompt without
the LoRA request is the LLM without its adapter (`generate_text`, whole-video captions).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import weakref
from collections import deque
from pathlib import Path

import torch
from PIL import Image

from mllm.errors import UsageError
from mllm.config import DType, FrameSamplingConfig, GenerationSettings
from mllm.data.processor import CaptionProcessor
from mllm.data.visuals import clip_sampling
from mllm.infer.backends.hf import Captioner, GeneratedText
from mllm.infer.guards import LoopGuard, loop_end
from mllm.model.sources import atomic_folder, cache_dir
from mllm.precision import announce, resolve_dtype
from mllm.run_folder import load_run_config, weights_revision

WORKER = Path(__file__).with_name("vllm_worker.py")
REPO = Path(__file__).resolve().parents[3]
LOG_LINES = 40  # worker log lines shown when vLLM fails
AUTO_REQUESTS = 256  # requests per call for batch_size auto


class VllmEngineError(UsageError):
    """vLLM cannot run this model or these settings (the message says why and what to do instead)."""


class VllmWorkerDied(BaseException):
    """The vLLM worker process is gone. Not an `Exception`, so that the recaption job's per-row
    error handling does not turn every remaining row into an error row: the job stops, keeps the
    shards it wrote, and a rerun resumes."""


def worker_python() -> Path:
    """The Python that has vLLM: $MLLM_VLLM_PYTHON, else the repo's .venv-vllm ($MLLM_VLLM_VENV)."""
    if os.environ.get("MLLM_VLLM_PYTHON"):
        return Path(os.environ["MLLM_VLLM_PYTHON"])
    python = REPO / os.environ.get("MLLM_VLLM_VENV", ".venv-vllm") / "bin" / "python"
    if not python.is_file():
        raise VllmEngineError(f"the vLLM engine runs vLLM in its own virtualenv and found none at "
                              f"{python.parent.parent}: run `bash scripts/setup_vllm.sh`, or set MLLM_VLLM_PYTHON to "
                              "a Python that has vllm")
    return python


class PngEncoder:
    """Picklable preprocessor for DataLoader workers: decoded images -> their PNG bytes, one entry
    per image (the engine takes rows of such a list as it does of a tensor)."""

    def __call__(self, images: list[Image.Image]) -> list[bytes]:
        pngs = []
        for image in images:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG", compress_level=1)
            pngs.append(buffer.getvalue())
        return pngs


def sampling_params(settings: GenerationSettings, stop_ids: list[int], image_token: str) -> dict:
    """vLLM `SamplingParams` arguments for mllm's decoding settings (as the HF engine decodes)."""
    if settings.num_beams != 1:
        raise VllmEngineError(f"num_beams={settings.num_beams}: vLLM's generate has no beam search; "
                              "use --engine hf or num_beams 1")
    params = {"max_tokens": settings.max_new_tokens, "stop_token_ids": list(stop_ids),
              "repetition_penalty": settings.repetition_penalty,
              "bad_words": [image_token],  # as the HF engine's suppress_tokens: never emit the placeholder
              "detokenize": False, "skip_special_tokens": False}
    if settings.do_sample:
        params.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        params["temperature"] = 0.0  # greedy
    if settings.no_repeat_ngram_size:  # vLLM's n-gram rule looks at the caption, HF's at prompt and caption
        params["extra_args"] = {"ngram_size": settings.no_repeat_ngram_size, "window_size": settings.max_new_tokens}
    return params


def export_for_vllm(run_dir: str | Path, revision: str, cache: Path | None = None) -> tuple[Path, Path | None]:
    """The run as a stock LLaVA folder (LoRA adapter kept apart), exported once per weights revision."""
    from mllm.export.hf import ADAPTER_DIR, STOCK_CONNECTORS, export_checkpoint
    from mllm.export.vllm_check import check_vllm

    run_dir = Path(run_dir)
    connector = load_run_config(run_dir).model.connector.type
    if connector not in STOCK_CONNECTORS:
        raise VllmEngineError(f"{run_dir}: vLLM serves stock LLaVA (connectors {STOCK_CONNECTORS}), not the "
                              f"{connector!r} connector; use --engine hf")
    target = (cache or cache_dir() / "vllm") / f"{run_dir.resolve().name}-{revision}"
    folder = atomic_folder(target, lambda tmp: export_checkpoint(run_dir, tmp, adapter=True))
    problems = check_vllm(folder)
    if problems:
        raise VllmEngineError(f"{run_dir}: vLLM cannot serve this model: " + "; ".join(map(str, problems)))
    adapter = folder / ADAPTER_DIR
    return folder, adapter if adapter.is_dir() else None


class VllmWorker:
    """The worker process: one JSON line per request, one per answer."""

    def __init__(self, python: Path, setup: dict, log: Path, device: str | None = None):
        self.setup = setup
        env = dict(os.environ)
        if device and device.startswith("cuda:"):  # the worker sees that GPU alone, as its cuda:0
            index = int(device.split(":", 1)[1])
            visible = env.get("CUDA_VISIBLE_DEVICES")
            env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as stderr:  # -I: neither mllm's PYTHONPATH nor this folder (it has vllm.py)
            self.process = subprocess.Popen([str(python), "-I", str(WORKER)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        self._finalizer = weakref.finalize(self, _stop, self.process, log)
        answer = self.request(setup)
        if "error" in answer:
            self.close()
            raise VllmEngineError(f"{answer['error']} (log: {log})")
        self.version = answer["vllm"]

    def request(self, message: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            self.process.wait()
            with open(self.log, errors="replace") as log:
                tail = "".join(deque(log, LOG_LINES))
            raise VllmWorkerDied(f"the vLLM worker exited (code {self.process.returncode}); the end of {self.log}:\n"
                                 + tail)
        return json.loads(line)

    def close(self) -> None:
        """End the worker (also done when this object is collected or Python exits)."""
        self._finalizer()


def _stop(process: subprocess.Popen, log: Path) -> None:
    """EOF on the worker's stdin ends it; its log is removed when it exits cleanly."""
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode == 0:
        log.unlink(missing_ok=True)


class VllmCaptioner:
    """A run served by vLLM, with what the recaption job uses of `Captioner`."""

    writes_text = True  # a request without the LoRA request is answered by the LLM without its adapter

    def __init__(self, worker: VllmWorker, processor: CaptionProcessor, model_id: str, model_revision: str,
                 video: FrameSamplingConfig | None = None):
        self.worker = worker
        self.processor = processor
        self.model_id = model_id
        self.model_revision = model_revision
        self.video = video or FrameSamplingConfig()
        self.preprocessor = PngEncoder()
        self.stop_ids = processor.stop_token_ids()
        self._prompt_ids: dict[str, list[int]] = {}

    def prompt_ids(self, prompt: str, timestamps: tuple[float, ...] | None = None) -> list[int]:
        """The rendered prompt's token ids with one image token per image or frame (vLLM expands them)."""
        if timestamps is not None:
            return self.processor.tokenizer(self.processor.render_prompt(prompt, timestamps),
                                            add_special_tokens=False)["input_ids"]
        if prompt not in self._prompt_ids:
            text = self.processor.render_prompt(prompt)
            self._prompt_ids[prompt] = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompt_ids[prompt]

    @classmethod
    def check_settings(cls, settings) -> None:
        """Refuse decoding settings vLLM cannot honour, before anything loads."""
        for task_settings in settings:
            sampling_params(task_settings, [], "")

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None, dtype: DType = "auto",
             video: FrameSamplingConfig | None = None, engine_args: dict | None = None,
             cache: Path | None = None) -> "VllmCaptioner":
        """Export `model_dir` (a run folder) if needed and start vLLM on it, computing in `dtype` as
        the HF engine would (auto: from the device, `mllm.precision`), taking clips of as many frames as
        `video` (default: the run's `data.video`) samples."""
        python = worker_python()
        revision = weights_revision(model_dir)
        folder, adapter = export_for_vllm(model_dir, revision, cache)
        precision = resolve_dtype(dtype, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        announce("captioning precision", precision)
        cfg = load_run_config(model_dir)
        video = video or cfg.data.video
        processor = CaptionProcessor.from_pretrained(model_dir)
        setup = {"model": str(folder), "max_images": clip_sampling(video, processor.image_seq_length).max_frames,
                 "engine_args": {"dtype": str(precision.dtype).removeprefix("torch."), **(engine_args or {})},
                 "lora": {"path": str(adapter), "rank": cfg.model.tuning.lora_r} if adapter else None}
        worker = VllmWorker(python, setup, folder.with_name(f"{folder.name}.{os.getpid()}.log"), device)
        return cls(worker, processor, Path(model_dir).resolve().name, revision, video)

    def auto_batch_size(self, settings: GenerationSettings, task: str) -> int:
        """`batch_size: auto`: vLLM schedules the requests it is given itself (continuous batching in the
        KV-cache memory it reserved), so auto sends it `AUTO_REQUESTS` at a time to keep it busy."""
        return AUTO_REQUESTS

    def generate(self, images: list[bytes], task: str, settings: GenerationSettings | None = None,
                 prompts: list[str] | None = None, loop_guard: LoopGuard | None = None,
                 timestamps: list[tuple[float, ...] | None] | None = None) -> list[GeneratedText]:
        """Caption a batch of encoded images; `prompts` overrides the task's instruction per row;
        `timestamps[i]`: row i is a clip with frames at those times (None: an image), `images` then
        holding every row's frames, row after row. vLLM decodes a looping row to its end; with
        `loop_guard` its tokens are cut where the HF engine would have stopped the row (`loop_end`), so
        both engines give the same caption."""
        settings = settings or GenerationSettings()
        timestamps = timestamps or [None] * len(images)
        prompts = prompts or [self.processor.task_prompt(task)] * len(timestamps)
        rows, at = [], 0
        for times in timestamps:
            count = 1 if times is None else len(times)
            rows.append([base64.b64encode(png).decode("ascii") for png in images[at:at + count]])
            at += count
        return self._answer({"prompts": [self.prompt_ids(p, t) for p, t in zip(prompts, timestamps)],
                             "images": rows, "lora": True,
                             "sampling": sampling_params(settings, self.stop_ids, self.processor.image_token)},
                            loop_guard)

    def generate_text(self, prompts: list[str], task: str, settings: GenerationSettings | None = None,
                      loop_guard: LoopGuard | None = None) -> list[GeneratedText]:
        """Answer text prompts (no image) with the LLM without its LoRA adapter (no LoRA request), e.g. a
        whole-video caption from window captions; as the HF engine's `generate_text`."""
        settings = settings or GenerationSettings()
        return self._answer({"prompts": [self.processor.text_prompt_ids(p) for p in prompts],
                             "images": [[] for _ in prompts], "lora": False,
                             "sampling": sampling_params(settings, self.stop_ids, self.processor.image_token)},
                            loop_guard)

    def _answer(self, request: dict, loop_guard: LoopGuard | None) -> list[GeneratedText]:
        answer = self.worker.request(request)
        if "error" in answer:
            raise RuntimeError(f"vLLM: {answer['error']}")
        tokenizer = self.processor.tokenizer
        special = set(tokenizer.all_special_ids)
        results = []
        for row in answer["outputs"]:
            row = row[:next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))]
            if loop_guard is not None:
                row = row[:loop_end(row, loop_guard)]
            kept = [t for t in row if t not in special]
            results.append(GeneratedText(tokenizer.decode(kept, skip_special_tokens=True).strip(), kept))
        return results

    # PIL images in batches of settings.batch_size, through self.preprocessor and self.generate
    caption = Captioner.caption

    def close(self) -> None:
        self.worker.close()
