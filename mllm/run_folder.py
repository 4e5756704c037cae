"""The run folder: the one place that knows its files, how they are saved and how they are read.

    RUN/config.yaml        the resolved config (model sources, data, train, generation settings)
    RUN/model.safetensors  the weights not in the base models: connector, LoRA, trained tower layers,
                           and whatever was loaded from `init_from`
    RUN/<processor files>  tokenizer, image processor, mllm_processor.json
    RUN/objective.safetensors  training-only weights of the stage's objective, when it has any
                           (qformer_pretrain's text side and heads); not part of the captioner
    RUN/train_log.json     loss history, skipped records, decode failures, the precision used
    RUN/loss.png           the training curve
    RUN/checkpoint-N/      the same files plus the Trainer's optimizer state

Local paths in config.yaml are written `./inside/the/run` (relative to the folder) or absolute
(outside it), so a run folder loads from any working directory and still loads when moved or
copied; Hub ids and `pypi:` sources are written as they are. Nothing depends on the folder's name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mllm.config import Config, ModelConfig, load_config, save_config

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
OBJECTIVE_FILE = "objective.safetensors"
TRAIN_LOG_FILE = "train_log.json"
LOSS_PLOT_FILE = "loss.png"
_PATH_FIELDS = (("vision", "name_or_path"), ("llm", "name_or_path"), ("llm", "tokenizer"), (None, "init_from"))


class RunFolderError(FileNotFoundError):
    """A run folder that is missing, incomplete, or refers to something that is gone."""


def _is_local(value: str) -> bool:
    return value.startswith(("/", "./", "../"))


def _portable(value: str | None, folder: Path) -> str | None:
    """How a model source is written into `folder/config.yaml`."""
    if not value or value.startswith("pypi:") or not Path(value).exists():
        return value  # a Hub id, a packaged model, or nothing
    path, root = Path(value).resolve(), folder.resolve()
    if path == root or root in path.parents:
        return "./" + path.relative_to(root).as_posix()
    return str(path)


def _located(value: str | None, folder: Path, where: str) -> str | None:
    """A source read from `folder/config.yaml`, with local paths made absolute and checked."""
    if not value or value.startswith("pypi:"):
        return value
    inside = (folder / value).resolve()
    if not _is_local(value):
        return str(inside) if inside.exists() else value  # older run folders wrote "base/llm"
    path = Path(value) if value.startswith("/") else inside
    if not path.exists():
        raise RunFolderError(f"{folder / CONFIG_FILE}: {where} refers to {path}, which does not exist "
                             "(was it moved or deleted?)")
    return str(path)


def _map_paths(cfg: ModelConfig, fn) -> ModelConfig:
    """`cfg` with `fn(value, dotted_name)` applied to every model source path."""
    parts: dict[str | None, Any] = {"vision": cfg.vision, "llm": cfg.llm}
    changes: dict[str, Any] = {}
    for section, name in _PATH_FIELDS:
        if section is None:
            changes[name] = fn(getattr(cfg, name), f"model.{name}")
        else:
            part = parts[section]
            parts[section] = dataclasses.replace(part, **{name: fn(getattr(part, name), f"model.{section}.{name}")})
    return dataclasses.replace(cfg, vision=parts["vision"], llm=parts["llm"], **changes)


def load_run_config(folder: str | Path) -> Config:
    """The config saved in a run folder, with its local paths made absolute."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"run folder not found: {folder}")
    if not (folder / CONFIG_FILE).is_file():
        raise RunFolderError(f"{folder} is not an mllm run folder: no {CONFIG_FILE}")
    cfg = load_config(folder / CONFIG_FILE)
    return dataclasses.replace(cfg, model=_map_paths(cfg.model, lambda value, where: _located(value, folder, where)))


# ---------------------------------------------------------------- weights


def persisted_names(model: nn.Module, persist: set[str]) -> set[str]:
    """Names of the weights a run must save: the trainable ones plus `persist`."""
    return {name for name, p in model.named_parameters() if p.requires_grad} | persist


def persisted_state(model: nn.Module, persist: set[str], state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """The weights a run must save: trainable ones plus `persist`, one copy of shared tensors."""
    names = persisted_names(model, persist)
    state = state_dict if state_dict is not None else model.state_dict()
    out, seen = {}, set()
    for name in sorted(names):
        if name not in state:
            continue
        tensor = state[name]
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().to("cpu").contiguous().clone()
    return out


def gather_persisted_state(model: nn.Module, persist: set[str], keep: bool) -> dict[str, torch.Tensor]:
    """`persisted_state` of a DeepSpeed ZeRO-3 model, whose parameters are partitioned across ranks.

    Gathers one parameter at a time, only those a run saves (frozen `persist` ones included).
    A collective: every rank must call it, in the same order; ranks with `keep=False` get `{}`.
    """
    import deepspeed

    names = persisted_names(model, persist)
    state = {}
    for name, param in model.named_parameters():
        if name in names:
            with deepspeed.zero.GatheredParameters([param]):
                if keep:
                    state[name] = param.detach().to("cpu").clone()
    return persisted_state(model, persist, state) if keep else {}


def load_weights(model: nn.Module, path: Path, required: set[str] = frozenset()) -> set[str]:
    """Load a saved weights file into `model`. Every saved name must exist in the model, and every
    name in `required` (weights that only the file can supply) must be in the file."""
    if not path.is_file():
        raise RunFolderError(f"weights file not found: {path}")
    state = load_file(str(path))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if unexpected:
        raise ValueError(f"{path}: weights that this model does not have: {unexpected[:5]} ({len(unexpected)} in all)")
    missing = sorted(set(required) - set(state))
    if missing:
        raise ValueError(f"{path}: lacks weights this run needs: {missing[:5]} ({len(missing)} in all); "
                         "without them they would stay randomly initialised")
    model.load_state_dict(state, strict=False)
    return set(state)


def weights_revision(folder: str | Path) -> str:
    """The first 12 hex digits of the SHA-256 of the run's weights file: names the exact weights."""
    with open(Path(folder) / WEIGHTS_FILE, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:12]


# ---------------------------------------------------------------- saving


def save_run(built, cfg: Config, folder: str | Path, state_dict: dict | None = None) -> Path:
    """Write config, persisted weights and processor of `built` (a `mllm.model.build.Built`) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = _map_paths(built.model_config, lambda value, where: _portable(value, folder))
    save_config(dataclasses.replace(cfg, model=model_cfg), folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    save_file(persisted_state(built.model, built.persist, state_dict), str(weights),
              metadata={"format": "pt", "producer": "mllm"})
    give_default_mode(weights)
    built.processor.save_pretrained(folder)
    return folder


def save_objective_weights(folder: str | Path, state: dict[str, torch.Tensor]) -> Path:
    """The objective's training-only weights, beside the captioner's (for resuming its stage)."""
    path = Path(folder) / OBJECTIVE_FILE
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path),
              metadata={"format": "pt", "producer": "mllm"})
    give_default_mode(path)
    return path


def load_objective_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / OBJECTIVE_FILE
    if not path.is_file():
        raise RunFolderError(f"objective weights not found: {path}")
    return load_file(str(path))


def give_default_mode(path: Path) -> None:
    """safetensors writes through a 0600 temporary file; give its file the mode every other file
    gets (0644 under umask 022), so a shared folder or another user can read the weights."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_train_log(folder: str | Path, log: dict[str, Any]) -> Path:
    path = Path(folder) / TRAIN_LOG_FILE
    path.write_text(json.dumps(log, indent=1))
    return path


def read_train_log(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / TRAIN_LOG_FILE
    if not path.is_file():
        raise RunFolderError(f"{folder}: no {TRAIN_LOG_FILE} (the run has not finished)")
    return json.loads(path.read_text())
