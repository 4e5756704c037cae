"""The `hf` backend: batched captioning with transformers' `generate`, left padding, greedy / beam / sampling.

Greedy batched output equals one-at-a-time output in fp32: prompts are left-padded with an
attention mask, so every row sees the same tokens at the same positions it would see alone. Greedy
search and sampling run `generate` with the loop of `hf_decode` (finished rows leave the batch;
a looping row stops as soon as the loop guard sees the loop) and, when every row has the same
prompt, the tokens before the image (system prompt, chat header) are run once and their KV cache
repeated for every row (transformers' cache continuation); beam search is stock `generate`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from peft import PeftModel
from transformers import DynamicCache, StoppingCriteriaList

from mllm.config import DType, FrameSamplingConfig, GenerationSettings
from mllm.data.processor import CaptionProcessor
from mllm.data.visuals import Visual
from mllm.infer.backends.hf_decode import LoopStop, decode_dropping_finished
from mllm.infer.batch_size import fitting_batch_size
from mllm.infer.guards import LoopGuard
from mllm.model.recipes import unwrap
from mllm.precision import announce, resolve_dtype
from mllm.run_folder import load_run_config, weights_revision


@dataclass
class GeneratedText:
    text: str
    token_ids: list[int]  # generated ids, special tokens stripped


class ImagePreprocessor:
    """Picklable image -> pixel_values step, for DataLoader workers."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


class Captioner:
    """A loaded captioner: `caption(images, task)` or, with preprocessed pixels, `generate`; text alone,
    by the LLM without its LoRA adapter, with `generate_text`.

    `video`: how it samples videos (the run's `data.video` unless told otherwise). `adapter_merged`:
    the LoRA adapter was folded into the weights, so the LLM without it is gone (`writes_text` False)."""

    def __init__(self, model, processor: CaptionProcessor, model_id: str = "", model_revision: str | None = None,
                 video: FrameSamplingConfig | None = None, adapter_merged: bool = False):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.model_revision = model_revision
        self.video = video or FrameSamplingConfig()
        self.adapter_merged = adapter_merged
        self.preprocessor: Callable[[list[Image.Image]], torch.Tensor] = ImagePreprocessor(processor.image_processor)
        self.stop_ids = processor.stop_token_ids()

    @classmethod
    def check_settings(cls, settings) -> None:
        """Every decoding setting works here (the vLLM backend refuses some before loading)."""

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None, dtype: DType = "auto",
             video: FrameSamplingConfig | None = None) -> "Captioner":
        """Load a run folder in `dtype` (auto: from the device, `mllm.precision`), sampling videos per
        `video` (default: the run's `data.video`). LoRA is merged for speed, except when videos are cut
        into windows (`video.window_seconds`): then the adapter stays apart, for `generate_text`."""
        from mllm.model.build import load_captioner
        from mllm.model.recipes import llm_recipe

        cfg = load_run_config(model_dir)
        video = video or cfg.data.video
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_dtype(dtype, device)
        announce("captioning precision", precision)
        merge = video.window_seconds is None
        built = load_captioner(model_dir, merge=merge, device=device, dtype=precision.dtype)
        return cls(built.model, built.processor, model_id=Path(model_dir).resolve().name,
                   model_revision=weights_revision(model_dir), video=video,
                   adapter_merged=merge and llm_recipe(cfg.model, cfg.train.stage).lora)

    @property
    def writes_text(self) -> bool:
        """Whether `generate_text` can run: the LLM without its adapter is there."""
        return not self.adapter_merged

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def auto_batch_size(self, settings: GenerationSettings, task: str) -> int:
        """`batch_size: auto`: the batch that fits this device for `task`'s prompt (`mllm.infer.batch_size`)."""
        prompt = self.processor.generation_inputs([self.processor.task_prompt(task)])["input_ids"].shape[1]
        return fitting_batch_size(self.model.config.get_text_config(), prompt, settings.max_new_tokens,
                                  self.device, self.model.dtype)

    def _generate_kwargs(self, settings: GenerationSettings, prompt_length: int,
                         loop_guard: LoopGuard | None) -> dict:
        kwargs = {
            "max_new_tokens": settings.max_new_tokens,
            "num_beams": settings.num_beams,
            "do_sample": settings.do_sample,
            "repetition_penalty": settings.repetition_penalty,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
            "suppress_tokens": [self.processor.image_token_id],
        }
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        if settings.num_beams == 1:  # beam search stays stock
            kwargs["custom_generate"] = decode_dropping_finished
            if loop_guard is not None:
                kwargs["stopping_criteria"] = StoppingCriteriaList([LoopStop(loop_guard, prompt_length)])
        return kwargs

    @torch.inference_mode()
    def generate(self, pixel_values: torch.Tensor, task: str, settings: GenerationSettings | None = None,
                 prompts: list[str] | None = None, loop_guard: LoopGuard | None = None,
                 timestamps: list[tuple[float, ...] | None] | None = None) -> list[GeneratedText]:
        """Caption a batch of preprocessed images; `prompts` overrides the task's instruction per row;
        with `loop_guard`, a row whose tokens loop stops there (the engine then cuts the caption).
        `timestamps[i]`: row i is a clip with frames at those times (None: an image); `pixel_values`
        then hold every row's frames, row after row."""
        settings = settings or GenerationSettings()
        rows = len(timestamps) if timestamps is not None else len(pixel_values)
        if settings.num_beams > 1 and any(t is not None and len(t) != 1 for t in timestamps or []):
            raise ValueError("beam search over clips is not supported: transformers repeats each image for "
                             "the beams, not each row's frames")
        prompts = prompts or [self.processor.task_prompt(task)] * rows
        inputs = self.processor.generation_inputs(prompts, timestamps)
        dtype = next(unwrap(self.model).model.multi_modal_projector.parameters()).dtype
        input_ids, attention_mask = inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        kwargs = self._generate_kwargs(settings, input_ids.shape[1], loop_guard)
        if settings.num_beams == 1 and (cache := self._shared_prefix(input_ids, attention_mask)) is not None:
            kwargs["cache"] = cache
        output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                     pixel_values=pixel_values.to(self.device, dtype), **kwargs)
        return self._texts(output[:, input_ids.shape[1]:].tolist())

    @torch.inference_mode()
    def generate_text(self, prompts: list[str], task: str, settings: GenerationSettings | None = None,
                      loop_guard: LoopGuard | None = None) -> list[GeneratedText]:
        """Answer text prompts (no image) with the LLM alone, its LoRA adapter switched off (peft's
        `disable_adapter()`; a run without an adapter answers with its LLM as it is): e.g. the whole-video
        caption written from window captions. Decoding as `generate`, `task` naming the settings' task."""
        if not self.writes_text:
            raise RuntimeError("the LoRA adapter is merged into the weights: load the captioner with windows on "
                               "(video.window_seconds) to keep it apart")
        settings = settings or GenerationSettings()
        inputs = self.processor.text_generation_inputs(prompts)
        input_ids, attention_mask = inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        kwargs = self._generate_kwargs(settings, input_ids.shape[1], loop_guard)
        with self.model.disable_adapter() if isinstance(self.model, PeftModel) else contextlib.nullcontext():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._texts(output[:, input_ids.shape[1]:].tolist())

    def _texts(self, new_tokens: list[list[int]]) -> list[GeneratedText]:
        """Generated ids per row -> text, up to the first stop token, special tokens dropped."""
        special = set(self.processor.tokenizer.all_special_ids)
        results = []
        for row in new_tokens:
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            ids = [t for t in row[:cut] if t not in special]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(GeneratedText(text, ids))
        return results

    def _shared_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DynamicCache | None:
        """The KV cache of the tokens every row starts with, before the image, run once for one row and
        repeated for all; None when the rows do not share such a prefix (padding, different prompts)."""
        if len(input_ids) < 2 or not bool(attention_mask.all()):
            return None
        agree = (input_ids == input_ids[:1]).all(0) & (input_ids[0] != self.processor.image_token_id)
        length = int(agree.long().cumprod(0).sum())
        if length < 2:
            return None
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        self.model(input_ids=input_ids[:1, :length], cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(len(input_ids))
        return cache

    def caption(self, images: list[Image.Image], task: str, settings: GenerationSettings | None = None,
                prompts: list[str] | None = None) -> list[GeneratedText]:
        """Caption PIL images in batches of `settings.batch_size`."""
        settings = settings or GenerationSettings()
        size = self.auto_batch_size(settings, task) if settings.batch_size == "auto" else settings.batch_size
        out: list[GeneratedText] = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            chunk_prompts = prompts[start:start + size] if prompts else None
            out += self.generate(self.preprocessor(chunk), task, settings, chunk_prompts)
        return out

    def caption_visuals(self, visuals: list[Visual], task: str,
                        settings: GenerationSettings | None = None) -> list[GeneratedText]:
        """Caption images and clips (`mllm.data.visuals.Visual`, e.g. from `load_visual`), one row
        each, in batches of `settings.batch_size` rows (`auto`: the one-image batch over the most frames)."""
        settings = settings or GenerationSettings()
        size = settings.batch_size
        if size == "auto":
            size = max(1, self.auto_batch_size(settings, task) // max(len(v.images) for v in visuals))
        out: list[GeneratedText] = []
        for start in range(0, len(visuals), size):
            chunk = visuals[start:start + size]
            pixels = self.preprocessor([image for visual in chunk for image in visual.images])
            out += self.generate(pixels, task, settings, timestamps=[visual.timestamps for visual in chunk])
        return out
