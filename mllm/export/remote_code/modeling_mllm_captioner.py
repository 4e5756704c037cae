"""An mllm captioner with a linear or Q-Former connector, as a `LlavaForConditionalGeneration`.

Only the projector differs from stock LLaVA: the tower, the image-token merge and generation are
transformers' own. Self-contained (imports torch and transformers only), bundled with the model
and loaded with `trust_remote_code=True`.
"""

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, LlavaForConditionalGeneration, LlavaModel

from .configuration_mllm_captioner import MllmCaptionerConfig


class LinearProjector(nn.Module):
    """One linear map from vision features to LLM embeddings."""

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__()
        self.linear = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear(image_features)


class QFormerConnector(nn.Module):
    """BLIP-2's Q-Former: `num_queries` learned queries cross-attend to the vision features."""

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__()
        qformer_config = Blip2QFormerConfig(**config.connector["qformer_config"])
        width = qformer_config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, config.connector["num_queries"], width))
        self.qformer = Blip2QFormerModel(qformer_config)
        self.projection = nn.Linear(width, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1).to(image_features.dtype)
        mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_features, encoder_attention_mask=mask)
        return self.projection(out.last_hidden_state)


CONNECTORS = {"linear": LinearProjector, "qformer": QFormerConnector}


class MllmCaptionerModel(LlavaModel):
    config_class = MllmCaptionerConfig

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__(config)
        kind = config.connector["type"]
        if kind not in CONNECTORS:
            raise ValueError(f"unknown connector {kind!r}; this file knows {sorted(CONNECTORS)}")
        self.multi_modal_projector = CONNECTORS[kind](config)
        self.post_init()


class MllmCaptionerForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = MllmCaptionerConfig

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__(config)
        self.model = MllmCaptionerModel(config)
        self.post_init()
