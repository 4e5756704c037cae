"""Captioning backends: the registry the engine and the commands load a captioner from.

    captioner = load_backend("hf", "runs/sft", device="cuda:0")

An entry names its class by module path, so importing the registry imports neither transformers'
generation code nor vLLM. A backend class has `check_settings(settings)` (raises `UsageError` before anything loads) and
`load(model_dir, device=None, dtype="auto", video=None)` (`video`: the frame sampling of the videos it will
see), and on the instance:
`preprocessor` (picklable: PIL images -> a batch, a tensor or a list with one entry per image),
`generate(batch, task, settings, prompts=None, loop_guard=None)` -> one `GeneratedText(text, token_ids)`
per row, a looping row's tokens ending where `loop_guard` first sees the loop (`guards.loop_end`),
`auto_batch_size(settings, task)` (what `batch_size: auto` means for it), `processor`, `model_id`
and `model_revision`. A backend that captions clips takes `timestamps=` in `generate` (one entry per
row, None for an image; the batch then holds every row's frames in order); one that writes whole-video
captions from window captions has `writes_text` and `generate_text(prompts, task, settings, loop_guard)`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mllm.errors import UsageError

BACKENDS = {
    "hf": "mllm.infer.backends.hf:Captioner",
    "vllm": "mllm.infer.backends.vllm:VllmCaptioner",
}


def backend_class(name: str):
    """The class registered as `name`; a backend that cannot be imported here is a usage error."""
    if name not in BACKENDS:
        raise UsageError(f"unknown engine {name!r}; known: {sorted(BACKENDS)}")
    module, _, attribute = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as error:
        raise UsageError(f"engine {name!r} is not available here ({error})") from error


def load_backend(name: str, model_dir: str | Path, device: str | None = None, dtype: str = "auto", video=None):
    """A loaded captioner of backend `name` for the run folder `model_dir` (`video`: how it will sample
    videos, a `FrameSamplingConfig`; None: the run's `data.video`)."""
    return backend_class(name).load(model_dir, device=device, dtype=dtype, video=video)
