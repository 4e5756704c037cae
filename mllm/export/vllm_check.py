"""Will vLLM's LLaVA loader serve this export? Check the fields it reads, before anyone deploys.

vLLM builds `LlavaForConditionalGeneration` from `config.json` alone: the tower must be a CLIP,
SigLIP or Pixtral vision config, images square at `vision_config.image_size`, the projector a
2-layer MLP with a known activation, the feature layer inside the tower, the select strategy
`default` or `full`, and `image_token_index` a token of the LLM. It counts image tokens itself,
so that count must equal what the processor inserts and what the model was trained with. Its
CLIP / SigLIP towers load from `vision_tower.vision_model.*` weights only.

These are the fields we know of; the export tests load exports in real vLLM as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

VLLM_TOWERS = {"clip_vision_model": "CLIP", "siglip_vision_model": "SigLIP", "pixtral": "Pixtral"}
TOWERS_WITH_CLS = ("clip_vision_model",)
VLLM_ACTIVATIONS = ("gelu", "gelu_fast", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu")
STRATEGIES = ("default", "full")
HUB_TOWER_PREFIX = "vision_tower.vision_model."  # vLLM's CLIP / SigLIP towers load these names


@dataclass(frozen=True)
class VllmProblem:
    """One field vLLM cannot use, and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _feature_layers(config: dict) -> list:
    layer = config.get("vision_feature_layer", -2)
    return list(layer) if isinstance(layer, (list, tuple)) else [layer]


def check_config(config: dict) -> list[VllmProblem]:
    """Problems in a `config.json` mapping (empty: vLLM's LLaVA loader accepts it)."""
    problems: list[VllmProblem] = []

    def add(name: str, reason: str) -> None:
        problems.append(VllmProblem(name, reason))

    architectures = config.get("architectures") or []
    if architectures != ["LlavaForConditionalGeneration"]:
        add("architectures", f"{architectures} is not LlavaForConditionalGeneration; vLLM's LLaVA loader "
                             "cannot run bundled (trust_remote_code) connectors")
        return problems
    vision = config.get("vision_config") or {}
    tower = vision.get("model_type")
    if tower not in VLLM_TOWERS:
        add("vision_config.model_type", f"{tower!r} is not a tower vLLM's LLaVA supports "
                                        f"({', '.join(f'{k} ({v})' for k, v in VLLM_TOWERS.items())})")
    size = vision.get("image_size")
    if not isinstance(size, int):
        add("vision_config.image_size", f"{size!r}: vLLM needs one integer side for square images")
    if not isinstance(vision.get("patch_size"), int):
        add("vision_config.patch_size", f"{vision.get('patch_size')!r}: vLLM needs an integer patch size")
    activation = config.get("projector_hidden_act")
    if activation not in VLLM_ACTIVATIONS:
        add("projector_hidden_act", f"{activation!r} is not among vLLM's activations {VLLM_ACTIVATIONS}")
    if not isinstance(config.get("multimodal_projector_bias", True), bool):
        add("multimodal_projector_bias", f"{config.get('multimodal_projector_bias')!r} is not true/false")
    depth = vision.get("num_hidden_layers")
    for layer in _feature_layers(config):
        if not isinstance(layer, int) or (isinstance(depth, int) and not -depth - 1 <= layer <= depth):
            add("vision_feature_layer", f"{layer!r} is not a hidden-state index of a {depth}-layer tower")
    strategy = config.get("vision_feature_select_strategy")
    if strategy not in STRATEGIES:
        add("vision_feature_select_strategy", f"{strategy!r} is not one of {STRATEGIES}")
    token = config.get("image_token_index", config.get("image_token_id"))
    vocab = (config.get("text_config") or {}).get("vocab_size")
    if not isinstance(token, int):
        add("image_token_index", f"{token!r}: vLLM needs the image token's id")
    elif isinstance(vocab, int) and not 0 <= token < vocab:
        add("image_token_index", f"{token} is outside the LLM's vocabulary of {vocab}")
    if (config.get("text_config") or {}).get("quantization_config") or config.get("quantization_config"):
        add("quantization_config", "an export must hold plain merged weights, not a quantized base")
    return problems


def vllm_image_tokens(config: dict) -> int:
    """The number of image tokens vLLM's LLaVA computes for one image."""
    vision = config["vision_config"]
    count = (vision["image_size"] // vision["patch_size"]) ** 2
    count += 1 if vision["model_type"] in TOWERS_WITH_CLS else 0
    return count - 1 if config["vision_feature_select_strategy"] == "default" else count


def check_processor(config: dict, processor) -> list[VllmProblem]:
    """The processor must resize to the tower's square and insert vLLM's number of image tokens."""
    side = config["vision_config"]["image_size"]
    image = Image.new("RGB", (side * 2, side), (127, 127, 127))  # not square: resizing must make it so
    prompt = f"{processor.image_token}\nx"
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    problems = []
    height, width = inputs["pixel_values"].shape[-2:]
    if (height, width) != (side, side):
        problems.append(VllmProblem("image processor size", f"images come out {height}x{width}, but vLLM "
                                                            f"feeds the tower {side}x{side}"))
    inserted = int((inputs["input_ids"][0] == processor.image_token_id).sum())
    expected = vllm_image_tokens(config)
    if inserted != expected or config.get("image_seq_length", expected) != expected:
        problems.append(VllmProblem("image_seq_length", f"vLLM counts {expected} image tokens; the processor "
                                                        f"inserts {inserted}, the config says "
                                                        f"{config.get('image_seq_length')}"))
    return problems


def weight_names(folder: Path) -> list[str]:
    """The tensor names in a folder's safetensors files (headers only)."""
    from safetensors import safe_open

    names = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            names += list(handle.keys())
    return names


def check_weights(config: dict, names: list[str]) -> list[VllmProblem]:
    """CLIP / SigLIP tower weights must be named as in Hub checkpoints, where vLLM looks for them."""
    if (config.get("vision_config") or {}).get("model_type") not in ("clip_vision_model", "siglip_vision_model"):
        return []
    tower = [n for n in names if n.startswith("vision_tower.")]
    stray = [n for n in tower if not n.startswith(HUB_TOWER_PREFIX)]
    if not tower or stray:
        return [VllmProblem("weights", f"vLLM loads the tower from {HUB_TOWER_PREFIX}*; the checkpoint has "
                                       f"{stray[:2] or 'no tower weights'}")]
    return []


def check_vllm(folder: str | Path) -> list[VllmProblem]:
    """Check an export folder (`config.json` + processor files); empty list: ready for vLLM."""
    from transformers import AutoProcessor

    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        return [VllmProblem("config.json", f"missing in {folder}")]
    config = json.loads(path.read_text())
    problems = check_config(config)
    if problems:
        return problems
    return check_weights(config, weight_names(folder)) + check_processor(config, AutoProcessor.from_pretrained(folder))
