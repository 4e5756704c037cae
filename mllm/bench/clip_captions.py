"""Captions for synthetic clips, written from their truth records (`mllm.bench.clip_scenes`).

The detailed caption names the background, then every event in time order, one sentence per
sampled time with events, opened by that time as the prompt labels the frame ("At 2.0s"):

    A short clip on a plain white background. At 0.0s a left red circle appears. At 2.0s the red
    circle moves from the left to the middle and a right blue square comes into view.

An object is introduced where it appears, its place an adjective right before it as in the image
captions ("a left red circle"); later events name it with "the" and say where it goes. The short
caption names the main subject (the first object in view). The words are the vocabulary that
`mllm.bench.temporal` and `mllm.bench.fidelity` parse back.
"""

from __future__ import annotations

import random

from mllm.bench.scene_captions import capitalise, join_phrases

OPENERS = ("A short clip on a {}.", "A clip against a {}.", "The video shows a {}.")
VERBS = {
    "appear": ("appears", "comes into view", "shows up"),
    "move": ("moves", "slides", "jumps"),
    "disappear": ("disappears", "vanishes", "leaves the scene"),
}
"""How each event kind is written; `mllm.bench.temporal.EVENT_PHRASES` reads them back."""


def time_text(seconds: float) -> str:
    """A time as the prompt labels frames (`mllm.data.processor.frame_label`): '2.0s'."""
    return f"{seconds:.1f}s"


def _place(position: str, rng: random.Random) -> str:
    return rng.choice(("middle", "center")) if position == "center" else position


def _indefinite(obj: dict, place: str | None = None) -> str:
    head = f"{place + ' ' if place else ''}{obj['colour']} {obj['shape']}"
    return ("an " if head[0] in "aeiou" else "a ") + head


def _event_clause(event: dict, objects: dict[int, dict], rng: random.Random) -> str:
    obj = objects[event["object"]]
    verb = rng.choice(VERBS[event["kind"]])
    if event["kind"] == "appear":
        return f"{_indefinite(obj, _place(event['to'], rng))} {verb}"
    noun = f"the {obj['colour']} {obj['shape']}"
    if event["kind"] == "move":
        return f"{noun} {verb} from the {_place(event['from'], rng)} to the {_place(event['to'], rng)}"
    return f"{noun} {verb}"


def detailed_clip_caption(truth: dict, rng: random.Random) -> str:
    """The background, then the events in time order, one sentence per time."""
    objects = {o["id"]: o for o in truth["objects"]}
    background = truth["background"]
    sentences = [rng.choice(OPENERS).format(f"{background['texture']} {background['colour']} background")]
    times = sorted({e["time"] for e in truth["events"]})
    for time in times:
        clauses = [_event_clause(e, objects, rng) for e in truth["events"] if e["time"] == time]
        sentences.append(f"At {time_text(time)} {join_phrases(clauses)}.")
    return " ".join(sentences)


def short_clip_caption(truth: dict, rng: random.Random) -> str:
    """The main subject only, as an image's short caption names it."""
    return capitalise(_indefinite(truth["objects"][truth["main_subject"]])) + "."


def write_clip_captions(truth: dict, rng: random.Random) -> dict[str, str]:
    """The caption fields of a clip record."""
    return {"caption": detailed_clip_caption(truth, rng), "short_caption": short_clip_caption(truth, rng)}
