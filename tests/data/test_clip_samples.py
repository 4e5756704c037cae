"""Clip records beside image records: read and checked, sampled into multi-image prompts with a
timestamp before each frame, capped in visual tokens, skipped and counted when broken (in DataLoader
workers), and shown by `mllm check-data`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import COLOURS, TINY, FakeProcessor, tiny_config, video_zoo, write_clip_dataset
from PIL import Image

from mllm.cli import main
from mllm.config import ConfigError, FrameSamplingConfig, load_config
from mllm.data.dataset import CaptionDataset
from mllm.data.inspect import view_sample
from mllm.data.processor import IGNORE_INDEX
from mllm.data.records import CaptionRecord, read_records
from mllm.data.visuals import load_visual
from mllm.errors import UsageError
from mllm.model.build import build_captioner
from mllm.model.recipes import stage_recipe
from mllm.train.trainer import loader_workers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, processor, data) of the tiny model on 2 images and 2 clips, 2 frames a clip."""
    root = tmp_path_factory.mktemp("clips")
    data = write_clip_dataset(root / "data", n_clips=2, n_images=2)
    cfg = tiny_config(data, root / "run", "data.video.max_frames=2")
    return cfg, build_captioner(cfg, root / "run", stage="align").processor, data


def test_video_records_are_read_beside_images_and_bad_ones_skipped(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    video_zoo().numbered_video(tmp_path / "v.mp4", count=10)
    bad_window = "bad start/end (numbers, 0 <= start < end)"
    rows = [{"image": "a.png", "caption": "An image."},
            {"video": "v.mp4", "caption": "All of it."},
            {"key": "w", "video": str(tmp_path / "v.mp4"), "start": 0.2, "end": 0.8, "caption": "A window."},
            {"video": "gone.mp4", "caption": "Missing."},
            {"image": "a.png", "video": "v.mp4", "caption": "Both."},
            {"video": "v.mp4", "start": 0.8, "end": 0.2, "caption": "Backwards."},
            {"video": "v.mp4", "start": "soon", "caption": "Not a number."},
            {"video": "v.mp4", "end": -1, "caption": "Negative."}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, skipped = read_records(tmp_path / "r.jsonl")
    assert [(r.key, r.is_clip, r.start, r.end) for r in records] == [
        ("a", False, None, None), ("v", True, None, None), ("w", True, 0.2, 0.8)]
    assert records[1].video == str(tmp_path / "v.mp4") and records[1].image is None
    assert skipped.counts == {"missing video file": 1, "both an image and a video": 1, bad_window: 3}
    assert any("gone.mp4" in example for example in skipped.examples)
    (tmp_path / "r.csv").write_text("video,start,end,caption\nv.mp4,0.5,1,From a table.\n")
    assert [(r.start, r.end) for r in read_records(tmp_path / "r.csv")[0]] == [(0.5, 1.0)]


def test_frame_sampling_is_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"data\.video\.sampler.*'unifrom' is not one of"):
        load_config(TINY, ["data.video.sampler=unifrom"])
    with pytest.raises(ConfigError, match=r"data\.video.*max_visual_tokens must be >= 1"):
        load_config(TINY, ["data.video.max_visual_tokens=0"])
    assert load_config(TINY, ["data.video.sampler=fps", "data.video.fps=2"]).data.video.fps == 2.0


def test_a_clip_is_a_multi_image_prompt_with_a_timestamp_before_each_frame(tiny):
    cfg, proc, data = tiny
    records, _ = read_records(data)
    dataset = CaptionDataset(records, proc, ["detailed"], sampling=cfg.data.video)
    (image_index, image), (clip_index, clip) = [(i, item[0]) for i, item in enumerate(dataset.items)
                                                if item[0].key in ("img0", "clip1")]
    visual = load_visual(clip, dataset.sampling)
    assert visual.timestamps == (0.5, 1.5)  # uniform, 2 frames of a 2 s clip: each part's centre
    centres = [frame.getpixel((16, 16)) for frame in visual.images]  # clip1 turns from green to black at 1 s
    assert [min(COLOURS, key=lambda c: sum(abs(a - b) for a, b in zip(COLOURS[c], rgb))) for rgb in centres] \
        == ["green", "black"]

    sample = dataset[clip_index]
    assert sample["pixel_values"].shape == (2, 3, 32, 32)
    assert sample["input_ids"].count(proc.image_token_id) == 2 * proc.image_seq_length == 32
    prompt = dataset.items[clip_index][2]
    view = view_sample(proc, clip.key, "detailed", prompt, clip.caption, visual.timestamps)
    assert f"0.5s: <image>×16\n1.5s: <image>×16\n{prompt}" in view.rendered
    assert f"⟦{clip.caption}" in view.rendered and view.timestamps == (0.5, 1.5)
    supervised = [t for t, label in zip(sample["input_ids"], sample["labels"]) if label != IGNORE_INDEX]
    assert supervised == proc.answer_ids(prompt, clip.caption, visual.timestamps)
    assert sample["labels"][:len(sample["labels"]) - len(supervised)] == [IGNORE_INDEX] * (
        len(sample["labels"]) - len(supervised))

    # An image is still `<image>` + newline + the instruction, one image's tokens: today's prompt exactly.
    sample = dataset[image_index]
    prompt = dataset.items[image_index][2]
    text = proc.tokenizer.apply_chat_template([{"role": "user", "content": f"<image>\n{prompt}"}],
                                              add_generation_prompt=True, tokenize=False)
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    at = ids.index(proc.image_token_id)
    assert sample["input_ids"][:len(ids) + 15] == ids[:at] + [proc.image_token_id] * 16 + ids[at + 1:]
    assert sample["pixel_values"].shape == (1, 3, 32, 32)
    batch = proc.collate([dataset[image_index], dataset[clip_index]])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # the image's, then the clip's frames


def test_the_visual_token_cap_samples_fewer_frames(tiny):
    cfg, proc, data = tiny
    clips = [r for r in read_records(data)[0] if r.is_clip]
    capped = CaptionDataset(clips, proc, ["detailed"], sampling=FrameSamplingConfig(max_frames=8, max_visual_tokens=40))
    assert capped.sampling.max_frames == 2  # 40 tokens hold two frames of 16
    assert capped[0]["pixel_values"].shape[0] == 2
    with pytest.raises(UsageError, match="max_visual_tokens=10 holds no frame: one frame takes 16"):
        CaptionDataset(clips, proc, ["detailed"], sampling=FrameSamplingConfig(max_visual_tokens=10))
    # Without a cap, frames that would not fit data.max_length (128) reject the record by name up front.
    uncapped = CaptionDataset(clips, proc, ["detailed"], sampling=FrameSamplingConfig(max_frames=8))
    assert not uncapped.items and "image tokens of 8 frames" in uncapped.skipped.summary()


def test_broken_videos_and_images_are_skipped_and_counted_by_kind_in_workers(tmp_path):
    good = video_zoo().numbered_video(tmp_path / "good.mkv", count=20)
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    clip, image = "A clip.", "An image."
    records = [CaptionRecord("c1", video=str(tmp_path / "bad.mp4"), caption=clip),
               CaptionRecord("c0", video=str(good), caption=clip),
               CaptionRecord("i1", str(tmp_path / "bad.png"), caption=image),
               CaptionRecord("i0", str(tmp_path / "good.png"), caption=image),
               CaptionRecord("c2", video=str(tmp_path / "bad.mp4"), caption=clip),
               CaptionRecord("c3", video=str(good), caption=clip)]
    dataset = CaptionDataset(records, FakeProcessor(), ["detailed"], sampling=FrameSamplingConfig(max_frames=3))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda s: s)
    frames = [sample["pixel_values"].shape[0] for batch in loader for sample in batch]
    assert frames == [3, 3, 1, 1, 3, 3]  # each bad one replaced by the good sample after it
    assert dataset.decode_failures_by_kind() == {"image": 1, "video": 2}  # each met once, in a worker
    cfg = load_config(TINY)
    assert cfg.train.num_workers == "auto" and loader_workers(cfg, dataset) >= 1  # clips decode in workers
    assert loader_workers(cfg, CaptionDataset(records[2:4], FakeProcessor(), ["detailed"])) == 0


def test_a_stage_that_trains_on_images_skips_clip_records():
    assert not stage_recipe("qformer_pretrain").clips and stage_recipe("sft").clips
    records = [CaptionRecord("c0", video="v.mp4", caption="A clip."), CaptionRecord("i0", "a.png", caption="An image.")]
    dataset = CaptionDataset(records, FakeProcessor(), ["detailed"], clips=False)
    assert [item[0].key for item in dataset.items] == ["i0"]
    assert dataset.skipped.counts == {"a clip (this stage trains on images)": 1}


def test_check_data_shows_each_frame_and_its_timestamp(tiny, capsys):
    data = tiny[2]
    assert main(["check-data", "--config", str(TINY), f"data.train={data}", "data.video.max_frames=2",
                 "data.tasks=[detailed]", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "── clip0 [detailed] 2 frames at 0.50, 1.50 s | image tokens: 32 |" in out
    assert "0.5s: <image>×16\n1.5s: <image>×16\n" in out
    assert "── img0 [detailed] image tokens: 16 |" in out  # an image: no frames line
