"""BLIP-2's first stage for a Q-Former connector: representation learning against the frozen tower.

Three losses on the same (image, caption) records the later stages use (BLIP-2, Li et al. 2023,
section 3.2), with no LLM in the loop:

- ITC, image-text contrastive: every query's output is compared with the caption's output (text
  alone); the best query scores the pair; the other pairs of the batch are the negatives. BLIP-2
  takes the [CLS] output of a BERT-initialised Q-Former; ours starts from random weights, where
  [CLS] is the same for every caption and ITC stayed at chance (ln 8 after 80 steps on 8
  captions), so the caption is the mean of its tokens' outputs, which carry their words from step 0.
- ITM, image-text matching: queries and caption attend to each other; a binary head on the query
  outputs tells a matched pair from hard negatives drawn by their ITC similarity.
- ITG, image-grounded generation: the caption is generated from the queries: text tokens attend to
  every query and to the text before them; the queries never see the text, so all the text needs
  has to pass through them.

The text side is transformers' `Blip2TextEmbeddings` and a `Blip2QFormerModel` with text input
that shares the connector's self-attention, cross-attention and query feed-forward layers; only
its text feed-forward layers are its own, as in BLIP-2. So the connector keeps its shape and the
run folder is a captioner like any other. The heads are `Blip2ForImageTextRetrieval`'s
(`vision_projection`, `text_projection`, `itm_head`) plus an LM head tied to the text embeddings.
Words are the LLM tokenizer's ids found in the training captions, numbered compactly, so the text
side needs no softmax over the LLM's whole vocabulary.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from mllm.data.dataset import CaptionDataset
from mllm.data.processor import IGNORE_INDEX
from mllm.model.connectors.qformer import QFormerConnector
from mllm.model.recipes import unwrap

PAD, UNK, CLS, DEC = 0, 1, 2, 3  # the text side's own ids; caption words follow
SHARED = ("attention", "crossattention", "intermediate_query", "output_query")


def caption_vocabulary(dataset: CaptionDataset) -> list[int]:
    """Sorted LLM token ids of every supervised caption in `dataset`."""
    ids: set[int] = set()
    for record, task, prompt in dataset.items:
        ids.update(dataset.processor.answer_ids(prompt, record.text(task)))
    return sorted(ids)


def vision_features(llava, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower features the connector reads (`vision_feature_layer`, CLS dropped for 'default')."""
    config = llava.config
    hidden = llava.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
    features = hidden[config.vision_feature_layer]
    return features[:, 1:] if config.vision_feature_select_strategy == "default" else features


def _duplicates(rows: torch.Tensor) -> torch.Tensor:
    """(n, n) bool: rows i and j are equal."""
    _, inverse = torch.unique(rows.flatten(1), dim=0, return_inverse=True)
    return inverse[:, None] == inverse[None, :]


def hard_negatives(sim: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per row of `sim` (a batch's similarities), a column that is not a positive pair, drawn with
    probability softmax(sim) over those: BLIP-2's hard negatives for ITM. -1 where none is."""
    with torch.no_grad():
        weights = sim.float().softmax(-1).masked_fill(positive, 0) + 1e-9 * ~positive  # underflow: still drawable
        has_negative = ~positive.all(1)
        weights[~has_negative] = 1.0  # drawn and then dropped
        return torch.where(has_negative, torch.multinomial(weights, 1).squeeze(1), -1)


class QFormerPretraining(nn.Module):
    """ITC + ITM + ITG on the connector of `model` (a captioner whose connector is a Q-Former).
    `forward(**batch)` takes the captioning batch (`pixel_values`, `labels`) and returns the loss."""

    def __init__(self, model: nn.Module, vocabulary: list[int], max_text_length: int, embed_dim: int = 128):
        super().__init__()
        self.captioner = model
        llava = unwrap(model)
        connector: QFormerConnector = llava.model.multi_modal_projector
        self.connector = connector
        shared = connector.qformer.config
        config = Blip2QFormerConfig(**{**shared.to_dict(), "use_qformer_text_input": True,
                                       "vocab_size": DEC + 1 + len(vocabulary), "pad_token_id": PAD,
                                       "max_position_embeddings": max_text_length + 1})
        config._attn_implementation = shared._attn_implementation
        self.text_qformer = Blip2QFormerModel(config)
        self.text_qformer.layernorm = connector.qformer.layernorm
        for own, theirs in zip(self.text_qformer.encoder.layer, connector.qformer.encoder.layer):
            for name in SHARED:
                if name in theirs._modules:  # crossattention: only layers that have one
                    setattr(own, name, theirs._modules[name])
        self.embeddings = Blip2TextEmbeddings(config)
        for table in (self.embeddings.word_embeddings, self.embeddings.position_embeddings):
            table.weight.data.normal_(0.0, config.initializer_range)  # as post_init would: N(0, 1) drowns the words
        width = config.hidden_size
        self.vision_projection = nn.Linear(width, embed_dim)
        self.text_projection = nn.Linear(width, embed_dim)
        self.itm_head = nn.Linear(width, 2)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.max_text_length = max_text_length
        self.register_buffer("vocabulary", torch.tensor(vocabulary, dtype=torch.long))
        lookup = torch.full((max(vocabulary, default=0) + 1,), UNK, dtype=torch.long)
        lookup[self.vocabulary] = torch.arange(DEC + 1, DEC + 1 + len(vocabulary))
        self.register_buffer("lookup", lookup, persistent=False)
        self._terms: dict[str, list[float]] = defaultdict(list)

    def heads(self) -> dict[str, torch.Tensor]:
        """The training-only weights (all but the captioner's), saved beside the run's weights."""
        captioner = {id(t) for t in self.captioner.state_dict(keep_vars=True).values()}
        return {name: t.detach() for name, t in self.state_dict(keep_vars=True).items() if id(t) not in captioner}

    def load_heads(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.heads())
        if set(state) != expected:
            raise ValueError(f"objective weights do not match: missing {sorted(expected - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - expected)[:3]}")
        self.load_state_dict(state, strict=False)

    # -- inputs ---------------------------------------------------------------------------
    def text_batch(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption ids on the text side, `[CLS] w1 .. wn` right-padded, and their mask, from the
        captioning labels (the supervised span of each row)."""
        rows = []
        for row in labels:
            ids = row[row != IGNORE_INDEX][: self.max_text_length]
            known = ids < len(self.lookup)
            mapped = torch.where(known, self.lookup[ids.clamp(max=len(self.lookup) - 1)], UNK)
            rows.append(torch.cat([mapped.new_tensor([CLS]), mapped]))
        width = max(len(r) for r in rows)
        text = labels.new_full((len(rows), width), PAD)
        for i, r in enumerate(rows):
            text[i, : len(r)] = r
        return text, (text != PAD).long()

    # -- the three passes -----------------------------------------------------------------
    def _joint(self, features: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Queries and text in one Q-Former pass; `mask` is 2D (bidirectional) or 4D additive."""
        queries = self.connector.query_tokens.expand(len(text), -1, -1)
        embeds = self.embeddings(input_ids=text, query_embeds=queries)
        ones = torch.ones(features.shape[:-1], dtype=torch.long, device=features.device)
        return self.text_qformer(query_embeds=embeds, query_length=queries.shape[1], attention_mask=mask,
                                 encoder_hidden_states=features, encoder_attention_mask=ones).last_hidden_state

    def _generation_mask(self, text_mask: torch.Tensor, queries: int) -> torch.Tensor:
        """BLIP-2's multimodal causal mask: queries see queries; text sees queries and earlier text."""
        n, width = text_mask.shape
        length = queries + width
        allowed = torch.zeros(length, length, dtype=torch.bool, device=text_mask.device)
        allowed[:, :queries] = True
        allowed[:queries, queries:] = False
        allowed[queries:, queries:] = torch.tril(torch.ones(width, width, dtype=torch.bool, device=text_mask.device))
        keys = torch.cat([text_mask.new_ones(n, queries), text_mask], 1).bool()
        allowed = allowed[None] & keys[:, None, :]
        bias = torch.zeros(n, 1, length, length, device=text_mask.device)
        return bias.masked_fill(~allowed[:, None], torch.finfo(bias.dtype).min)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        llava = unwrap(self.captioner)
        dtype = self.connector.query_tokens.dtype
        features = vision_features(llava, pixel_values).to(dtype)  # frozen unless vision.trainable_layers
        text, text_mask = self.text_batch(labels)
        n, queries = len(text), self.connector.query_tokens.shape[1]
        # The pairs that match: the same image (a record's several tasks) or the same caption.
        positive = _duplicates(pixel_values) | _duplicates(text)

        # ITC: query outputs (image alone) against the caption's mean output (text alone).
        image_out = self.connector.query_outputs(features)
        text_out = self.text_qformer(query_embeds=self.embeddings(input_ids=text), query_length=0,
                                     attention_mask=text_mask).last_hidden_state
        pooled = (text_out * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True)
        image_feat = F.normalize(self.vision_projection(image_out), dim=-1)
        text_feat = F.normalize(self.text_projection(pooled), dim=-1)
        temp = self.temp.clamp(0.001, 0.5)
        sim = torch.einsum("iqd,td->itq", image_feat, text_feat).max(-1).values / temp  # (images, texts)
        targets = positive.float() / positive.sum(1, keepdim=True)
        itc = (F.cross_entropy(sim, targets) + F.cross_entropy(sim.t(), targets)) / 2

        # ITM: each image with a hard negative caption, each caption with a hard negative image.
        neg_text, neg_image = hard_negatives(sim, positive), hard_negatives(sim.t(), positive)
        keep = (neg_text >= 0).nonzero().squeeze(1)  # `positive` is symmetric: the same rows for both
        images = torch.cat([torch.arange(n, device=text.device), keep, neg_image[keep]])
        texts = torch.cat([torch.arange(n, device=text.device), neg_text[keep], keep])
        pair_mask = torch.cat([text_mask.new_ones(len(images), queries), text_mask[texts]], 1)
        joint = self._joint(features[images], text[texts], pair_mask)
        itm_logits = self.itm_head(joint[:, :queries]).mean(1)
        itm_targets = torch.cat([torch.ones(n), torch.zeros(2 * len(keep))]).long().to(text.device)
        itm = F.cross_entropy(itm_logits, itm_targets)

        # ITG: the caption from the queries, [DEC] first.
        decoder_input = text.clone()
        decoder_input[:, 0] = DEC
        hidden = self._joint(features, decoder_input, self._generation_mask(text_mask, queries))[:, queries:]
        logits = hidden[:, :-1] @ self.embeddings.word_embeddings.weight.t() + self.lm_bias
        target = decoder_input[:, 1:].masked_fill(text_mask[:, 1:] == 0, IGNORE_INDEX)
        itg = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)

        loss = itc + itm + itg
        for name, value in (("itc", itc), ("itm", itm), ("itg", itg)):
            self._terms[f"loss_{name}"].append(value.item())
        return {"loss": loss}

    def pop_figures(self) -> dict[str, float]:
        """Mean of each loss term since the last call (logged beside the total loss)."""
        figures = {k: round(sum(v) / len(v), 4) for k, v in self._terms.items() if v}
        self._terms.clear()
        return figures
