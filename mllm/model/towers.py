"""Vision towers: any HF vision model (CLIP, SigLIP, ...) with its own image processor."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PreTrainedModel

from mllm.config import VisionConfig
from mllm.model.sources import materialize, resolve_source


def _image_processor_from_settings(settings: dict) -> transformers.BaseImageProcessor:
    settings = dict(settings)
    class_name = settings.pop("image_processor_type")
    cls = getattr(transformers, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"unknown image processor class {class_name!r}")
    return cls(**settings)


def _vision_part(config):
    """A full CLIP/SigLIP checkpoint config holds the tower's config as `vision_config`."""
    return getattr(config, "vision_config", None) or config


def load_vision_tower(cfg: VisionConfig, base_dir: Path, seed: int = 0):
    """Return `(tower, image_processor, source_folder)`; inline configs are materialised first."""
    if cfg.config is not None:
        if not cfg.image_processor or "image_processor_type" not in cfg.image_processor:
            raise ValueError("vision.config needs vision.image_processor with an image_processor_type")
        processor = _image_processor_from_settings(cfg.image_processor)
        source = str(materialize(cfg.config, base_dir / "vision", seed, AutoModel.from_config,
                                 processor.save_pretrained))
    elif cfg.name_or_path:
        source = resolve_source(cfg.name_or_path)
    else:
        raise ValueError("model.vision needs name_or_path or config")
    config = _vision_part(AutoConfig.from_pretrained(source, revision=cfg.revision))
    tower = AutoModel.from_pretrained(source, config=config, revision=cfg.revision, dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(source, revision=cfg.revision)
    if cfg.image_processor and cfg.config is None:
        for key, value in cfg.image_processor.items():
            setattr(processor, key, value)
    return tower, processor, source


def encoder_layers(tower: PreTrainedModel) -> torch.nn.ModuleList:
    """The tower's transformer blocks, for partial unfreezing."""
    for path in ("vision_model.encoder.layers", "encoder.layers", "encoder.layer"):
        node = tower
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise ValueError(f"cannot find the encoder layers of {type(tower).__name__}; use trainable_layers 0 or -1")


def detect_select_strategy(tower: PreTrainedModel, pixel_values: torch.Tensor) -> str:
    """'default' when the tower prepends a CLS token to its patch tokens, else 'full'."""
    config = tower.config
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if not size or not patch:
        return "full"
    with torch.no_grad():
        seq_len = tower(pixel_values=pixel_values).last_hidden_state.shape[1]
    return "default" if seq_len == (size // patch) ** 2 + 1 else "full"


def hidden_state_index(layer: int, tower: PreTrainedModel) -> int:
    """`feature_layer` as the negative index into the tower's hidden states (embeddings first).

    transformers 5 asks the tower for hidden states with `output_hidden_states=<the layer>`, so a
    layer of 0 (the patch embeddings) reads as "none" and fails; -(depth + 1) is the same layer.
    """
    depth = tower.config.num_hidden_layers
    if not -depth - 1 <= layer <= depth:
        raise ValueError(f"model.vision.feature_layer={layer} is not a hidden state of a {depth}-layer tower "
                         f"(0..{depth}, or -{depth + 1}..-1)")
    return layer - depth - 1 if layer >= 0 else layer
