"""Synthetic scenes: flat shapes on a background, rendered with Pillow, with full ground truth.

Every image comes with its facts (objects with shape, colour, size, fill texture and grid
position; counts of like objects; spatial relations and occlusion; rendered words, some held out
from training; background) and three captions: a detailed
one (DSC), a short one naming the main subject (SSC) and an alt-text-like one that is short,
partial and sometimes wrong. Everything is deterministic given `SceneConfig.seed`.
The layout of the output folder and the truth schema are described in
data_cards/synthetic_scenes.md.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from PIL import Image
from tqdm import tqdm

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "pink": (240, 130, 190),
    "brown": (130, 80, 40),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "gray": (150, 150, 150),
    "beige": (225, 210, 180),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond")
SIGN = "sign"
TEXTURES = ("plain", "striped", "dotted", "checkered")
SIZE_SCALE = {"small": 0.5, "medium": 0.8, "large": 0.95}
WORDS = ("CAT", "DOG", "SUN", "BUS", "MAP", "ZOO", "HAT", "BOX", "JAM", "FOX", "OWL", "SKY")
# Sign words that appear only in val / test scenes, each letter in a place where a training word has
# it (C_A_N: CAT, SUN): a captioner that reads letters could spell them, one that learnt whole words
# cannot (the spelling problem of the DALL-E 3 paper).
HELD_OUT_WORDS = ("CAN", "HOT", "MUG", "BOY")
CaptionStyle = Literal["basic", "rich"]  # the caption writers (mllm.bench.caption_styles.CAPTION_WRITERS)
SPLITS = ("train", "val", "test")


@dataclass
class SceneConfig:
    """What scenes to draw. Colours, shapes, backgrounds and textures are names from the
    module's vocabularies; a single size means sizes are neither varied nor captioned, and a single
    texture means backgrounds have it and objects are plain (fills neither varied nor captioned).
    Several textures texture both the background and each object's fill (signs stay plain).
    Signs show `words` in every split and also `held_out_words` (a `held_out_share` of the signs)
    in val and test only. `caption_style` names the caption writer (`CAPTION_WRITERS`)."""

    n_train: int = 3000
    n_val: int = 300
    n_test: int = 300
    image_size: int = 64
    grid_rows: int = 1
    grid_cols: int = 3
    min_objects: int = 1
    max_objects: int = 2
    palette: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    sizes: tuple[str, ...] = ("medium",)
    backgrounds: tuple[str, ...] = ("white",)
    textures: tuple[str, ...] = ("plain",)
    enable_text: bool = False
    text_prob: float = 0.3
    duplicate_prob: float = 0.1
    overlap_prob: float = 0.0
    jitter: float = 0.12
    words: tuple[str, ...] = WORDS
    held_out_words: tuple[str, ...] = HELD_OUT_WORDS
    held_out_share: float = 0.5
    caption_style: CaptionStyle = "basic"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.palette, COLOURS, "palette"),
            (self.shapes, SHAPES, "shapes"),
            (self.sizes, SIZE_SCALE, "sizes"),
            (self.backgrounds, BACKGROUNDS, "backgrounds"),
            (self.textures, TEXTURES, "textures"),
            ((self.caption_style,), get_args(CaptionStyle), "caption_style"),
        ]
        for values, known, name in checks:
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise ValueError(f"SceneConfig.{name}: unknown or empty {unknown}; known: {list(known)}")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid_rows * self.grid_cols:
            raise ValueError("SceneConfig: need 1 <= min_objects <= max_objects <= grid cells")
        if not (1 <= self.grid_rows <= 3 and 1 <= self.grid_cols <= 3):
            raise ValueError("SceneConfig: grid_rows and grid_cols must be 1..3")
        if self.duplicate_prob <= 0 and self.max_objects > len(self.palette) * len(self.shapes):
            raise ValueError("SceneConfig: max_objects exceeds the distinct colour-shape pairs and duplicate_prob is 0")
        if self.enable_text and not self.words:
            raise ValueError("SceneConfig.words: signs need at least one word")
        letters = {(i, ch) for word in self.words for i, ch in enumerate(word)}
        unspellable = [w for w in self.held_out_words if w in self.words or not {*enumerate(w)} <= letters]
        if unspellable:
            raise ValueError(f"SceneConfig.held_out_words: {unspellable} are training words or have a letter "
                             "no training word has in that place")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


PRESETS: dict[str, SceneConfig] = {
    # Learnable on a 2-core CPU in minutes: 64px (a 4x4 grid of 16px patches), 1-2 flat shapes,
    # 6 colours, 3 shapes, 3 columns. Counts and relations occur and are reported.
    "quickstart": SceneConfig(),
    # Everything: 3x3 grid, sizes, textured fills and backgrounds, occlusion, like objects and
    # signs with words (some held out from training); captions of 40+ words.
    "rich": SceneConfig(
        image_size=128,
        grid_rows=3,
        grid_cols=3,
        max_objects=4,
        palette=tuple(COLOURS),
        shapes=SHAPES,
        sizes=("small", "large"),
        backgrounds=tuple(BACKGROUNDS),
        textures=TEXTURES,
        enable_text=True,
        duplicate_prob=0.2,
        overlap_prob=0.2,
        caption_style="rich",
    ),
}


def scene_preset(name: str, **overrides) -> SceneConfig:
    """A copy of preset `name` ('quickstart' or 'rich') with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown scene preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def position_name(row: int, col: int, rows: int, cols: int) -> str:
    """Name of grid cell (row, col): 'left', 'top right', 'center', ..."""
    row_names = {1: [""], 2: ["top", "bottom"], 3: ["top", "", "bottom"]}[rows]
    col_names = {1: [""], 2: ["left", "right"], 3: ["left", "", "right"]}[cols]
    return " ".join(w for w in (row_names[row], col_names[col]) if w) or "center"


def object_groups(objects: list[dict]) -> list[dict]:
    """Like objects (same shape and colour) grouped: shape, colour, size, texture (None when the
    scene's objects have none), count, positions, ids, text."""
    groups: dict[tuple[str, str], dict] = {}
    for obj in objects:
        group = groups.setdefault(
            (obj["shape"], obj["colour"]),
            {"shape": obj["shape"], "colour": obj["colour"], "size": obj["size"], "texture": obj.get("texture"),
             "count": 0, "positions": [], "object_ids": [], "text": obj["text"]},
        )
        group["count"] += 1
        group["positions"].append(obj["position"])
        group["object_ids"].append(obj["id"])
    return list(groups.values())


# ---------------------------------------------------------------- layout


@dataclass
class Placed:
    """One object as laid out: its facts, its cell, its box in pixels and what it overlaps."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    box: tuple[float, float, float, float]
    texture: str = "plain"
    text: str | None = None
    layer: int = 0
    overlaps: list[int] = field(default_factory=list)


def _textured(cfg: SceneConfig) -> bool:
    return len(cfg.textures) > 1


def _sample_attributes(cfg: SceneConfig, rng: random.Random, n: int) -> list[tuple[str, str, str, str]]:
    """(shape, colour, size, fill) per object; like objects repeat all four. A single texture is not
    sampled (no random draw), so presets without fills draw the scenes they always drew."""
    attrs: list[tuple[str, str, str, str]] = []
    while len(attrs) < n:
        if attrs and rng.random() < cfg.duplicate_prob:
            attrs.append(rng.choice(attrs))
            continue
        candidate = (rng.choice(cfg.shapes), rng.choice(cfg.palette), rng.choice(cfg.sizes))
        candidate += (rng.choice(cfg.textures) if _textured(cfg) else "plain",)
        if all(candidate[:2] != a[:2] for a in attrs):
            attrs.append(candidate)
    return attrs


def _box(cfg: SceneConfig, rng: random.Random | None, row: int, col: int, shape: str, size: str):
    """An object's box in cell (row, col), jittered (centred without `rng`)."""
    cell_w, cell_h = cfg.image_size / cfg.grid_cols, cfg.image_size / cfg.grid_rows
    cx = (col + 0.5 + (rng.uniform(-cfg.jitter, cfg.jitter) if rng else 0)) * cell_w
    cy = (row + 0.5 + (rng.uniform(-cfg.jitter, cfg.jitter) if rng else 0)) * cell_h
    extent = SIZE_SCALE[size] * min(cell_w, cell_h) * (1 - 2 * cfg.jitter)
    half_w, half_h = (extent / 2, extent * 0.3) if shape == SIGN else (extent / 2, extent / 2)
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _overlapping_box(cfg: SceneConfig, target: Placed, shape: str, size: str, sx: int, sy: int):
    """The box of an object of its own size in front of `target`, shifted diagonally by 0.35 of the
    larger of the two, so that the one behind stays partly visible."""
    x0, y0, x1, y1 = target.box
    own = _box(cfg, None, target.row, target.col, shape, size)
    w, h = own[2] - own[0], own[3] - own[1]
    cx = (x0 + x1) / 2 + sx * 0.35 * max(x1 - x0, w)
    cy = (y0 + y1) / 2 + sy * 0.35 * max(y1 - y0, h)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _layout(cfg: SceneConfig, rng: random.Random, held_out: bool) -> list[Placed]:
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    attrs = _sample_attributes(cfg, rng, n)
    if cfg.enable_text and rng.random() < cfg.text_prob:
        used = {a[1] for a in attrs if a[0] == SIGN}
        attrs[-1] = (SIGN, rng.choice([c for c in cfg.palette if c not in used]), cfg.sizes[-1], "plain")
    keys = [a[:2] for a in attrs]
    cells = [(r, c) for r in range(cfg.grid_rows) for c in range(cfg.grid_cols)]
    rng.shuffle(cells)
    placed: list[Placed] = []
    for shape, colour, size, texture in attrs:
        singleton = keys.count((shape, colour)) == 1 and shape != SIGN
        partners = [i for i, p in enumerate(placed)
                    if singleton and not p.overlaps and keys.count((p.shape, p.colour)) == 1
                    and p.shape != SIGN]
        obj = Placed(shape, colour, size, 0, 0, (0, 0, 0, 0), texture, layer=len(placed))
        if partners and rng.random() < cfg.overlap_prob:
            target = placed[rng.choice(partners)]
            obj.row, obj.col = target.row, target.col
            obj.box = _overlapping_box(cfg, target, shape, size, rng.choice((-1, 1)), rng.choice((-1, 1)))
            target.overlaps.append(len(placed))
            obj.overlaps.append(placed.index(target))
        else:
            obj.row, obj.col = cells.pop()
            obj.box = _box(cfg, rng, obj.row, obj.col, shape, size)
        if shape == SIGN:
            pool = cfg.held_out_words if held_out and rng.random() < cfg.held_out_share else cfg.words
            obj.text = rng.choice(pool)
        placed.append(obj)
    return placed


# ---------------------------------------------------------------- truth


SIZE_RANK = {"large": 0, "medium": 1, "small": 2}


def main_subject_order(obj: dict) -> tuple:
    """Sort key of the main subject, first the one the short caption names: the largest object, then the
    first in reading order (top row first, then left to right), then the one in front. Every step is
    visible in the image (drawing order alone is not, where objects do not overlap)."""
    return SIZE_RANK[obj["size"] or "medium"], obj["row"], obj["col"], -obj["layer"]


def _truth(cfg: SceneConfig, placed: list[Placed], background: str, texture: str) -> dict:
    order = sorted(range(len(placed)), key=lambda i: (placed[i].row, placed[i].col, placed[i].layer))
    new_id = {old: new for new, old in enumerate(order)}
    objects = []
    for old in order:
        p = placed[old]
        objects.append({
            "id": new_id[old], "shape": p.shape, "colour": p.colour,
            "size": p.size if len(cfg.sizes) > 1 else None,
            **({"texture": p.texture} if _textured(cfg) else {}),
            "position": position_name(p.row, p.col, cfg.grid_rows, cfg.grid_cols),
            "row": p.row, "col": p.col, "layer": p.layer, "text": p.text,
            "bbox": [round(v, 1) for v in p.box],
        })
    groups = object_groups(objects)
    singles = [g["object_ids"][0] for g in groups if g["count"] == 1]
    relations = []
    for a in singles:
        for b in singles:
            oa, ob = objects[a], objects[b]
            if oa["col"] < ob["col"]:
                relations.append({"subject": a, "relation": "left of", "object": b})
            if oa["row"] < ob["row"]:
                relations.append({"subject": a, "relation": "above", "object": b})
            if order[b] in placed[order[a]].overlaps and oa["layer"] > ob["layer"]:
                relations.append({"subject": a, "relation": "in front of", "object": b})
    main = min(objects, key=main_subject_order)
    return {
        "image_size": cfg.image_size,
        "grid": [cfg.grid_rows, cfg.grid_cols],
        "background": {"colour": background, "texture": texture},
        "objects": objects,
        "counts": [{"shape": g["shape"], "colour": g["colour"], "count": g["count"]} for g in groups],
        "relations": relations,
        "texts": [o["text"] for o in objects if o["text"]],
        **({"held_out_texts": [o["text"] for o in objects if o["text"] in cfg.held_out_words]}
           if cfg.enable_text else {}),
        "main_subject": main["id"],
    }


def sample_scene(cfg: SceneConfig, rng: random.Random, held_out: bool = False) -> tuple[Image.Image, dict]:
    """One image and its facts (truth record without key and captions); `held_out` lets signs show
    held-out words (val and test scenes)."""
    from mllm.bench.scene_render import render_scene  # drawing needs the vocabularies above

    placed = _layout(cfg, rng, held_out)
    background, texture = rng.choice(cfg.backgrounds), rng.choice(cfg.textures)
    return render_scene(cfg, placed, background, texture), _truth(cfg, placed, background, texture)


# ---------------------------------------------------------------- dataset


def generate_scenes(out_dir: str | Path, cfg: SceneConfig) -> dict[str, Path]:
    """Write images, caption records and truth records for train/val/test under `out_dir`.

    Returns {split: path of DIR/<split>.jsonl}. Splits never share a key or identical pixels.
    """
    from mllm.bench.caption_styles import CAPTION_WRITERS

    write_captions = CAPTION_WRITERS[cfg.caption_style]
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    def draw(rng: random.Random, split: str) -> tuple[bytes, tuple[Image.Image, dict]]:
        image, truth = sample_scene(cfg, rng, held_out=split != "train")
        return image.tobytes(), (image, truth)

    def write(split: str, i: int, drawn: tuple[Image.Image, dict], rng: random.Random) -> tuple[dict, dict]:
        image, truth = drawn
        key = f"{split}-{i:06d}"
        image_rel = f"images/{key}.png"
        image.save(out / image_rel)
        captions = write_captions(truth, rng)
        return {"key": key, "image": image_rel, **captions}, {"key": key, "image": image_rel, **truth, **captions}

    paths = write_splits(out, cfg.split_sizes(), str(cfg.seed), "scenes", draw, write)
    (out / "scene_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return paths


def write_splits(out: Path, sizes: dict[str, int], seed: str, name: str, draw, write) -> dict[str, Path]:
    """`<split>.jsonl` and `<split>_truth.jsonl` under `out` for every split: `sizes[split]` items, the
    i-th `draw(rng, split) -> (pixels, drawn)` (drawn again while its pixels repeat an earlier item's,
    so splits never share identical pixels), then `write(split, i, drawn, rng) -> (record, truth)`.
    Each split draws from its own `random.Random(f"{seed}/{split index}")`; `name` labels the progress
    bar. Returns {split: path of <split>.jsonl}."""
    seen: set[str] = set()
    paths: dict[str, Path] = {}
    for split_index, split in enumerate(SPLITS):
        rng = random.Random(f"{seed}/{split_index}")
        records, truths = [], []
        for i in tqdm(range(sizes[split]), desc=f"{name} {split}", leave=False):
            pixels, drawn = draw(rng, split)
            while (digest := hashlib.md5(pixels).hexdigest()) in seen:
                pixels, drawn = draw(rng, split)
            seen.add(digest)
            record, truth = write(split, i, drawn, rng)
            records.append(record)
            truths.append(truth)
        paths[split] = write_jsonl(out / f"{split}.jsonl", records)
        write_jsonl(out / f"{split}_truth.jsonl", truths)
    return paths


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line."""
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def load_truth(path: str | Path) -> dict[str, dict]:
    """Truth records of one `<split>_truth.jsonl` file, by key; bad lines name file and line."""
    truths: dict[str, dict] = {}
    with Path(path).open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                truths[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: not a truth record ({err})") from err
    return truths
