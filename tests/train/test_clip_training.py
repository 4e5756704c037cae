"""Training on mixed data: one run on image and clip records (a broken video skipped and counted),
and a Q-Former giving each frame its queries, padded or packed."""

from __future__ import annotations

import json

import torch
from conftest import tiny_config, write_clip_dataset

from mllm.data.dataset import CaptionDataset
from mllm.data.packing import PackedCollator
from mllm.data.records import read_records
from mllm.model.build import build_captioner
from mllm.model.recipes import unwrap
from mllm.run_folder import load_run_config
from mllm.train.trainer import train


def test_one_run_trains_on_images_and_clips_and_skips_a_broken_video(tmp_path):
    data = write_clip_dataset(tmp_path / "data", n_clips=2, n_images=4)
    (tmp_path / "data" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with data.open("a") as lines:
        lines.write(json.dumps({"key": "broken", "video": "broken.mp4", "caption": "Never seen."}) + "\n")
    run = train(tiny_config(data, tmp_path / "run", "train.max_steps=3", "train.batch_size=7",
                            "train.save_steps=1000", "train.logging_steps=1", "data.video.max_frames=2",
                            "data.video.sampler=fps", "data.video.fps=1"))
    log = json.loads((run / "train_log.json").read_text())
    assert log["video_decode_failures"] >= 1 and log["image_decode_failures"] == 0
    assert log["skipped"] == {}
    losses = [row["loss"] for row in log["log_history"] if "loss" in row]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)
    assert load_run_config(run).data.video.sampler == "fps"  # the run folder keeps its frame sampling


def test_the_qformer_gives_each_frame_its_queries(tmp_path):
    data = write_clip_dataset(tmp_path / "data", n_clips=1, n_images=1)
    cfg = tiny_config(data, tmp_path / "run", "model.connector.type=qformer", "model.connector.num_queries=4",
                      "model.connector.num_layers=1", "data.video.max_frames=8", "data.video.max_visual_tokens=12")
    built = build_captioner(cfg, tmp_path / "run")
    dataset = CaptionDataset(read_records(data)[0], built.processor, ["detailed"], sampling=cfg.data.video)
    assert built.processor.image_seq_length == 4 and dataset.sampling.max_frames == 3  # 12 tokens: 3 frames of 4
    image, clip = dataset[0], dataset[1]
    assert clip["pixel_values"].shape[0] == 3 and clip["input_ids"].count(built.processor.image_token_id) == 12
    batch = built.processor.collate([image, clip])
    projected = []
    hook = unwrap(built.model).model.multi_modal_projector.register_forward_hook(
        lambda module, args, output: projected.append(output.shape))
    loss = built.model(**batch).loss
    hook.remove()
    assert projected == [torch.Size([4, 4, 64])]  # 1 image + 3 frames, 4 queries each
    assert torch.isfinite(loss)
    packed = built.model(**PackedCollator()([image, clip])).loss  # the same frames, in the same order
    torch.testing.assert_close(packed, loss, rtol=1e-4, atol=1e-5)
