"""`batch_size: auto` (the default of `--batch-size`): the largest batch the device holds, within limits.

    size = fitting_batch_size(model.config.get_text_config(), prompt_tokens, new_tokens, device, torch.bfloat16)

One row needs its KV cache (2 x layers x KV heads x head size values per token, for the prompt with
its image tokens and every new token), the transient activations of its prefill (each token through
the attention and the MLP of one layer) and its next-token logits in fp32 (logits, scores and
probabilities). On a GPU the batch is what 85% of the free memory (`torch.cuda.mem_get_info`) holds,
at most `GPU_MAX`. On a CPU the rule is fixed: `CPU_MAX` (32, the batch docs/benchmarks.md measures on
a 2-core CPU), or less when half of the available memory (`psutil`) would not hold it.
"""

from __future__ import annotations

import torch

GPU_MAX = 1024
CPU_MAX = 32
GPU_SHARE = 0.85
CPU_SHARE = 0.5


def row_bytes(text_config, prompt_tokens: int, new_tokens: int, dtype: torch.dtype) -> int:
    """Bytes one row of a batch needs: a prompt of `prompt_tokens` (image tokens included), `new_tokens` decoded."""
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    size = dtype.itemsize
    cache = 2 * text_config.num_hidden_layers * kv_heads * head_dim * size * (prompt_tokens + new_tokens)
    prefill = prompt_tokens * (4 * text_config.hidden_size + 3 * text_config.intermediate_size) * size \
        + heads * prompt_tokens * prompt_tokens * size
    logits = 3 * text_config.vocab_size * 4
    return cache + prefill + logits


def free_bytes(device: torch.device) -> tuple[int, float, int]:
    """(bytes free on `device`, the share of them to use, the batch cap there)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], GPU_SHARE, GPU_MAX
    import psutil

    return psutil.virtual_memory().available, CPU_SHARE, CPU_MAX


def fitting_batch_size(text_config, prompt_tokens: int, new_tokens: int, device: torch.device | str,
                       dtype: torch.dtype) -> int:
    """The batch size for such rows on `device` with `dtype` weights (at least 1)."""
    free, share, cap = free_bytes(torch.device(device))
    return max(1, min(cap, int(free * share) // row_bytes(text_config, prompt_tokens, new_tokens, dtype)))
