"""Training recipes: which parameters train in each stage, kept apart from the training loop.

- stage `qformer_pretrain` (optional, Q-Former connectors): the connector only, on BLIP-2's
  representation losses against the frozen tower (mllm.train.qformer_pretrain), no LLM in the loss;
- stage `align`: the connector only (tower and LLM frozen);
- stage `sft`: the connector plus the LLM recipe: `frozen`, `lora`, `qlora` (4-bit base + LoRA)
  or `full`;
- any stage: the last `vision.trainable_layers` tower blocks (-1: the whole tower).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import LlavaForConditionalGeneration

from mllm.config import ModelConfig, Stage
from mllm.errors import UsageError
from mllm.model.towers import encoder_layers

@dataclass(frozen=True)
class Recipe:
    """How the LLM trains in `sft`; the entry says everything loading, saving and export need."""

    quantize: bool = False  # load the LLM in 4-bit NF4 (bitsandbytes)
    lora: bool = False  # train LoRA adapters; folded into the weights for fast inference and export
    trains_llm: bool = False  # every LLM weight trains (kept in fp32)


RECIPES: dict[str, Recipe] = {
    "frozen": Recipe(),
    "lora": Recipe(lora=True),
    "qlora": Recipe(quantize=True, lora=True),
    "full": Recipe(trains_llm=True),
}


@dataclass(frozen=True)
class StageRecipe:
    """What trains in a stage (the connector always does) and the loss it trains on."""

    llm: str | None = "frozen"  # a RECIPES name; None: the config's model.tuning.recipe
    objective: str = "next_token"  # the loss: a mllm.train.objectives entry
    connector: str | None = None  # the connector type the stage is for; None: any
    packs: bool = True  # the objective trains on packed batches (train.packing) too
    clips: bool = True  # the objective trains on clip records too (else they are skipped and counted)


# In the order of the `Stage` Literal (a config lists the ones it trains under `stages:`).
STAGES: dict[str, StageRecipe] = {
    "qformer_pretrain": StageRecipe(objective="qformer_pretrain", connector="qformer", packs=False,
                                    clips=False),
    "align": StageRecipe(),
    "sft": StageRecipe(llm=None),
}


def stage_recipe(stage: str) -> StageRecipe:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {typing.get_args(Stage)}")
    return STAGES[stage]


def check_stage(cfg: ModelConfig, stage: str) -> None:
    """Refuse a stage that does not apply to this model, before anything is loaded."""
    wanted = stage_recipe(stage).connector
    if wanted and cfg.connector.type != wanted:
        raise UsageError(f"train.stage={stage} needs model.connector.type={wanted}, not {cfg.connector.type}")


def llm_recipe(cfg: ModelConfig, stage: str) -> Recipe:
    """The LLM's recipe in `stage`: the stage's own, or `model.tuning.recipe` (`sft`)."""
    return RECIPES[stage_recipe(stage).llm or cfg.tuning.recipe]


def lora_target_regex(model: LlavaForConditionalGeneration, target: str | list[str]) -> str:
    """A peft `target_modules` regex matching linear layers inside the LLM only."""
    prefix = "model.language_model."
    names = sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, nn.Linear)
    })
    if target != "all-linear":
        wanted = [target] if isinstance(target, str) else list(target)
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise ValueError(f"LoRA targets {missing} are not linear layers of the LLM; found: {names}")
        names = wanted
    return rf"{re.escape(prefix)}.*\.({'|'.join(map(re.escape, names))})"


def apply_recipe(model: LlavaForConditionalGeneration, cfg: ModelConfig, stage: str,
                 gradient_checkpointing: bool = False) -> nn.Module:
    """Freeze / unfreeze / wrap `model` for `stage`; returns the model to train (maybe a PeftModel)."""
    recipe = llm_recipe(cfg, stage)
    model.requires_grad_(False)
    if recipe.quantize:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if recipe.lora:
        lora = LoraConfig(
            r=cfg.tuning.lora_r,
            lora_alpha=cfg.tuning.lora_alpha,
            lora_dropout=cfg.tuning.lora_dropout,
            target_modules=lora_target_regex(model, cfg.tuning.lora_target),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    llava = unwrap(model)
    if recipe.trains_llm:
        llava.model.language_model.requires_grad_(True)
        llava.lm_head.requires_grad_(True)
    llava.model.multi_modal_projector.requires_grad_(True)
    layers = cfg.vision.trainable_layers
    if layers < 0:
        llava.model.vision_tower.requires_grad_(True)
    elif layers > 0:
        for block in encoder_layers(llava.model.vision_tower)[-layers:]:
            block.requires_grad_(True)
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def unwrap(model: nn.Module) -> LlavaForConditionalGeneration:
    """The Llava model inside a PeftModel (or the model itself)."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    if not isinstance(model, LlavaForConditionalGeneration):
        raise TypeError(f"not a captioner: {type(model).__name__}")
    return model


def dequantize_base(model: PeftModel) -> None:
    """Replace a 4-bit (QLoRA) base under the LoRA layers by float weights; no-op for a float base."""
    llava = unwrap(model)
    text_config = llava.config.text_config
    quantization = getattr(text_config, "quantization_config", None)
    if quantization is not None:
        # The LLM was loaded in 4-bit on its own, so peft wrapped its Linear4bit layers as plain
        # LoRA layers: swap in float copies of the dequantized weights.
        from transformers.integrations.bitsandbytes import dequantize_and_replace

        dequantize_and_replace(llava, quantization, dtype=llava.lm_head.weight.dtype)
        del text_config.quantization_config


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA into the LLM weights; a 4-bit base is dequantized first (no re-quantization)."""
    if not isinstance(model, PeftModel):
        return model
    dequantize_base(model)
    return model.merge_and_unload()
