"""Failures of the system are not saved as error rows (issue 14, item 3): out of memory retries at half
the batch size and then stops the job; a device error or the same error for every row of a batch stops
the shard without writing it; a rerun redoes it. Errors about one image stay rows."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from fake_captioner import FakeCaptioner
from inputs import write_images

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig, GenerationFailure
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import FolderSource

SETTINGS = {"short": GenerationSettings(max_new_tokens=8), "detailed": GenerationSettings(max_new_tokens=32)}
KEYS = [f"img{i:02d}" for i in range(12)]


class OutOfMemoryAbove(FakeCaptioner):
    """Raises torch.OutOfMemoryError for batches larger than `fits` (every time when fits=0)."""

    def __init__(self, fits: int):
        super().__init__()
        self.fits, self.sizes = fits, []

    def generate(self, pixel_values, task, settings, loop_guard=None):
        self.sizes.append(len(pixel_values))
        if len(pixel_values) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(pixel_values, task, settings)


class Broken(FakeCaptioner):
    """Every generate call fails with `error` (a broken model or device)."""

    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def generate(self, pixel_values, task, settings, loop_guard=None):
        raise self.error


def _run(tmp_path, captioner, batch_size: int = 4):
    config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=4, progress=False,
                             engine=EngineConfig(batch_size=batch_size, num_workers=0))
    return recaption(captioner, FolderSource(str(tmp_path / "images")), config, SETTINGS)


def _keys(tmp_path) -> Counter:
    return Counter(OutputFolder(tmp_path / "out").read_table().column("key").to_pylist())


def test_out_of_memory_retries_at_half_the_batch_size_and_loses_nothing(tmp_path):
    write_images(tmp_path / "images", KEYS)
    captioner = OutOfMemoryAbove(fits=2)
    summary = _run(tmp_path, captioner, batch_size=8)
    assert summary.errors == {} and summary.captioned == len(KEYS)
    assert captioner.sizes[:3] == [4, 2, 2]  # 4 rows per shard: 4 fails, then halves
    assert captioner.sizes.count(4) == 2  # once per task: later batches start at the size that fit
    rows = OutputFolder(tmp_path / "out").read_table().to_pylist()
    assert all(r["short_caption"] and r["detailed_caption"] for r in rows)


@pytest.mark.parametrize("captioner, words", [
    (OutOfMemoryAbove(fits=0), "out of memory generating one image"),
    (Broken(RuntimeError("the weights are NaN")), "every row of a batch of 4 failed with the same error"),
    (Broken(torch.AcceleratorError("CUDA error: device-side assert triggered")), "device-side assert"),
], ids=["oom-at-batch-1", "same-error-every-row", "device-error"])
def test_a_failure_of_the_system_stops_the_job_without_writing_the_shard_and_a_rerun_redoes_it(
        tmp_path, captioner, words):
    write_images(tmp_path / "images", KEYS)
    with pytest.raises(GenerationFailure, match=words):
        _run(tmp_path, captioner)
    assert not OutputFolder(tmp_path / "out").finished_shards()  # no shard of error rows
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text()) if (
        tmp_path / "out" / "manifest.json").is_file() else {"complete": False}
    assert not manifest["complete"]
    summary = _run(tmp_path, FakeCaptioner())
    assert summary.errors == {} and _keys(tmp_path) == Counter(KEYS)


def test_an_error_of_one_image_in_a_batch_is_still_a_row(tmp_path):
    write_images(tmp_path / "images", KEYS)  # colours cycle: white is one image in each batch of 4 at most
    summary = _run(tmp_path, FakeCaptioner(fail_colour="white"))
    rows = {r["key"]: r for r in OutputFolder(tmp_path / "out").read_table().to_pylist()}
    failed = {k for k, r in rows.items() if r["error_kind"]}
    assert summary.errors == {"generate": len(failed)} and 0 < len(failed) < len(KEYS)
    assert all("cannot caption white" in rows[k]["error"] for k in failed)
