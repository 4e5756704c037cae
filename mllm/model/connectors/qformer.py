"""`qformer`: BLIP-2's Q-Former; learnable queries cross-attend to the vision features.

The image then occupies exactly `num_queries` tokens in the LLM, whatever the tower's patch count.
Self-contained (torch and transformers only): bundled with exports as their connector code.
"""

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel


class QFormerConnector(nn.Module):
    def __init__(self, vision_width: int, llm_width: int, num_queries: int, num_layers: int, hidden_size: int):
        super().__init__()
        heads = max(1, hidden_size // 64)
        while hidden_size % heads:
            heads -= 1
        config = Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden_size,
            encoder_hidden_size=vision_width,
            cross_attention_frequency=1,
        )
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, hidden_size) * config.initializer_range)
        self.qformer = Blip2QFormerModel(config)
        self.projection = nn.Linear(hidden_size, llm_width)

    def query_outputs(self, image_features: torch.Tensor) -> torch.Tensor:
        """The Q-Former's output per query, `(batch, num_queries, hidden_size)`, before the projection."""
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1).to(image_features.dtype)
        mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_features, encoder_attention_mask=mask)
        return out.last_hidden_state

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.query_outputs(image_features))


Connector = QFormerConnector
