"""The `temporal` fidelity category: a clip's events, each named with the right object, in the right
order, at the right time.

A caption is read as time markers ("At 2.0s", "at 2 s", "by 3 seconds") each followed by what
happens then; every event phrase after a marker is an event at that time:

- appear: "appears", "comes into view", "shows up", "enters";
- move: "moves", "slides", "jumps", "goes", with its destination ("to the middle");
- disappear: "disappears", "vanishes", "leaves".

The event's object is the colour-and-shape noun right before the phrase ("the red circle moves").
A stated event matches a true one when the kind and object agree, the time is within half the
clip's sampling interval (`frame_interval` of the truth: its events happen on that grid), and for
a move the destination agrees. The score is the longest chain of matches in caption order and
time order (events at the same time may be stated in any order), over the union of stated and
true events: a wrong time, a wrong object, a wrong order, a missing or an invented event each
lower it. Each clip adds hits and totals (micro average, like every category).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mllm.bench.fidelity import place_name
from mllm.bench.scenes import COLOURS, SHAPES

EVENT_PHRASES: list[tuple[tuple[str, ...], str]] = sorted(
    [(("appears",), "appear"), (("appear",), "appear"), (("comes", "into", "view"), "appear"),
     (("shows", "up"), "appear"), (("enters",), "appear"), (("moves",), "move"), (("slides",), "move"),
     (("jumps",), "move"), (("goes",), "move"), (("disappears",), "disappear"), (("vanishes",), "disappear"),
     (("leaves",), "disappear")],
    key=lambda p: -len(p[0]),
)
"""Token phrases (longest first) and the event kind each states (`mllm.bench.clip_captions.VERBS`)."""
_TIME = re.compile(r"\b(?:at|by|around)\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+")
_SHAPES = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}
_PLACES = {"top", "upper", "bottom", "lower", "left", "right", "center", "centre", "middle"}


@dataclass(frozen=True)
class Event:
    kind: str
    object: tuple[str | None, str]  # (colour, shape)
    time: float
    to: str | None = None  # a move's destination cell


def truth_events(truth: dict) -> list[Event]:
    """The events of a clip's truth record, in time order."""
    objects = {o["id"]: (o["colour"], o["shape"]) for o in truth["objects"]}
    return [Event(e["kind"], objects[e["object"]], float(e["time"]), e["to"] if e["kind"] == "move" else None)
            for e in sorted(truth["events"], key=lambda e: e["time"])]


def _destination(tokens: list[str], start: int) -> str | None:
    """The place after "to (the)" in tokens[start:], before the next event phrase."""
    for i in range(start, len(tokens)):
        if any(tuple(tokens[i:i + len(p)]) == p for p, _ in EVENT_PHRASES):
            return None
        if tokens[i] == "to":
            j = i + 1 + (tokens[i + 1:i + 2] == ["the"])
            words = []
            while j < len(tokens) and tokens[j] in _PLACES:
                words.append(tokens[j])
                j += 1
            if words:
                return place_name(words)
    return None


def _segment_events(text: str, time: float) -> list[Event]:
    tokens = _WORD.findall(text.lower())
    events, noun, i = [], None, 0
    while i < len(tokens):
        token = tokens[i]
        if token in _SHAPES:
            colour = next((w for w in reversed(tokens[max(0, i - 3):i]) if w in COLOURS), None)
            noun = (colour, _SHAPES[token])
        match = next((p for p in EVENT_PHRASES if tuple(tokens[i:i + len(p[0])]) == p[0]), None)
        if match is None:
            i += 1
            continue
        phrase, kind = match
        if noun is not None:
            to = _destination(tokens, i + len(phrase)) if kind == "move" else None
            events.append(Event(kind, noun, time, to))
        i += len(phrase)
    return events


def parse_events(caption: str | None) -> list[Event]:
    """The events a caption states, in its order."""
    caption = caption or ""
    marks = list(_TIME.finditer(caption))
    events = []
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(caption)
        events += _segment_events(caption[mark.end():end], float(mark.group(1)))
    return events


def _matches(said: Event, true: Event, tolerance: float) -> bool:
    return (said.kind == true.kind and said.object == true.object and abs(said.time - true.time) <= tolerance + 1e-9
            and (true.kind != "move" or said.to == true.to))


def temporal_tally(caption: str | None, truth: dict) -> tuple[int, int]:
    """(hits, total) of one caption against one clip's truth: the longest chain of matching events
    in order, over the union of stated and true events."""
    said, true = parse_events(caption), truth_events(truth)
    tolerance = float(truth["frame_interval"]) / 2

    def first_said(event: Event) -> int:
        return next((i for i, s in enumerate(said) if _matches(s, event, tolerance)), len(said))

    true.sort(key=lambda e: (e.time, first_said(e)))  # simultaneous events: in the caption's order
    chain = [[0] * (len(true) + 1) for _ in range(len(said) + 1)]
    for i, s in enumerate(said):
        for j, t in enumerate(true):
            chain[i + 1][j + 1] = (chain[i][j] + 1 if _matches(s, t, tolerance)
                                   else max(chain[i][j + 1], chain[i + 1][j]))
    hits = chain[-1][-1]
    return hits, len(said) + len(true) - hits
