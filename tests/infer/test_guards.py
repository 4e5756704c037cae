"""Loop detection, retry vs cut (and that the choice is recorded), length control that never cuts mid-word."""

from __future__ import annotations

import pytest
import torch
from fake_captioner import FakeCaptioner

from mllm.config import GenerationSettings
from mllm.infer.guards import LoopGuard, cut_loop, find_loop, fit_length, is_looping, retry_settings, word_count
from mllm.infer.engine import CaptionEngine, EngineConfig

CLEAN = "A red kite flies over a beach. Two people watch it from the sand, and a dog runs by the water."


@pytest.mark.parametrize("text", [
    "A dog on a sofa. a dog on a sofa. a dog on a sofa. a dog on a sofa.",
    "The sky is very very very very very blue",
    "A cat sits on a mat near a red ball, a cat sits on a mat near a red ball, and a cat sits on a mat near",
    "A photo of " + "AAAA" * 6,  # a token loop that decodes without spaces
])
def test_loops_are_detected(text):
    assert is_looping(text)


@pytest.mark.parametrize("text", [CLEAN, "A 1000000 dollar bill on a table.", "A big, big dog.", ""])
def test_ordinary_captions_are_not_loops(text):
    assert not is_looping(text)


def test_token_loops_are_detected_even_when_the_text_is_short():
    assert is_looping("x", token_ids=[5, 6, 7] * 5)
    assert not is_looping("x", token_ids=list(range(40)))


def test_find_loop_points_at_the_first_redundant_repeat():
    assert find_loop(list("abcxyxyxyxy")) == 5  # keeps "abcxy", drops the repeats
    assert find_loop(list("abcdefg")) is None


def test_cut_loop_keeps_the_text_before_the_loop_and_ends_on_a_whole_word():
    text = "A red square on a table, and a cup and a cup and a cup and a cup and a cup"
    cut = cut_loop(text)
    assert cut.startswith("A red square on a table") and cut.count("cup") <= 1
    assert text.startswith(cut) and (len(cut) == len(text) or not text[len(cut)].isalnum())
    assert not is_looping(cut)
    assert cut_loop(CLEAN) == CLEAN


def test_retry_settings_add_a_penalty_and_keep_stronger_user_settings():
    settings = retry_settings(GenerationSettings(), LoopGuard(retry_repetition_penalty=1.25, retry_no_repeat_ngram_size=3))
    assert settings.repetition_penalty == 1.25 and settings.no_repeat_ngram_size == 3
    strong = retry_settings(GenerationSettings(repetition_penalty=1.8, no_repeat_ngram_size=6))
    assert strong.repetition_penalty == 1.8 and strong.no_repeat_ngram_size == 6


@pytest.mark.parametrize("max_words", [3, 7, 12, 15])
def test_max_words_never_cuts_mid_word(max_words):
    text, trimmed = fit_length(CLEAN, max_words=max_words)
    assert trimmed and 0 < word_count(text) <= max_words
    assert CLEAN.startswith(text)
    assert not CLEAN[len(text)].isalnum()  # the next character is not part of a cut word
    assert text.split()[-1].lower().strip(".,") not in {"a", "the", "and", "of", "over", "it"} or text.endswith(".")


def test_max_words_prefers_a_complete_sentence():
    text, _ = fit_length(CLEAN, max_words=12)
    assert text == "A red kite flies over a beach."


def test_token_limit_drops_the_unfinished_tail_but_keeps_a_finished_sentence():
    assert fit_length("A red kite flies over a bea", hit_token_limit=True) == ("A red kite flies over", True)
    assert fit_length("A red kite. It fl", hit_token_limit=True) == ("A red kite.", True)
    assert fit_length("A red kite.", hit_token_limit=True) == ("A red kite.", False)
    assert fit_length(CLEAN, max_words=100) == (CLEAN, False)


def _guarded(looping, settings, guard=LoopGuard()):
    pixels = torch.zeros(2, 3, 8, 8)
    pixels[1, 0] = 1.0  # row 0 black, row 1 red
    engine = CaptionEngine(FakeCaptioner(looping=looping), {"detailed": settings},
                           EngineConfig(tasks=("detailed",), loop_guard=guard))
    return engine._generate_guarded(pixels, "detailed")


def test_a_loop_that_a_penalty_fixes_is_retried_and_recorded_as_retry():
    results = _guarded("retry", GenerationSettings(max_new_tokens=200))
    for (text, tokens, actions, failure), colour in zip(results, ["black", "red"]):
        assert failure is None and actions == ["retry"]
        assert text.startswith(f"A plain {colour} image") and not is_looping(text) and tokens == word_count(text)


def test_a_loop_that_survives_the_retry_is_cut_and_recorded_as_cut():
    results = _guarded("always", GenerationSettings(max_new_tokens=200))
    for text, _, actions, failure in results:
        assert failure is None and actions == ["cut"]
        assert text.endswith("square on a table.") and not is_looping(text)


def test_long_captions_are_trimmed_to_the_word_budget_and_recorded():
    (text, _, actions, _), _ = _guarded(None, GenerationSettings(max_new_tokens=200, max_words=15))
    assert actions == ["trim"] and word_count(text) <= 15 and text.endswith(".")
    (text, _, actions, _), _ = _guarded(None, GenerationSettings(max_new_tokens=7))  # stops mid-sentence
    assert actions == ["trim"] and word_count(text) < 7 and not text.endswith(("with", "one", "flat"))
