"""Config fields the trainer must honour: evaluation, gradient clipping, the device of each rank."""

from __future__ import annotations

import json

import pytest
import torch

from mllm.precision import resolve_precision
from mllm.train import trainer
from mllm.train.trainer import train, training_arguments
from conftest import tiny_config, write_colour_dataset


def test_eval_records_are_scored_every_eval_steps(tmp_path, colour_data):
    held_out = write_colour_dataset(tmp_path / "held_out", n=4)
    run = train(tiny_config(colour_data, tmp_path / "run", f"data.eval={held_out}", "train.eval_steps=2",
                            "train.max_steps=4", "train.save_steps=100", "train.logging_steps=2"))
    history = json.loads((run / "train_log.json").read_text())["log_history"]
    assert [row["step"] for row in history if "eval_loss" in row] == [2, 4]


def test_gradient_clipping_comes_from_the_config(tmp_path, colour_data):
    cfg = tiny_config(colour_data, tmp_path / "run", "train.max_grad_norm=0.25")
    assert training_arguments(cfg, resolve_precision("fp32")).max_grad_norm == 0.25


def test_each_rank_takes_its_gpu_before_the_model_is_built(tmp_path, colour_data, monkeypatch):
    calls = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))

    def build(*args, **kwargs):
        calls.append(("build",))
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "build_captioner", build)
    with pytest.raises(RuntimeError, match="stop here"):
        train(tiny_config(colour_data, tmp_path / "run", "train.precision=fp32"))
    assert calls == [("set_device", 1), ("build",)]


def test_loading_onto_a_gpu_selects_it_before_the_model_is_built(tmp_path, colour_data, monkeypatch):
    from mllm.model import build
    from mllm.run_folder import save_run

    cfg = tiny_config(colour_data, tmp_path / "run")
    save_run(build.build_captioner(cfg, tmp_path / "run"), cfg, tmp_path / "run")
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", str(device))))

    def stop(*args, **kwargs):
        calls.append(("build",))
        raise RuntimeError("stop here")

    monkeypatch.setattr(build, "build_captioner", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        build.load_captioner(tmp_path / "run", device="cuda:1")
    assert calls == [("set_device", "cuda:1"), ("build",)]
