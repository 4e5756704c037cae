"""Decoding for the `hf` backend: stock `generate` whose loop drops finished rows, and a per-row loop stop.

    model.generate(**inputs, stopping_criteria=StoppingCriteriaList([LoopStop(guard, prompt_length)]),
                   custom_generate=decode_dropping_finished, ...)

`generate` prepares everything as it always does (logits processors and warpers, stopping criteria,
the cache, position ids) and hands the loop to `decode_dropping_finished`, which is transformers'
`_sample` loop except that a row leaves the batch, its KV cache and the per-row model inputs once it
is finished, so a batch costs the sum of its captions' lengths rather than its longest caption times
its size. Each row gets the tokens stock `generate` gives it: greedy takes the same argmax, and
sampling draws from a full-batch tensor so that the random stream is consumed exactly as stock's
(`torch.multinomial` draws one number per entry). Both hold as long as a row's logits do not depend
on the batch around it, which is so in fp32 on CPU (tested) but not always in bf16 on a GPU.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, GenerationMixin, StoppingCriteria
from transformers.generation import logits_process as lp
from transformers.generation import stopping_criteria as sc

from mllm.infer.guards import LoopGuard

ROW_INPUTS = ("attention_mask", "position_ids", "token_type_ids")
"""Model inputs with one row per sequence, cut down with the batch (a (1, L) tensor is shared: kept)."""
ROW_STATE = {lp.RepetitionPenaltyLogitsProcessor: ("prompt_ignore_length",)}
"""Logits processors that hold a tensor with one entry per row: cut down with the batch."""
STATELESS = (lp.SuppressTokensLogitsProcessor, lp.SuppressTokensAtBeginLogitsProcessor, lp.NoRepeatNGramLogitsProcessor,
             lp.TemperatureLogitsWarper, lp.TopPLogitsWarper, lp.TopKLogitsWarper, lp.MinPLogitsWarper,
             lp.MinLengthLogitsProcessor, lp.MinNewTokensLengthLogitsProcessor, lp.InfNanRemoveLogitsProcessor,
             sc.EosTokenCriteria, sc.MaxLengthCriteria, sc.MaxTimeCriteria)
"""Processors and stopping criteria that look at nothing but their inputs (any rows of the batch will do).
With any other one in play rows stay in the batch to the end, as in stock `generate`."""
PRUNE_SHARE = 8
"""Finished rows are dropped once they are at least 1/PRUNE_SHARE of the batch (each drop copies the cache)."""


class LoopStop(StoppingCriteria):
    """Done for a row as soon as its generated token ids loop: the first step at which the loop guard's
    `find_loop` on them would find a loop (a unit repeated back to back, or an n-gram too often).
    Stateless (it looks at `input_ids` only), so rows may leave the batch between calls."""

    def __init__(self, guard: LoopGuard, prompt_length: int):
        self.guard, self.prompt_length = guard, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.prompt_length:]
        length, guard = generated.shape[1], self.guard
        done = torch.zeros(len(generated), dtype=torch.bool, device=input_ids.device)
        for period in range(1, guard.max_period + 1):
            needed = guard.min_tandem_single if period == 1 else guard.min_tandem
            span = period * (needed - 1)  # the newest `span` tokens each equal the one `period` before
            if span < 1 or length < span + period:
                continue
            done |= (generated[:, length - span:] == generated[:, length - span - period:length - period]).all(1)
        if length >= guard.ngram and length > guard.max_ngram_count:
            windows = generated.unfold(1, guard.ngram, 1)
            done |= (windows == windows[:, -1:]).all(-1).sum(-1) > guard.max_ngram_count
        return done


def decode_dropping_finished(model, input_ids: torch.LongTensor, logits_processor, stopping_criteria,
                             generation_config, synced_gpus: bool = False, streamer=None, **model_kwargs):
    """The decoding loop of `generate(custom_generate=...)` for greedy search and sampling; what stock
    would return (`sequences`, left as they are after the prompt, pad after a row's end)."""
    cache = model_kwargs.get("cache")
    if synced_gpus or streamer is not None or generation_config.return_dict_in_generate \
            or type(cache) is not DynamicCache or not _droppable(logits_processor, stopping_criteria):
        return GenerationMixin._sample(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                       synced_gpus=synced_gpus, streamer=streamer, **model_kwargs)
    pad = generation_config._pad_token_tensor
    batch, start = input_ids.shape
    sequences = input_ids.new_full((batch, generation_config.max_length), int(pad) if pad is not None else 0)
    sequences[:, :start] = input_ids
    rows = torch.arange(batch, device=input_ids.device)  # the original row of each row still in the batch
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    outputs = model._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=True)
    step = 0
    while True:
        if step:
            inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
            outputs = model(**inputs, return_dict=True)
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)
        del outputs
        scores = logits_processor(input_ids, logits)
        if generation_config.do_sample:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            full = probs.new_ones((batch, probs.shape[1]))  # every row of the batch draws, as in stock
            full[rows] = probs
            tokens = torch.multinomial(full, num_samples=1).squeeze(1)[rows]
        else:
            tokens = torch.argmax(scores, dim=-1)
        if pad is not None:
            tokens = torch.where(finished, pad, tokens)
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
        sequences[rows, start + step] = tokens
        step += 1
        finished = finished | stopping_criteria(input_ids, None)
        if bool(finished.all()):
            return sequences[:, :start + step]
        before = len(finished)
        if int(finished.sum()) * PRUNE_SHARE >= before:
            keep = (~finished).nonzero().squeeze(1)
            input_ids, rows, finished = input_ids[keep], rows[keep], finished[keep]
            model_kwargs["cache"].batch_select_indices(keep)
            for processor in logits_processor:
                for name in ROW_STATE.get(type(processor), ()):
                    value = getattr(processor, name)
                    if isinstance(value, torch.Tensor) and value.shape[0] == before:
                        setattr(processor, name, value[keep])
            for key in ROW_INPUTS:
                value = model_kwargs.get(key)
                if isinstance(value, torch.Tensor) and value.shape[0] == before:
                    model_kwargs[key] = value[keep]


def _droppable(logits_processor, stopping_criteria) -> bool:
    """Whether rows can leave the batch: every processor and criterion is known to allow it."""
    return all(isinstance(p, STATELESS + (LoopStop,)) or type(p) in ROW_STATE
               for p in [*logits_processor, *stopping_criteria])
