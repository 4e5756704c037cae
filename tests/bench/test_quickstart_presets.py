"""`mllm quickstart --preset`: the preset's scenes, tower and training config, flags on top."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mllm.bench.quickstart as quickstart
from mllm.bench.quickstart import quickstart_plan
from mllm.bench.quickstart_presets import QUICKSTART_PRESETS
from mllm.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def planned(monkeypatch, tmp_path, *flags):
    """The plan `mllm quickstart FLAGS` would run (the run itself is replaced)."""
    seen = {}

    def fake_run(out, config=None, preset="quickstart", seed=0, overrides=None, scenes=None, clips=None):
        seen.update(config=config, preset=preset, seed=seed, scenes=scenes, clips=clips)
        return Path(out) / "report.md"

    monkeypatch.setattr(quickstart, "run_quickstart", fake_run)
    assert main(["quickstart", "--out", str(tmp_path), *flags]) == 0
    return quickstart_plan(**seen)


def test_preset_defaults_win_unless_a_flag_is_given(monkeypatch, tmp_path):
    rich = planned(monkeypatch, tmp_path, "--preset", "rich")
    assert rich.scenes.image_size == 128 and rich.scenes.caption_style == "rich"
    assert rich.config == CONFIGS / "rich.yaml"
    assert (rich.tower.image_size, rich.tower.patch_size) == (126, 42)
    basic = planned(monkeypatch, tmp_path)
    assert (basic.scenes.image_size, basic.scenes.n_train, basic.scenes.n_test) == (48, 3000, 200)
    assert basic.config == CONFIGS / "quickstart.yaml"
    flagged = planned(monkeypatch, tmp_path, "--preset", "rich", "--image-size", "96", "--n-train", "50",
                      "--config", "configs/quickstart.yaml", "--seed", "4")
    assert (flagged.scenes.image_size, flagged.scenes.n_train, flagged.scenes.seed) == (96, 50, 4)
    assert flagged.config == Path("configs/quickstart.yaml") and flagged.tower.seed == 4


def test_every_preset_names_existing_parts():
    for name, spec in QUICKSTART_PRESETS.items():
        assert spec.config.is_file(), name
        quickstart_plan(name)  # the scene preset and its fields exist
    with pytest.raises(ValueError, match="unknown quickstart preset"):
        quickstart_plan("huge")


def test_the_command_line_lists_presets_without_loading_the_training_stack():
    """`mllm --help` builds every verb's parser: the quickstart's must not import torch (seconds)."""
    code = "import sys; from mllm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_clips_preset_draws_clips_like_its_scenes(monkeypatch, tmp_path):
    plan = planned(monkeypatch, tmp_path, "--preset", "clips", "--image-size", "96", "--n-train-clips", "7")
    assert plan.config == CONFIGS / "clips.yaml"
    assert plan.clips.look == plan.scenes and plan.scenes.image_size == 96
    assert (plan.clips.n_train, plan.clips.n_test) == (7, QUICKSTART_PRESETS["clips"].clips["n_test"])
    assert planned(monkeypatch, tmp_path).clips is None


def test_clip_flags_for_a_preset_without_clips_are_a_usage_error(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--n-test-clips", "5"]) == 2
    assert "has no clips" in capsys.readouterr().err


def test_interleaved_records_alternate_and_keep_their_files(tmp_path):
    from mllm.bench.quickstart import interleave_records
    from mllm.data.records import read_records

    (tmp_path / "scenes" / "images").mkdir(parents=True)
    (tmp_path / "clips" / "videos").mkdir(parents=True)
    images, clips = tmp_path / "scenes" / "train.jsonl", tmp_path / "clips" / "train.jsonl"
    images.write_text("".join(json.dumps({"key": f"i{n}", "image": f"images/i{n}.png", "caption": "x"}) + "\n"
                              for n in range(3)))
    clip = {"key": "c0", "video": "videos/c0.mp4", "start": 0.0, "end": 4.0, "caption": "y"}
    clips.write_text(json.dumps(clip) + "\n")
    for n in range(3):
        (tmp_path / "scenes" / "images" / f"i{n}.png").write_bytes(b"")
    (tmp_path / "clips" / "videos" / "c0.mp4").write_bytes(b"")
    mixed = interleave_records(tmp_path / "mixed" / "train.jsonl", images, clips)
    records, skipped = read_records(mixed)
    assert [r.key for r in records] == ["i0", "c0", "i1", "i2"] and not skipped.total
    assert records[1].video == str(tmp_path / "mixed" / ".." / "clips" / "videos" / "c0.mp4")
    assert (records[1].start, records[1].end) == (0.0, 4.0)
