"""Write a trained run as a Hub-style transformers checkpoint with its `AutoProcessor` files.

- a stock connector (`mlp2x_gelu`): a stock `LlavaForConditionalGeneration` + `LlavaProcessor`;
  loads in transformers (and vLLM) with no custom code.
- any other connector: the same Llava model with the projector swapped, its code bundled and named
  in `auto_map` (`mllm/export/remote_code/` plus the connector's own file as `mllm_connector.py`);
  loads with `trust_remote_code=True`.

LoRA is merged first (a QLoRA base is dequantized); the processor is checked to expand the image
token and render the prompt exactly as the run's `CaptionProcessor` does, so greedy captions match.
Its chat template takes string and multimodal (list) message content (`mllm.export.chat_template`).
Weights are written in the Hub LLaVA layout (`vision_tower.vision_model.*`, `language_model.model.*`)
that vLLM's loader and transformers both read.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import GenerationConfig, LlavaForConditionalGeneration, LlavaProcessor
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from mllm.config import Config, ConnectorConfig, GenerationSettings, WeightsDType
from mllm.data.processor import CaptionProcessor
from mllm.export.chat_template import message_forms, multimodal_chat_template
from mllm.model.build import load_captioner
from mllm.model.connectors import CONNECTORS, ConnectorSpec, connector_entry
from mllm.model.recipes import dequantize_base, llm_recipe, unwrap
from mllm.run_folder import CONFIG_FILE, give_default_mode, load_run_config

STOCK_CONNECTORS = tuple(name for name, entry in CONNECTORS.items() if entry.stock)
REMOTE_CODE = Path(__file__).with_name("remote_code")
CONNECTOR_FILE = "mllm_connector.py"  # a bundled export's copy of its connector's own file
TRAINING_CONFIG_FILE = "training_config.yaml"
ADAPTER_DIR = "lora"  # with export_checkpoint(adapter=True): the LoRA adapter, PEFT format


class ExportError(ValueError):
    """A run that cannot be exported as asked (the message says which part and why)."""


@dataclass
class Exported:
    """An export folder and what a loader needs to know about it."""

    folder: Path
    connector: str
    bundled: bool  # True: modeling code in the folder, load with trust_remote_code=True
    config: Config  # the run's training config
    image_seq_length: int
    prompts: dict[str, str]  # task -> instruction
    rendered_prompts: dict[str, str]  # task -> the chat-templated prompt with one image token
    stop_token_ids: list[int]
    max_new_tokens: int
    system_prompt: str | None = None  # a system message the prompt starts with, if the run set one
    vllm_problems: list = field(default_factory=list)  # filled by mllm.export.vllm_check
    adapter: Path | None = None  # the unmerged LoRA adapter's folder (export_checkpoint(adapter=True))

    @property
    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


def _probe_image(image_processor) -> Image.Image:
    size = getattr(image_processor, "size", None) or {}
    side = size.get("height") or size.get("shortest_edge") or 224
    return Image.new("RGB", (side, side), (127, 127, 127))


def _check_plain(llava: LlavaForConditionalGeneration, run_dir: Path) -> None:
    """After merging, every weight must be a plain float tensor and the config free of quantization."""
    quantized = [n for n, p in llava.named_parameters() if type(p).__name__ in ("Params4bit", "Int8Params")]
    if quantized or getattr(llava.config.text_config, "quantization_config", None) is not None:
        raise ExportError(f"{run_dir}: the merged model still holds quantized weights ({quantized[:3]}); "
                          "merge_lora must dequantize the 4-bit base first")


def generation_config(llava, processor: CaptionProcessor, settings: GenerationSettings) -> GenerationConfig:
    """The run's decoding settings for the detailed task, with the template's stop tokens."""
    gen = copy.deepcopy(llava.generation_config)
    gen.update(
        eos_token_id=processor.stop_token_ids(),
        pad_token_id=processor.tokenizer.pad_token_id,
        suppress_tokens=[processor.image_token_id],  # as mllm's Captioner: never emit the placeholder
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
    )
    if settings.do_sample:
        gen.update(temperature=settings.temperature, top_p=settings.top_p)
    return gen


def chat_template(processor: CaptionProcessor) -> str:
    """The LLM's template, taking both message forms and starting with the run's system prompt."""
    return multimodal_chat_template(processor.tokenizer.chat_template, processor.image_token, processor.system_prompt)


def hub_layout(model) -> None:
    """Make `save_pretrained` write the weight names Hub checkpoints use.

    transformers renames checkpoint keys on load (its conversion mapping: `vision_tower.vision_model.*`
    into the flat tower of transformers 5) and reverses what it used on save. For a model it did not
    load, it drops the prefix changes (it cannot know whether the prefix was there), so an
    assembled Llava would save `vision_tower.embeddings.*`, which vLLM's loader rejects. mllm
    assembles its Llava from parts, so it states the mapping a Hub checkpoint is loaded with.
    """
    model._weight_conversions = get_model_conversion_mapping(model, add_legacy=False)


def stock_processor(processor: CaptionProcessor, config) -> LlavaProcessor:
    """A `LlavaProcessor` whose `<image>` expansion gives the run's `image_seq_length` tokens.

    LlavaProcessor counts `(h / patch) * (w / patch) + num_additional_image_tokens` and drops one
    for the `default` strategy; CLIP-like towers add a CLS token (1), SigLIP-like ones do not (0).
    """
    pixels = processor.pixel_values([_probe_image(processor.image_processor)])
    height, width = pixels.shape[-2:]
    patch = getattr(config.vision_config, "patch_size", None)
    if not patch:
        raise ExportError(f"vision tower {config.vision_config.model_type!r} has no patch_size: "
                          "a stock LlavaProcessor cannot count its image tokens")
    patches = (height // patch) * (width // patch)
    strategy = config.vision_feature_select_strategy
    extra = config.image_seq_length - patches + (1 if strategy == "default" else 0)
    if extra not in (0, 1):
        raise ExportError(f"image_seq_length={config.image_seq_length} does not follow from a {height}x{width} "
                          f"image, patch {patch} and strategy {strategy!r}: a stock LlavaProcessor cannot "
                          "reproduce it")
    return LlavaProcessor(processor.image_processor, processor.tokenizer, patch_size=patch,
                          vision_feature_select_strategy=strategy, chat_template=chat_template(processor),
                          image_token=processor.image_token, num_additional_image_tokens=extra)


def bundled_processor(processor: CaptionProcessor):
    from mllm.export.remote_code.processing_mllm_captioner import MllmCaptionerProcessor

    MllmCaptionerProcessor.register_for_auto_class("AutoProcessor")
    return MllmCaptionerProcessor(processor.image_processor, processor.tokenizer,
                                  chat_template=chat_template(processor), image_token=processor.image_token,
                                  image_seq_length=processor.image_seq_length)


CHECK_CLIP = (0.0, 1.5)
"""Frame times of the clip the export check renders beside the image."""


def check_processor(exported, processor: CaptionProcessor) -> None:
    """The exported processor must give the prompt ids the run trained and captions with, for an
    image and for a clip (several images, their times in the text)."""
    prompt = processor.task_prompt(next(iter(processor.prompts)))
    image = _probe_image(processor.image_processor)
    for timestamps in (None, CHECK_CLIP):
        frames = [image] * (1 if timestamps is None else len(timestamps))
        expected_text = processor.render_prompt(prompt, timestamps)
        inputs = exported(images=frames, text=[expected_text], add_special_tokens=False, return_tensors="pt")
        expected = processor.prompt_ids(prompt, timestamps)
        if inputs["input_ids"][0].tolist() != expected:
            raise ExportError("the exported processor renders the prompt differently from the run's processor: "
                              f"{inputs['input_ids'][0].tolist()} != {expected}")
        if not torch.equal(inputs["pixel_values"], processor.pixel_values(frames)):
            raise ExportError("the exported image processor gives different pixel values from the run's")
        for form, messages in message_forms(processor.image_token, prompt, timestamps).items():
            rendered = exported.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if rendered != expected_text:
                raise ExportError(f"the exported chat template renders {form} message content differently from "
                                  f"the run's prompt: {rendered!r} != {expected_text!r}")


def bundled_model(llava, connector: ConnectorConfig):
    """The merged Llava as `MllmCaptionerForConditionalGeneration` (same weight names).

    Its classes are loaded as transformers loads them from the export: from the bundled files, the
    connector's own file among them, which `save_pretrained` then copies into the export.
    """
    entry = connector_entry(connector.type)
    with tempfile.TemporaryDirectory(prefix="mllm_captioner_") as code:
        for name in ("configuration_mllm_captioner.py", "modeling_mllm_captioner.py"):
            shutil.copyfile(REMOTE_CODE / name, Path(code) / name)
        shutil.copyfile(entry.module.__file__, Path(code) / CONNECTOR_FILE)
        model_class = get_class_from_dynamic_module("modeling_mllm_captioner.MllmCaptionerForConditionalGeneration",
                                                    code)
    settings = {k: v for k, v in llava.config.to_dict().items()
                if k not in ("model_type", "architectures", "transformers_version", "auto_map")}
    config = model_class.config_class(
        connector={"type": connector.type, "settings": entry.settings(ConnectorSpec.of(connector, llava.config))},
        **settings)
    model_class.config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForImageTextToText")
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(llava.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = llava.generation_config
    return model


def split_lora(model, adapter_dir: Path) -> LlavaForConditionalGeneration:
    """Save the LoRA adapter (PEFT format) into `adapter_dir`; return the base Llava without it."""
    dequantize_base(model)
    model.save_pretrained(adapter_dir, save_embedding_layers=False)
    return model.unload()


def export_checkpoint(run_dir: str | Path, out_dir: str | Path, max_shard_size: str = "4GB",
                      task: str = "detailed", adapter: bool = False, dtype: WeightsDType = "float32") -> Exported:
    """Merge and save `run_dir` into `out_dir` (model, processor, generation config, training config).

    The merge runs in float32; the weights are then written in `dtype` (float32, bfloat16, float16).
    `adapter=True`: a LoRA run is not merged; its adapter goes to `out_dir/lora` over the base weights.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = load_run_config(run_dir)
    keep_adapter = adapter and llm_recipe(cfg.model, cfg.train.stage).lora
    built = load_captioner(run_dir, merge=not keep_adapter, device="cpu")
    llava = split_lora(built.model, out_dir / ADAPTER_DIR) if keep_adapter else unwrap(built.model)
    _check_plain(llava, run_dir)
    llava.to(getattr(torch, dtype))
    for part in (llava.config.vision_config, llava.config.text_config):
        part._name_or_path = ""  # local folders of the training machine mean nothing on the Hub
    processor = built.processor
    settings = cfg.generation.get(task) or next(iter(cfg.generation.values()))
    llava.generation_config = generation_config(llava, processor, settings)
    # Batched generation pads on the left; transformers saves a tokenizer's init kwargs, not the attribute.
    processor.tokenizer.padding_side = processor.tokenizer.init_kwargs["padding_side"] = "left"
    connector = cfg.model.connector.type
    bundled = not connector_entry(connector).stock
    model = bundled_model(llava, cfg.model.connector) if bundled else llava
    hf_processor = bundled_processor(processor) if bundled else stock_processor(processor, llava.config)
    check_processor(hf_processor, processor)
    out_dir.mkdir(parents=True, exist_ok=True)
    hub_layout(model)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    for weights in out_dir.glob("*.safetensors"):
        give_default_mode(weights)
    hf_processor.save_pretrained(out_dir)
    shutil.copyfile(run_dir / CONFIG_FILE, out_dir / TRAINING_CONFIG_FILE)
    prompts = {task: processor.task_prompt(task) for task in processor.prompts}
    return Exported(out_dir, connector, bundled, cfg, llava.config.image_seq_length, prompts,
                    {task: processor.render_prompt(p) for task, p in prompts.items()},
                    processor.stop_token_ids(), settings.max_new_tokens, processor.system_prompt,
                    adapter=out_dir / ADAPTER_DIR if keep_adapter else None)
