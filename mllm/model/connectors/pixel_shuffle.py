"""`pixel_shuffle`: fewer image tokens, as Idefics3, SmolVLM and nanoVLM do it.

Each `scale` x `scale` block of the tower's patch grid becomes one token of `scale² · vision_width`
channels (space-to-depth), which an MLP (linear -> GELU -> linear, as LLaVA's) maps to the LLM
width: an image takes patches / scale² tokens. The grid must be square, its side divisible by `scale`.

Self-contained (torch only): bundled with exports as their connector code (mllm.model.connectors).
"""

import math

import torch
from torch import nn


def merged_tokens(patches: int, scale: int) -> int:
    """Tokens per image for `patches` tower tokens, or ValueError if they cannot be merged."""
    side = math.isqrt(patches)
    if scale < 1 or side * side != patches or side % scale:
        grid = f"a {side}x{side} grid" if side * side == patches else "not a square grid"
        raise ValueError(f"pixel_shuffle with scale {scale} needs a square patch grid whose side is divisible "
                         f"by {scale}; the tower gives {patches} patches ({grid})")
    return patches // scale ** 2


def pixel_shuffle(features: torch.Tensor, scale: int) -> torch.Tensor:
    """`(batch, side², width)` -> `(batch, (side/scale)², scale²·width)`.

    Output token k is block (k // (side/scale), k % (side/scale)) of the grid, row-major; its channels
    are the block's patches in row-major order, each `width` wide.
    """
    batch, patches, width = features.shape
    tokens, blocks = merged_tokens(patches, scale), math.isqrt(patches) // scale
    grid = features.reshape(batch, blocks, scale, blocks, scale, width)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(batch, tokens, scale * scale * width)


class PixelShuffleConnector(nn.Module):
    def __init__(self, vision_width: int, llm_width: int, scale: int):
        super().__init__()
        self.scale = scale
        self.linear_1 = nn.Linear(scale * scale * vision_width, llm_width)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(llm_width, llm_width)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(pixel_shuffle(image_features, self.scale))))


Connector = PixelShuffleConnector
