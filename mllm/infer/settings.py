"""Generation settings, resolved in one place: the run's saved `generation:` per task, then flags.

    settings = task_settings("runs/sft", ("short", "detailed"), {"max_new_tokens": 64})
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mllm.config import GenerationSettings
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
