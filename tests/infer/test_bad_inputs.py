"""Inputs that used to crash or hang a job are error rows naming the record (issue 14, item 4), and a
folder reads every file the decoder can open, reporting the others (item 7)."""

from __future__ import annotations

import os

import pytest
from fake_captioner import FakeCaptioner
from inputs import jsonl_row, manifest_lines, png, tar_bytes, write_images

from mllm.config import GenerationSettings
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import FolderSource, ManifestSource, WebDatasetSource

SETTINGS = {"short": GenerationSettings(max_new_tokens=8)}


def _recaption(source, out, **engine):
    config = RecaptionConfig(str(out), rows_per_shard=4, progress=False,
                             engine=EngineConfig(tasks=("short",), num_workers=1, batch_size=2, **engine))
    summary = recaption(FakeCaptioner(), source, config, SETTINGS)
    return summary, {r["key"]: r for r in OutputFolder(out).read_table().to_pylist()}


@pytest.mark.timeout(120)
def test_bad_manifest_records_are_error_rows_naming_the_record(tmp_path):
    images = write_images(tmp_path / "root" / "images", ["good", "big"])
    (images / "big.png").write_bytes(png(0) + bytes(4000))  # over the size cap below
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", images / "fifo.png")
    os.symlink("/dev/zero", images / "zero.png")
    (tmp_path / "secret.png").write_bytes(png(1))
    manifest = manifest_lines(tmp_path / "root" / "m.jsonl", [
        jsonl_row(key="good", image="images/good.png"),
        b'{"key": "latin1", "image": "images/caf\xe9.png"}',  # not UTF-8
        jsonl_row(key="nul", image="images/a\x00b.png"),
        jsonl_row(key="fifo", image="images/fifo.png"),
        jsonl_row(key="zero", image="images/zero.png"),
        jsonl_row(key="big", image="images/big.png"),
        jsonl_row(key="escape", image="../secret.png"),
        jsonl_row(key="absolute", image=str(tmp_path / "secret.png")),
    ])
    source = ManifestSource(str(manifest), image_root=str(tmp_path / "root"))
    summary, rows = _recaption(source, tmp_path / "out", max_bytes=2000)
    assert rows["good"]["short_caption"] and summary.captioned == 1 and summary.done == 8
    assert rows["m.jsonl#1"]["error_kind"] == "input" and "line 2: not UTF-8" in rows["m.jsonl#1"]["error"]
    assert rows["nul"]["error_kind"] == "decode" and "images/a\x00b.png" in rows["nul"]["error"]
    for key in ("fifo", "zero"):
        assert rows[key]["error_kind"] == "decode" and "not a regular file" in rows[key]["error"], rows[key]
    assert "too large" in rows["big"]["error"] and "images/big.png" in rows["big"]["error"]
    for key, image in (("escape", "../secret.png"), ("absolute", str(tmp_path / "secret.png"))):
        assert rows[key]["error_kind"] == "input" and f"{image} is outside the image root" in rows[key]["error"]


def test_without_an_image_root_relative_paths_resolve_against_the_manifest(tmp_path):
    write_images(tmp_path / "images", ["a"])
    (tmp_path / "sub").mkdir()
    manifest = manifest_lines(tmp_path / "sub" / "m.jsonl", [jsonl_row(key="a", image="../images/a.png")])
    _, rows = _recaption(ManifestSource(str(manifest)), tmp_path / "out")
    assert rows["a"]["error"] is None and rows["a"]["short_caption"]


def test_a_csv_manifest_with_a_bad_byte_gives_one_error_row(tmp_path):
    write_images(tmp_path, ["a", "b"])
    (tmp_path / "m.csv").write_bytes(b"key,image\na,a.png\nx,caf\xe9.png\nb,b.png\n")
    _, rows = _recaption(ManifestSource(str(tmp_path / "m.csv")), tmp_path / "out")
    assert rows["a"]["short_caption"] and rows["b"]["short_caption"]
    assert "row 2: not UTF-8" in rows["m.csv#1"]["error"]


def test_a_folder_captions_every_format_pillow_opens_and_reports_the_rest(tmp_path):
    from PIL import Image

    folder = write_images(tmp_path / "images", ["a"])
    Image.new("RGB", (10, 10), (0, 0, 255)).save(folder / "photo.avif")
    (folder / "notes.md").write_text("not an image")
    (folder / "a.txt").write_text("the alt text of a.png")
    summary, rows = _recaption(FolderSource(str(folder)), tmp_path / "out")
    assert rows["photo"]["short_caption"] == "A blue square."
    assert rows["a"]["original_caption"] == "the alt text of a.png"
    assert summary.files_not_read == ["notes.md"] and "1 files not read (not images): notes.md" in summary.format()


def test_an_unsorted_tar_gives_an_error_row_for_a_repeated_key(tmp_path):
    order = [("k0", ".png"), ("k1", ".png"), ("k0", ".txt"), ("k1", ".txt")]
    (tmp_path / "00000.tar").write_bytes(tar_bytes(["k0", "k1"], order=order))
    _, rows = _recaption(WebDatasetSource(str(tmp_path / "*.tar")), tmp_path / "out")
    assert rows["k0"]["short_caption"] and rows["k1"]["short_caption"]
    for key in ("k0#1", "k1#1"):
        assert rows[key]["error_kind"] == "input" and "not grouped by key" in rows[key]["error"]


def test_a_tar_member_over_the_size_cap_is_not_read(tmp_path):
    (tmp_path / "00000.tar").write_bytes(tar_bytes(["k0"]))
    source = WebDatasetSource(str(tmp_path / "*.tar"), max_member_bytes=10)
    item, = list(source)
    assert item.image is None and "member too large" in item.error and "k0.png" in item.error
