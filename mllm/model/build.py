"""Assemble a captioner: transformers' `LlavaForConditionalGeneration` from a tower, a connector
and an LLM, each loaded on its own, plus the matching `CaptionProcessor`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration

from mllm.config import Config, ModelConfig
from mllm.data.processor import CaptionProcessor
from mllm.model.connectors import ConnectorSpec, build_connector
from mllm.model.llm import DTYPES, load_llm
from mllm.model.recipes import apply_recipe, llm_recipe
from mllm.model.towers import detect_select_strategy, hidden_state_index, load_vision_tower

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"


@dataclass
class Built:
    """A captioner ready to train or run.

    `model` is what trains (a PeftModel under LoRA); `model_config` records the resolved sources
    (materialised folders, detected feature strategy) so that the run rebuilds from its folder;
    `persist` names the weights that do not come from the base models and must be saved beside
    the trainable ones (the connector, weights loaded from `init_from`).
    """

    model: nn.Module
    processor: CaptionProcessor
    model_config: ModelConfig
    persist: set[str]


def _probe_pixels(image_processor) -> torch.Tensor:
    return image_processor(images=[Image.new("RGB", (32, 32), (127, 127, 127))], return_tensors="pt")["pixel_values"]


def assemble(cfg: ModelConfig, work_dir: Path, stage: str):
    """Load the parts and join them into one Llava model. Returns (llava, processor parts, cfg)."""
    quantize = llm_recipe(cfg, stage) == "qlora"
    tower, image_processor, vision_source = load_vision_tower(cfg.vision, work_dir / "base", cfg.seed)
    llm, tokenizer, llm_source = load_llm(cfg.llm, work_dir / "base", cfg.seed, quantize=quantize)
    pixels = _probe_pixels(image_processor)
    strategy = cfg.vision.select_strategy or detect_select_strategy(tower, pixels)
    llava_config = LlavaConfig(
        vision_config=tower.config,
        text_config=llm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(cfg.llm.image_token),
        projector_hidden_act="gelu",
        vision_feature_layer=hidden_state_index(cfg.vision.feature_layer, tower),
        vision_feature_select_strategy=strategy,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(llava_config)
    llava.model.vision_tower = tower
    llava.model.language_model = getattr(llm, llm.base_model_prefix)
    llava.lm_head = llm.get_output_embeddings()
    llava.generation_config = llm.generation_config
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        spec = ConnectorSpec(cfg.connector, tower.config.hidden_size, llm.config.hidden_size, llava_config)
        connector = build_connector(spec)
    compute_dtype = DTYPES[cfg.llm.dtype]
    llava.model.multi_modal_projector = connector.to(compute_dtype)
    tower.to(compute_dtype)
    with torch.no_grad():
        features = llava.model.get_image_features(pixel_values=pixels.to(compute_dtype)).pooler_output
    llava.config.image_seq_length = features[0].shape[0]
    resolved = dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, name_or_path=vision_source, config=None, select_strategy=strategy,
                                   image_processor=None if cfg.vision.config else cfg.vision.image_processor),
        llm=dataclasses.replace(cfg.llm, name_or_path=llm_source, config=None,
                                gguf_file=None if cfg.llm.config else cfg.llm.gguf_file,
                                tokenizer=None if cfg.llm.config else cfg.llm.tokenizer),
        init_from=None,
    )
    return llava, tokenizer, image_processor, resolved


def load_weights(model: nn.Module, path: Path) -> set[str]:
    """Load a saved weights file into `model`; every saved name must exist in the model."""
    state = load_file(str(path))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{path}: weights that this model does not have: {result.unexpected_keys[:5]} "
                         f"({len(result.unexpected_keys)} in all)")
    return set(state)


def build_captioner(cfg: Config, work_dir: str | Path, stage: str | None = None,
                    gradient_checkpointing: bool = False) -> Built:
    """Build the model for `stage` (default: `cfg.train.stage`), starting from `init_from` if set."""
    from mllm.model.checkpoint import load_run_config

    stage = stage or cfg.train.stage
    model_cfg = cfg.model
    if model_cfg.init_from:
        previous = load_run_config(model_cfg.init_from).model
        # The architecture comes from the previous run; which tower layers train is this stage's choice.
        vision = dataclasses.replace(previous.vision, trainable_layers=model_cfg.vision.trainable_layers)
        model_cfg = dataclasses.replace(model_cfg, vision=vision, llm=previous.llm,
                                        connector=previous.connector, seed=previous.seed)
    llava, tokenizer, image_processor, resolved = assemble(model_cfg, Path(work_dir), stage)
    persist = {f"model.multi_modal_projector.{name}" for name, _ in llava.model.multi_modal_projector.named_parameters()}
    if model_cfg.init_from:
        persist |= load_weights(llava, Path(model_cfg.init_from) / WEIGHTS_FILE)
    processor = CaptionProcessor(tokenizer, image_processor, model_cfg.llm.image_token,
                                 llava.config.image_seq_length, cfg.data.prompts, cfg.data.max_length,
                                 model_cfg.llm.system_prompt)
    # Track persisted weights by identity: LoRA wrapping renames the layers it wraps.
    kept = {id(p) for name, p in llava.named_parameters() if name in persist}
    model = apply_recipe(llava, resolved, stage, gradient_checkpointing)
    return Built(model, processor, resolved, {name for name, p in model.named_parameters() if id(p) in kept})
