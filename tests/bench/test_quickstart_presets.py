"""`mllm quickstart --preset`: the preset's scenes, tower and training config, flags on top."""

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

    def fake_run(out, config=None, preset="quickstart", seed=0, overrides=None, scenes=None):
        seen.update(config=config, preset=preset, seed=seed, scenes=scenes)
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
