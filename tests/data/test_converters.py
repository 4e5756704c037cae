"""Caption-set converters on small hand-written samples in each set's own metadata format."""

import json

import pytest

from mllm.cli import main
from mllm.data.converters import CONVERTERS, convert

SHAREGPT4VIDEO = [  # sharegpt4video_40k.jsonl: one video a line; idx "-1" is the whole-video caption
    {"video_id": "j5JqNXjGufw", "video_path": "panda/j5JqNXjGufw.mp4", "zip_folder": "panda_videos_16.zip",
     "captions": [{"idx": "0", "content": "A kitchen; a woman stands at the counter."},
                  {"idx": "1", "content": "She picks up a knife."},
                  {"idx": "-1", "content": "  In a bright kitchen a woman picks up a knife and slices bread.  "}]},
    {"video_id": "noSummary", "video_path": "pexels/noSummary.mp4", "zip_folder": "pexels_videos_1.zip",
     "captions": [{"idx": "0", "content": "A beach."}]},
]

LLAVA_VIDEO = [  # *_cap_processed.json: LLaVA conversations with a `video` path
    {"id": "ytb_7nRmsEw7nsE", "data_source": "0_30_s_youtube_v0_1",
     "video": "liwei_youtube_videos/videos/youtube_video_2024/ytb_7nRmsEw7nsE.mp4",
     "conversations": [{"from": "human", "value": "<image>\nPlease describe this video in detail."},
                       {"from": "gpt", "value": "The video begins with a close-up of a YouTube pop-up."}]},
    {"id": "v_no_answer", "data_source": "0_30_s_academic_v0_1", "video": "academic_source/Charades/ABC12.mp4",
     "conversations": [{"from": "human", "value": "<image>\nDescribe the video."}]},
]

PANDA70M = (  # panda70m_*.csv: one source video a row, clip spans and captions as Python list literals
    "videoID,url,timestamp,caption,matching_score\n"
    "--bNtqbMbSg,https://www.youtube.com/watch?v=--bNtqbMbSg,"
    "\"[['0:00:00.000', '0:00:04.171'], ['0:00:04.171', '0:01:09.009']]\","
    "\"['A man is talking in front of a car.', \"\"A car's headlights turn on.\"\"]\",\"[0.46, 0.51]\"\n"
    "badRowXyz01,https://www.youtube.com/watch?v=badRowXyz01,\"[['0:00:00.000', '0:00:02.000']]\","
    "\"['one', 'two']\",\"[0.5, 0.5]\"\n"
    "__import__(,https://x,\"__import__('os').system('echo no')\",\"['x']\",\"[0.5]\"\n"
)

OPENVID = (  # OpenVid-1M.csv: one clip a row
    "video,caption,aesthetic score,motion score,temporal consistency score,camera motion,frame,fps,seconds\n"
    "IIvwqskxtdE_0.mp4,\"In the video, a man in a grey suit walks, then turns to the camera.\","
    "5.42,0.81,0.997,static,166,25.0,6.64\n"
    "emptyCaption_3.mp4,,4.9,1.2,0.99,pan_right,120,30.0,4.0\n"
)


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else
                    ("\n".join(json.dumps(r) for r in content) + "\n" if name.endswith("l") else json.dumps(content)))
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sharegpt4video_takes_the_whole_video_caption(tmp_path):
    source = _write(tmp_path, "sharegpt4video_40k.jsonl", SHAREGPT4VIDEO)
    source.write_text(source.read_text() + "{not json\n\n")
    report = convert("sharegpt4video", source, tmp_path / "out.jsonl", video_root="/data/sg4v")
    assert _records(tmp_path / "out.jsonl") == [
        {"key": "j5JqNXjGufw", "video": "/data/sg4v/panda/j5JqNXjGufw.mp4",
         "caption": "In a bright kitchen a woman picks up a knife and slices bread."}]
    assert report.written == 1
    assert dict(report.skipped.counts) == {"no whole-video caption (idx -1)": 1, "invalid JSON (Expecting property name "
                                           "enclosed in double quotes)": 1}


def test_llava_video_takes_the_first_answer_and_resolves_against_the_subset_folder(tmp_path):
    source = _write(tmp_path, "0_30_s_youtube_v0_1_cap_processed.json", LLAVA_VIDEO)
    report = convert("llava_video_178k", source, tmp_path / "out" / "llava.jsonl")
    assert _records(tmp_path / "out" / "llava.jsonl") == [
        {"key": "ytb_7nRmsEw7nsE", "video": str(tmp_path / LLAVA_VIDEO[0]["video"]),
         "caption": "The video begins with a close-up of a YouTube pop-up."}]
    assert dict(report.skipped.counts) == {"no gpt answer": 1}


def test_panda70m_gives_one_record_per_clip_with_start_and_end(tmp_path):
    source = _write(tmp_path, "panda70m_validation.csv", PANDA70M)
    report = convert("panda70m", source, tmp_path / "panda.jsonl", video_root="videos")
    assert _records(tmp_path / "panda.jsonl") == [
        {"key": "--bNtqbMbSg_0", "video": "videos/--bNtqbMbSg.mp4", "start": 0.0, "end": 4.171,
         "short_caption": "A man is talking in front of a car."},
        {"key": "--bNtqbMbSg_1", "video": "videos/--bNtqbMbSg.mp4", "start": 4.171, "end": 69.009,
         "short_caption": "A car's headlights turn on."}]
    assert dict(report.skipped.counts) == {"timestamp and caption lists differ in length": 1,
                                           "unreadable timestamp or caption (ValueError)": 1}


def test_openvid_takes_the_detailed_caption(tmp_path):
    source = _write(tmp_path, "OpenVid-1M.csv", OPENVID)
    report = convert("openvid_1m", source, tmp_path / "openvid.jsonl", video_root="/data/openvid/video")
    assert _records(tmp_path / "openvid.jsonl") == [
        {"key": "IIvwqskxtdE_0", "video": "/data/openvid/video/IIvwqskxtdE_0.mp4",
         "caption": "In the video, a man in a grey suit walks, then turns to the camera."}]
    assert dict(report.skipped.counts) == {"empty caption": 1}


def test_every_set_has_a_card():
    from pathlib import Path

    cards = Path(__file__).resolve().parents[2] / "data_cards"
    assert sorted(CONVERTERS) == ["llava_video_178k", "openvid_1m", "panda70m", "sharegpt4video"]
    for name in CONVERTERS:
        assert f"mllm convert-data {name}" in (cards / f"{name}.md").read_text()


def test_the_command_converts_and_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    source = _write(tmp_path, "OpenVid-1M.csv", OPENVID)
    assert main(["convert-data", "openvid_1m", str(source), "--out", str(tmp_path / "o.jsonl"), "--limit", "5"]) == 0
    assert "1 records written; skipped 1 records (1 empty caption)" in capsys.readouterr().out
    assert main(["convert-data", "openvid_1m", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"mllm convert-data: metadata file not found: {tmp_path / 'nope.csv'}"
    with pytest.raises(SystemExit):
        main(["convert-data", "webvid", str(source), "--out", str(tmp_path / "o.jsonl")])
