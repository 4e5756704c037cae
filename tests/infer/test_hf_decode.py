"""The HF backend's decoding loop: finished rows leave the batch yet every row gets what stock `generate`
gives it (greedy and sampling, fp32), and a looping row stops where the loop guard sees the loop, with no
second pass over the batch."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config, write_colour_dataset
from PIL import Image

from mllm.config import GenerationSettings
from mllm.infer.backends.hf import Captioner
from mllm.infer.backends.hf_decode import decode_dropping_finished
from mllm.infer.decoding import Frames
from mllm.infer.engine import CaptionEngine, EngineConfig
from mllm.infer.guards import LoopGuard, find_loop
from mllm.model.build import build_captioner

PROMPTS = ["Describe this image in detail.", "What is this?", "Caption:", "Describe.",
           "Give a thorough caption of this image.", "List the objects.", "Hi",
           "Write a long description of everything in this image."]
SIZES = [(32, 32), (64, 40), (17, 90), (300, 200), (32, 32), (50, 50), (90, 17), (128, 128)]
MAX_NEW = 30


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Captioner:
    """A tiny random captioner whose LLM weights are drawn wide enough (std 0.15) that greedy rows differ:
    some loop within 30 tokens, most do not."""
    root = tmp_path_factory.mktemp("decode")
    data = write_colour_dataset(root / "data")
    built = build_captioner(tiny_config(data, root / "run"), root / "run", training=False)
    torch.manual_seed(0)
    for name, parameter in built.model.named_parameters():
        if "language_model" in name and parameter.dim() == 2:
            torch.nn.init.normal_(parameter, std=0.15)
    captioner = Captioner(built.model, built.processor)
    captioner.images = [Image.open(data.parent / f"img{i}.png").resize(size) for i, size in enumerate(SIZES)]
    return captioner


def _generate(captioner, custom: bool, **settings) -> torch.Tensor:
    proc = captioner.processor
    inputs = proc.generation_inputs(PROMPTS)
    with torch.inference_mode():
        return captioner.model.generate(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            pixel_values=proc.pixel_values(captioner.images), max_new_tokens=MAX_NEW,
            pad_token_id=proc.tokenizer.pad_token_id, suppress_tokens=[proc.image_token_id],
            **({"custom_generate": decode_dropping_finished} if custom else {}), **settings)


def _rows_per_step(captioner, run) -> tuple[object, list[int]]:
    sizes: list[int] = []
    hook = captioner.model.lm_head.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    try:
        return run(), sizes
    finally:
        hook.remove()


@pytest.mark.parametrize("settings", [
    {"do_sample": False},
    {"do_sample": True, "temperature": 0.9, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3},
], ids=["greedy", "sampling"])
def test_dropping_finished_rows_gives_every_row_what_stock_generate_gives(captioner, settings):
    prompt = captioner.processor.generation_inputs(PROMPTS)["input_ids"].shape[1]
    torch.manual_seed(1)
    free = _generate(captioner, False, eos_token_id=[captioner.processor.image_token_id], **settings)
    stops = sorted({int(free[i, prompt + 2 + 3 * i]) for i in range(len(PROMPTS))})  # rows end at different steps
    torch.manual_seed(1)
    stock, stock_sizes = _rows_per_step(captioner, lambda: _generate(captioner, False, eos_token_id=stops, **settings))
    torch.manual_seed(1)
    ours, our_sizes = _rows_per_step(captioner, lambda: _generate(captioner, True, eos_token_id=stops, **settings))
    ends = {int((row[prompt:] == captioner.processor.tokenizer.pad_token_id).nonzero()[0])
            if (row[prompt:] == captioner.processor.tokenizer.pad_token_id).any() else MAX_NEW for row in stock}
    assert len(ends) >= 3, "the rows should finish at different steps"
    assert torch.equal(ours, stock)
    assert set(stock_sizes) == {len(PROMPTS)} and len(our_sizes) == len(stock_sizes)
    assert min(our_sizes) < len(PROMPTS) and sum(our_sizes) < sum(stock_sizes)  # finished rows left the batch


def test_a_looping_row_stops_where_the_guard_sees_the_loop_and_the_rest_are_stock(captioner):
    guard = LoopGuard()
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    pixels = captioner.preprocessor(captioner.images)
    stock_kwargs = {k: v for k, v in captioner._generate_kwargs(settings, 0, None).items() if k != "custom_generate"}
    stock, stock_sizes = _rows_per_step(captioner, lambda: captioner.model.generate(
        **_stock_inputs(captioner, pixels), **stock_kwargs))
    prompt = captioner.processor.generation_inputs(PROMPTS)["input_ids"].shape[1]
    stop, special = captioner.stop_ids, set(captioner.processor.tokenizer.all_special_ids)
    stock_rows = [[t for t in row[:next((i for i, t in enumerate(row) if t in stop), len(row))] if t not in special]
                  for row in (r[prompt:].tolist() for r in stock)]
    ours, our_sizes = _rows_per_step(captioner, lambda: captioner.generate(pixels, "detailed", settings, PROMPTS, guard))
    expected = []
    for row in stock_rows:
        end = next((n for n in range(1, len(row) + 1) if find_loop(row[:n], guard) is not None), len(row))
        expected.append(row[:end])
    looping = [i for i, row in enumerate(stock_rows) if find_loop(row, guard) is not None]
    assert 0 < len(looping) < len(PROMPTS), "the set-up should have looping and clean rows"
    assert [o.token_ids for o in ours] == expected
    assert all(len(expected[i]) < MAX_NEW for i in looping)
    assert sum(our_sizes) < sum(stock_sizes)  # looping rows stopped and left the batch


def _stock_inputs(captioner, pixels) -> dict:
    inputs = captioner.processor.generation_inputs(PROMPTS)
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "pixel_values": pixels}


def test_the_engine_cuts_looping_rows_after_one_generate_call_for_the_batch(captioner, monkeypatch):
    calls = []
    generate = captioner.model.generate
    monkeypatch.setattr(captioner.model, "generate", lambda *a, **k: calls.append(len(k["input_ids"])) or generate(*a, **k))
    engine = CaptionEngine(captioner, {"detailed": GenerationSettings(max_new_tokens=MAX_NEW)},
                           EngineConfig(tasks=("detailed",), batch_size=len(SIZES), num_workers=0))
    results = engine._generate_guarded(Frames(captioner.preprocessor(captioner.images), [None] * len(SIZES)), "detailed")
    assert calls == [len(SIZES)]  # one pass over the batch, none for the looping rows
    cut = [actions for _, _, actions, _ in results if "cut" in actions]
    assert 0 < len(cut) < len(SIZES)


def test_the_prompt_prefix_is_run_once_for_the_batch_and_changes_no_token(captioner):
    settings = GenerationSettings(max_new_tokens=12)
    pixels = captioner.preprocessor(captioner.images)
    proc = captioner.processor
    inputs = proc.generation_inputs([proc.task_prompt("detailed")] * len(SIZES))
    shapes: list[tuple[int, int]] = []
    embed = captioner.model.get_input_embeddings()
    hook = embed.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    try:
        stock_kwargs = {k: v for k, v in captioner._generate_kwargs(settings, 0, None).items() if k != "custom_generate"}
        with torch.inference_mode():
            stock = captioner.model.generate(**inputs, pixel_values=pixels, **stock_kwargs)
        stock_prefill, shapes[:] = shapes[0], []
        ours = captioner.generate(pixels, "detailed", settings)
    finally:
        hook.remove()
    length = inputs["input_ids"].shape[1]
    prefix = int((inputs["input_ids"][0] == proc.image_token_id).nonzero()[0])  # the image comes after it
    assert stock_prefill == (len(SIZES), length)
    assert shapes[:2] == [(1, prefix), (len(SIZES), length - prefix)]  # the prefix once, then the rest per row
    special = set(proc.tokenizer.all_special_ids)
    expected = [[t for t in row[:next((i for i, t in enumerate(row) if t in captioner.stop_ids), len(row))]
                 if t not in special] for row in stock[:, length:].tolist()]
    assert [o.token_ids for o in ours] == expected
