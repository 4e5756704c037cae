"""Exactly once: kill -9 at random moments and rerun; N shards run one by one; a torchrun split."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_captioner import COLOURS
from PIL import Image

from mllm.infer.shards import OutputFolder

JOB = Path(__file__).with_name("slow_job.py")
NUM_IMAGES = 36


def _images(folder: Path, n: int = NUM_IMAGES) -> set[str]:
    folder.mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS.values())
    for i in range(n):
        Image.new("RGB", (10, 10), colours[i % len(colours)]).save(folder / f"img{i:03d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return {f"img{i:03d}" for i in range(n)} | {"broken"}


def _start(images: Path, out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(JOB), str(images), str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _finish(process: subprocess.Popen, timeout: float = 120) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _keys(out: Path) -> Counter:
    return Counter(OutputFolder(out).read_table().column("key").to_pylist())


def _assert_exactly_once(out: Path, expected: set[str]) -> None:
    keys = _keys(out)
    assert set(keys) == expected and max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    for shard in OutputFolder(out).finished_shards():
        pq.read_table(shard)  # every finished shard is a whole, readable file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows_done"] == len(expected) == manifest["num_input_rows"]
    assert sorted(manifest["shards"]) == [p.name for p in OutputFolder(out).finished_shards()]
    rows = OutputFolder(out).read_table().to_pylist()
    assert all(r["short_caption"] for r in rows if r["key"] != "broken")
    assert [r["error_kind"] for r in rows if r["key"] == "broken"] == ["decode"]


def test_kill_9_at_random_moments_then_rerun_gives_every_key_once(tmp_path):
    expected = _images(tmp_path / "images", 60)  # + broken: 61 rows, 21 shards of 3
    out = tmp_path / "out"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    finished = [0]
    for _ in range(5):
        process = _start(tmp_path / "images", out, "--rows-per-shard", "3", "--sleep", "0.03")
        deadline = time.monotonic() + 60
        while len(OutputFolder(out).finished_shards()) == finished[-1]:
            assert process.poll() is None and time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))  # a random moment while later shards are captioned / written
        assert process.poll() is None, "the job ended before it was killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        finished.append(len(OutputFolder(out).finished_shards()))
        assert max(_keys(out).values()) == 1  # never a duplicate, even mid-job
    assert finished == sorted(set(finished)) and finished[-1] < 21  # progress each time, never complete
    summary = _finish(_start(tmp_path / "images", out, "--rows-per-shard", "3", "--sleep", "0"))
    assert summary["skipped"] == 3 * finished[-1] and summary["done"] == len(expected) - summary["skipped"]
    _assert_exactly_once(out, expected)


def test_n_shards_run_one_by_one_cover_every_key_once(tmp_path):
    expected = _images(tmp_path / "images", 20)
    out = tmp_path / "out"
    seen: set[str] = set()
    for index in range(3):
        summary = _finish(_start(tmp_path / "images", out, "--rows-per-shard", "2", "--sleep", "0",
                                 "--num-shards", "3", "--shard-index", str(index), "--num-workers", "0"))
        assert summary["slot"] == [index, 3]
        now = set(_keys(out))
        new = now - seen
        assert len(new) == summary["done"] > 0 and not (new & seen)
        seen = now
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["complete"] == (index == 2)
    _assert_exactly_once(out, expected)


def test_torchrun_ranks_split_the_work(tmp_path):
    expected = _images(tmp_path / "images", 16)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(JOB), str(tmp_path / "images"), str(out), "--rows-per-shard", "2", "--sleep", "0.005",
               "--num-workers", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(s["slot"] for s in summaries) == [[0, 2], [1, 2]]
    assert all(s["done"] > 0 for s in summaries)
    assert sum(s["done"] for s in summaries) == len(expected)
    _assert_exactly_once(out, expected)


def test_a_different_job_in_the_same_folder_is_refused(tmp_path):
    _images(tmp_path / "images", 4)
    out = tmp_path / "out"
    _finish(_start(tmp_path / "images", out, "--rows-per-shard", "2", "--sleep", "0", "--num-workers", "0"))
    process = _start(tmp_path / "images", out, "--rows-per-shard", "3", "--sleep", "0", "--num-workers", "0")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "holds a different job" in stderr and "rows_per_shard" in stderr


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1)), ({"RANK": "1", "WORLD_SIZE": "4"}, (1, 4)),
])
def test_worker_slot_combines_shard_flags_and_ranks(env, expected):
    from mllm.infer.shards import WorkerSlot

    slot = WorkerSlot.from_env(0, 1, env=env)
    assert (slot.index, slot.count) == expected
    both = WorkerSlot.from_env(1, 2, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert (both.index, both.count) == (3, 4) and [c for c in range(12) if both.owns((0, c))] == [3, 7, 11]
    assert [u for u in range(8) if both.owns((u, 2))] == [1, 5]  # a webdataset tar's shards rotate too
    with pytest.raises(ValueError, match="shard-index"):
        WorkerSlot.from_env(2, 2, env={})
