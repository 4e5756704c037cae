"""Generation settings, resolved in one place: the run's saved `generation:` per task, then flags;
and how videos are sampled: the run's saved `data.video`, then `--video key=value` flags.

    settings = task_settings("runs/sft", ("short", "detailed"), {"max_new_tokens": 64})
    video = video_settings("runs/sft", ["window_seconds=30", "max_frames=16"])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mllm.config import ConfigError, FrameSamplingConfig, GenerationSettings, apply_overrides, config_from_dict
from mllm.errors import UsageError


def with_overrides(settings: GenerationSettings, **overrides) -> GenerationSettings:
    """A copy of `settings` with the non-None overrides applied (CLI flags)."""
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def task_settings(model_dir: str | Path, tasks: tuple[str, ...], overrides: dict[str, Any] | None = None
                  ) -> dict[str, GenerationSettings]:
    """task -> the run's saved GenerationSettings (`generation:` in its config.yaml) with `overrides` applied."""
    from mllm.run_folder import load_run_config

    saved = load_run_config(model_dir).generation
    missing = [t for t in tasks if t not in saved]
    if missing or not tasks:
        raise UsageError(f"{model_dir}: no generation settings for tasks {missing or list(tasks)} "
                         f"(the run has {sorted(saved)})")
    return {t: with_overrides(saved[t], **(overrides or {})) for t in tasks}


def settings_json(settings: dict[str, GenerationSettings], tasks: tuple[str, ...]) -> str:
    """Per-task generation settings as JSON (batch size left out: it does not change captions)."""
    return json.dumps(
        {t: {k: v for k, v in dataclasses.asdict(settings[t]).items() if k != "batch_size"} for t in tasks},
        sort_keys=True)


def video_settings(model_dir: str | Path, overrides: list[str] | None = None) -> FrameSamplingConfig:
    """The run's saved `data.video` (frame sampling, token cap, windows) with `key=value` overrides,
    checked as the config is."""
    from mllm.run_folder import load_run_config

    saved = dataclasses.asdict(load_run_config(model_dir).data.video)
    try:
        data = apply_overrides({"data": {"video": saved}}, [f"data.video.{item}" for item in overrides or []])
        return config_from_dict(data).data.video
    except ConfigError as error:
        raise UsageError(f"--video: {error}") from None
