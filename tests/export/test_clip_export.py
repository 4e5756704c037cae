"""A clip-trained MLP run exports as stock Llava: given the same frames and prompt layout (a text part
"0.5s: " before each frame's image, then the instruction), stock transformers and real vLLM give
mllm's greedy captions (fp32), images and clips in one batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HEAD_64_LLM, colour_change_frames, tiny_config, video_zoo, write_clip_dataset

from mllm.data.processor import CaptionProcessor
from mllm.data.records import CaptionRecord, read_records
from mllm.data.visuals import clip_sampling, load_visual
from mllm.export import export_run
from mllm.export.vllm_check import check_vllm
from mllm.infer.backends.hf import Captioner
from mllm.run_folder import load_run_config
from mllm.train.trainer import train

HERE = Path(__file__).parent
AGREEMENT = 0.95


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run, export) of a tiny MLP captioner trained on 8 images and 4 two-frame clips."""
    root = tmp_path_factory.mktemp("clip_export")
    data = write_clip_dataset(root / "data", n_clips=4, n_images=8)
    run = train(tiny_config(data, root / "run", HEAD_64_LLM, "train.max_steps=40", "train.save_steps=1000",
                            "train.logging_steps=10", "data.video.max_frames=2"))
    return run, export_run(run, root / "export").folder


@pytest.fixture(scope="module")
def inputs(clip_run, tmp_path_factory) -> tuple[list, Path]:
    """The run's training clips and 4 new ones, decoded as training decodes them, with 2 images
    between them: (visuals, a JSON file of their frames saved losslessly)."""
    run = clip_run[0]
    root = tmp_path_factory.mktemp("clip_inputs")
    cfg = load_run_config(run)
    for i, (first, second) in enumerate([("red", "blue"), ("yellow", "green"), ("pink", "black"), ("blue", "orange")]):
        video_zoo().write_video(root / f"new{i}.mp4", colour_change_frames(first, second), rate=4)
    records = read_records(cfg.data.train)[0]
    clips = [r for r in records if r.is_clip] + [
        CaptionRecord(f"new{i}", video=str(root / f"new{i}.mp4")) for i in range(4)]
    chosen = clips[:4] + [r for r in records if not r.is_clip][:2] + clips[4:]
    sampling = clip_sampling(cfg.data.video, CaptionProcessor.from_pretrained(run).image_seq_length)
    visuals, rows = [], []
    for n, record in enumerate(chosen):
        visual = load_visual(record, sampling)
        paths = []
        for k, image in enumerate(visual.images):
            paths.append(str(root / f"row{n}_frame{k}.png"))
            image.save(paths[-1])
        visuals.append(visual)
        rows.append({"frames": paths, "timestamps": None if visual.timestamps is None else list(visual.timestamps)})
    (root / "inputs.json").write_text(json.dumps(rows))
    assert [len(v.images) for v in visuals] == [2, 2, 2, 2, 1, 1, 2, 2, 2, 2]
    return visuals, root / "inputs.json"


def mllm_captions(run: Path, visuals: list):
    captioner = Captioner.load(run, device="cpu", dtype="float32")
    settings = load_run_config(run).generation["detailed"]
    generated = captioner.caption_visuals(visuals, "detailed", settings)
    prompt = captioner.processor.task_prompt("detailed")
    return generated, [captioner.processor.prompt_ids(prompt, v.timestamps) for v in visuals], prompt


def test_clip_trained_mlp_run_exports_as_stock_llava_and_captions_clips_like_mllm(clip_run, inputs):
    run, export = clip_run
    visuals, rows = inputs
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and "auto_map" not in config
    assert check_vllm(export) == []
    generated, prompt_ids, prompt = mllm_captions(run, visuals)
    out = rows.parent / "stock.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(HERE / "stock_clip_caption.py"), str(export), prompt,
                           str(load_run_config(run).generation["detailed"].max_new_tokens), str(rows), str(out)],
                          cwd=out.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    stock = json.loads(out.read_text())
    assert stock["class"] == "LlavaForConditionalGeneration" and stock["modules"] == []
    assert stock["padding_side"] == "left"  # rows of other lengths (an image among clips) pad on the left
    assert stock["prompt_token_ids"] == prompt_ids  # the layout: a timestamp before each frame's image tokens
    assert stock["token_ids"] == [g.token_ids for g in generated]
    assert stock["texts"] == [g.text for g in generated]
    assert len({g.text for g in generated}) > 1  # the captions depend on what the rows show


@pytest.mark.slow
def test_clip_trained_mlp_export_captions_clips_in_vllm_like_mllm(clip_run, inputs, vllm_python):
    run, export = clip_run
    visuals, rows = inputs
    generated, prompt_ids, prompt = mllm_captions(run, visuals)
    out = rows.parent / "vllm.json"
    # -I: mllm's PYTHONPATH stays out; the script imports vLLM and PIL only
    done = subprocess.run([str(vllm_python), "-I", str(HERE / "vllm_caption.py"), str(export), prompt, str(out),
                           "--rows", str(rows)], cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    served = json.loads(out.read_text())
    assert served["prompt_token_ids"] == prompt_ids
    mismatches = [(n, hf.text, text) for n, (hf, ids, text)
                  in enumerate(zip(generated, served["token_ids"], served["texts"])) if ids != hf.token_ids]
    print(f"vLLM {served['vllm']}: {len(visuals) - len(mismatches)}/{len(visuals)} greedy captions equal mllm's")
    assert len(mismatches) <= (1 - AGREEMENT) * len(visuals), mismatches
