"""Caption validation during training logs per-category figures beside the loss, and plots them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from mllm.data.records import read_records
from mllm.train.trainer import train
from mllm.train.validation import CaptionValidation
from conftest import tiny_config, write_clip_dataset, write_colour_dataset


def test_the_callback_logs_what_the_scorer_says_about_the_captions(tmp_path, colour_data):
    records, _ = read_records(colour_data)
    said = {"detailed": ["A red square.", "Two words", None, "one"], "short": ["Red."] * 4}
    seen = []

    def caption(given):
        assert given == records[:4]
        return said

    def scorer(task, captions):
        seen.append((task, captions))
        return {"object_recall": 0.25 if task == "detailed" else 1.0, "relation": None}

    callback = CaptionValidation(records[:4], caption, every=5, out_dir=tmp_path, scorer=scorer)
    state = SimpleNamespace(global_step=5, is_world_process_zero=True, log_history=[{"step": 5, "loss": 1.0}])
    model = torch.nn.Linear(1, 1)
    callback.on_step_end(None, state, None, model=model)
    assert model.training  # put back as it was
    row = state.log_history[-1]
    assert row == {"step": 5, "val_detailed_mean_words": 1.5, "val_detailed_object_recall": 0.25,
                   "val_short_mean_words": 1.0, "val_short_object_recall": 1.0}
    assert seen[0] == ("detailed", dict(zip([r.key for r in records[:4]], ["A red square.", "Two words", "", "one"])))
    lines = (tmp_path / "validation" / "step-5.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"key": records[1].key, "detailed": "Two words", "short": "Red."}
    assert (tmp_path / "validation.png").stat().st_size > 0
    state.global_step = 6
    callback.on_step_end(None, state, None, model=model)
    assert len(state.log_history) == 2  # only every 5 steps


def test_training_with_validation_logs_it_every_validation_steps(tmp_path, colour_data):
    held_out = write_colour_dataset(tmp_path / "held_out", n=3)
    run = train(tiny_config(colour_data, tmp_path / "run", f"data.eval={held_out}", "train.validation_steps=2",
                            "train.validation_samples=2", "train.max_steps=4", "train.save_steps=100"))
    history = json.loads((run / "train_log.json").read_text())["log_history"]
    assert [row["step"] for row in history if "val_detailed_mean_words" in row] == [2, 4]
    assert len((run / "validation" / "step-4.jsonl").read_text().splitlines()) == 2
    assert (run / "validation.png").is_file()


def test_caption_validation_captions_clip_records_too(tmp_path, colour_data):
    held_out = write_clip_dataset(tmp_path / "held_out", n_clips=2, n_images=1)
    run = train(tiny_config(colour_data, tmp_path / "run", f"data.eval={held_out}", "train.validation_steps=2",
                            "train.validation_samples=3", "train.max_steps=2", "train.save_steps=100",
                            "data.video.max_frames=2"))
    rows = [json.loads(line) for line in (run / "validation" / "step-2.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # the image and both clips
