"""Caption fidelity: parsing hand-written captions and the generator's own DSC back into facts."""

import random

import pytest

from mllm.bench.scene_captions import write_captions
from mllm.bench.scenes import position_name, sample_scene, scene_preset
from mllm.bench.fidelity import CATEGORIES, fidelity_scores, parse_caption


def scene(objects, relations=(), grid=(3, 3)):
    """A truth record from (shape, colour, row, col, text) tuples; relations as (i, name, j)."""
    objs = [{"id": i, "shape": s, "colour": c, "size": None, "row": r, "col": k, "layer": i, "text": t,
             "position": position_name(r, k, *grid)} for i, (s, c, r, k, t) in enumerate(objects)]
    return {"objects": objs, "relations": [{"subject": a, "relation": n, "object": b} for a, n, b in relations],
            "texts": [o["text"] for o in objs if o["text"]], "grid": list(grid)}


# red circle top left, green sign "CAT" in the center, blue square bottom right, two yellow stars
TRUTH = scene(
    [("circle", "red", 0, 0, None), ("sign", "green", 1, 1, "CAT"), ("square", "blue", 2, 2, None),
     ("star", "yellow", 0, 2, None), ("star", "yellow", 2, 0, None)],
    [(0, "left of", 1), (0, "above", 1), (0, "left of", 2), (0, "above", 2), (1, "left of", 2), (1, "above", 2)],
)
PERFECT = (
    'A red circle sits in the top left corner, a green sign reading "CAT" is in the middle, and a blue '
    "square is in the bottom right corner. Two yellow stars appear at the top right and at the bottom left. "
    "The red circle is above and to the left of the green sign. The green sign is to the left of and above "
    "the blue square. The blue square is below and to the right of the red circle."
)


def scores(caption, truth=TRUTH):
    return fidelity_scores({"k": caption}, {"k": truth})["categories"]


def changed(caption):
    """Categories whose score differs from the perfect caption's (which scores 1.0 everywhere)."""
    return {name for name, value in scores(caption).items() if value != 1.0}


def test_perfect_caption_scores_one_everywhere():
    assert scores(PERFECT) == {name: 1.0 for name in CATEGORIES}


def test_invented_object_lowers_precision_only():
    caption = PERFECT + " A purple diamond lies at the bottom of the image."
    assert changed(caption) == {"object_precision"}
    assert scores(caption)["object_precision"] == pytest.approx(4 / 5)


def test_invented_object_of_a_present_shape_is_a_hallucination_too():
    assert changed(PERFECT + " There is also an orange circle in the top right.") == {"object_precision"}


def test_swapped_colours_lower_colour_binding():
    caption = PERFECT.replace("red", "BLUE_").replace("blue", "red").replace("BLUE_", "blue")
    assert changed(caption) == {"colour_binding"}
    assert scores(caption)["colour_binding"] == pytest.approx(2 / 4)


def test_wrong_count_lowers_count_only():
    caption = PERFECT.replace("Two yellow stars", "Three yellow stars")
    assert changed(caption) == {"count"}


def test_misspelt_word_lowers_text_only():
    assert changed(PERFECT.replace('"CAT"', '"CAR"')) == {"text"}
    assert scores(PERFECT.replace('"CAT"', '"CAR"'))["text"] == 0.0


def test_swapped_relation_lowers_relation_only():
    caption = PERFECT.replace("green sign is to the left of and above", "green sign is to the right of and above")
    assert changed(caption) == {"relation"}


def test_wrong_position_lowers_position_only():
    assert changed(PERFECT.replace("in the bottom right corner", "in the bottom left corner")) == {"position"}


def test_position_adjectives_inside_a_noun_phrase_are_read():
    truth = scene([("triangle", "red", 0, 0, None), ("circle", "yellow", 0, 1, None)], grid=(1, 3))
    said = parse_caption("A left red triangle and a middle yellow circle on a plain white background.")
    assert {kind: claim.positions for kind, claim in said.objects.items()} == {
        ("red", "triangle"): {"left"}, ("yellow", "circle"): {"center"}}
    swapped = "A middle red triangle and a left yellow circle on a plain white background."
    result = scores(swapped, truth)
    assert result["position"] == 0.0
    assert result["object_recall"] == result["colour_binding"] == 1.0


def test_object_duplicated_at_another_place_is_a_count_error():
    truth = scene([("triangle", "yellow", 0, 2, None)], grid=(1, 3))
    said = scores("On the right is a yellow triangle and at the left is a yellow triangle.", truth)
    assert said["count"] == 0.0 and said["position"] == pytest.approx(1 / 2)
    assert said["object_recall"] == said["object_precision"] == said["colour_binding"] == 1.0
    # the same object named again ("the", or "a" at the same place) is still one object
    for caption in ("On the right is a yellow triangle. The yellow triangle sits on the right.",
                    "A yellow triangle on a white background. On the right is a yellow triangle."):
        assert scores(caption, truth)["count"] == 1.0


def test_relation_read_in_both_sentence_orders():
    truth = scene([("triangle", "red", 0, 0, None), ("circle", "yellow", 0, 1, None)], [(0, "left of", 1)], grid=(1, 3))
    for caption in ("A red triangle on the left and a yellow circle in the center. "
                    "Right of the red triangle is the yellow circle.",
                    "On the left there is a red triangle, and a yellow circle is in the middle. "
                    "The triangle lies to the left of the circle."):
        assert scores(caption, truth) == {**{name: 1.0 for name in CATEGORIES}, "text": None}


def test_categories_absent_from_truth_are_none_not_one():
    truth = scene([("square", "green", 0, 1, None)], grid=(1, 3))
    result = scores("A green square in the middle.", truth)
    assert result["relation"] is None and result["text"] is None
    assert result["object_recall"] == 1.0


def test_empty_and_missing_captions_find_nothing():
    result = fidelity_scores({"k": None}, {"k": TRUTH, "other": TRUTH})["categories"]
    assert result["object_recall"] == 0.0 and result["text"] == 0.0
    assert result["object_precision"] is None and result["colour_binding"] is None


def test_parse_reads_counts_sizes_and_quoted_words():
    facts = parse_caption('Three small purple diamonds sit along the top. The brown sign shows the word "OWL".')
    assert facts.objects[("purple", "diamond")].count == 3
    assert facts.objects[("purple", "diamond")].positions == {"top"}
    assert facts.texts == {"OWL"}
    pair = parse_caption("There are two red circles: one on the left and one on the right.")
    assert pair.objects[("red", "circle")].count == 2
    assert pair.objects[("red", "circle")].positions == {"left", "right"}


@pytest.mark.parametrize("preset", ["quickstart", "rich"])
def test_generator_dsc_scores_one_on_every_applicable_category(preset):
    cfg = scene_preset(preset)
    rng = random.Random(f"fidelity/{preset}")
    truths, captions = {}, {}
    for i in range(300):
        _, truth = sample_scene(cfg, rng)
        truths[str(i)], captions[str(i)] = truth, write_captions(truth, rng)["caption"]
    result = fidelity_scores(captions, truths)["categories"]
    expected_absent = {"text"} if preset == "quickstart" else set()
    assert {n for n, v in result.items() if v is None} == expected_absent
    assert all(v == 1.0 for v in result.values() if v is not None), result


def test_the_short_task_is_scored_against_the_main_subject_only():
    truth = {**TRUTH, "main_subject": 1}  # the green sign

    def short(caption):
        return fidelity_scores({"k": caption}, {"k": truth}, task="short")["categories"]

    assert short('A green sign reading "CAT".') == {
        "object_recall": 1.0, "object_precision": 1.0, "colour_binding": 1.0, "position": None,
        "relation": None, "count": 1.0, "text": 1.0}
    assert short("A red sign.")["colour_binding"] == 0.0
    assert short('A green sign reading "CAT" and a red circle.')["object_precision"] == pytest.approx(1 / 2)
    assert short("A blue square.")["object_recall"] == 0.0
    # the same caption as a detailed one misses most of the scene
    assert scores('A green sign reading "CAT".')["object_recall"] == pytest.approx(1 / 4)
