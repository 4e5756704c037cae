"""Connectors: a registry of small modules mapping vision features to LLM embeddings.

Each connector maps `(batch, patches, vision_width)` to `(batch, image_tokens, llm_width)` and
replaces `multi_modal_projector` inside transformers' `LlavaModel`, so the rest of the model
(image-token merge, generation, KV cache) stays stock.

A connector is its own file here, its entry in `CONNECTORS` and its name in
`mllm.config.ConnectorName`. The file defines `Connector`, the module, built as
`Connector(**entry.settings(spec))`. A connector that is not stock Llava's projector is exported
with that file bundled beside `modeling_mllm_captioner.py` (mllm.export.hf), so such a file
imports torch and transformers only and its settings are JSON values.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from torch import nn

from mllm.config import ConnectorConfig
from mllm.model.connectors import linear, mlp, pixel_shuffle, qformer


@dataclass(frozen=True)
class ConnectorSpec:
    """What a connector needs to know about the two models it joins."""

    config: ConnectorConfig
    vision_width: int
    llm_width: int
    llava_config: object  # transformers.LlavaConfig, for the stock projector

    @classmethod
    def of(cls, config: ConnectorConfig, llava_config) -> ConnectorSpec:
        return cls(config, llava_config.vision_config.hidden_size, llava_config.text_config.hidden_size, llava_config)


def _one_per_patch(config: ConnectorConfig, patches: int) -> int:
    return patches


@dataclass(frozen=True)
class ConnectorEntry:
    """One connector: how it is built and what export, the processor and the model card need."""

    module: ModuleType  # its file, defining `Connector`; bundled into the export unless `stock`
    settings: Callable[[ConnectorSpec], dict]  # `Connector`'s keyword arguments; a bundled export stores them
    image_tokens: Callable[[ConnectorConfig, int], int] = _one_per_patch  # per image, from the tower's patches;
    # ValueError: the tower does not suit the connector
    stock: bool = False  # exports as stock Llava's `multi_modal_projector` (transformers and vLLM, no custom code)
    describe: Callable[[ConnectorConfig], str] = lambda config: ""  # its settings in words (model card)

    def build(self, spec: ConnectorSpec) -> nn.Module:
        return self.module.Connector(**self.settings(spec))


def _widths(spec: ConnectorSpec) -> dict:
    return {"vision_width": spec.vision_width, "llm_width": spec.llm_width}


CONNECTORS: dict[str, ConnectorEntry] = {
    "mlp2x_gelu": ConnectorEntry(mlp, lambda spec: {"config": spec.llava_config}, stock=True),
    "linear": ConnectorEntry(linear, _widths),
    "qformer": ConnectorEntry(
        qformer, lambda spec: {**_widths(spec), "num_queries": spec.config.num_queries,
                               "num_layers": spec.config.num_layers,
                               "hidden_size": spec.config.hidden_size or spec.vision_width},
        image_tokens=lambda config, patches: config.num_queries,
        describe=lambda config: f"{config.num_queries} queries"),
    "pixel_shuffle": ConnectorEntry(
        pixel_shuffle, lambda spec: {**_widths(spec), "scale": spec.config.scale},
        image_tokens=lambda config, patches: pixel_shuffle.merged_tokens(patches, config.scale),
        describe=lambda config: f"scale {config.scale}: {config.scale}x{config.scale} patches per token"),
}


def connector_entry(name: str) -> ConnectorEntry:
    try:
        return CONNECTORS[name]
    except KeyError:
        raise ValueError(f"unknown connector {name!r}; known: {sorted(CONNECTORS)}") from None
