"""Benchmark: decoding sampled frames with `mllm.data.video`, seeking vs decoding straight through.

    python scripts/bench_video_decode.py --seconds 60 --width 640 --height 360

Writes one synthetic H.264 clip per keyframe interval (moving gradients, 30 fps), then times, on
each: probing; `uniform` (8 frames, far apart) and `fps` at 1 fps (60 frames, close together) with
the reader's seek rule (`SEEK_AHEAD_SECONDS`), with seeking for every frame, and with no seeking
(decode through); a full decode of every frame; PySceneDetect's shot pass. Prints seconds per call
(median of `--repeat`) and frames/s of the full decode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

import mllm.data.video as video_module
from mllm.data.clips import load_clip
from mllm.data.frame_samplers import FrameSamplingConfig
from mllm.data.video import open_video, probe_video


def write_clip(path: Path, seconds: int, width: int, height: int, keyframe_seconds: float) -> Path:
    rate = 30
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = int(keyframe_seconds * rate)
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(seconds * rate):
            image = np.stack([(xs + 3 * i) % 256, (ys + 2 * i) % 256, (xs + ys + i) % 256], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def timed(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_seek_rule(seek_ahead: float, call):
    def run():
        saved, video_module.SEEK_AHEAD_SECONDS = video_module.SEEK_AHEAD_SECONDS, seek_ahead
        try:
            return call()
        finally:
            video_module.SEEK_AHEAD_SECONDS = saved
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--keyframe-seconds", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    samplings = {"uniform 8": FrameSamplingConfig(sampler="uniform", max_frames=8),
                 "fps 1": FrameSamplingConfig(sampler="fps", fps=1.0, max_frames=10_000)}
    rules = {f"rule ({video_module.SEEK_AHEAD_SECONDS:g} s)": video_module.SEEK_AHEAD_SECONDS,
             "seek always": 0.0, "never seek": float("inf")}
    with tempfile.TemporaryDirectory() as folder:
        for keyframe_seconds in args.keyframe_seconds:
            path = write_clip(Path(folder) / f"gop{keyframe_seconds:g}.mp4", args.seconds, args.width, args.height,
                              keyframe_seconds)
            print(f"\n{args.width}x{args.height}, {args.seconds} s at 30 fps, a keyframe every {keyframe_seconds:g} s "
                  f"({path.stat().st_size / 1e6:.1f} MB)")
            print(f"  probe                       {timed(lambda: probe_video(path), args.repeat):7.3f} s")
            for name, sampling in samplings.items():
                for rule, seek_ahead in rules.items():
                    seconds = timed(with_seek_rule(seek_ahead, lambda: load_clip(path, sampling)), args.repeat)
                    print(f"  {name:<9} {rule:<17} {seconds:7.3f} s")
            frames = args.seconds * 30
            with open_video(path) as video:
                full = timed(lambda: video.frames_at([i / 30 for i in range(frames)]), 1)
            print(f"  every frame (RGB)           {full:7.3f} s  ({frames / full:.0f} frames/s)")
            scenes = timed(lambda: load_clip(path, FrameSamplingConfig(sampler="scenes")), 1)
            print(f"  scenes (PySceneDetect pass) {scenes:7.3f} s")


if __name__ == "__main__":
    main()
