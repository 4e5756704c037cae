"""Video decoding on files the tests write with PyAV: every container, variable frame rate, broken
tails, rotation, audio, and inputs that must be clean errors (never a crash, never a hang)."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from mllm.data.clips import load_clip
from mllm.data.frame_samplers import FrameSamplingConfig
from mllm.data.images import ImageDecodeError
from mllm.data.video import VideoDecodeError, open_video, probe_video

_spec = importlib.util.spec_from_file_location("video_zoo", Path(__file__).with_name("video_zoo.py"))
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

VFR_MS = [0, 100, 150, 400, 1000, 1700]


@pytest.mark.parametrize("suffix", sorted(zoo.CONTAINERS))
def test_every_container_decodes_each_frame_at_its_time(tmp_path, suffix):
    path = zoo.numbered_video(tmp_path / f"clip.{suffix}", count=30, rate=10)
    for source in (path, str(path), path.read_bytes()):
        with open_video(source, name=f"clip.{suffix}") as video:
            assert video.info.duration == pytest.approx(3.0, abs=0.01)
            assert video.info.fps == pytest.approx(10.0)
            assert (video.info.width, video.info.height, video.info.rotation) == (32, 32, 0)
            assert not video.info.truncated and not video.info.has_audio
            decoded = video.frames_at([0.0, 1.04, 2.95, 99.0])
        assert decoded.problem is None
        assert [f.timestamp for f in decoded.frames] == pytest.approx([0.0, 1.0, 2.9])
        assert [zoo.frame_index(f.image) for f in decoded.frames] == [0, 10, 29]
        assert all(f.image.mode == "RGB" and f.image.size == (32, 32) for f in decoded.frames)


@pytest.mark.parametrize("suffix", ["mkv", "mp4", "webm"])
def test_variable_frame_rate_gives_each_frame_its_own_presentation_time(tmp_path, suffix):
    path = zoo.numbered_video(tmp_path / f"vfr.{suffix}", count=len(VFR_MS), pts_ms=VFR_MS)
    with open_video(path) as video:
        assert 1.7 < video.info.duration <= 1.8 + 1e-6
        every_10ms = video.frames_at([i / 100 for i in range(181)])
        shown = video.frames_at([0.12, 0.16, 0.5, 1.69, 1.75])
    assert [f.timestamp for f in every_10ms.frames] == pytest.approx([t / 1000 for t in VFR_MS])
    assert [zoo.frame_index(f.image) for f in every_10ms.frames] == list(range(len(VFR_MS)))
    # the frame on screen at each time is the last one that started at or before it
    assert [f.timestamp for f in shown.frames] == pytest.approx([0.1, 0.15, 0.4, 1.0, 1.7])


def test_a_cut_off_matroska_file_gives_the_frames_up_to_the_break_flagged(tmp_path):
    data = zoo.numbered_video(tmp_path / "clip.mkv", count=30, keyframe_every=1).read_bytes()
    clip = load_clip(data[: len(data) // 2], FrameSamplingConfig(sampler="fps", fps=10, max_frames=30), name="cut.mkv")
    assert clip.truncated and clip.info.truncated
    assert 0.5 < clip.info.duration < 2.5  # the data's end, not the header's 3 s
    assert 5 < len(clip.frames) < 25
    assert [zoo.frame_index(f.image) for f in clip.frames] == [round(t * 10) for t in clip.timestamps]


def test_a_cut_off_mp4_with_its_index_in_front_stops_at_the_break_with_a_reason(tmp_path):
    data = zoo.numbered_video(tmp_path / "clip.mp4", count=30, options={"movflags": "faststart"},
                              keyframe_every=1).read_bytes()
    clip = load_clip(data[: len(data) // 2], FrameSamplingConfig(sampler="fps", fps=10, max_frames=30))
    assert clip.truncated
    assert 0 < len(clip.frames) < 25
    assert [zoo.frame_index(f.image) for f in clip.frames] == [round(t * 10) for t in clip.timestamps]


def test_a_cut_off_mp4_without_its_index_is_a_clean_error(tmp_path):
    data = zoo.numbered_video(tmp_path / "clip.mp4", count=30).read_bytes()  # moov atom at the end
    with pytest.raises(VideoDecodeError, match="cut.mp4: not a video"):
        probe_video(data[: len(data) // 2], name="cut.mp4")


@pytest.mark.parametrize("rotation, blue_side", [(90, "left"), (-90, "right"), (180, "bottom")])
def test_rotation_metadata_is_applied(tmp_path, rotation, blue_side):
    frames = [zoo.numbered_frame(i, width=32, height=16) for i in range(5)]  # blue top half
    path = zoo.write_video(tmp_path / "rotated.mp4", frames, rotation=rotation)
    with open_video(path) as video:
        info, image = video.info, video.frames_at([0.0]).frames[0].image
    size = (32, 16) if rotation == 180 else (16, 32)
    assert (info.width, info.height, info.rotation) == (*size, rotation % 360)
    assert image.size == size
    width, height = size
    inside = {"left": (2, height // 2), "right": (width - 3, height // 2), "bottom": (width // 2, height - 3)}
    outside = {"left": (width - 3, height // 2), "right": (2, height // 2), "bottom": (width // 2, 2)}
    assert image.getpixel(inside[blue_side])[2] > 200
    assert image.getpixel(outside[blue_side])[2] < 100


@pytest.mark.parametrize("audio", [False, True])
def test_files_with_and_without_audio_decode_alike(tmp_path, audio):
    path = zoo.numbered_video(tmp_path / "clip.mp4", count=20, audio=audio)
    clip = load_clip(path, FrameSamplingConfig(sampler="uniform", max_frames=4))
    assert clip.info.has_audio is audio
    assert clip.timestamps == pytest.approx([0.2, 0.7, 1.2, 1.7])
    assert [zoo.frame_index(f.image) for f in clip.frames] == [2, 7, 12, 17]


@pytest.mark.parametrize("sampling, window, expected", [
    (dict(sampler="uniform", max_frames=6), (None, None), [0.2, 0.7, 1.2, 1.7, 2.2, 2.7]),
    (dict(sampler="uniform", max_frames=4), (1.0, 2.0), [1.1, 1.3, 1.6, 1.8]),
    (dict(sampler="fps", fps=2), (None, None), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
    (dict(sampler="fps", fps=2), (0.5, 1.7), [0.5, 1.0, 1.5]),
    # capped: spread over the whole 3 s, not the first 1.25 s
    (dict(sampler="fps", fps=4, max_frames=5), (None, None), [0.3, 0.9, 1.5, 2.1, 2.7]),
])
def test_uniform_and_fps_sampling_return_the_expected_timestamps(tmp_path, sampling, window, expected):
    path = zoo.numbered_video(tmp_path / "clip.mkv", count=30, rate=10)
    clip = load_clip(path, FrameSamplingConfig(**sampling), start=window[0], end=window[1])
    assert clip.timestamps == pytest.approx(expected)
    assert [zoo.frame_index(f.image) for f in clip.frames] == [round(t * 10) for t in expected]
    assert clip.shots is None and not clip.truncated


def test_sampling_faster_than_the_video_gives_each_frame_once(tmp_path):
    path = zoo.numbered_video(tmp_path / "clip.webm", count=20, rate=10)
    clip = load_clip(path, FrameSamplingConfig(sampler="fps", fps=30, max_frames=100))
    assert [zoo.frame_index(f.image) for f in clip.frames] == list(range(20))


def test_scene_sampling_finds_the_hard_cuts(tmp_path):
    path = zoo.shots_video(tmp_path / "shots.mp4", [(250, 250, 40), (20, 20, 160), (240, 240, 240)])
    clip = load_clip(path, FrameSamplingConfig(sampler="scenes", frames_per_shot=2, min_shot_seconds=0.3))
    assert [shot for pair in clip.shots for shot in pair] == pytest.approx([0, 1, 1, 2, 2, 3], abs=0.01)
    assert clip.timestamps == pytest.approx([0.2, 0.7, 1.2, 1.7, 2.2, 2.7])
    window = load_clip(path.read_bytes(), FrameSamplingConfig(sampler="scenes"), start=0.5, end=2.5)
    assert window.shots == pytest.approx([(0.5, 1.0), (1.0, 2.0), (2.0, 2.5)], abs=0.01)
    assert window.timestamps == pytest.approx([0.7, 1.5, 2.2])


def test_a_window_outside_the_video_is_a_clean_error(tmp_path):
    path = zoo.numbered_video(tmp_path / "clip.mp4", count=10)
    with pytest.raises(VideoDecodeError, match="outside the video"):
        load_clip(path, FrameSamplingConfig(), start=5.0, end=9.0)


def test_unreadable_inputs_are_clean_errors_naming_the_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"this is not a video at all\n" * 40)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)  # opening it for reading would block forever
    audio_only = zoo.audio_only(tmp_path / "sound.mkv")
    big = zoo.numbered_video(tmp_path / "big.mp4", count=10)
    cases = [(text, {}, "not a video"), (empty, {}, "empty file"), (fifo, {}, "not a regular file"),
             (tmp_path, {}, "not a regular file"), (tmp_path / "missing.mp4", {}, "cannot read file"),
             (audio_only, {}, "no video stream"), (big, {"max_bytes": 100}, "too large"),
             (big, {"max_pixels": 100}, "frames too large"), (b"\x00\x01garbage" * 30, {}, "not a video")]
    for source, limits, reason in cases:
        with pytest.raises(VideoDecodeError) as caught:
            load_clip(source, FrameSamplingConfig(), **limits)
        assert isinstance(caught.value, ImageDecodeError)  # callers' image error rows cover clips too
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        assert str(caught.value).startswith(f"{name}: ") and reason in str(caught.value), str(caught.value)


class _Clips(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return load_clip(self.paths[index], FrameSamplingConfig(sampler="fps", fps=1))
        except VideoDecodeError as error:
            return str(error)


def test_clips_decode_in_dataloader_workers_and_bad_ones_come_back_as_errors(tmp_path):
    good = zoo.numbered_video(tmp_path / "good.webm", count=20)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    loader = torch.utils.data.DataLoader(_Clips([good, bad, good]), batch_size=None, num_workers=2)
    results = list(loader)  # clips come back pickled from the workers, frames and all
    for clip in (results[0], results[2]):
        assert clip.timestamps == pytest.approx([0.0, 1.0])
        assert [zoo.frame_index(f.image) for f in clip.frames] == [0, 10]
    assert "bad.mp4: not a video" in results[1]


def test_sampling_config_checks_its_values():
    with pytest.raises(ValueError, match="unknown frame sampler 'unifrom'"):
        FrameSamplingConfig(sampler="unifrom")
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        FrameSamplingConfig(max_frames=0)
    with pytest.raises(ValueError, match="fps must be > 0"):
        FrameSamplingConfig(sampler="fps", fps=0)


def test_scene_sampling_under_a_frame_cap_thins_each_shot_then_keeps_the_longest():
    from mllm.data.frame_samplers import SAMPLERS

    shots = [(0.0, 1.0), (1.0, 5.0), (5.0, 6.0), (6.0, 10.0), (10.0, 10.5)]
    plan = SAMPLERS["scenes"].plan
    two_each = plan(0.0, 10.5, FrameSamplingConfig(sampler="scenes", frames_per_shot=3, max_frames=10), shots)
    assert two_each == pytest.approx([0.25, 0.75, 2.0, 4.0, 5.25, 5.75, 7.0, 9.0, 10.125, 10.375])
    longest = plan(0.0, 10.5, FrameSamplingConfig(sampler="scenes", frames_per_shot=3, max_frames=2), shots)
    assert longest == pytest.approx([3.0, 8.0])


# animated GIF and APNG written by Pillow, each frame cleared to transparent before the next
@pytest.mark.parametrize("image_format, disposal", [("GIF", 2), ("PNG", 1)])
def test_transparent_animations_are_composited_on_white(image_format, disposal):
    import io

    from PIL import Image

    frames = []
    for i in range(3):  # a red block moving right on a transparent black background
        frame = Image.new("RGBA", (24, 16), (0, 0, 0, 0))
        frame.paste((255, 0, 0, 255), (8 * i, 0, 8 * i + 8, 16))
        frames.append(frame)
    data = io.BytesIO()
    frames[0].save(data, format=image_format, save_all=True, append_images=frames[1:], duration=100, disposal=disposal)
    clip = load_clip(data.getvalue(), FrameSamplingConfig(sampler="fps", fps=10))
    assert clip.timestamps == pytest.approx([0.0, 0.1, 0.2])
    for i, frame in enumerate(clip.frames):
        assert frame.image.getpixel((8 * i + 4, 8)) == (255, 0, 0)
        assert frame.image.getpixel((8 * ((i + 1) % 3) + 4, 8)) == (255, 255, 255)


def test_a_long_video_in_equal_windows_each_sampled_on_its_own(tmp_path):
    from mllm.data.clips import load_windows

    path = zoo.numbered_video(tmp_path / "long.mp4", count=30, rate=10)
    windows = load_windows(path, FrameSamplingConfig(max_frames=2, window_seconds=1.2))
    assert [(w.start, w.end) for w in windows] == pytest.approx([(0, 1), (1, 2), (2, 3)])  # not 1.2 + 1.2 + 0.6
    assert [[zoo.frame_index(f.image) for f in w.frames] for w in windows] == [[2, 7], [12, 17], [22, 27]]
    assert len(load_windows(path, FrameSamplingConfig(max_frames=2))) == 1  # no window_seconds: one clip
    window = load_windows(path, FrameSamplingConfig(max_frames=1, window_seconds=1.0), start=0.5, end=2.5)
    assert [(w.start, w.end) for w in window] == pytest.approx([(0.5, 1.5), (1.5, 2.5)])


def test_windows_of_a_cut_off_video_stop_at_the_break(tmp_path):
    from mllm.data.clips import load_windows

    data = zoo.numbered_video(tmp_path / "clip.mkv", count=30, keyframe_every=1).read_bytes()
    windows = load_windows(data[: len(data) // 2], FrameSamplingConfig(max_frames=2, window_seconds=0.5), name="cut")
    assert windows and windows[-1].end < 3.0 and all(w.frames for w in windows)
    assert any(w.truncated for w in windows)
    with pytest.raises(VideoDecodeError, match="cut"):
        load_windows(b"\x00" * 1000, FrameSamplingConfig(window_seconds=1.0), name="cut")
