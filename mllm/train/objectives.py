"""Training objectives: what the Trainer trains in a stage and the loss it computes.

One entry per `StageRecipe.objective` (mllm.model.recipes.STAGES): a builder from the assembled
captioner and its training set to an `Objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mllm.data.dataset import CaptionDataset
from mllm.model.build import Built
from mllm.model.recipes import stage_recipe


@dataclass
class Objective:
    """`model` is what the Trainer trains: `model(**captioning batch)` returns the loss as `.loss` /
    `["loss"]`. `heads` / `load_heads` give the training-only weights a checkpoint must hold beyond
    the captioner's; `figures` returns loss terms to log beside the loss."""

    model: nn.Module
    validates: bool = True  # caption validation (train.validation_steps) tells something in this stage
    heads: Callable[[], dict] | None = None
    load_heads: Callable[[dict], None] | None = None
    figures: Callable[[], dict[str, float]] | None = None


def next_token(built: Built, dataset: CaptionDataset) -> Objective:
    """The captioner's own loss: next-token cross-entropy over the caption (align, sft)."""
    return Objective(built.model)


def qformer_pretrain(built: Built, dataset: CaptionDataset) -> Objective:
    """BLIP-2 stage 1 on the Q-Former connector: ITC + ITM + ITG (mllm.train.qformer_pretrain)."""
    from mllm.train.qformer_pretrain import QFormerPretraining, caption_vocabulary

    model = QFormerPretraining(built.model, caption_vocabulary(dataset), built.processor.max_length)
    return Objective(model, validates=False, heads=model.heads, load_heads=model.load_heads,
                     figures=model.pop_figures)


OBJECTIVES: dict[str, Callable[[Built, CaptionDataset], Objective]] = {
    "next_token": next_token,
    "qformer_pretrain": qformer_pretrain,
}


def build_objective(built: Built, dataset: CaptionDataset, stage: str) -> Objective:
    return OBJECTIVES[stage_recipe(stage).objective](built, dataset)
