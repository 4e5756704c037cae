"""Reference-based caption metrics (BLEU-4, ROUGE-L, CIDEr-D) and caption-style statistics.

The n-gram scorers are `pycocoevalcap`'s pure-Python ones (the COCO caption evaluation code);
its Java PTB tokenizer is replaced by `tokenize` (lower case, punctuation dropped).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

import numpy as np

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str | None) -> str:
    """Lower-cased words joined by single spaces, punctuation dropped (like COCO's PTB step)."""
    return " ".join(_WORD.findall((text or "").lower()))


def ngram_scores(candidates: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Corpus BLEU-4, mean ROUGE-L (beta 1.2) and CIDEr-D of already tokenized (space-separated)
    candidates against their references, both by key."""
    keys = sorted(candidates)
    missing = [k for k in keys if not references.get(k)]
    if missing:
        raise ValueError(f"no reference caption for {len(missing)} keys, e.g. {missing[:3]}")
    if not keys:
        return {"bleu4": 0.0, "rouge_l": 0.0, "cider": 0.0}
    res = {k: [candidates[k]] for k in keys}
    gts = {k: list(references[k]) for k in keys}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "cider": float(cider)}


def caption_metrics(candidates: dict[str, str | None], references: dict[str, str | list[str]]) -> dict[str, float]:
    """BLEU-4, ROUGE-L and CIDEr-D of raw captions against raw references (one or several per key)."""
    refs = {k: [tokenize(r) for r in ([v] if isinstance(v, str) else v)] for k, v in references.items()}
    return ngram_scores({k: tokenize(c) for k, c in candidates.items()}, refs)


def length_stats(captions: list[str | None]) -> dict[str, float]:
    """Words per caption: mean, median, 90th percentile, and the share of empty captions."""
    lengths = [len(tokenize(c).split()) for c in captions]
    if not lengths:
        return {"mean_words": 0.0, "median_words": 0.0, "p90_words": 0.0, "empty_share": 0.0}
    return {
        "mean_words": statistics.fmean(lengths),
        "median_words": float(statistics.median(lengths)),
        "p90_words": float(np.percentile(lengths, 90)),
        "empty_share": sum(n == 0 for n in lengths) / len(lengths),
    }


def opener_stats(captions: list[str | None], n_words: int = 2) -> dict:
    """How varied captions begin: the most common first `n_words` words, the share of captions
    that begin with it, and how many distinct openers there are (empty captions ignored)."""
    openers = Counter(" ".join(words[:n_words]) for c in captions if (words := tokenize(c).split()))
    if not openers:
        return {"most_common": None, "most_common_share": 0.0, "distinct": 0}
    top, n = openers.most_common(1)[0]
    return {"most_common": top, "most_common_share": n / sum(openers.values()), "distinct": len(openers)}
