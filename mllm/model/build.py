"""Assemble a captioner: transformers' `LlavaForConditionalGeneration` from a tower, a connector
and an LLM, each loaded on its own, plus the matching `CaptionProcessor`; or rebuild a saved run.

Dtypes: for training, the weights that train (connector, LoRA, trained tower layers, a fully
tuned LLM) stay in fp32 and autocast does the rest, while the frozen LLM and tower are loaded in
`model.llm.dtype` (auto: the training precision's dtype); for captioning, everything is in one
dtype (auto: from the hardware, `mllm.precision`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration

from mllm.config import Config, ModelConfig
from mllm.data.processor import CaptionProcessor
from mllm.errors import UsageError
from mllm.model.connectors import ConnectorEntry, ConnectorSpec, connector_entry
from mllm.model.llm import load_llm
from mllm.model.recipes import apply_recipe, check_stage, llm_recipe, merge_lora
from mllm.model.towers import detect_select_strategy, hidden_state_index, load_vision_tower
from mllm.run_folder import WEIGHTS_FILE, load_run_config, load_weights, persisted_names


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


def _inputs_in_own_dtype(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: floating inputs in the module's dtype (a frozen bf16 tower feeding an fp32
    connector works with or without autocast)."""
    dtype = next(module.parameters()).dtype

    def cast(value):
        return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def _image_tokens(connector: ConnectorEntry, cfg: ModelConfig, tower, pixels: torch.Tensor, strategy: str) -> int:
    """Tokens per image: the connector's count for the tower's patches (CLS dropped for 'default')."""
    with torch.no_grad():
        patches = tower(pixel_values=pixels).last_hidden_state.shape[1] - (strategy == "default")
    try:
        return connector.image_tokens(cfg.connector, patches)
    except ValueError as error:
        raise UsageError(f"model.connector: {error}") from None


def assemble(cfg: ModelConfig, work_dir: Path, stage: str, dtype: torch.dtype, training: bool):
    """Load the parts and join them into one Llava model. Returns (llava, tokenizer, image processor,
    resolved model config). `dtype` is the frozen weights' dtype (all weights', when not `training`)."""
    recipe = llm_recipe(cfg, stage)
    tower, image_processor, vision_source = load_vision_tower(cfg.vision, work_dir / "base", cfg.seed)
    pixels = _probe_pixels(image_processor)
    strategy = cfg.vision.select_strategy or detect_select_strategy(tower, pixels)
    connector = connector_entry(cfg.connector.type)
    image_tokens = _image_tokens(connector, cfg, tower, pixels, strategy)
    llm_dtype = torch.float32 if training and recipe.trains_llm else dtype
    llm, tokenizer, llm_source = load_llm(cfg.llm, work_dir / "base", llm_dtype, cfg.seed, quantize=recipe.quantize)
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
        llava.model.multi_modal_projector = connector.build(ConnectorSpec.of(cfg.connector, llava_config))
    with torch.no_grad():  # tower and connector are still fp32 here
        features = llava.model.get_image_features(pixel_values=pixels).pooler_output
    if features[0].shape[0] != image_tokens:
        raise RuntimeError(f"the {cfg.connector.type} connector gives {features[0].shape[0]} tokens per image; "
                           f"its registry entry says {image_tokens}")
    llava.config.image_seq_length = image_tokens
    if not (training and cfg.vision.trainable_layers):
        tower.to(dtype)
    if not training:
        llava.model.multi_modal_projector.to(dtype)
    for module in (tower, llava.model.multi_modal_projector):
        module.register_forward_pre_hook(_inputs_in_own_dtype, with_kwargs=True)
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


def _connector_names(llava: LlavaForConditionalGeneration) -> set[str]:
    return {f"model.multi_modal_projector.{name}" for name, _ in llava.model.multi_modal_projector.named_parameters()}


def build_captioner(cfg: Config, work_dir: str | Path, stage: str | None = None, *,
                    dtype: torch.dtype = torch.float32, training: bool = True,
                    gradient_checkpointing: bool = False) -> Built:
    """Build the model for `stage` (default: `cfg.train.stage`), starting from `init_from` if set.
    `dtype`: the frozen weights' dtype (see the module docstring)."""
    stage = stage or cfg.train.stage
    model_cfg = cfg.model
    if model_cfg.init_from:
        previous = load_run_config(model_cfg.init_from).model
        # The architecture comes from the previous run; which tower layers train is this stage's choice.
        vision = dataclasses.replace(previous.vision, trainable_layers=model_cfg.vision.trainable_layers)
        llm = dataclasses.replace(previous.llm, dtype=model_cfg.llm.dtype)  # the dtype is this stage's choice too
        model_cfg = dataclasses.replace(model_cfg, vision=vision, llm=llm, connector=previous.connector,
                                        seed=previous.seed)
    check_stage(model_cfg, stage)
    llava, tokenizer, image_processor, resolved = assemble(model_cfg, Path(work_dir), stage, dtype, training)
    persist = _connector_names(llava)
    if model_cfg.init_from:
        persist |= load_weights(llava, Path(model_cfg.init_from) / WEIGHTS_FILE, required=persist)
    processor = CaptionProcessor(tokenizer, image_processor, model_cfg.llm.image_token,
                                 llava.config.image_seq_length, cfg.data.prompts, cfg.data.max_length,
                                 model_cfg.llm.system_prompt)
    # Track persisted weights by identity: LoRA wrapping renames the layers it wraps.
    kept = {id(p) for name, p in llava.named_parameters() if name in persist}
    model = apply_recipe(llava, resolved, stage, gradient_checkpointing)
    return Built(model, processor, resolved, {name for name, p in model.named_parameters() if id(p) in kept})


def load_captioner(folder: str | Path, merge: bool = False, device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> Built:
    """Rebuild a saved run in `dtype`; `merge=True` folds LoRA into the weights (faster inference)."""
    folder = Path(folder)
    cfg = load_run_config(folder)
    stage = cfg.train.stage
    if device is not None and torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))  # bitsandbytes puts a 4-bit LLM on the current device
    built = build_captioner(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None)),
                            work_dir=folder, stage=stage, dtype=dtype, training=False)
    load_weights(built.model, folder / WEIGHTS_FILE, required=persisted_names(built.model, built.persist))
    built.processor = CaptionProcessor.from_pretrained(folder)
    if merge and llm_recipe(cfg.model, stage).lora:
        built.model = merge_lora(built.model)
        built.persist = {n.removeprefix("base_model.model.") for n in built.persist}
    built.model.eval()
    if device is not None:
        built.model.to(device)
    return built

