"""The bad-file zoo through the recaption pipeline: every good image captioned, every bad one an error row,
the job never dies. Once with the fake captioner (colours checked), once with a real tiny model via the CLI."""

from __future__ import annotations

import json

import pytest
from fake_captioner import FakeCaptioner
from image_zoo import build_image_zoo

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import FolderSource

SETTINGS = {"short": GenerationSettings(max_new_tokens=16), "detailed": GenerationSettings(max_new_tokens=64)}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    good, bad = build_image_zoo(folder)
    return folder, good, bad


def _rows(out) -> dict[str, dict]:
    rows = OutputFolder(out).read_table().to_pylist()
    assert len(rows) == len({r["key"] for r in rows})
    return {r["key"]: r for r in rows}


def _check_zoo_rows(rows: dict[str, dict], good: dict[str, str], bad: dict[str, str]) -> None:
    assert set(rows) == set(good) | set(bad)
    for key in good:
        row = rows[key]
        assert row["error"] is None and row["error_kind"] is None, (key, row["error"])
        for task in ("short", "detailed"):  # a caption, or a loop cut (to nothing when it loops from the start)
            assert row[f"{task}_caption"] or f"{task}:cut" in (row["guard"] or ""), (key, row["guard"])
        assert row["short_words"] == len(row["short_caption"].split()) and row["short_tokens"] > 0
    for key, words in bad.items():
        row = rows[key]
        assert row["error_kind"] == "decode" and words in row["error"] and key.split("/")[-1] in row["error"], row
        assert row["short_caption"] is None and row["detailed_caption"] is None


@pytest.mark.parametrize("num_workers", [0, 2])
def test_zoo_with_the_fake_captioner(zoo, tmp_path, num_workers):
    folder, good, bad = zoo
    config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=4, progress=False,
                             engine=EngineConfig(batch_size=3, num_workers=num_workers))
    summary = recaption(FakeCaptioner(), FolderSource(str(folder)), config, SETTINGS)
    assert (summary.done, summary.captioned, summary.errors) == (len(good) + len(bad), len(good), {"decode": len(bad)})
    rows = _rows(tmp_path / "out")
    _check_zoo_rows(rows, good, bad)
    for key, colour in good.items():
        if colour != "mixed":  # the EXIF-rotated image is half red, half blue
            assert rows[key]["short_caption"] == f"A {colour} square.", key
    assert rows["good_red"]["image"] == str(folder / "good_red.png")
    assert json.loads(rows["good_red"]["generation_settings"])["detailed"]["max_new_tokens"] == 64
    assert (rows["good_red"]["model_id"], rows["good_red"]["model_revision"]) == ("fake-captioner", "v0")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and sum(sum(s["errors"].values()) for s in manifest["shards"].values()) == len(bad)
    assert "decode" in summary.format() and f"{len(good)} captioned" in summary.format()


def test_a_failing_generation_is_an_error_row_and_the_batch_survives(zoo, tmp_path):
    folder, good, bad = zoo
    config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=100, progress=False,
                             engine=EngineConfig(batch_size=8, num_workers=0))
    summary = recaption(FakeCaptioner(fail_colour="white"), FolderSource(str(folder)), config, SETTINGS)
    rows = _rows(tmp_path / "out")
    white = {k for k, c in good.items() if c == "white"}
    assert summary.errors == {"decode": len(bad), "generate": len(white)}
    for key in white:
        assert rows[key]["error_kind"] == "generate" and "cannot caption white" in rows[key]["error"]
    for key in set(good) - white:
        assert rows[key]["error"] is None and rows[key]["detailed_caption"]


def test_a_rerun_of_a_finished_job_skips_everything(zoo, tmp_path):
    folder, good, bad = zoo
    config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=5, engine=EngineConfig(num_workers=0), progress=False)
    recaption(FakeCaptioner(), FolderSource(str(folder)), config, SETTINGS)
    captioner = FakeCaptioner()
    again = recaption(captioner, FolderSource(str(folder)), config, SETTINGS)
    assert (again.done, again.skipped, captioner.calls) == (0, len(good) + len(bad), 0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real tiny captioner (2 training steps: it will loop, which exercises the guards too)."""
    from conftest import tiny_config, write_colour_dataset

    from mllm.train.trainer import train

    root = tmp_path_factory.mktemp("tiny_run")
    data = write_colour_dataset(root / "data")
    return train(tiny_config(data, root / "run", "train.max_steps=2", "train.save_steps=1000"))


def test_zoo_with_a_real_tiny_model_via_the_cli(zoo, tiny_run, tmp_path, capsys):
    from mllm.cli import main
    from mllm.run_folder import weights_revision

    folder, good, bad = zoo
    out = tmp_path / "recap"
    assert main(["recaption", "--model", str(tiny_run), "--images", str(folder), "--out", str(out),
                 "--rows-per-shard", "6", "--num-workers", "1", "--batch-size", "4", "--max-new-tokens", "10",
                 "--repetition-penalty", "3", "--no-progress"]) == 0  # the penalty: not every row a loop
    printed = capsys.readouterr().out
    assert f"{len(good)} captioned" in printed and f"decode {len(bad)}" in printed
    rows = _rows(out)
    _check_zoo_rows(rows, good, bad)
    row = rows["good_red"]
    assert row["model_revision"] == weights_revision(tiny_run) and row["model_id"] == tiny_run.name
    assert json.loads(row["generation_settings"])["short"]["max_new_tokens"] == 10
    assert all(r["short_tokens"] <= 10 for r in rows.values() if r["short_tokens"] is not None)

    assert main(["blend", str(out), "--out", str(tmp_path / "train.jsonl")]) == 0
    blended = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    captioned = {k for k in good if rows[k]["short_caption"] or rows[k]["detailed_caption"] or rows[k]["original_caption"]}
    assert captioned and {b["key"] for b in blended} == captioned
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert page.count('class="card"') == len(good) + len(bad) and "decompression bomb" in page
