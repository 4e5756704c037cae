"""DeepSpeed ZeRO-2 / ZeRO-3 under torchrun with 2 CPU processes: the loss falls, the optimizer
state is sharded over both ranks, and the saved run loads in a single process.

The first DeepSpeed run on a machine compiles its CPU communication op into
~/.cache/torch_extensions (about a minute); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mllm.data.records import read_records
from mllm.model.build import build_captioner, load_captioner
from mllm.run_folder import WEIGHTS_FILE, load_run_config
from mllm.train.trainer import train
from conftest import ROOT, TINY, tiny_config, write_colour_dataset

pytestmark = pytest.mark.distributed

STEPS = 6
TIMEOUT_S = 240  # first run includes the op build; a ZeRO hang shows up as a timeout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun_train(data: Path, run: Path, zero: str, *overrides: str) -> None:
    """`torchrun --nproc_per_node 2 -m mllm.cli train ...`; fails the test with the output on error."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()),
           "-m", "mllm.cli", "train", "--config", str(TINY), "--output-dir", str(run),
           f"data.train={data}", "model.tuning.recipe=lora", f"train.max_steps={STEPS}",
           "train.logging_steps=1", f"train.save_steps={STEPS // 2}", "train.use_cpu=true",
           f"train.deepspeed={ROOT / 'configs' / 'deepspeed' / f'{zero}.json'}", *overrides]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # A session of its own, so that a timeout kills torchrun's workers too.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{zero}: torchrun did not finish in {TIMEOUT_S} s (hang?); output:\n{output[-8000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{zero}: torchrun exited with {proc.returncode}; output:\n{output[-8000:]}")


def _losses(run: Path) -> list[float]:
    history = json.loads((run / "train_log.json").read_text())["log_history"]
    return [row["loss"] for row in history if "loss" in row]


def _batch(processor, image_path: str) -> dict[str, torch.Tensor]:
    enc = processor.encode(processor.task_prompt("detailed"), "A blue circle.", "probe")
    return processor.collate([{"input_ids": enc.input_ids, "labels": enc.labels,
                               "pixel_values": processor.pixel_values([Image.open(image_path)])[0]}])


def _check_run(run: Path, data: Path) -> dict[str, torch.Tensor]:
    """Loss fell, both ranks held optimizer shards, and the run loads with trained weights."""
    losses = _losses(run)
    assert len(losses) == STEPS, losses
    assert losses[-1] < losses[0] - 0.1, losses

    shards = run / f"checkpoint-{STEPS}" / f"global_step{STEPS}"
    for rank in (0, 1):
        assert list(shards.glob(f"*zero_pp_rank_{rank}_*optim_states.pt")), sorted(p.name for p in shards.iterdir())

    saved = load_file(str(run / WEIGHTS_FILE))
    loaded = load_captioner(run)
    params = dict(loaded.model.named_parameters())
    for name, value in saved.items():
        assert value.numel() and torch.equal(params[name], value), name

    untrained = dict(build_captioner(load_run_config(run), work_dir=run).model.named_parameters())
    trained = [n for n in saved if "lora_B" in n or "multi_modal_projector" in n]
    assert any("lora_B" in n for n in trained) and any("multi_modal_projector" in n for n in trained)
    unchanged = [n for n in trained if torch.equal(saved[n], untrained[n])]
    assert not unchanged, f"weights that did not train: {unchanged}"

    with torch.no_grad():
        logits = loaded.model(**_batch(loaded.processor, read_records(data)[0][2].image)).logits
    assert logits.shape[-1] == loaded.model.get_output_embeddings().weight.shape[0]
    assert torch.isfinite(logits).all()
    return params


def test_zero2_two_processes_train_and_load(tmp_path):
    data = write_colour_dataset(tmp_path / "data")
    _torchrun_train(data, tmp_path / "run", "zero2")
    _check_run(tmp_path / "run", data)


def test_zero3_two_processes_train_and_keep_frozen_init_weights(tmp_path):
    """ZeRO-3 partitions every weight; the run must still save the frozen ones it took from
    `init_from` (here a single-process full fine-tune), not only the trainable LoRA/connector."""
    data = write_colour_dataset(tmp_path / "data")
    start = train(tiny_config(data, tmp_path / "start", "train.max_steps=2", "train.save_steps=1000"))
    _torchrun_train(data, tmp_path / "run", "zero3", f"model.init_from={start}")
    params = _check_run(tmp_path / "run", data)

    frozen = {name.removeprefix("base_model.model."): p for name, p in params.items() if not p.requires_grad}
    start_weights = load_file(str(start / WEIGHTS_FILE))
    kept = [name for name in start_weights if name in frozen]
    assert any("language_model" in name for name in kept), sorted(start_weights)
    for name in kept:
        assert torch.equal(frozen[name], start_weights[name]), name
