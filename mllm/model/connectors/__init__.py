"""Connectors: a registry of small modules mapping vision features to LLM embeddings.

Each connector maps `(batch, vision_tokens, vision_width * feature_layers)` to
`(batch, image_tokens, llm_width)` and replaces `multi_modal_projector` inside transformers'
`LlavaModel`, so the rest of the model (image-token merge, generation, KV cache) stays stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from mllm.config import ConnectorConfig


@dataclass(frozen=True)
class ConnectorSpec:
    """What a connector needs to know about the two models it joins."""

    config: ConnectorConfig
    vision_width: int
    llm_width: int
    llava_config: object  # transformers.LlavaConfig, for the stock projector


CONNECTORS: dict[str, Callable[[ConnectorSpec], nn.Module]] = {}


def register(name: str):
    def add(builder: Callable[[ConnectorSpec], nn.Module]):
        CONNECTORS[name] = builder
        return builder

    return add


def build_connector(spec: ConnectorSpec) -> nn.Module:
    try:
        builder = CONNECTORS[spec.config.type]
    except KeyError:
        raise ValueError(f"unknown connector {spec.config.type!r}; known: {sorted(CONNECTORS)}") from None
    return builder(spec)


from mllm.model.connectors import linear, mlp, qformer  # noqa: E402,F401  (registration)
