"""Configuration of an mllm captioner whose connector is not LLaVA's MLP (bundled with the model).

Self-contained: imports transformers only, so it works from a Hub repo with `trust_remote_code=True`.
"""

from transformers import LlavaConfig


class MllmCaptionerConfig(LlavaConfig):
    """`LlavaConfig` plus `connector`: `{"type": NAME, "settings": {...}}`, the arguments of the
    `Connector` in the bundled `mllm_connector.py`."""

    model_type = "mllm_captioner"

    def __init__(self, connector: dict | None = None, **kwargs):
        self.connector = dict(connector or {})
        super().__init__(**kwargs)
