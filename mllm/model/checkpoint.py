"""Saving and loading runs: config + the weights that are not in the base models + processor.

A run folder holds `config.yaml` (the full resolved config; local paths in it are relative to
the folder), `model.safetensors` (trainable weights, the connector, and anything loaded from
`init_from`) and the processor files. Nothing depends on the folder's name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import save_file
from torch import nn

from mllm.config import Config, ModelConfig, load_config, save_config
from mllm.data.processor import CaptionProcessor
from mllm.model.build import CONFIG_FILE, WEIGHTS_FILE, Built, build_captioner, load_weights
from mllm.model.recipes import llm_recipe, unwrap


def _portable(path: str | None, folder: Path) -> str | None:
    """A local path made relative to `folder`; Hub ids and missing paths stay as they are."""
    if path and Path(path).exists():
        return os.path.relpath(Path(path).resolve(), folder.resolve())
    return path


def _local(path: str | None, folder: Path) -> str | None:
    if path and not Path(path).is_absolute() and (folder / path).exists():
        return str((folder / path).resolve())
    return path


def _map_model_paths(cfg: ModelConfig, fn) -> ModelConfig:
    return dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, name_or_path=fn(cfg.vision.name_or_path)),
        llm=dataclasses.replace(cfg.llm, name_or_path=fn(cfg.llm.name_or_path), tokenizer=fn(cfg.llm.tokenizer)),
        init_from=fn(cfg.init_from),
    )


def load_run_config(folder: str | Path) -> Config:
    """The config saved in a run folder, with its local paths made absolute."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not an mllm run folder: no {CONFIG_FILE}")
    cfg = load_config(folder / CONFIG_FILE)
    return dataclasses.replace(cfg, model=_map_model_paths(cfg.model, lambda p: _local(p, folder)))


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


def save_run(built: Built, cfg: Config, folder: str | Path, state_dict: dict | None = None) -> Path:
    """Write config, persisted weights and processor into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run_cfg = dataclasses.replace(cfg, model=_map_model_paths(built.model_config, lambda p: _portable(p, folder)))
    save_config(run_cfg, folder / CONFIG_FILE)
    save_file(persisted_state(built.model, built.persist, state_dict), str(folder / WEIGHTS_FILE),
              metadata={"format": "pt", "producer": "mllm"})
    built.processor.save_pretrained(folder)
    return folder


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA into the LLM weights; a 4-bit base is dequantized first (no re-quantization)."""
    if not isinstance(model, PeftModel):
        return model
    llava = unwrap(model)
    text_config = llava.config.text_config
    quantization = getattr(text_config, "quantization_config", None)
    if quantization is not None:
        # The LLM was loaded in 4-bit on its own, so peft wrapped its Linear4bit layers as plain
        # LoRA layers: swap in float copies of the dequantized weights before folding LoRA in.
        from transformers.integrations.bitsandbytes import dequantize_and_replace

        dequantize_and_replace(llava, quantization, dtype=llava.lm_head.weight.dtype)
        del text_config.quantization_config
    return model.merge_and_unload()


def load_captioner(folder: str | Path, merge: bool = False, device: str | torch.device | None = None) -> Built:
    """Rebuild a saved run; `merge=True` folds LoRA into the weights (faster inference)."""
    folder = Path(folder)
    cfg = load_run_config(folder)
    stage = cfg.train.stage
    built = build_captioner(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None)),
                            work_dir=folder, stage=stage)
    load_weights(built.model, folder / WEIGHTS_FILE)
    built.processor = CaptionProcessor.from_pretrained(folder)
    if merge and llm_recipe(cfg.model, stage) in ("lora", "qlora"):
        built.model = merge_lora(built.model)
        built.persist = {n.removeprefix("base_model.model.") for n in built.persist}
    built.model.eval()
    if device is not None:
        built.model.to(device)
    return built
