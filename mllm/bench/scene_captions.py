"""Captions for synthetic scenes, written from their truth records.

The detailed caption (DSC) states every fact in varied sentences (several openers and phrasings
per fact). A single object's place is written as an adjective right before it ("a left
red triangle"): a small LLM, trained for minutes, learns to bind a place to an object when the
place word sits next to the object's words, and not across "On the left is a red triangle"
(README, quickstart). Objects are listed in reading order (top to bottom, left to right): after
"a left red triangle" the model only has to look further right for the next one, and with a random
order it added phantom objects to one-object scenes. The order of the other sentences varies.
Groups of like objects get a sentence of places ("sit on the left and on the
right"). The short caption (SSC) names the main subject; the original caption imitates
alt text: short, partial and sometimes wrong. The words used here are the vocabulary that
`mllm.bench.fidelity` parses back.
"""

from __future__ import annotations

import random

from mllm.bench.scenes import COLOURS, SHAPES, SIGN, object_groups

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "beneath"),
    "in front of": ("in front of",),
    "behind": ("behind", "partly hidden behind"),
}
INVERSE = {"left of": "right of", "above": "below", "in front of": "behind"}


def _position_phrase(name: str, rng: random.Random) -> str:
    if name == "center":
        return rng.choice(("in the center", "in the middle", "at the center"))
    if name in ("left", "right"):
        return rng.choice((f"on the {name}", f"on the {name} side", f"at the {name}"))
    if name in ("top", "bottom"):
        return rng.choice((f"at the {name}", f"along the {name}", f"at the {name} of the image"))
    return rng.choice((f"in the {name} corner", f"at the {name}", f"in the {name}"))


def _place_adjective(group: dict, rng: random.Random) -> str | None:
    """A single object's place as an adjective ("left", "middle"); None for a group of several."""
    if group["count"] > 1:
        return None
    name = group["positions"][0]
    return rng.choice(("middle", "center")) if name == "center" else name


def _noun(group: dict, definite: bool, place: str | None = None) -> str:
    """'a red circle', 'the two red circles', 'a left red circle' (with `place`)."""
    count = group["count"]
    shape = group["shape"] + ("s" if count > 1 else "")
    size = "" if definite or not group["size"] else group["size"] + " "
    head = f"{place + ' ' if place else ''}{size}{group['colour']} {shape}"
    if definite:
        return f"the {NUMBER_WORDS[count]} {head}" if count > 1 else f"the {head}"
    if count > 1:
        return f"{NUMBER_WORDS[count]} {head}"
    return ("an " if head[0] in "aeiou" else "a ") + head


def join_phrases(items: list[str]) -> str:
    """'a', 'b', 'c' -> 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(text: str) -> str:
    """The first letter upper-case, the rest as it is."""
    return text[0].upper() + text[1:]


def _background(truth: dict) -> str:
    bg = truth["background"]
    return f"{bg['texture']} {bg['colour']} background"


def _positions(group: dict, rng: random.Random) -> str:
    return join_phrases([_position_phrase(p, rng) for p in group["positions"]])


def _inventory_sentence(groups: list[dict], truth: dict, rng: random.Random) -> str:
    nouns = join_phrases([_noun(g, definite=False, place=_place_adjective(g, rng)) for g in groups])
    return inventory_sentence(nouns, len(groups) > 1 or groups[0]["count"] > 1, truth, rng)


def inventory_sentence(nouns: str, plural: bool, truth: dict, rng: random.Random) -> str:
    """`nouns` (the scene's objects, listed) on the scene's background, in one of six openers."""
    bg = _background(truth)
    verb = "are" if plural else "is"
    return rng.choice((
        f"{capitalise(nouns)} on a {bg}.",
        f"{capitalise(nouns)} {verb} set against a {bg}.",
        f"Against a {bg} there {verb} {nouns}.",
        f"The picture has a {bg} with {nouns}.",
        f"Shown on a {bg}: {nouns}.",
        f"A simple graphic: {nouns} on a {bg}.",
    ))


def _position_sentence(group: dict, rng: random.Random) -> str:
    noun, where = _noun(group, definite=True), _positions(group, rng)
    verb = "sit" if group["count"] > 1 else "sits"
    return rng.choice((
        f"{capitalise(noun)} {verb} {where}.",
        f"{capitalise(noun)} {'are' if group['count'] > 1 else 'is'} placed {where}.",
        f"{capitalise(where)} you can see {noun}.",
        f"{capitalise(where)} is {noun}." if group["count"] == 1 else f"{capitalise(noun)} appear {where}.",
    ))


def _relation_sentence(relations: list[dict], groups_by_id: dict, rng: random.Random) -> str:
    a, b = relations[0]["subject"], relations[0]["object"]
    names = [r["relation"] for r in relations]
    if rng.random() < 0.5:
        a, b, names = b, a, [INVERSE[n] for n in names]
    phrase = " and ".join(rng.choice(RELATION_PHRASES[n]) for n in names)
    subject, obj = _noun(groups_by_id[a], True), _noun(groups_by_id[b], True)
    return rng.choice((
        f"{capitalise(subject)} is {phrase} {obj}.",
        f"{capitalise(phrase)} {obj} is {subject}.",
        f"{capitalise(subject)} lies {phrase} {obj}.",
    ))


def _text_sentence(group: dict, rng: random.Random) -> str:
    noun, word = _noun(group, definite=True), group["text"]
    return rng.choice((
        f'{capitalise(noun)} reads "{word}".',
        f'The word "{word}" is written on {noun}.',
        f'{capitalise(noun)} shows the word "{word}".',
    ))


def detailed_caption(truth: dict, rng: random.Random) -> str:
    """Every fact of `truth` in fluent, varied sentences; the objects in reading order."""
    groups = object_groups(truth["objects"])
    groups_by_id = {i: g for g in groups for i in g["object_ids"]}
    cell = {o["id"]: (o["row"], o["col"]) for o in truth["objects"]}
    groups.sort(key=lambda g: min(cell[i] for i in g["object_ids"]))
    sentences = [_inventory_sentence(groups, truth, rng)]
    sentences += [_position_sentence(g, rng) for g in groups if g["count"] > 1]
    pairs: dict[tuple[int, int], list[dict]] = {}
    for rel in truth["relations"]:
        pairs.setdefault((rel["subject"], rel["object"]), []).append(rel)
    extra = [_relation_sentence(rels, groups_by_id, rng) for rels in pairs.values()]
    extra += [_text_sentence(g, rng) for g in groups if g["text"]]
    rng.shuffle(extra)
    return " ".join(sentences + extra)


def short_caption(truth: dict, rng: random.Random) -> str:
    """The main subject only."""
    main = truth["objects"][truth["main_subject"]]
    group = next(g for g in object_groups(truth["objects"]) if main["id"] in g["object_ids"])
    noun = _noun(group, definite=False)
    if group["text"] and rng.random() < 0.5:
        return f'{capitalise(noun)} reading "{group["text"]}".'
    return capitalise(noun) + "."


def original_caption(truth: dict, rng: random.Random) -> str:
    """Alt-text-like: short, partial, sometimes wrong."""
    main = truth["objects"][truth["main_subject"]]
    colour, shape = main["colour"], main["shape"]
    if rng.random() < 0.3:
        colour = rng.choice([c for c in COLOURS if c != colour])
    if rng.random() < 0.2 and shape != SIGN:
        shape = rng.choice([s for s in SHAPES if s != shape])
    options = [f"{colour} {shape}", f"{shape} icon", "simple shapes",
               f"geometric shapes on {truth['background']['colour']}", f"{colour} {shape} clipart"]
    if main["text"]:
        options.append(f"{main['text'].lower()} sign")
    return rng.choice(options)


def write_captions(truth: dict, rng: random.Random) -> dict[str, str]:
    """The three caption fields of a scene record."""
    return {
        "caption": detailed_caption(truth, rng),
        "short_caption": short_caption(truth, rng),
        "original_caption": original_caption(truth, rng),
    }
