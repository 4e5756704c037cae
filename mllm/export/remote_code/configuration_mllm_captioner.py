"""Configuration of an mllm captioner whose connector is not LLaVA's MLP (bundled with the model).

Self-contained: imports transformers only, so it works from a Hub repo with `trust_remote_code=True`.
"""

from transformers import LlavaConfig


class MllmCaptionerConfig(LlavaConfig):
    """`LlavaConfig` plus `connector`: `{"type": "linear"}` or
    `{"type": "qformer", "num_queries": N, "qformer_config": {...Blip2QFormerConfig...}}`."""

    model_type = "mllm_captioner"

    def __init__(self, connector: dict | None = None, **kwargs):
        self.connector = dict(connector or {"type": "linear"})
        super().__init__(**kwargs)
