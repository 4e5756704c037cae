"""Captioning videos through the one engine (issue 17, item 5 and acceptance 3): folders, manifests and
webdataset tars of clips next to images; decoding in DataLoader workers; a broken video is an error
row; long videos in windows, then a whole-video caption by the LLM with its LoRA adapter off."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import video_zoo
from fake_captioner import COLOURS, FakeCaptioner
from PIL import Image

import mllm.infer.decoding as decoding
from mllm.cli import main
from mllm.config import FrameSamplingConfig, GenerationSettings
from mllm.errors import UsageError
from mllm.infer.backends.hf import Captioner
from mllm.infer.caption import CaptionFileConfig, caption_file
from mllm.infer.engine import CaptionEngine, EngineConfig, finish_caption
from mllm.infer.recaption import RecaptionConfig, recaption
from mllm.infer.shards import OutputFolder, WorkerSlot
from mllm.infer.sources import FolderSource, ManifestSource, WebDatasetSource
from mllm.infer.windows import summary_prompt
from mllm.run_folder import load_run_config

SETTINGS = {"short": GenerationSettings(max_new_tokens=40)}
SAMPLING = FrameSamplingConfig(sampler="fps", fps=1.0, max_frames=4)


def colour_video(path: Path, colours: list[str], seconds_each: float = 1.0, rate: int = 4) -> Path:
    """Flat colours, `seconds_each` seconds each, in turn."""
    frames = [np.full((16, 16, 3), COLOURS[c], np.uint8) for c in colours for _ in range(round(seconds_each * rate))]
    return video_zoo().write_video(path, frames, rate=rate)


def acceptance_folder(root: Path) -> Path:
    """3 good clips (mp4, mkv, webm), 1 broken clip (garbage bytes) and 1 image."""
    root.mkdir(parents=True, exist_ok=True)
    colour_video(root / "a.mp4", ["red", "blue"])
    colour_video(root / "b.mkv", ["green", "green"])
    colour_video(root / "c.webm", ["yellow", "black"])
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    Image.new("RGB", (16, 16), COLOURS["cyan"]).save(root / "photo.png")
    return root


def by_key(rows) -> dict:
    return {row["key"]: row for row in rows}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def decoded_in_workers(monkeypatch):
    """Fails any video decoding on the test's own process (DataLoader workers are forked from it)."""
    main, original = os.getpid(), decoding.load_windows

    def guarded(*args, **kwargs):
        assert os.getpid() != main, "a video was decoded on the main process"
        return original(*args, **kwargs)

    monkeypatch.setattr(decoding, "load_windows", guarded)


def test_folder_of_clips_broken_clip_and_image_gives_4_captions_and_1_error_row(tmp_path, decoded_in_workers):
    folder = acceptance_folder(tmp_path / "in")
    config = RecaptionConfig(str(tmp_path / "out"), progress=False,
                             engine=EngineConfig(tasks=("short",), num_workers=1, batch_size=2, video=SAMPLING))
    summary = recaption(FakeCaptioner(), FolderSource(str(folder)), config, SETTINGS)
    rows = by_key(OutputFolder(tmp_path / "out").read_table().to_pylist())
    assert (summary.done, summary.captioned, summary.errors) == (5, 4, {"decode": 1})
    assert rows["broken"]["error_kind"] == "decode" and "broken.mp4" in rows["broken"]["error"]
    assert rows["broken"]["short_caption"] is None and rows["broken"]["duration"] is None
    # each frame's time, as the prompt labels it, and what it shows
    assert rows["a"]["short_caption"] == "0.0s: red; 1.0s: blue"
    assert rows["b"]["short_caption"] == "0.0s: green; 1.0s: green"
    assert rows["c"]["short_caption"] == "0.0s: yellow; 1.0s: black"
    for key in "abc":
        assert rows[key]["duration"] == pytest.approx(2.0) and rows[key]["fps"] == pytest.approx(4.0)
        assert rows[key]["timestamps"] == [0.0, 1.0] and rows[key]["truncated"] is False
        assert rows[key]["shots"] is None and rows[key]["windows"] is None
    assert rows["photo"]["short_caption"] == "A cyan square."
    assert rows["photo"]["duration"] is None and rows["photo"]["timestamps"] is None


def test_manifest_windows_of_videos_and_webdataset_clips(tmp_path):
    colour_video(tmp_path / "a.mp4", ["red", "blue", "green"])
    Image.new("RGB", (16, 16), COLOURS["cyan"]).save(tmp_path / "photo.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        {"key": "whole", "video": "a.mp4"}, {"key": "middle", "video": "a.mp4", "start": 1.0, "end": 2.0},
        {"key": "photo", "image": "photo.png"}, {"key": "bad", "video": "a.mp4", "start": 2.0, "end": 1.0},
        {"key": "both", "video": "a.mp4", "image": "photo.png"}]))
    engine = EngineConfig(tasks=("short",), num_workers=0, video=SAMPLING)
    caption_file(FakeCaptioner(), ManifestSource(str(manifest)), CaptionFileConfig(str(tmp_path / "m.jsonl.out.jsonl"),
                 engine, progress=False), SETTINGS)
    rows = by_key(jsonl(tmp_path / "m.jsonl.out.jsonl"))
    assert rows["whole"]["short_caption"] == "0.0s: red; 1.0s: blue; 2.0s: green"
    # a window is labelled from its own start, and its timestamps are on the video's timeline
    assert rows["middle"]["short_caption"] == "0.0s: blue" and rows["middle"]["timestamps"] == [1.0]
    assert rows["photo"]["short_caption"] == "A cyan square."
    assert rows["bad"]["error_kind"] == "input" and "bad start / end" in rows["bad"]["error"]
    assert rows["both"]["error_kind"] == "input" and "both an image and a video" in rows["both"]["error"]

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in [("k1.mp4", (tmp_path / "a.mp4").read_bytes()), ("k1.txt", b"alt one"),
                           ("k2.png", (tmp_path / "photo.png").read_bytes())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (tmp_path / "00000.tar").write_bytes(buffer.getvalue())
    out = tmp_path / "wds.jsonl"
    caption_file(FakeCaptioner(), WebDatasetSource(str(tmp_path / "*.tar")), CaptionFileConfig(str(out), engine,
                 progress=False), SETTINGS)
    rows = by_key(jsonl(out))
    assert rows["k1"]["short_caption"] == "0.0s: red; 1.0s: blue; 2.0s: green"
    assert rows["k1"]["original_caption"] == "alt one" and rows["k1"]["image"].endswith("00000.tar/k1.mp4")
    assert rows["k2"]["short_caption"] == "A cyan square."


def test_sharded_job_over_videos_is_exactly_once_and_resumes(tmp_path):
    folder = acceptance_folder(tmp_path / "in")
    colour_video(folder / "d.mov", ["magenta", "white"])
    source = FolderSource(str(folder))

    def run(slot: WorkerSlot):
        config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=2, slot=slot, num_shards=slot.count,
                                 progress=False, engine=EngineConfig(tasks=("short",), num_workers=1, batch_size=2,
                                                                     video=SAMPLING))
        return recaption(FakeCaptioner(), source, config, SETTINGS)

    assert run(WorkerSlot(0, 2)).done == 4  # shards (0, 0) and (0, 2)
    assert run(WorkerSlot(1, 2)).done == 2
    again = run(WorkerSlot(0, 2))
    assert again.done == 0 and again.skipped == 6
    keys = Counter(OutputFolder(tmp_path / "out").read_table().column("key").to_pylist())
    assert keys == Counter({k: 1 for k in ["a", "b", "broken", "c", "d", "photo"]})
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows_done"] == 6



def test_a_job_records_the_sampling_it_uses_so_api_and_command_line_runs_resume_each_other(tmp_path):
    """The API leaves `EngineConfig.video` unset (the captioner's, i.e. the run's `data.video`); the command
    line passes the run's `data.video` explicitly: both are the same job."""
    folder = acceptance_folder(tmp_path / "in")
    captioner = FakeCaptioner()
    captioner.video = SAMPLING

    def run(video):
        config = RecaptionConfig(str(tmp_path / "out"), rows_per_shard=2, progress=False,
                                 engine=EngineConfig(tasks=("short",), num_workers=1, batch_size=2, video=video))
        return recaption(captioner, FolderSource(str(folder)), config, SETTINGS)

    first = run(None)
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["decode"]["video"]["max_frames"] == SAMPLING.max_frames
    again = run(SAMPLING)  # would raise "holds a different job" if the first run recorded no sampling
    assert first.done == 5 and again.done == 0 and again.skipped == 5

# -- the real tiny model: clips through the HF backend, windows and the whole-video caption ---------
# `vllm_lora_run` (conftest): a LoRA adapter over a trained tiny captioner, one that changes its captions.

def test_recaption_command_over_a_folder_of_clips_with_the_tiny_model(vllm_lora_run, tmp_path, decoded_in_workers,
                                                                       capsys):
    folder = acceptance_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["recaption", "--model", str(vllm_lora_run), "--images", str(folder), "--out", str(out),
                 "--video", "max_frames=3", "--num-workers", "1", "--batch-size", "4", "--device", "cpu",
                 "--dtype", "float32", "--no-progress"]) == 0
    assert "5 rows (4 captioned)" in capsys.readouterr().out
    rows = by_key(OutputFolder(out).read_table().to_pylist())
    assert [r["key"] for r in rows.values() if r["error_kind"]] == ["broken"]
    assert rows["broken"]["error_kind"] == "decode" and "broken.mp4" in rows["broken"]["error"]
    for key in ("a", "b", "c", "photo"):
        assert rows[key]["detailed_caption"] and rows[key]["short_caption"], rows[key]
    assert [len(rows[k]["timestamps"]) for k in "abc"] == [3, 3, 3]  # --video over the run's data.video
    assert json.loads((out / "job.json").read_text())["decode"]["video"]["max_frames"] == 3


def test_long_clip_gives_window_captions_and_a_whole_video_caption_by_the_llm_without_its_adapter(
        vllm_lora_run, tmp_path):
    (tmp_path / "in").mkdir()
    colour_video(tmp_path / "in" / "long.mp4", ["red", "green", "blue", "yellow"], seconds_each=2.0)
    video = FrameSamplingConfig(max_frames=2, window_seconds=3.0)
    captioner = Captioner.load(vllm_lora_run, device="cpu", dtype="float32", video=video)
    settings = {"detailed": load_run_config(vllm_lora_run).generation["detailed"]}
    out = tmp_path / "long.jsonl"
    caption_file(captioner, FolderSource(str(tmp_path / "in")), CaptionFileConfig(
        str(out), EngineConfig(tasks=("detailed",), num_workers=1), progress=False), settings)
    (row,) = jsonl(out)
    assert row["error_kind"] is None and row["duration"] == pytest.approx(8.0)
    windows = row["windows"]
    assert [(w["start"], w["end"]) for w in windows] == pytest.approx([(0, 8 / 3), (8 / 3, 16 / 3), (16 / 3, 8)])
    assert all(w["detailed_caption"] for w in windows) and all(len(w["timestamps"]) == 2 for w in windows)
    assert row["timestamps"] == [t for w in windows for t in w["timestamps"]]

    # the whole-video caption is the LLM's answer, adapter off, to the prompt made of the window captions
    prompt = summary_prompt("detailed", [(w["start"], w["end"]) for w in windows],
                            [w["detailed_caption"] for w in windows])
    guard = EngineConfig().loop_guard
    off = captioner.generate_text([prompt], "detailed", settings["detailed"], loop_guard=guard)[0]
    expected = finish_caption(off.text, off.token_ids, settings["detailed"], guard,
                              captioner.processor.tokenizer.decode)[0]
    assert row["detailed_caption"] == expected and row["detailed_tokens"] == len(off.token_ids) and expected
    with_adapter = captioner.model.generate(**captioner.processor.text_generation_inputs([prompt]), do_sample=False,
                                            max_new_tokens=settings["detailed"].max_new_tokens,
                                            eos_token_id=captioner.stop_ids)
    on_ids = with_adapter[0, len(captioner.processor.text_prompt_ids(prompt)):].tolist()
    assert on_ids[:len(off.token_ids)] != off.token_ids  # the adapter does change the answer: it was off


def test_windows_need_the_adapter_kept_apart(vllm_lora_run):
    merged = Captioner.load(vllm_lora_run, device="cpu", dtype="float32")
    assert not merged.writes_text
    with pytest.raises(UsageError, match="window_seconds"):
        CaptionEngine(merged, {"detailed": GenerationSettings(batch_size=1)},
                      EngineConfig(tasks=("detailed",), video=FrameSamplingConfig(window_seconds=3.0)))


@pytest.mark.slow
def test_vllm_engine_captions_clips_and_windows_like_the_hf_engine(vllm_lora_run, vllm_python, tmp_path,
                                                                   monkeypatch):
    """Real vLLM (.venv-vllm): clips as several images per prompt, window captions with the LoRA adapter,
    the whole-video caption without it; fp32 greedy, as the HF engine writes them."""
    from mllm.infer.backends.vllm import VllmCaptioner

    monkeypatch.setenv("MLLM_CACHE", str(tmp_path / "cache"))
    folder = acceptance_folder(tmp_path / "in")
    colour_video(folder / "long.mp4", ["red", "green", "blue", "yellow"], seconds_each=2.0)
    video = FrameSamplingConfig(max_frames=2, window_seconds=3.0)
    settings = {t: load_run_config(vllm_lora_run).generation[t] for t in ("short", "detailed")}
    rows = {}
    for name, captioner in [("hf", Captioner.load(vllm_lora_run, device="cpu", dtype="float32", video=video)),
                            ("vllm", VllmCaptioner.load(vllm_lora_run, dtype="float32", video=video))]:
        out = tmp_path / f"{name}.jsonl"
        caption_file(captioner, FolderSource(str(folder)), CaptionFileConfig(str(out), EngineConfig(
            backend=name, num_workers=1, batch_size=4), progress=False), settings)
        rows[name] = by_key(jsonl(out))
    hf, served = rows["hf"], rows["vllm"]
    assert served["broken"]["error_kind"] == "decode" and len(served["long"]["windows"]) == 3
    texts = lambda row: [row[f"{t}_caption"] for t in settings] + [  # noqa: E731
        w[f"{t}_caption"] for w in row["windows"] or [] for t in settings]
    compared = [(key, a, b) for key in ("a", "b", "c", "photo", "long")
                for a, b in zip(texts(hf[key]), texts(served[key]))]
    mismatches = [c for c in compared if c[1] != c[2]]
    print(f"vLLM: {len(compared) - len(mismatches)}/{len(compared)} captions equal the HF engine's")
    assert len(mismatches) <= 1, mismatches
