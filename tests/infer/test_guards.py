"""Loop detection (after generation, and step by step while decoding), cutting at the loop with no second
pass (and recording it), length control that never cuts mid-word."""

from __future__ import annotations

import pytest
import torch
from fake_captioner import FakeCaptioner

from mllm.config import GenerationSettings
from mllm.infer.backends.hf_decode import LoopStop
from mllm.infer.guards import LoopGuard, cut_loop, find_loop, fit_length, is_looping, loop_end, word_count
from mllm.infer.decoding import Frames
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


@pytest.mark.parametrize("guard", [LoopGuard(), LoopGuard(max_period=3, min_tandem_single=3, min_tandem=2, ngram=3,
                                                       max_ngram_count=1)], ids=["default", "strict"])
def test_the_decoding_stop_fires_at_the_first_step_where_find_loop_sees_a_loop(guard):
    generator = torch.Generator().manual_seed(0)
    prompt = torch.full((64, 5), 7)
    rows = torch.cat([prompt, torch.randint(0, 4, (64, 60), generator=generator)], dim=1)  # 4 tokens: loops early or late
    stop = LoopStop(guard, prompt_length=5)
    first = [None] * len(rows)
    for length in range(1, 61):
        done = stop(rows[:, :5 + length]).tolist()
        for i in range(len(rows)):
            if done[i] and first[i] is None:
                first[i] = length
    expected = [next((n for n in range(1, 61) if find_loop(row[5:5 + n].tolist(), guard) is not None), None)
                for row in rows]
    assert first == expected
    assert len(set(expected)) > 10  # rows loop at many different steps (a few never)
    assert [loop_end(row[5:].tolist(), guard) for row in rows] == [n or 60 for n in expected]  # a backend's cut


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
    captioner = FakeCaptioner(looping=looping)
    engine = CaptionEngine(captioner, {"detailed": settings}, EngineConfig(tasks=("detailed",), loop_guard=guard))
    return engine._generate_guarded(Frames(pixels, [None, None]), "detailed"), captioner


def test_a_looping_caption_is_cut_at_the_loop_with_no_second_generation_pass():
    results, captioner = _guarded(True, GenerationSettings(max_new_tokens=200))
    assert captioner.calls == 1
    for text, _, actions, failure in results:
        assert failure is None and actions == ["cut"]
        assert text.endswith("square on a table.") and not is_looping(text)


def test_long_captions_are_trimmed_to_the_word_budget_and_recorded():
    ((text, _, actions, _), _), _ = _guarded(False, GenerationSettings(max_new_tokens=200, max_words=15))
    assert actions == ["trim"] and word_count(text) <= 15 and text.endswith(".")
    ((text, _, actions, _), _), _ = _guarded(False, GenerationSettings(max_new_tokens=7))  # stops mid-sentence
    assert actions == ["trim"] and word_count(text) < 7 and not text.endswith(("with", "one", "flat"))
