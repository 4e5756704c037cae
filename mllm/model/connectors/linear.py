"""`linear`: one linear map from vision features to LLM embeddings (LLaVA-1's projector)."""

import torch
from torch import nn

from mllm.model.connectors import ConnectorSpec, register


class LinearProjector(nn.Module):
    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, llm_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(image_features)


@register("linear")
def build(spec: ConnectorSpec) -> LinearProjector:
    return LinearProjector(spec.vision_width, spec.llm_width)
