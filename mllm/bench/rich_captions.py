"""Captions for rich scenes (3x3 grid, sizes, fills, occlusion, like objects, signs with words).

The detailed caption (DSC) names every object, every relation, the counts of like objects, who
hides whom, the background and every word, in an order a small LLM can learn (README, "What made
positions learnable"):

- one inventory sentence lists the objects one by one in reading order (top to bottom, left to
  right; of two objects sharing a cell, the one behind first), each as
  "a <place> <size> <fill> <colour> <shape>" - the place word right before the object's words -
  and a sign with its word right after it ('a bottom plain blue sign reading "SKY"');
- like objects are listed one by one too, then counted ("There are two blue stars in all");
- occlusion: "The middle blue square is in front of the middle red circle";
- one sentence per pair of single objects, the pairs in reading order and the first of each pair
  its subject, each noun with its place word, so the relation follows from two places side by
  side ("The top left red circle is above and to the left of the bottom right blue square"), and
  the model only has to walk the pairs in the order it listed the objects.

Openers, verbs and relation words vary (random per caption); the order of the facts does not.
The short caption names the main subject (`mllm.bench.scenes.main_subject_order`) with all its
attributes; the original caption is the basic style's alt text.
"""

from __future__ import annotations

import random

from mllm.bench.scene_captions import NUMBER_WORDS, capitalise, inventory_sentence, join_phrases, original_caption
from mllm.bench.scenes import object_groups

_HORIZONTAL = {True: ("to the left of", "left of"), False: ("to the right of", "right of")}  # subject left?


def _place(obj: dict) -> str:
    return "middle" if obj["position"] == "center" else obj["position"]


def _attributes(obj: dict) -> str:
    """'small striped red circle' (size and fill when the scene has them)."""
    return " ".join(w for w in (obj["size"], obj.get("texture"), obj["colour"], obj["shape"]) if w)


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _listed(obj: dict) -> str:
    """An object in the inventory: 'a top left small striped red circle', signs with their word."""
    noun = _article(f"{_place(obj)} {_attributes(obj)}")
    return noun + (f' reading "{obj["text"]}"' if obj["text"] else "")


def _named(obj: dict) -> str:
    """An object named again: 'the top left red circle'."""
    return f"the {_place(obj)} {obj['colour']} {obj['shape']}"


def _inventory(truth: dict, rng: random.Random) -> str:
    objects = truth["objects"]
    return inventory_sentence(join_phrases([_listed(o) for o in objects]), len(objects) > 1, truth, rng)


def _count(group: dict, rng: random.Random) -> str:
    number, kind = NUMBER_WORDS[group["count"]], f"{group['colour']} {group['shape']}s"
    return rng.choice((f"There are {number} {kind} in all.", f"In all, {number} {kind} appear.",
                       f"The {number} {kind} look alike."))


def _occlusion(front: dict, back: dict, rng: random.Random) -> str:
    return rng.choice((
        f"{capitalise(_named(front))} is in front of {_named(back)}.",
        f"{capitalise(_named(back))} is partly hidden behind {_named(front)}.",
        f"In front of {_named(back)} is {_named(front)}.",
    ))


def _relation(a: dict, b: dict, rng: random.Random) -> str | None:
    """Where `a` (first in reading order, so never below `b`) is relative to `b`; None in one cell."""
    parts = ["above"] if a["row"] < b["row"] else []
    if a["col"] != b["col"]:
        parts.append(rng.choice(_HORIZONTAL[a["col"] < b["col"]]))
    if not parts:
        return None
    verb = rng.choice(("is", "lies", "sits"))
    return f"{capitalise(_named(a))} {verb} {' and '.join(parts)} {_named(b)}."


def detailed_caption(truth: dict, rng: random.Random) -> str:
    """Every fact of `truth`: inventory, counts, occlusion, then pairwise relations."""
    objects = truth["objects"]  # ids are in reading order
    groups = object_groups(objects)
    singles = [objects[g["object_ids"][0]] for g in groups if g["count"] == 1]
    singles.sort(key=lambda o: o["id"])
    sentences = [_inventory(truth, rng)]
    sentences += [_count(g, rng) for g in groups if g["count"] > 1]
    sentences += [_occlusion(objects[r["subject"]], objects[r["object"]], rng)
                  for r in truth["relations"] if r["relation"] == "in front of"]
    for i, a in enumerate(singles):
        sentences += filter(None, (_relation(a, b, rng) for b in singles[i + 1:]))
    return " ".join(sentences)


def short_caption(truth: dict, rng: random.Random) -> str:
    """The main subject with its size, fill and colour (and its word)."""
    main = truth["objects"][truth["main_subject"]]
    count = sum(o["shape"] == main["shape"] and o["colour"] == main["colour"] for o in truth["objects"])
    words = _attributes(main) + ("s" if count > 1 else "")
    noun = f"{NUMBER_WORDS[count]} {words}" if count > 1 else _article(words)
    return capitalise(noun) + (f' reading "{main["text"]}".' if main["text"] else ".")


def write_captions(truth: dict, rng: random.Random) -> dict[str, str]:
    """The three caption fields of a scene record."""
    return {
        "caption": detailed_caption(truth, rng),
        "short_caption": short_caption(truth, rng),
        "original_caption": original_caption(truth, rng),
    }
