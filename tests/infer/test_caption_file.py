"""`mllm caption` through the one engine into one file: written as it goes, input order, resumable, the
same captions as `mllm recaption` (issue 14 item 6, issue 15 "one captioning engine")."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_captioner import FakeCaptioner
from inputs import write_images

from mllm.config import GenerationSettings
from mllm.infer.caption import ROWS_FILE, CaptionFileConfig, caption_file, partial_folder
from mllm.infer.engine import EngineConfig, GenerationFailure
from mllm.infer.job import JobMismatch
from mllm.infer.rows import SCHEMA
from mllm.infer.sources import FolderSource

SETTINGS = {"short": GenerationSettings(max_new_tokens=8), "detailed": GenerationSettings(max_new_tokens=32)}
KEYS = [f"img{i:02d}" for i in range(10)]


class Killed(BaseException):
    """Stands for kill -9: nothing in the job catches it."""


class FailsAfter(FakeCaptioner):
    """Raises `error` on every generate call after the first `calls`."""

    def __init__(self, calls: int, error: BaseException):
        super().__init__()
        self.left, self.error = calls, error

    def generate(self, pixel_values, task, settings, loop_guard=None):
        if self.left == 0:
            raise self.error
        self.left -= 1
        return super().generate(pixel_values, task, settings)


def _config(out: Path) -> CaptionFileConfig:
    return CaptionFileConfig(str(out), EngineConfig(tasks=("detailed",), batch_size=3, num_workers=1), progress=False)


def _rows(out: Path) -> list[dict]:
    if out.suffix == ".parquet":
        return pq.read_table(out).to_pylist()
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_one_file_in_input_order_with_the_recaption_columns(tmp_path, suffix):
    images = write_images(tmp_path / "images", KEYS)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / f"captions{suffix}"
    summary = caption_file(FakeCaptioner(), FolderSource(str(images)), _config(out), SETTINGS)
    rows = _rows(out)
    assert [r["key"] for r in rows] == ["broken", *KEYS] and list(rows[0]) == SCHEMA.names
    assert rows[0]["error_kind"] == "decode" and rows[1]["detailed_caption"].startswith("A plain red image")
    assert (summary.done, summary.captioned, summary.errors) == (11, 10, {"decode": 1})
    assert not partial_folder(out).exists()


@pytest.mark.parametrize("error", [Killed(), GenerationFailure("the device fell over")], ids=["killed", "failure"])
def test_a_rerun_resumes_and_a_failing_batch_loses_nothing_written(tmp_path, error):
    images = write_images(tmp_path / "images", KEYS)
    out = tmp_path / "captions.parquet"
    with pytest.raises(type(error)):
        caption_file(FailsAfter(calls=2, error=error), FolderSource(str(images)), _config(out), SETTINGS)
    journal = partial_folder(out) / ROWS_FILE
    written = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert written == KEYS[:6] and not out.exists()  # two batches of 3 are on disk, the third is not
    with journal.open("a") as handle:
        handle.write('{"key": "img06", "image": "torn')  # a kill in the middle of a write
    captioner = FakeCaptioner()
    summary = caption_file(captioner, FolderSource(str(images)), _config(out), SETTINGS)
    assert summary.resumed == 6 and summary.done == 4 and captioner.calls == 2
    assert [r["key"] for r in _rows(out)] == KEYS


def test_a_rerun_on_changed_input_or_settings_is_refused(tmp_path):
    images = write_images(tmp_path / "images", KEYS)
    out = tmp_path / "captions.jsonl"
    with pytest.raises(Killed):
        caption_file(FailsAfter(calls=1, error=Killed()), FolderSource(str(images)), _config(out), SETTINGS)
    longer = {**SETTINGS, "detailed": GenerationSettings(max_new_tokens=64)}
    with pytest.raises(JobMismatch, match="generation_settings"):
        caption_file(FakeCaptioner(), FolderSource(str(images)), _config(out), longer)
    write_images(images, ["new"])
    with pytest.raises(JobMismatch, match=r"1 added \(new.png\)"):
        caption_file(FakeCaptioner(), FolderSource(str(images)), _config(out), SETTINGS)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real tiny captioner (2 training steps)."""
    from conftest import tiny_config, write_colour_dataset

    from mllm.train.trainer import train

    root = tmp_path_factory.mktemp("tiny_run")
    data = write_colour_dataset(root / "data")
    return train(tiny_config(data, root / "run", "train.max_steps=2", "train.save_steps=1000"))


def test_mllm_caption_and_mllm_recaption_give_the_same_captions(tiny_run, tmp_path, capsys):
    from mllm.cli import main
    from mllm.infer.shards import OutputFolder

    images = write_images(tmp_path / "images", KEYS[:6])
    (images / "broken.png").write_bytes(b"not a png")
    flags = ["--model", str(tiny_run), "--images", str(images), "--tasks", "short,detailed", "--max-new-tokens", "12",
             "--num-workers", "1", "--no-progress"]
    assert main(["caption", *flags, "--out", str(tmp_path / "captions.jsonl"), "--batch-size", "4"]) == 0
    assert main(["recaption", *flags, "--out", str(tmp_path / "recap"), "--batch-size", "3",
                 "--rows-per-shard", "2"]) == 0
    assert "6 captioned" in capsys.readouterr().out
    captions = {r["key"]: r for r in _rows(tmp_path / "captions.jsonl")}
    recaptions = {r["key"]: r for r in OutputFolder(tmp_path / "recap").read_table().to_pylist()}
    assert set(captions) == set(recaptions) == {*KEYS[:6], "broken"}
    columns = ("short_caption", "detailed_caption", "short_tokens", "detailed_tokens", "guard", "error_kind",
               "generation_settings", "model_revision")
    for key in captions:
        assert {c: captions[key][c] for c in columns} == {c: recaptions[key][c] for c in columns}, key
    good = [r for key, r in captions.items() if key != "broken"]
    assert len(good) == 6 and not any(r["error_kind"] for r in good)
    # The 2-step model loops: such a row stops where the loop guard sees the loop and its caption is cut there
    # (to nothing when it loops from its first token); any other row has its caption.
    for row in good:
        if row["guard"] and "detailed:cut" in row["guard"]:
            assert row["detailed_tokens"] < 12, row
        else:
            assert row["detailed_caption"], row


def test_dtype_flag_holds_the_captioner_in_that_dtype(tiny_run, tmp_path, caplog):
    import logging

    from mllm.cli import main

    images = write_images(tmp_path / "images", KEYS[:2])
    flags = ["--model", str(tiny_run), "--images", str(images), "--max-new-tokens", "4", "--num-workers", "0",
             "--no-progress", "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="mllm"):
        assert main(["caption", *flags, "--out", str(tmp_path / "bf16.jsonl"), "--dtype", "bfloat16"]) == 0
    assert "captioning precision: bf16" in caplog.text
    assert {r["key"] for r in _rows(tmp_path / "bf16.jsonl")} == set(KEYS[:2])
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", *flags, "--out", str(tmp_path / "x.jsonl"), "--dtype", "bfloat"])
    assert exit_info.value.code == 2
