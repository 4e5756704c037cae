"""Caption guards: detect generation loops and control length without cutting mid-word.

A loop is a unit of words repeated back to back ("very very very very", "a cat. a cat. a cat."),
one n-gram recurring too often anywhere in the caption, or, inside one run of non-space
characters, a short unit repeated back to back ("AAAAAAAAAAAA", "hahahahahaha": token loops
that decode without spaces). The HF backend stops a row as soon as its token ids loop
(`mllm.infer.backends.hf_decode.LoopStop`, the token test of `find_loop` step by step), a backend
that cannot stop a row cuts its tokens at the same step (`loop_end`), and the engine cuts a looping caption where the loop starts (`cut_loop`). `fit_length` then trims captions that
are over their task's word budget, or that stopped at `max_new_tokens` mid-sentence, back to the
last complete sentence (or, failing that, the last complete word).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_TRAILING_JUNK = re.compile(r"[\s,;:\-–—(]+$")
_DANGLING = {"a", "an", "the", "and", "or", "of", "with", "in", "on", "at", "to", "by", "for", "from", "its", "their"}


@dataclass
class LoopGuard:
    """When a sequence (of words or token ids) counts as looping."""

    max_period: int = 20  # longest back-to-back repeated unit looked for
    min_tandem_single: int = 4  # a single word repeated back to back this many times
    min_tandem: int = 3  # a longer unit repeated back to back this many times
    ngram: int = 5  # an n-gram of this length ...
    max_ngram_count: int = 2  # ... occurring more often than this anywhere
    min_char_loop: int = 12  # inside a word: a unit of <= max_period characters repeated >= 4 times over this many


def find_loop(sequence: Sequence[Hashable], guard: LoopGuard = LoopGuard()) -> int | None:
    """Index where a loop's first redundant repeat begins (the cut point), or None if no loop."""
    cuts = [c for c in (_tandem_cut(sequence, guard), _ngram_cut(sequence, guard)) if c is not None]
    return min(cuts) if cuts else None


def loop_end(sequence: Sequence[Hashable], guard: LoopGuard = LoopGuard()) -> int:
    """The length of the shortest prefix of `sequence` in which `find_loop` sees a loop (the step at
    which a decoder stopping looping rows stops, `hf_decode.LoopStop`), or its length when none loops.
    A prefix that loops stays looping as it grows, so the shortest one is found by bisection."""
    if find_loop(sequence, guard) is None:
        return len(sequence)
    low, high = 0, len(sequence)  # low: no loop; high: a loop
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if find_loop(sequence[:middle], guard) is not None else (middle, high)
    return high


def _tandem_cut(seq: Sequence[Hashable], guard: LoopGuard) -> int | None:
    best = None
    for period in range(1, min(guard.max_period, len(seq) // 2) + 1):
        needed = guard.min_tandem_single if period == 1 else guard.min_tandem
        run = 0  # positions i where seq[i] == seq[i - period], consecutively
        for i in range(period, len(seq)):
            run = run + 1 if seq[i] == seq[i - period] else 0
            if run >= period * (needed - 1):
                start = i - period * needed + 1
                cut = start + period
                best = cut if best is None else min(best, cut)
                break
    return best


def _ngram_cut(seq: Sequence[Hashable], guard: LoopGuard) -> int | None:
    seen: dict[tuple, int] = {}
    for i in range(len(seq) - guard.ngram + 1):
        gram = tuple(seq[i:i + guard.ngram])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] > guard.max_ngram_count:
            return i
    return None


def _char_loop(text: str, guard: LoopGuard) -> re.Match | None:
    """The first in-word run of one short unit repeated 4+ times spanning >= min_char_loop characters."""
    pattern = re.compile(r"(\S{1,%d}?)\1{3,}" % guard.max_period)
    return next((m for m in pattern.finditer(text) if len(m.group()) >= guard.min_char_loop), None)


def _words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text))


def _normal(word: str) -> str:
    return word.lower().strip(".,;:!?\"'()[]")


def is_looping(text: str, token_ids: Sequence[int] | None = None, guard: LoopGuard = LoopGuard()) -> bool:
    """True when the words (or, if given, the token ids) of a caption loop."""
    if token_ids is not None and find_loop(list(token_ids), guard) is not None:
        return True
    return find_loop([_normal(m.group()) for m in _words(text)], guard) is not None or bool(_char_loop(text, guard))


def cut_loop(text: str, guard: LoopGuard = LoopGuard()) -> str:
    """The caption up to where its loop starts, ended at a complete sentence or word."""
    words = _words(text)
    cut = find_loop([_normal(m.group()) for m in words], guard)
    if cut is not None:
        return _end_cleanly(text[: words[cut - 1].end()] if cut > 0 else "", min_words=0)
    in_word = _char_loop(text, guard)
    if in_word is not None:  # keep one copy of the unit; the text after it is the loop
        return text[: in_word.start() + len(in_word.group(1))]
    return text


def word_count(text: str | None) -> int:
    return len(_words(text)) if text else 0


def fit_length(text: str, *, max_words: int = 0, min_words: int = 0, hit_token_limit: bool = False) -> tuple[str, bool]:
    """Trim `text` to at most `max_words` words (0: no bound) and, when generation stopped at its
    token limit, drop the unfinished tail. Ends at the last complete sentence if that keeps at least
    `min_words` (and half the words); otherwise at the last complete word. Returns (text, trimmed)."""
    words = _words(text)
    if max_words and len(words) > max_words:
        kept = text[: words[max_words - 1].end()]
    elif hit_token_limit and words and not _SENTENCE_END.search(words[-1].group()):
        kept = text[: words[-2].end()] if len(words) > 1 else text  # the last word may be cut off
    else:
        return text, False
    return _end_cleanly(kept, min_words=max(min_words, len(_words(kept)) // 2)), True


def _end_cleanly(text: str, min_words: int) -> str:
    """End at the last sentence end keeping >= min_words words, else strip dangling words/punctuation."""
    words = _words(text)
    for index in range(len(words) - 1, -1, -1):
        if index + 1 < min_words:
            break
        if _SENTENCE_END.search(words[index].group()):
            return text[: words[index].end()]
    while words and _normal(words[-1].group()) in _DANGLING:
        words.pop()
    if not words:
        return ""
    return _TRAILING_JUNK.sub("", text[: words[-1].end()])
