"""Caption fidelity on synthetic scenes: parse a caption back into facts and score them per category.

The parser is driven by the scene generator's own vocabulary (`mllm.bench.scenes`): colour, shape,
size, texture and position words, relation phrases and sign words (any quoted / upper-case word).
It reads noun phrases ("the two large striped red circles"), the background ("a dotted gray
background"),
attaches position phrases ("in the top left corner") to the noun they describe, whichever side
it is on, reads position adjectives inside a noun phrase ("a left red circle"), and reads
relations in both orders ("A is left of B", "Left of B is A").

Scoring aligns the caption's objects to the scene's by shape (exact colour first), then:

- object_recall: scene objects (shape + colour kinds) the caption names, by shape;
- object_precision: named objects that exist, by shape (1 - precision = CHAIR hallucination rate);
- colour_binding: aligned objects named with their own colour;
- size, texture: stated vs true size / fill texture of aligned objects (intersection over union;
  only where the scene's objects have sizes / fills);
- position: stated vs true grid positions of aligned objects (intersection over union);
- relation: stated vs true spatial relations (left of, above) between aligned single objects
  (intersection over union);
- occlusion: stated vs true "in front of" relations (also read from "behind"), the same way;
  kept apart from `relation` because depth is a failure of its own and presets without
  overlapping objects have none;
- count: aligned objects named with the right number (a kind introduced twice with "a" at
  different places counts two, so a duplicated phantom object is a count error);
- background: the background's colour and texture, one fact each;
- text_seen, text_held_out: sign words transcribed exactly (intersection over union of words),
  split by whether the word was shown in training (`held_out_texts` of the truth). A word stated
  for a scene without one counts against text_seen, unless the scene shows held-out words only.

- temporal (clips only, truth records with `events`): each event (appear, move, disappear) named with
  the right object, in the right order, at the right time (`mllm.bench.temporal`). For a clip, the
  other categories score its objects where each first appears.

Each category sums hits and totals over all scenes (micro average). A category with no facts
in the truth, or nothing to score, is None ("n/a"), never 1.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mllm.bench.scene_captions import NUMBER_WORDS
from mllm.bench.scenes import BACKGROUNDS, COLOURS, SHAPES, SIGN, SIZE_SCALE, TEXTURES, object_groups

CATEGORIES = ("object_recall", "object_precision", "colour_binding", "size", "texture", "position", "relation",
              "occlusion", "count", "background", "text_seen", "text_held_out", "temporal")
OCCLUSION = "in front of"

Kind = tuple[str | None, str]  # (colour or None, shape)

_SHAPE_WORDS = {s: s for s in (*SHAPES, SIGN)} | {s + "s": s for s in (*SHAPES, SIGN)}
_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {str(i): i for i in range(10)}
_ARTICLES = {"a", "an", "the", "its"}
_SIZES = {s: s for s in SIZE_SCALE} | {"big": "large", "tiny": "small"}
_TEXTURES = set(TEXTURES)
_BACKGROUND_COLOURS = {c: c for c in (*BACKGROUNDS, *COLOURS)} | {"grey": "gray"}
# relation phrases (token tuples, longest first) -> canonical relation and whether it is inverted
_RELATION_PHRASES: list[tuple[tuple[str, ...], str, bool]] = sorted(
    [
        (("to", "the", "left", "of"), "left of", False), (("left", "of"), "left of", False),
        (("to", "the", "right", "of"), "left of", True), (("right", "of"), "left of", True),
        (("above",), "above", False), (("over",), "above", False),
        (("below",), "above", True), (("beneath",), "above", True), (("under",), "above", True),
        (("in", "front", "of"), "in front of", False), (("behind",), "in front of", True),
    ],
    key=lambda p: -len(p[0]),
)
_PREPOSITIONS = {"in", "on", "at", "along", "near"}
_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZONTAL = {"left": "left", "right": "right"}
_CENTRE = {"center", "centre", "middle"}
# position words used as adjectives inside a noun phrase ("a left red circle", "the top right square")
_PLACE_WORDS = set(_VERTICAL) | set(_HORIZONTAL) | _CENTRE
_MODIFIERS = _ARTICLES | set(_NUMBERS) | set(_SIZES) | set(COLOURS) | _PLACE_WORDS
# fill words are read in noun phrases only for scenes whose objects have fills (`parse_caption`)
_FILL_MODIFIERS = _MODIFIERS | _TEXTURES
_POSITION_NOUNS = {"corner", "side", "edge", "part", "half", "row", "column"}
_FRAME_NOUNS = {"image", "picture", "frame", "scene", "canvas"}
# words that may stand between a position phrase and the noun it introduces ("on the left is a ...")
_BRIDGE = {",", "and", "you", "can", "see", "there", "we", "find", "sits", "sit", "lies", "lie", "stands",
           "stand", "appears", "appear", "is", "are", "placed"}
_VERBS = _BRIDGE - {",", "and", "you", "can", "there", "we"}
_QUOTED = re.compile(r"[\"“”]([^\"“”]*)[\"“”]")
_UPPER_WORD = re.compile(r"\b[A-Z]{2,}\b")
_TOKEN = re.compile(r"[a-z0-9]+|[.,;:!?]")


@dataclass
class ObjectClaim:
    """What is said (or true) about one kind of object: how many, where, how large, which fill."""

    count: int | None = None
    positions: set[str] = field(default_factory=set)
    sizes: set[str] = field(default_factory=set)
    textures: set[str] = field(default_factory=set)


@dataclass
class SceneFacts:
    """Objects by kind, relations between kinds (canonical: left of / above / in front of), words
    (`held_out_texts`: those of them not shown in training; truth only), background colour and texture."""

    objects: dict[Kind, ObjectClaim] = field(default_factory=dict)
    relations: set[tuple[Kind, str, Kind]] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    held_out_texts: set[str] = field(default_factory=set)
    background: dict[str, str | None] = field(default_factory=dict)


@dataclass
class Tally:
    hits: float = 0.0
    total: float = 0.0

    def add(self, hits: float, total: float) -> None:
        self.hits += hits
        self.total += total


# ---------------------------------------------------------------- truth


def truth_facts(truth: dict) -> SceneFacts:
    """The facts of one truth record (as written by `mllm.bench.scenes.generate_scenes`)."""
    facts = SceneFacts(texts={t.upper() for t in truth.get("texts", [])},
                       held_out_texts={t.upper() for t in truth.get("held_out_texts", [])},
                       background=dict(truth.get("background") or {}))
    kind_of: dict[int, Kind] = {}
    for group in object_groups(truth["objects"]):
        kind = (group["colour"], group["shape"])
        facts.objects[kind] = ObjectClaim(group["count"], set(group["positions"]),
                                          {group["size"]} - {None}, {group["texture"]} - {None})
        kind_of.update({i: kind for i in group["object_ids"]})
    facts.relations = {(kind_of[r["subject"]], r["relation"], kind_of[r["object"]]) for r in truth["relations"]}
    return facts


# ---------------------------------------------------------------- caption parsing


@dataclass
class _Mention:
    start: int
    end: int
    colour: str | None
    shape: str
    count: int | None
    indefinite: bool  # "a red circle", not "the red circle"
    place: str | None  # a position adjective inside the noun phrase: "a left red circle"
    size: str | None
    texture: str | None


def _mentions(tokens: list[str], modifiers: set[str]) -> list[_Mention]:
    found = []
    for i, token in enumerate(tokens):
        if token not in _SHAPE_WORDS:
            continue
        start = i
        while start > 0 and tokens[start - 1] in modifiers and i - start < 6:
            start -= 1
        words = tokens[start:i]
        places = [w for w in words if w in _PLACE_WORDS]
        colours = [w for w in words if w in COLOURS]
        numbers = [_NUMBERS[w] for w in words if w in _NUMBERS]
        plural = token != _SHAPE_WORDS[token]
        count = numbers[-1] if numbers else (None if plural else 1)
        sizes, textures = [_SIZES[w] for w in words if w in _SIZES], [w for w in words if w in _TEXTURES]
        found.append(_Mention(start, i + 1, colours[-1] if colours else None, _SHAPE_WORDS[token], count,
                              bool({"a", "an"} & set(words)), place_name(places) if places else None,
                              sizes[-1] if sizes else None, textures[-1] if textures else None))
    return found


def place_name(words: list[str]) -> str:
    """'top', 'left' -> 'top left'; 'middle' -> 'center'."""
    vertical = next((_VERTICAL[w] for w in words if w in _VERTICAL), "")
    horizontal = next((_HORIZONTAL[w] for w in words if w in _HORIZONTAL), "")
    return " ".join(w for w in (vertical, horizontal) if w) or "center"


def _relations(tokens: list[str], mentions: list[_Mention], used: set[int]):
    """(subject mention, relation, object mention) triples; marks the phrase tokens as used."""
    starts = {m.start: m for m in mentions}
    found = []
    i = 0
    while i < len(tokens):
        group, j = [], i
        while True:
            match = next((p for p in _RELATION_PHRASES if tuple(tokens[j:j + len(p[0])]) == p[0]), None)
            if match is None:
                break
            group.append(match[1:])
            j += len(match[0])
            if j not in starts and tokens[j:j + 1] == ["and"]:
                j += 1
        target = starts.get(j)
        if not group or target is None:
            i += 1
            continue
        before = [m for m in mentions if m.end <= i]
        after = [m for m in mentions if m.start >= target.end]
        subject = before[-1] if before else (after[0] if after else None)
        if subject is not None:
            for name, inverted in group:
                found.append((target, name, subject) if inverted else (subject, name, target))
            used.update(range(i, j))
        i = j
    return found


def _position_phrases(tokens: list[str], used: set[int]) -> list[tuple[int, int, str]]:
    """(start, end, position name) of phrases like 'in the top left corner', 'at the center'."""
    found = []
    i = 0
    while i < len(tokens):
        if tokens[i] not in _PREPOSITIONS or i in used:
            i += 1
            continue
        j = i + 1 + (tokens[i + 1:i + 2] == ["the"])
        words = []
        while j < len(tokens) and j not in used and (
                tokens[j] in _VERTICAL or tokens[j] in _HORIZONTAL or tokens[j] in _CENTRE):
            words.append(tokens[j])
            j += 1
        if not words:
            i += 1
            continue
        while j < len(tokens) and tokens[j] in _POSITION_NOUNS:
            j += 1
        if tokens[j:j + 2] == ["of", "the"] and j + 2 < len(tokens) and tokens[j + 2] in _FRAME_NOUNS:
            j += 3
        found.append((i, j, place_name(words)))
        i = j
    return found


def _attach(phrase: tuple[int, int, str], phrases, tokens: list[str], mentions: list[_Mention]):
    """The mention a position phrase describes: the next one when a verb bridges to it
    ("on the left is a ..."), else the previous one ("... sits on the left")."""
    start, end, _ = phrase
    before = [m for m in mentions if m.end <= start]
    after = [m for m in mentions if m.start >= end]
    if after:
        between = set(range(end, after[0].start))
        for s, e, _ in phrases:
            between -= set(range(s, e))
        words = {tokens[k] for k in between}
        if not before or (words <= _BRIDGE and words & _VERBS):
            return after[0]
    return before[-1] if before else None


def _background(tokens: list[str]) -> dict[str, str]:
    """Colour and texture words right before "background" ("a dotted gray background")."""
    found: dict[str, str] = {}
    for i, token in enumerate(tokens):
        if token != "background":
            continue
        for word in reversed(tokens[max(0, i - 3):i]):
            if word in _BACKGROUND_COLOURS:
                found.setdefault("colour", _BACKGROUND_COLOURS[word])
            elif word in _TEXTURES:
                found.setdefault("texture", word)
            else:
                break
    return found


def _sentences(text: str) -> list[list[str]]:
    tokens = _TOKEN.findall(text.lower())
    sentences, current = [], []
    for token in tokens:
        if token in ".;!?":
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(token)
    return sentences + ([current] if current else [])


def caption_texts(caption: str) -> set[str]:
    """Words written in the image as the caption states them: quoted or upper-case words."""
    words = {w for quoted in _QUOTED.findall(caption) for w in re.findall(r"[A-Za-z0-9]+", quoted)}
    words |= set(_UPPER_WORD.findall(_QUOTED.sub(" ", caption)))
    return {w.upper() for w in words}


def parse_caption(caption: str | None, fills: bool = True) -> SceneFacts:
    """The facts a caption states, in the vocabulary of the synthetic scenes. Without `fills` (scenes
    whose objects have none), fill words are not part of a noun phrase: "plain" only ever describes
    the background there, and the quickstart's figures stay those of the parser without fills."""
    caption = caption or ""
    facts = SceneFacts(texts=caption_texts(caption))
    claims: list[tuple[_Mention, set[str]]] = []
    stated: list[tuple[_Mention, str, _Mention]] = []
    for tokens in _sentences(_QUOTED.sub(" ", caption)):
        facts.background = _background(tokens) | facts.background
        mentions = _mentions(tokens, _FILL_MODIFIERS if fills else _MODIFIERS)
        used: set[int] = set()
        stated += _relations(tokens, mentions, used)
        places = {id(m): {m.place} if m.place else set() for m in mentions}
        phrases = _position_phrases(tokens, used)
        for phrase in phrases:
            target = _attach(phrase, phrases, tokens, mentions)
            if target is not None:
                places[id(target)].add(phrase[2])
        claims += [(m, places[id(m)]) for m in mentions]
    coloured = {m.shape for m, _ in claims if m.colour}
    kind_of = {}
    introduced: dict[Kind, set[frozenset[str]]] = {}  # places of each "a <kind>" that has a place
    for mention, positions in claims:
        colour = mention.colour
        if colour is None and mention.shape in coloured:
            same = [m.colour for m, _ in claims if m.shape == mention.shape and m.colour]
            if len(set(same)) > 1:
                continue  # "the circle" among several coloured circles: cannot tell which
            colour = same[0]
        kind = kind_of[id(mention)] = (colour, mention.shape)
        claim = facts.objects.setdefault(kind, ObjectClaim())
        if mention.count is not None:
            claim.count = max(claim.count or 0, mention.count)
        if mention.indefinite and positions:
            introduced.setdefault(kind, set()).add(frozenset(positions))
        claim.positions |= positions
        claim.sizes |= {mention.size} - {None}
        claim.textures |= {mention.texture} - {None}
    for kind, places in introduced.items():  # "a red circle on the left ... a red circle on the right": two
        facts.objects[kind].count = max(facts.objects[kind].count or 0, len(places))
    for subject, name, obj in stated:
        if id(subject) in kind_of and id(obj) in kind_of and kind_of[id(subject)] != kind_of[id(obj)]:
            facts.relations.add((kind_of[id(subject)], name, kind_of[id(obj)]))
    return facts


# ---------------------------------------------------------------- scoring


def align(said: SceneFacts, truth: SceneFacts) -> dict[Kind, Kind]:
    """Truth kind -> caption kind, paired within each shape: same colour first, then the
    remaining ones by shared positions."""
    pairs: dict[Kind, Kind] = {}
    for shape in {k[1] for k in truth.objects}:
        true_kinds = sorted((k for k in truth.objects if k[1] == shape), key=str)
        said_kinds = sorted((k for k in said.objects if k[1] == shape), key=str)
        for kind in [k for k in true_kinds if k in said_kinds]:
            pairs[kind] = kind
            true_kinds.remove(kind)
            said_kinds.remove(kind)
        for kind in true_kinds:
            if not said_kinds:
                break
            where = truth.objects[kind].positions
            best = max(said_kinds, key=lambda k: len(said.objects[k].positions & where))
            pairs[kind] = best
            said_kinds.remove(best)
    return pairs


def score_scene(said: SceneFacts, truth: SceneFacts) -> dict[str, Tally]:
    """Hits and totals per category for one caption against one scene."""
    tallies = {name: Tally() for name in CATEGORIES}
    pairs = align(said, truth)
    tallies["object_recall"].add(len(pairs), len(truth.objects))
    tallies["object_precision"].add(len(pairs), len(said.objects))
    for true_kind, said_kind in pairs.items():
        true_claim, said_claim = truth.objects[true_kind], said.objects[said_kind]
        tallies["colour_binding"].add(true_kind[0] == said_kind[0], 1)
        tallies["count"].add(true_claim.count == said_claim.count, 1)
        _add_overlap(tallies["position"], said_claim.positions, true_claim.positions)
        if true_claim.sizes:
            _add_overlap(tallies["size"], said_claim.sizes, true_claim.sizes)
        if true_claim.textures:
            _add_overlap(tallies["texture"], said_claim.textures, true_claim.textures)
    singles = {said_kind: true_kind for true_kind, said_kind in pairs.items() if truth.objects[true_kind].count == 1}
    true_relations = {(pairs[a], r, pairs[b]) for a, r, b in truth.relations if a in pairs and b in pairs}
    said_relations = {rel for rel in said.relations if rel[0] in singles and rel[2] in singles}
    for name, occlusion in (("relation", False), ("occlusion", True)):
        _add_overlap(tallies[name], {r for r in said_relations if (r[1] == OCCLUSION) == occlusion},
                     {r for r in true_relations if (r[1] == OCCLUSION) == occlusion})
    for part in truth.background:
        tallies["background"].add(said.background.get(part) == truth.background[part], 1)
    seen, held_out = truth.texts - truth.held_out_texts, truth.held_out_texts
    invented = len(said.texts - truth.texts)
    to_held_out = bool(held_out) and not seen
    tallies["text_seen"].add(len(said.texts & seen), len(seen) + (0 if to_held_out else invented))
    tallies["text_held_out"].add(len(said.texts & held_out), len(held_out) + (invented if to_held_out else 0))
    return tallies


def facts_in_truth(truth: SceneFacts) -> dict[str, int]:
    """How many facts of each category the scene has (0: the category does not apply)."""
    claims = truth.objects.values()
    occlusions = sum(r[1] == OCCLUSION for r in truth.relations)
    return {
        "temporal": 0,  # from the truth record's events (`fidelity_scores`)
        **{name: len(truth.objects) for name in ("object_recall", "object_precision", "colour_binding",
                                                  "position", "count")},
        "size": sum(bool(c.sizes) for c in claims), "texture": sum(bool(c.textures) for c in claims),
        "relation": len(truth.relations) - occlusions, "occlusion": occlusions,
        "background": len(truth.background),
        "text_seen": len(truth.texts - truth.held_out_texts), "text_held_out": len(truth.held_out_texts),
    }


def _add_overlap(tally: Tally, said: set, true: set) -> None:
    tally.add(len(said & true), len(said | true))


def main_subject_facts(truth: dict) -> SceneFacts:
    """What a short caption (SSC) must state: the main subject's kind, count and words only."""
    main = truth["objects"][truth["main_subject"]]
    kind = (main["colour"], main["shape"])
    objects = [o for o in truth["objects"] if (o["colour"], o["shape"]) == kind]
    texts = [o["text"] for o in objects if o["text"]][:1]
    return truth_facts({**truth, "objects": objects, "relations": [], "texts": texts,
                        "held_out_texts": [t for t in texts if t in truth.get("held_out_texts", [])]})


SHORT_TASK_SKIPS = ("position", "relation", "occlusion", "background", "temporal")
"""Categories a short caption is not asked for."""


def fidelity_scores(captions: dict[str, str | None], truths: dict[str, dict], task: str = "detailed") -> dict:
    """Per-category scores of `captions` (by key) against truth records (by key). The `short` task
    is scored against the main subject only, without position, relations and background.

    Keys without a caption count as empty captions. Returns {"categories": {name: float | None},
    "support": {name: total facts scored}}; a category is None when the truth never has it or
    nothing could be scored.
    """
    from mllm.bench.temporal import temporal_tally  # it reads places with this module's `place_name`

    tallies = {name: Tally() for name in CATEGORIES}
    in_truth = {name: 0 for name in CATEGORIES}
    facts_of = main_subject_facts if task == "short" else truth_facts
    for key, truth in truths.items():
        true_facts = facts_of(truth)
        fills = any(claim.textures for claim in true_facts.objects.values())
        for name, tally in score_scene(parse_caption(captions.get(key), fills), true_facts).items():
            tallies[name].add(tally.hits, tally.total)
        for name, n in facts_in_truth(true_facts).items():
            in_truth[name] += n
        if truth.get("events") and task != "short":
            tallies["temporal"].add(*temporal_tally(captions.get(key), truth))
            in_truth["temporal"] += len(truth["events"])
    if task == "short":
        for name in SHORT_TASK_SKIPS:
            in_truth[name] = 0
    categories = {
        name: (t.hits / t.total if t.total and in_truth[name] else None) for name, t in tallies.items()
    }
    return {"categories": categories, "support": {name: int(t.total) for name, t in tallies.items()}}
