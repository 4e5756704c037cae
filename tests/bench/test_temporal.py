"""The `temporal` category, with hand-written captions of one hand-written clip: a correct caption
scores 1, and a wrong time, object, order, destination or a missing event lowers temporal only."""

import pytest

from mllm.bench.fidelity import fidelity_scores
from mllm.bench.temporal import Event, parse_events

TRUTH = {
    "key": "clip", "image_size": 48, "grid": [1, 3], "background": {"colour": "white", "texture": "plain"},
    "frame_interval": 1.0, "relations": [], "texts": [], "main_subject": 0,
    "objects": [
        {"id": 0, "shape": "circle", "colour": "red", "size": None, "position": "left", "row": 0, "col": 0,
         "layer": 0, "text": None},
        {"id": 1, "shape": "square", "colour": "blue", "size": None, "position": "right", "row": 0, "col": 2,
         "layer": 0, "text": None},
    ],
    "events": [
        {"kind": "appear", "object": 0, "time": 0.0, "from": None, "to": "left"},
        {"kind": "appear", "object": 1, "time": 1.0, "from": None, "to": "right"},
        {"kind": "move", "object": 0, "time": 2.0, "from": "left", "to": "center"},
        {"kind": "disappear", "object": 1, "time": 3.0, "from": "right", "to": None},
    ],
}
OPENER = "A short clip on a plain white background."
APPEAR = "At 0.0s a left red circle appears. At 1.0s a right blue square comes into view."
MOVE = "At 2.0s the red circle moves from the left to the middle."
GONE = "At 3.0s the blue square vanishes."
CORRECT = " ".join((OPENER, APPEAR, MOVE, GONE))


def scores(caption: str) -> dict:
    return fidelity_scores({"clip": caption}, {"clip": TRUTH})["categories"]


def test_the_correct_caption_scores_one_everywhere():
    result = scores(CORRECT)
    assert result["temporal"] == 1.0
    assert all(v == 1.0 for v in result.values() if v is not None), result
    assert result["relation"] is None  # clips have no relations


@pytest.mark.parametrize("caption, expected", [
    (" ".join((OPENER, APPEAR, MOVE.replace("2.0s", "3.0s"), GONE)), 3 / 5),  # wrong time
    (" ".join((OPENER, APPEAR, MOVE.replace("red circle", "blue square"), GONE)), 3 / 5),  # wrong object
    (" ".join((OPENER, APPEAR, GONE, MOVE)), 3 / 5),  # wrong order
    (" ".join((OPENER, APPEAR, MOVE)), 3 / 4),  # a missing event
    (" ".join((OPENER, APPEAR, MOVE.replace("to the middle", "to the right"), GONE)), 3 / 5),  # wrong destination
    (" ".join((OPENER, APPEAR, MOVE, GONE, "At 3.0s the red circle disappears.")), 4 / 5),  # an invented event
])
def test_each_mistake_lowers_temporal_only(caption, expected):
    result, correct = scores(caption), scores(CORRECT)
    assert result["temporal"] == pytest.approx(expected)
    assert {k: v for k, v in result.items() if k != "temporal"} == {k: v for k, v in correct.items() if k != "temporal"}


def test_times_within_half_the_sampling_interval_count():
    assert scores(CORRECT.replace("At 2.0s", "At 2.4s"))["temporal"] == 1.0
    assert scores(CORRECT.replace("At 2.0s", "At 2.6s"))["temporal"] < 1.0
    slow = {**TRUTH, "frame_interval": 2.0}  # frames 2 s apart: a second either way is right
    late = CORRECT.replace("At 2.0s", "At 3.0s")
    assert fidelity_scores({"clip": late}, {"clip": slow})["categories"]["temporal"] == 1.0


def test_simultaneous_events_may_come_in_either_order():
    truth = {**TRUTH, "events": [{**e, "time": 2.0} if e["kind"] == "move" else
                                 {**e, "time": 2.0} if e["kind"] == "disappear" else e for e in TRUTH["events"]]}
    for both in ("the red circle moves from the left to the middle and the blue square vanishes",
                 "the blue square vanishes and the red circle slides from the left to the center"):
        caption = f"{OPENER} {APPEAR} At 2.0s {both}."
        assert fidelity_scores({"clip": caption}, {"clip": truth})["categories"]["temporal"] == 1.0, both


def test_parse_events_reads_times_objects_and_destinations():
    assert parse_events("at 2 s the green triangle jumps to the right, then by 3 seconds it is gone") == [
        Event("move", ("green", "triangle"), 2.0, "right")]
    assert parse_events("A red circle moves to the left.") == []  # no time, no event
    assert parse_events(None) == []


def test_images_and_the_short_task_have_no_temporal():
    image = {**TRUTH, "key": "image"}
    del image["events"]
    assert fidelity_scores({"image": CORRECT}, {"image": image})["categories"]["temporal"] is None
    assert fidelity_scores({"clip": "A red circle."}, {"clip": TRUTH}, task="short")["categories"]["temporal"] is None
