"""Packed training batches: a batch's samples end to end in one row, with no attention across them.

transformers' `DataCollatorWithFlattening` lays the token ids out and restarts `position_ids` at
every sample; with no attention mask (and no KV cache) transformers' mask builder finds the sample
boundaries in those positions (`masking_utils.find_packed_sequence_indices`) and masks attention
block-diagonally (tested with sdpa). Nothing is padded, so a batch of mixed caption lengths costs
its real tokens. The LM head runs only where a label is predicted (a 1-D `logits_to_keep`), and
the per-token loss, so the batch loss, equals the unpacked one. One row per batch: attention over
the row is quadratic in its length, so keep `train.batch_size` x sample length moderate on a CPU.
"""

from __future__ import annotations

import torch
from transformers import DataCollatorWithFlattening

from mllm.data.processor import IGNORE_INDEX, frames_of


class PackedCollator:
    """`collate(samples)` for `train.packing: true`; samples as `CaptionDataset` yields them."""

    def __init__(self) -> None:
        self.flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor | bool]:
        row = self.flatten([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples], return_tensors="pt")
        labels = row["labels"][0]
        # Position t predicts token t + 1; keep the positions whose next token is supervised, plus the
        # last position as a dummy: the model's loss shifts labels left by one, so labels[j + 1] is
        # the target of kept position j and the dummy is paired with the padding the shift adds.
        keep = (labels[1:] != IGNORE_INDEX).nonzero().flatten()
        keep = torch.cat([keep, torch.tensor([len(labels) - 1])])
        targets = torch.cat([torch.tensor([IGNORE_INDEX]), labels[keep[:-1] + 1]])
        return {"input_ids": row["input_ids"], "position_ids": row["position_ids"], "labels": targets[None],
                "logits_to_keep": keep, "use_cache": False,
                "pixel_values": frames_of(samples)}
