"""`linear`: one linear map from vision features to LLM embeddings (LLaVA-1's projector).

Self-contained (torch only): bundled with exports as their connector code (mllm.model.connectors).
"""

import torch
from torch import nn


class LinearProjector(nn.Module):
    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, llm_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(image_features)


Connector = LinearProjector
