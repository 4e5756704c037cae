"""Long videos in windows: the whole-video caption's prompt, and what a video's output row says.

A video longer than `data.video.window_seconds` is captioned window by window (each window a clip
of its own, its frames labelled from the window's start, as training labels a clip's frames), and
then the LLM itself, with its LoRA adapter switched off, writes the whole-video caption from the
window captions (`summary_prompt`), for each task from that task's window captions. The video's
row keeps the window captions in `windows` (data_cards/recaption_output.md).
"""

from __future__ import annotations

from typing import Any

from mllm.infer.decoding import Span, VideoFacts
from mllm.infer.rows import TASKS

SUMMARY_INSTRUCTIONS = {
    "detailed": "Write one detailed description of the whole video from these parts, in time order, giving "
                "the time of each event in seconds from the start of the video.",
    "short": "Write one short caption naming the main subject of the whole video.",
}
"""What the whole-video caption is asked for, per task."""


def summary_prompt(task: str, windows: list[Span], captions: list[str]) -> str:
    """The text-only prompt for a whole-video caption from its windows' captions, in time order."""
    parts = "\n".join(f"Part {n} ({start:.1f}s to {end:.1f}s): {caption}"
                      for n, ((start, end), caption) in enumerate(zip(windows, captions), 1))
    return ("These are captions of the consecutive parts of one video; times inside a part count from that "
            f"part's start.\n\n{parts}\n\n{SUMMARY_INSTRUCTIONS[task]}")


def video_fields(facts: VideoFacts, windows: list[dict[str, tuple]] | None) -> dict[str, Any]:
    """A video row's own columns; `windows`: per window, task -> (text, tokens, guard actions, failure)
    (None: the video was one window)."""
    return {
        "duration": facts.duration,
        "fps": facts.fps,
        "timestamps": [t for times in facts.timestamps for t in times],
        "shots": None if facts.shots is None else [list(shot) for shot in facts.shots],
        "truncated": facts.truncated,
        "windows": None if windows is None else [
            {"start": start, "end": end, "timestamps": list(times),
             **{f"{task}_caption": results[task][0] if task in results else None for task in TASKS},
             "guard": ",".join(f"{task}:{a}" for task, result in results.items() for a in result[2]) or None}
            for (start, end), times, results in zip(facts.windows, facts.timestamps, windows)],
    }
