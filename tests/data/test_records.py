"""Caption records: missing values (None / NaN) read as empty, the `llava` format, and decode failures
counted across DataLoader workers."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from conftest import FakeProcessor

from mllm.data.dataset import CaptionDataset
from mllm.data.records import read_records


def _image(folder, name="a.png"):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / name)
    return name


def test_nan_captions_read_as_empty_and_do_not_crash_the_reader(tmp_path):
    _image(tmp_path)
    lines = ['{"image": "a.png", "caption": NaN, "short_caption": "A red square."}',
             '{"image": "a.png", "caption": NaN, "short_caption": NaN, "key": "gone"}',
             '{"image": "a.png", "caption": "A red square on white.", "original_caption": NaN}']
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    records, skipped = read_records(tmp_path / "r.jsonl")
    assert [(r.caption, r.short_caption, r.original_caption) for r in records] == [
        ("", "A red square.", ""), ("A red square on white.", "", "")]
    assert skipped.counts == {"empty caption": 1}
    pq.write_table(pa.table({"image": ["a.png", "a.png"], "caption": ["A red square.", None],
                             "short_caption": [float("nan"), 2.0]}), tmp_path / "r.parquet")
    records, _ = read_records(tmp_path / "r.parquet")
    assert [(r.caption, r.short_caption) for r in records] == [("A red square.", ""), ("", "2.0")]


def test_the_llava_format_is_accepted_by_name(tmp_path):
    _image(tmp_path)
    rows = [{"id": "x1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."}]},
        {"id": "x2", "image": "a.png", "caption": "not a conversation"}]
    (tmp_path / "llava.json").write_text(json.dumps(rows))
    records, skipped = read_records(tmp_path / "llava.json", fmt="llava")
    assert [(r.key, r.caption, r.prompt) for r in records] == [("x1", "A red square.", "What is shown?")]
    assert skipped.total == 1 and "not a LLaVA record" in skipped.summary()


def test_decode_failures_in_dataloader_workers_are_counted(tmp_path):
    from mllm.data.records import CaptionRecord

    good = tmp_path / _image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    records = [CaptionRecord(f"k{i}", str(tmp_path / "bad.png" if i % 2 else good), caption="A square.")
               for i in range(8)]
    dataset = CaptionDataset(records, FakeProcessor(), ["detailed"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda s: s)
    assert sum(len(batch) for batch in loader) == 8
    assert dataset.decode_failures == 4  # each bad record is met once, in a worker
