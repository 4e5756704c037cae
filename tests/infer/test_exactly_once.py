"""Exactly once under changing input and concurrent workers (issue 14, items 1 and 2).

Shard membership comes from the input itself, the input's fingerprint is in job.json (a rerun on
changed input is refused, naming what changed), a shard has one writer at a time, and a finished
shard is never rewritten."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from fake_captioner import FakeCaptioner
from inputs import jsonl_row, manifest_lines, write_images, write_tar

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig
from mllm.infer.job import JobMismatch
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import FolderSource, ManifestSource, WebDatasetSource

SETTINGS = {"short": GenerationSettings(max_new_tokens=8)}
JOB = Path(__file__).with_name("slow_job.py")


class Killed(BaseException):
    """Stands for kill -9: nothing in the job catches it."""


class DiesAfter(FakeCaptioner):
    """A captioner whose process is killed after `calls` generate calls."""

    def __init__(self, calls: int):
        super().__init__()
        self.left = calls

    def generate(self, pixel_values, task, settings, loop_guard=None):
        if self.left == 0:
            raise Killed()
        self.left -= 1
        return super().generate(pixel_values, task, settings)


def _config(out: Path, **engine) -> RecaptionConfig:
    return RecaptionConfig(str(out), rows_per_shard=2, progress=False,
                           engine=EngineConfig(tasks=("short",), num_workers=0, batch_size=2, **engine))


def _keys(out: Path) -> Counter:
    return Counter(OutputFolder(out).read_table().column("key").to_pylist())


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_a_tar_truncated_in_run_1_and_whole_in_run_2_is_refused_as_changed_input(tmp_path):
    keys = {name: [f"{name}-{i}" for i in range(5)] for name in ("00000", "00001", "00002")}
    for name, names in keys.items():
        write_tar(tmp_path / f"{name}.tar", names, truncate_to=0.5 if name == "00001" else None)
    source = WebDatasetSource(str(tmp_path / "*.tar"))
    out = tmp_path / "out"
    with pytest.raises(Killed):  # run 1 dies between shards
        recaption(DiesAfter(calls=6), source, _config(out), SETTINGS)  # past the cut tar
    assert 0 < len(OutputFolder(out).finished_shards()) and not _manifest(out)["complete"]
    write_tar(tmp_path / "00001.tar", keys["00001"])  # the download finished
    try:
        recaption(FakeCaptioner(), WebDatasetSource(str(tmp_path / "*.tar")), _config(out), SETTINGS)
    except JobMismatch as refused:
        assert "input changed" in str(refused) and "00001.tar (size)" in str(refused) and "--out" in str(refused)
        assert not _manifest(out)["complete"]
        return
    every = [k for names in keys.values() for k in names]
    assert _keys(out) == Counter(every) and _manifest(out)["complete"]  # or: every key exactly once


def test_a_folder_that_gains_one_image_and_loses_another_is_refused_naming_both(tmp_path):
    folder = write_images(tmp_path / "images", [f"img{i}" for i in range(6)])
    out = tmp_path / "out"
    with pytest.raises(Killed):
        recaption(DiesAfter(calls=2), FolderSource(str(folder)), _config(out), SETTINGS)
    write_images(tmp_path / "images", ["img9"])
    (folder / "img2.png").unlink()
    with pytest.raises(JobMismatch) as refused:
        recaption(FakeCaptioner(), FolderSource(str(folder)), _config(out), SETTINGS)
    message = str(refused.value)
    assert "1 added (img9.png)" in message and "1 removed (img2.png)" in message
    assert not _manifest(out)["complete"] and "img9" not in _keys(out)


def test_a_manifest_edited_between_runs_is_refused_naming_it(tmp_path):
    write_images(tmp_path / "images", [f"img{i}" for i in range(6)])
    rows = [jsonl_row(key=f"img{i}", image=f"images/img{i}.png") for i in range(6)]
    manifest = manifest_lines(tmp_path / "list.jsonl", rows[:5])
    out = tmp_path / "out"
    with pytest.raises(Killed):
        recaption(DiesAfter(calls=2), ManifestSource(str(manifest)), _config(out), SETTINGS)
    manifest_lines(manifest, rows[1:])  # one row dropped at the top, one added at the end: every row moves
    with pytest.raises(JobMismatch, match=r"1 changed \(list.jsonl \((size|mtime)\)\)"):
        recaption(FakeCaptioner(), ManifestSource(str(manifest)), _config(out), SETTINGS)
    assert not _manifest(out)["complete"] and "img5" not in _keys(out)


def test_an_unreadable_tar_does_not_move_the_rows_of_later_tars(tmp_path):
    """Row p of tar u always lands in shard (u, p // R): a broken tar changes only its own shards."""
    keys = {name: [f"{name}-{i}" for i in range(5)] for name in ("00000", "00001", "00002")}
    for name, names in keys.items():
        write_tar(tmp_path / f"{name}.tar", names, truncate_to=0.5 if name == "00001" else None)
    recaption(FakeCaptioner(), WebDatasetSource(str(tmp_path / "*.tar")), _config(tmp_path / "a"), SETTINGS)
    folder = OutputFolder(tmp_path / "a")
    for unit, name in ((0, "00000"), (2, "00002")):
        rows = [r["key"] for shard in range(3) for r in _shard_rows(folder, (unit, shard))]
        assert rows == keys[name]  # the same keys, in the same shards, as if tar 1 had been whole
    broken = [r for shard in range(3) for r in _shard_rows(folder, (1, shard))]
    assert broken[-1]["key"] == "00001.tar#unreadable" and broken[-1]["error_kind"] == "input"
    assert _manifest(tmp_path / "a")["complete"]


def _shard_rows(folder: OutputFolder, shard) -> list[dict]:
    import pyarrow.parquet as pq

    path = folder.shard_path(shard)
    return pq.read_table(path).to_pylist() if path.is_file() else []


def test_a_file_system_error_inside_a_tar_stops_the_job_and_a_rerun_fills_the_gap(tmp_path, monkeypatch):
    keys = [f"k{i}" for i in range(6)]
    write_tar(tmp_path / "00000.tar", keys)
    real_open = tarfile.open
    failures = {"left": 1}

    def flaky_open(*args, **kwargs):
        archive = real_open(*args, **kwargs)
        if failures["left"]:
            failures["left"] -= 1
            members = iter(archive)

            def failing():
                for index, member in enumerate(members):
                    if index == 5:
                        raise OSError(errno.EIO, "Input/output error")
                    yield member
            return _Iterating(archive, failing)
        return archive

    monkeypatch.setattr(tarfile, "open", flaky_open)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="rerun to retry"):
        recaption(FakeCaptioner(), WebDatasetSource(str(tmp_path / "*.tar")), _config(out), SETTINGS)
    assert sum(_keys(out).values()) < len(keys)  # the shard it was reading is not written
    recaption(FakeCaptioner(), WebDatasetSource(str(tmp_path / "*.tar")), _config(out), SETTINGS)
    assert _keys(out) == Counter(keys) and _manifest(out)["complete"]


class _Iterating:
    """A TarFile whose iteration is replaced (context manager and extractfile pass through)."""

    def __init__(self, archive, iterate):
        self.archive, self.iterate = archive, iterate

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.archive.close()

    def __iter__(self):
        return self.iterate()

    def extractfile(self, member):
        return self.archive.extractfile(member)


def _start(images: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(JOB), str(images), str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_workers_on_the_same_shards_write_each_shard_once(tmp_path):
    folder = write_images(tmp_path / "images", [f"img{i:02d}" for i in range(24)])
    out = tmp_path / "out"
    args = ["--rows-per-shard", "2", "--sleep", "0.01", "--num-workers", "0"]
    workers = [_start(folder, out, *args) for _ in range(2)]  # the same slot: both own every shard
    summaries = []
    for process in workers:
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr[-3000:]
        summaries.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sum(s["shards_written"] for s in summaries) == 12  # never twice, never lost
    assert sum(s["done"] for s in summaries) == 24 and all(s["done"] for s in summaries)
    assert _keys(out) == Counter(f"img{i:02d}" for i in range(24)) and _manifest(out)["complete"]
    assert not list((out / "shards").glob(".*.tmp-*")) and not list((out / "shards").glob(".*.lock"))


def test_a_live_writers_temp_file_is_left_alone_and_a_finished_shard_is_never_rewritten(tmp_path):
    first, second = OutputFolder(tmp_path), OutputFolder(tmp_path)
    first.shards_dir.mkdir(parents=True)
    claim = first.claim_shard((0, 0))
    live_temp = first.shards_dir / ".part-000000-000000.parquet.tmp-otherhost-4242"
    live_temp.write_bytes(b"being written")
    assert second.claim_shard((0, 0)) is None and live_temp.is_file()  # a live writer holds it
    first.write_shard((0, 0), [{"key": "a"}], claim)
    before = first.shard_path((0, 0)).stat()
    assert second.claim_shard((0, 0)) is None  # finished: nobody may write it again
    assert first.shard_path((0, 0)).stat().st_mtime_ns == before.st_mtime_ns


def test_num_shards_is_part_of_the_job(tmp_path):
    folder = write_images(tmp_path / "images", [f"img{i}" for i in range(4)])
    for num_shards, index in ((2, 0), (3, 0)):
        process = _start(folder, tmp_path / "out", "--rows-per-shard", "1", "--sleep", "0", "--num-workers", "0",
                         "--num-shards", str(num_shards), "--shard-index", str(index))
        _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "num_shards" in stderr and "different job" in stderr
