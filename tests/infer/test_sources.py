"""Each input kind (folder, JSONL/CSV/Parquet manifest, HF imagefolder / save_to_disk, webdataset tar)
yields the right keys, images and original captions, turns bad records into error items, and runs
through `recaption`."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_captioner import FakeCaptioner
from image_zoo import encode
from PIL import Image

from mllm.config import GenerationSettings
from mllm.errors import UsageError
from mllm.data.images import load_image
from mllm.infer.engine import EngineConfig
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import (FolderSource, HFDatasetSource, ManifestSource, WebDatasetSource, describe_source,
                                open_source, source_from_description)

COLOURS = {"k0": (255, 0, 0), "k1": (0, 255, 0), "k2": (0, 0, 255)}
NAMES = {"k0": "red", "k1": "green", "k2": "blue"}


def _png(key: str) -> bytes:
    return encode(Image.new("RGB", (12, 12), COLOURS[key]))


def _colour(item) -> tuple[int, int, int]:
    return load_image(item.image, name=item.ref).getpixel((0, 0))


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for key in COLOURS:
        (folder / f"{key}.png").write_bytes(_png(key))
    return folder


def test_folder_keys_sidecar_captions_and_clashing_stems(tmp_path):
    root = _images(tmp_path / "imgs")
    (root / "k0.txt").write_text("a red thing\n")
    (root / "sub").mkdir()
    (root / "sub" / "k1.png").write_bytes(_png("k1"))
    (root / "k1.jpg").write_bytes(encode(Image.new("RGB", (12, 12), COLOURS["k1"]), "JPEG"))
    (root / "notes.md").write_text("not an image")
    items = list(FolderSource(str(root)))
    assert [i.key for i in items] == ["k0", "k1", "k1.png", "k2", "sub/k1"]
    assert items[0].original_caption == "a red thing" and items[3].original_caption is None
    assert _colour(items[4]) == COLOURS["k1"] and FolderSource(str(root)).count() == 5
    assert FolderSource(str(root)).listing().skipped == ["notes.md"]  # k0.txt is k0's sidecar, not skipped
    with pytest.raises(UsageError, match="image folder not found: .*missing"):
        list(FolderSource(str(tmp_path / "missing")))


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_manifests_resolve_relative_paths_and_read_keys_and_captions(tmp_path, kind):
    _images(tmp_path / "imgs")
    rows = [{"key": f"id-{k}", "image": f"imgs/{k}.png", "text": f"alt {k}"} for k in COLOURS]
    rows.append({"key": "id-gone", "image": "imgs/gone.png", "text": "alt gone"})
    path = tmp_path / f"manifest.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["key", "image", "text"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    source = ManifestSource(str(path))
    items = list(source)
    assert [i.key for i in items] == ["id-k0", "id-k1", "id-k2", "id-gone"] and source.count() == 4
    assert [i.original_caption for i in items[:3]] == ["alt k0", "alt k1", "alt k2"]
    assert [_colour(i) for i in items[:3]] == list(COLOURS.values())
    assert items[3].error is None and items[3].ref == "imgs/gone.png"  # a missing file fails at decode


def test_bad_manifest_rows_become_error_items_naming_file_and_row(tmp_path):
    _images(tmp_path)
    path = tmp_path / "m.jsonl"
    path.write_text('{"image": "k0.png", "caption": "ok"}\n{not json\n[1, 2]\n{"key": "nokey"}\n'
                    '{"key": "web", "image": "https://example.com/a.jpg"}\n')
    items = list(ManifestSource(str(path)))
    assert items[0].key == "k0" and items[0].error is None and items[0].original_caption == "ok"
    assert "m.jsonl line 2: invalid JSON" in items[1].error and "line 3: not a JSON object" in items[2].error
    assert items[3].key == "nokey" and "row 3: missing image path" in items[3].error
    assert "URLs are not fetched" in items[4].error
    with pytest.raises(ValueError, match="unsupported manifest type"):
        list(ManifestSource(str(tmp_path / "k0.png")))


def test_hf_imagefolder_with_metadata_and_save_to_disk(tmp_path):
    import datasets

    folder = _images(tmp_path / "imagefolder")
    (folder / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": f"{k}.png", "caption": f"alt {k}"}) + "\n" for k in COLOURS))
    items = list(HFDatasetSource(str(folder)))
    assert len(items) == 3 and all(i.error is None for i in items)
    assert sorted((i.original_caption, _colour(i)) for i in items) == sorted(
        (f"alt {k}", COLOURS[k]) for k in COLOURS)
    assert [i.key for i in items] == ["00000000", "00000001", "00000002"]  # no key column: the row index

    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"key": list(COLOURS), "img": [{"bytes": _png(k), "path": None} for k in COLOURS],
                                "text": ["x", "y", "z"]},
                               features=datasets.Features({"key": datasets.Value("string"), "img": datasets.Image(),
                                                           "text": datasets.Value("string")})).save_to_disk(str(saved))
    items = list(HFDatasetSource(str(saved)))
    assert [i.key for i in items] == list(COLOURS) and [i.original_caption for i in items] == ["x", "y", "z"]
    assert isinstance(items[0].image, bytes) and [_colour(i) for i in items] == list(COLOURS.values())


def _webdataset_shard(path, keys, *, without_image=(), truncate: int | None = None):
    """img2dataset layout: {key}.jpg/.png + {key}.txt + {key}.json."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key in keys:
            files = {".txt": f"alt {key}".encode(), ".json": json.dumps({"key": key, "status": "success"}).encode()}
            if key not in without_image:
                files[".png"] = _png(key)
            for suffix, data in files.items():
                info = tarfile.TarInfo(f"{key}{suffix}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    path.write_bytes(data if truncate is None else data[: len(data) // 2 + truncate])
    return path


def test_webdataset_shards_in_img2dataset_layout(tmp_path):
    _webdataset_shard(tmp_path / "00000.tar", ["k0", "k1"])
    _webdataset_shard(tmp_path / "00001.tar", ["k2", "k3"], without_image=["k3"])
    source = WebDatasetSource(str(tmp_path / "*.tar"))
    items = list(source)
    assert [i.key for i in items] == ["k0", "k1", "k2", "k3"]
    assert [i.original_caption for i in items] == ["alt k0", "alt k1", "alt k2", "alt k3"]
    assert [_colour(i) for i in items[:3]] == list(COLOURS.values()) and items[0].ref == "00000.tar/k0.png"
    assert items[3].image is None and "00001.tar: record 'k3' has no image" in items[3].error
    assert source.count() is None
    for shard, n in (("00000", 2), ("00001", 2)):
        (tmp_path / f"{shard}_stats.json").write_text(json.dumps({"successes": n}))
    assert source.count() == 4
    with pytest.raises(UsageError, match="no webdataset shards"):
        list(WebDatasetSource(str(tmp_path / "none-*.tar")))


@pytest.mark.parametrize("extra", [0, 100])  # cut at a block boundary / inside a member
def test_a_truncated_webdataset_shard_gives_an_error_item_not_a_crash(tmp_path, extra):
    _webdataset_shard(tmp_path / "00000.tar", ["k0", "k1", "k2"], truncate=extra)
    items = list(WebDatasetSource(str(tmp_path / "00000.tar")))
    assert items[-1].key == "00000.tar#unreadable" and "00000.tar" in items[-1].error
    assert "truncated" in items[-1].error or "cannot read shard" in items[-1].error
    assert items[0].key == "k0" and _colour(items[0]) == COLOURS["k0"]
    assert "k2" not in [i.key for i in items]


def test_open_source_picks_one_kind_makes_paths_absolute_and_round_trips(tmp_path, monkeypatch):
    _images(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    source = open_source(images="imgs")
    assert source == FolderSource(str(tmp_path / "imgs"))
    assert source_from_description(json.loads(json.dumps(describe_source(source)))) == source
    wds = open_source(webdataset="shards/*.tar")
    assert wds == WebDatasetSource(str(tmp_path / "shards" / "*.tar"))
    assert open_source(manifest="m.csv", caption_column="alt").caption_column == "alt"
    with pytest.raises(ValueError, match="exactly one input"):
        open_source(images="imgs", manifest="m.csv")
    with pytest.raises(ValueError, match="exactly one input"):
        open_source()


def test_every_source_kind_runs_through_recaption(tmp_path):
    _images(tmp_path / "imgs")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"key": k, "image": f"imgs/{k}.png"}) + "\n" for k in COLOURS))
    _webdataset_shard(tmp_path / "00000.tar", list(COLOURS))
    sources = [FolderSource(str(tmp_path / "imgs")), ManifestSource(str(tmp_path / "m.jsonl")),
               WebDatasetSource(str(tmp_path / "*.tar"))]
    settings = {"short": GenerationSettings(max_new_tokens=20)}
    for n, source in enumerate(sources):
        config = RecaptionConfig(str(tmp_path / f"out{n}"), rows_per_shard=2,
                                 engine=EngineConfig(tasks=("short",), num_workers=0),
                                 progress=False)
        summary = recaption(FakeCaptioner(), source, config, settings)
        rows = OutputFolder(config.out_dir).read_table().to_pylist()
        assert summary.done == summary.captioned == 3
        assert {r["key"]: r["short_caption"] for r in rows} == {k: f"A {NAMES[k]} square." for k in COLOURS}
