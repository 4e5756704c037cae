"""The Ray runner (issue 16, item 3): 8 shards over 2 workers on a local Ray, one worker killed mid-shard,
then a rerun: every key exactly once, every bad file an error row; `mllm recaption --ray [ADDRESS]`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from image_zoo import build_image_zoo
from inputs import write_images

from mllm.cli import main
from mllm.config import load_config, save_config
from mllm.infer.ray_runner import RaySummary
from mllm.infer.shards import OutputFolder

pytest.importorskip("ray")

JOB = Path(__file__).with_name("slow_job.py")


def _start(images: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(JOB.parent), str(JOB.parents[2]),
                                                         os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, str(JOB), str(images), str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def _finish(process: subprocess.Popen) -> tuple[int, dict]:
    stdout, stderr = process.communicate(timeout=300)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stderr[-3000:]
    return process.returncode, json.loads(lines[-1])


def _lock_holders(out: Path) -> dict[int, str]:
    """pid -> the unfinished shard whose lock it holds (from /proc/locks)."""
    inodes = {}
    for lock in (out / "shards").glob(".part-*.lock"):
        try:
            inodes[lock.stat().st_ino] = lock.name.removeprefix(".").removesuffix(".lock")
        except FileNotFoundError:
            continue
    holders = {}
    for line in Path("/proc/locks").read_text().splitlines():
        match = re.match(r"\d+: FLOCK\s+\S+\s+WRITE\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)", line)
        if match and int(match.group(2)) in inodes:
            name = inodes[int(match.group(2))]
            if not (out / "shards" / name).exists():
                holders[int(match.group(1))] = name
    return holders


@pytest.mark.slow
def test_a_worker_killed_mid_shard_then_a_rerun_gives_every_key_once_and_bad_files_as_error_rows(tmp_path):
    """With no retries the killed worker's shard (and any handed to it while Ray restarted it) fails, and the
    rerun redoes exactly those. (Ray's retry on the restarted actor, `task_retries`, is Ray's own.)"""
    images = tmp_path / "images"
    images.mkdir()
    good, bad = build_image_zoo(images)
    plain = [f"plain{i:02d}" for i in range(32 - len(good) - len(bad))]
    write_images(images, plain)
    expected = set(good) | set(bad) | set(plain)
    assert len(expected) == 32  # 8 shards of 4
    out = tmp_path / "out"
    flags = ("--ray-workers", "2", "--sleep", "0.1")

    process = _start(images, out, *flags)
    deadline = time.monotonic() + 240
    while not (holders := _lock_holders(out)) or not OutputFolder(out).finished_shards():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.02)
    pid, shard = next(iter(holders.items()))
    os.kill(pid, signal.SIGKILL)  # a captioner actor, while it writes `shard`
    code, summary = _finish(process)
    written = Counter(OutputFolder(out).read_table().column("key").to_pylist())
    assert not written or max(written.values()) == 1
    assert code == 1 and shard in summary["failed"], summary
    assert all(not (out / "shards" / name).exists() for name in summary["failed"])
    assert len(written) == 32 - 4 * len(summary["failed"])

    code, again = _finish(_start(images, out, *flags))
    assert code == 0 and again["failed"] == [] and again["done"] == 32 - len(written)
    assert again["skipped"] == len(written)
    rows = OutputFolder(out).read_table().to_pylist()
    keys = Counter(row["key"] for row in rows)
    assert set(keys) == expected and max(keys.values()) == 1
    by_key = {row["key"]: row for row in rows}
    for key, words in bad.items():
        assert by_key[key]["error_kind"] and words in by_key[key]["error"].lower(), by_key[key]
    assert all(by_key[key]["short_caption"] and not by_key[key]["error_kind"] for key in [*good, *plain])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows_done"] == 32 == manifest["num_input_rows"]


@pytest.mark.parametrize("flag, address", [(["--ray"], None), (["--ray", "10.0.0.7:6379"], "10.0.0.7:6379")])
def test_the_command_runs_the_job_on_ray_local_or_at_an_address(tmp_path, monkeypatch, capsys, flag, address):
    """`--ray` alone: a local Ray (address None); `--ray ADDRESS`: that cluster. The actors get what loads the
    run's captioner (absolute paths, --device, --dtype) and the job writes to the absolute --out; a failed
    shard makes exit code 1."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"), run / "config.yaml")
    (run / "model.safetensors").write_bytes(b"weights")
    images = write_images(tmp_path / "images", ["a", "b"])
    calls = []

    def on_ray(make_captioner, source, config, settings, model_id, model_revision, address=None):
        calls.append((make_captioner, config, address))
        return RaySummary(done=2, failed=["part-0-0.parquet"] if address else [], failures=["RayActorError: gone"])

    monkeypatch.setattr("mllm.infer.ray_runner.recaption_on_ray", on_ray)
    monkeypatch.chdir(tmp_path)
    code = main(["recaption", "--model", "run", "--images", str(images), "--out", "out", "--dtype", "float32", *flag])
    (make_captioner, config, got), = calls
    assert got == address and code == (1 if address else 0)
    assert make_captioner.args == ("hf", str(run.resolve()), None, "float32")
    assert config.job.out_dir == str(tmp_path / "out") and config.workers is None
    assert "out: " in capsys.readouterr().out
