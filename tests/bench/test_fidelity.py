"""Caption fidelity: parsing hand-written captions and the generator's own DSC back into facts.

Each hand-written change to a perfect caption lowers exactly its own category."""

import random

import pytest

from mllm.bench.caption_styles import CAPTION_WRITERS
from mllm.bench.scenes import position_name, sample_scene, scene_preset
from mllm.bench.fidelity import CATEGORIES, fidelity_scores, parse_caption


def scene(objects, relations=(), grid=(3, 3), background=None, held_out=()):
    """A truth record from (shape, colour, row, col, text[, size, texture]) tuples; relations as (i, name, j)."""
    objs = []
    for i, (s, c, r, k, t, *attributes) in enumerate(objects):
        size, texture = attributes or (None, None)
        objs.append({"id": i, "shape": s, "colour": c, "size": size, "row": r, "col": k, "layer": i, "text": t,
                     "position": position_name(r, k, *grid), **({"texture": texture} if texture else {})})
    truth = {"objects": objs, "relations": [{"subject": a, "relation": n, "object": b} for a, n, b in relations],
             "texts": [o["text"] for o in objs if o["text"]], "grid": list(grid)}
    if background:
        truth["background"] = dict(zip(("texture", "colour"), background.split()))
    if held_out:
        truth["held_out_texts"] = list(held_out)
    return truth


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


NOT_IN_TRUTH = {"size", "texture", "occlusion", "background", "text_held_out", "temporal"}  # temporal: clips only


def scores(caption, truth=TRUTH):
    return fidelity_scores({"k": caption}, {"k": truth})["categories"]


def changed(caption):
    """Categories whose score differs from the perfect caption's."""
    perfect = scores(PERFECT)
    return {name for name, value in scores(caption).items() if value != perfect[name]}


def test_perfect_caption_scores_one_everywhere():
    assert scores(PERFECT) == {name: None if name in NOT_IN_TRUTH else 1.0 for name in CATEGORIES}


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
    assert changed(PERFECT.replace('"CAT"', '"CAR"')) == {"text_seen"}
    assert scores(PERFECT.replace('"CAT"', '"CAR"'))["text_seen"] == 0.0


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
        assert scores(caption, truth) == {name: None if name in NOT_IN_TRUTH | {"text_seen"} else 1.0
                                          for name in CATEGORIES}


def test_categories_absent_from_truth_are_none_not_one():
    truth = scene([("square", "green", 0, 1, None)], grid=(1, 3))
    result = scores("A green square in the middle.", truth)
    assert result["relation"] is None and result["text_seen"] is None and result["size"] is None
    assert result["object_recall"] == 1.0


def test_empty_and_missing_captions_find_nothing():
    result = fidelity_scores({"k": None}, {"k": TRUTH, "other": TRUTH})["categories"]
    assert result["object_recall"] == 0.0 and result["text_seen"] == 0.0
    assert result["object_precision"] is None and result["colour_binding"] is None


def test_fill_words_are_read_only_where_the_scene_objects_have_fills():
    """Without fills (the quickstart), "plain" ends a noun phrase as it did before fills existed, so
    the quickstart's figures stay what they were; with fills it is the object's fill."""
    caption = "A yellow plain square in the middle."
    assert parse_caption(caption).objects[("yellow", "square")].textures == {"plain"}
    assert set(parse_caption(caption, fills=False).objects) == {(None, "square")}
    without = scene([("square", "yellow", 0, 1, None)], grid=(1, 3))
    assert scores(caption, without) == scores("A square in the middle.", without)
    filled = scene([("square", "yellow", 0, 1, None, "large", "plain")], grid=(1, 3))
    assert scores(caption, filled)["texture"] == scores(caption, filled)["colour_binding"] == 1.0


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
        _, truth = sample_scene(cfg, rng, held_out=i % 2 == 0)
        truths[str(i)], captions[str(i)] = truth, CAPTION_WRITERS[cfg.caption_style](truth, rng)["caption"]
    result = fidelity_scores(captions, truths)["categories"]
    expected_absent = {"size", "texture", "occlusion", "text_seen", "text_held_out"} if preset == "quickstart" else set()
    expected_absent.add("temporal")  # clips only
    assert {n for n, v in result.items() if v is None} == expected_absent
    assert all(v == 1.0 for v in result.values() if v is not None), result


def test_the_short_task_is_scored_against_the_main_subject_only():
    truth = {**TRUTH, "main_subject": 1}  # the green sign

    def short(caption):
        return fidelity_scores({"k": caption}, {"k": truth}, task="short")["categories"]

    assert short('A green sign reading "CAT".') == {
        "object_recall": 1.0, "object_precision": 1.0, "colour_binding": 1.0, "size": None, "texture": None,
        "position": None, "relation": None, "occlusion": None, "count": 1.0, "background": None,
        "text_seen": 1.0, "text_held_out": None, "temporal": None}
    assert short("A red sign.")["colour_binding"] == 0.0
    assert short('A green sign reading "CAT" and a red circle.')["object_precision"] == pytest.approx(1 / 2)
    assert short("A blue square.")["object_recall"] == 0.0
    # the same caption as a detailed one misses most of the scene
    assert scores('A green sign reading "CAT".')["object_recall"] == pytest.approx(1 / 4)


# ---------------------------------------------------------------- rich scenes
# A: a small striped red circle top left; in the middle a large dotted blue square with a small
# plain green diamond in front of it; a yellow sign "CAT" (seen in training) bottom right.
# B: a purple sign "MUG" (held out from training) at the top, two small checkered pink stars.
RICH = {
    "a": scene([("circle", "red", 0, 0, None, "small", "striped"), ("square", "blue", 1, 1, None, "large", "dotted"),
                ("diamond", "green", 1, 1, None, "small", "plain"), ("sign", "yellow", 2, 2, "CAT", "large", "plain")],
               [(0, "left of", 1), (0, "above", 1), (0, "left of", 2), (0, "above", 2), (0, "left of", 3),
                (0, "above", 3), (1, "left of", 3), (1, "above", 3), (2, "left of", 3), (2, "above", 3),
                (2, "in front of", 1)], background="dotted gray"),
    "b": scene([("sign", "purple", 0, 1, "MUG", "large", "plain"), ("star", "pink", 1, 0, None, "small", "checkered"),
                ("star", "pink", 1, 2, None, "small", "checkered")], background="plain white", held_out=["MUG"]),
}
RICH_PERFECT = {
    "a": 'On a dotted gray background: a top left small striped red circle, a middle large dotted blue square, '
         'a middle small plain green diamond and a bottom right large plain yellow sign reading "CAT". '
         "The green diamond is in front of the blue square. The red circle is above and to the left of the blue "
         "square. Above and left of the green diamond is the red circle. The red circle is above and to the left "
         "of the yellow sign. The blue square lies above and to the left of the yellow sign. Below and to the "
         "right of the green diamond is the yellow sign.",
    "b": 'A large plain purple sign at the top reads "MUG". Two small checkered pink stars sit on the left and '
         "on the right. All on a plain white background.",
}


def rich_scores(edits=()):
    """Scores of the perfect rich captions with (key, old, new) replacements applied."""
    captions = dict(RICH_PERFECT)
    for key, old, new in edits:
        assert old in captions[key]
        captions[key] = captions[key].replace(old, new)
    return fidelity_scores(captions, RICH)["categories"]


def rich_changed(*edits):
    perfect = rich_scores()
    return {name for name, value in rich_scores(edits).items() if value != perfect[name]}


def test_perfect_rich_captions_score_one_everywhere():
    assert rich_scores() == {name: None if name == "temporal" else 1.0 for name in CATEGORIES}


def test_wrong_size_lowers_size_only():
    assert rich_changed(("a", "small striped red", "large striped red")) == {"size"}
    assert rich_changed(("b", "Two small checkered", "Two large checkered")) == {"size"}


def test_wrong_fill_lowers_texture_only():
    assert rich_changed(("a", "striped red circle", "dotted red circle")) == {"texture"}
    assert rich_changed(("a", "large dotted blue", "large plain blue")) == {"texture"}


def test_wrong_occluder_lowers_occlusion_only():
    swapped = ("a", "The green diamond is in front of the blue square", "The blue square is in front of the green diamond")
    assert rich_changed(swapped) == {"occlusion"}
    assert rich_scores([swapped])["occlusion"] == 0.0
    assert rich_changed(("a", "The green diamond is in front of the blue square",
                         "The blue square is partly hidden behind the green diamond")) == set()


def test_wrong_spatial_relation_lowers_relation_only():
    assert rich_changed(("a", "The red circle is above and to the left of the yellow sign",
                         "The red circle is below and to the left of the yellow sign")) == {"relation"}


def test_wrong_background_lowers_background_only():
    assert rich_changed(("a", "dotted gray background", "striped gray background")) == {"background"}
    assert rich_changed(("b", "plain white background", "plain black background")) == {"background"}
    assert rich_scores([("b", " All on a plain white background.", "")])["background"] == pytest.approx(2 / 4)


def test_seen_and_held_out_words_are_scored_apart():
    assert rich_changed(("a", '"CAT"', '"CAR"')) == {"text_seen"}
    assert rich_changed(("b", '"MUG"', '"MUD"')) == {"text_held_out"}
    assert rich_scores([("b", '"MUG"', '"MUD"')])["text_held_out"] == 0.0


def test_invented_words_count_against_the_scene_words_split():
    # a word invented for a scene without words lowers text_seen; beside held-out words only, text_held_out
    no_sign = scene([("circle", "red", 0, 0, None)])
    assert fidelity_scores({"k": 'A red circle reading "SUN".', "a": RICH_PERFECT["a"]},
                           {"k": no_sign, "a": RICH["a"]})["categories"]["text_seen"] == pytest.approx(1 / 2)
    assert rich_changed(("b", 'reads "MUG"', 'reads "MUG" and "HAT"')) == {"text_held_out"}


def test_rich_generator_captions_are_long_and_complete(tmp_path):
    from mllm.bench.scenes import generate_scenes, load_truth

    generate_scenes(tmp_path, scene_preset("rich", n_train=0, n_val=0, n_test=120, seed=5))
    truths = load_truth(tmp_path / "test_truth.jsonl")
    words = [len(t["caption"].split()) for t in truths.values()]
    assert sum(words) / len(words) >= 40
    assert any(t.get("held_out_texts") for t in truths.values())
    result = fidelity_scores({k: t["caption"] for k, t in truths.items()}, truths)["categories"]
    assert result == {name: None if name == "temporal" else 1.0 for name in CATEGORIES}
