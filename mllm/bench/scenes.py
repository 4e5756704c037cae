"""Synthetic scenes: flat shapes on a background, rendered with Pillow, with full ground truth.

Every image comes with its facts (objects with shape, colour, size and grid position; counts of
like objects; spatial relations; rendered words; background) and three captions: a detailed
one (DSC), a short one naming the main subject (SSC) and an alt-text-like one that is short,
partial and sometimes wrong. Everything is deterministic given `SceneConfig.seed`.
The layout of the output folder and the truth schema are described in
data_cards/synthetic_scenes.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
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
SPLITS = ("train", "val", "test")
SUPERSAMPLE = 4


@dataclass
class SceneConfig:
    """What scenes to draw. Colours, shapes, backgrounds and textures are names from the
    module's vocabularies; a single size means sizes are neither varied nor captioned."""

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
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.palette, COLOURS, "palette"),
            (self.shapes, SHAPES, "shapes"),
            (self.sizes, SIZE_SCALE, "sizes"),
            (self.backgrounds, BACKGROUNDS, "backgrounds"),
            (self.textures, TEXTURES, "textures"),
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

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


PRESETS: dict[str, SceneConfig] = {
    # Learnable on a 2-core CPU in minutes: 64px (a 4x4 grid of 16px patches), 1-2 flat shapes,
    # 6 colours, 3 shapes, 3 columns. Counts and relations occur and are reported.
    "quickstart": SceneConfig(),
    # Everything: 3x3 grid, sizes, textures, occlusion, like objects and signs with words.
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
    """Like objects (same shape and colour) grouped: shape, colour, size, count, positions, ids."""
    groups: dict[tuple[str, str], dict] = {}
    for obj in objects:
        group = groups.setdefault(
            (obj["shape"], obj["colour"]),
            {"shape": obj["shape"], "colour": obj["colour"], "size": obj["size"], "count": 0,
             "positions": [], "object_ids": [], "text": obj["text"]},
        )
        group["count"] += 1
        group["positions"].append(obj["position"])
        group["object_ids"].append(obj["id"])
    return list(groups.values())


# ---------------------------------------------------------------- layout


@dataclass
class _Placed:
    shape: str
    colour: str
    size: str
    row: int
    col: int
    box: tuple[float, float, float, float]
    text: str | None = None
    layer: int = 0
    overlaps: list[int] = field(default_factory=list)


def _sample_attributes(cfg: SceneConfig, rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    attrs: list[tuple[str, str, str]] = []
    while len(attrs) < n:
        if attrs and rng.random() < cfg.duplicate_prob:
            attrs.append(rng.choice(attrs))
            continue
        candidate = (rng.choice(cfg.shapes), rng.choice(cfg.palette), rng.choice(cfg.sizes))
        if all(candidate[:2] != a[:2] for a in attrs):
            attrs.append(candidate)
    return attrs


def _box(cfg: SceneConfig, rng: random.Random, row: int, col: int, shape: str, size: str):
    cell_w, cell_h = cfg.image_size / cfg.grid_cols, cfg.image_size / cfg.grid_rows
    cx = (col + 0.5 + rng.uniform(-cfg.jitter, cfg.jitter)) * cell_w
    cy = (row + 0.5 + rng.uniform(-cfg.jitter, cfg.jitter)) * cell_h
    extent = SIZE_SCALE[size] * min(cell_w, cell_h) * (1 - 2 * cfg.jitter)
    half_w, half_h = (extent / 2, extent * 0.3) if shape == SIGN else (extent / 2, extent / 2)
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _layout(cfg: SceneConfig, rng: random.Random) -> list[_Placed]:
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    attrs = _sample_attributes(cfg, rng, n)
    if cfg.enable_text and rng.random() < cfg.text_prob:
        used = {a[1] for a in attrs if a[0] == SIGN}
        attrs[-1] = (SIGN, rng.choice([c for c in cfg.palette if c not in used]), cfg.sizes[-1])
    keys = [a[:2] for a in attrs]
    cells = [(r, c) for r in range(cfg.grid_rows) for c in range(cfg.grid_cols)]
    rng.shuffle(cells)
    placed: list[_Placed] = []
    for shape, colour, size in attrs:
        singleton = keys.count((shape, colour)) == 1 and shape != SIGN
        partners = [i for i, p in enumerate(placed)
                    if singleton and not p.overlaps and keys.count((p.shape, p.colour)) == 1
                    and p.shape != SIGN]
        obj = _Placed(shape, colour, size, 0, 0, (0, 0, 0, 0), layer=len(placed))
        if partners and rng.random() < cfg.overlap_prob:
            target = placed[rng.choice(partners)]
            obj.row, obj.col = target.row, target.col
            x0, y0, x1, y1 = target.box
            dx, dy = rng.choice((-1, 1)) * 0.35 * (x1 - x0), rng.choice((-1, 1)) * 0.35 * (y1 - y0)
            obj.box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
            target.overlaps.append(len(placed))
            obj.overlaps.append(placed.index(target))
        else:
            obj.row, obj.col = cells.pop()
            obj.box = _box(cfg, rng, obj.row, obj.col, shape, size)
        if shape == SIGN:
            obj.text = rng.choice(WORDS)
        placed.append(obj)
    return placed


# ---------------------------------------------------------------- rendering


def _shade(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(v * 0.8 + 128 * 0.2) if sum(rgb) > 200 else int(v + 50) for v in rgb)


def _draw_background(draw: ImageDraw.ImageDraw, size: int, colour: str, texture: str) -> None:
    base = BACKGROUNDS[colour]
    draw.rectangle((0, 0, size, size), fill=base)
    step, tone = size // 8, _shade(base)
    for i in range(0, size, step):
        for j in range(0, size, step):
            if texture == "striped" and (i // step) % 2 == 0 and j == 0:
                draw.rectangle((0, i, size, i + step // 2), fill=tone)
            elif texture == "dotted":
                r = step // 5
                draw.ellipse((j + step / 2 - r, i + step / 2 - r, j + step / 2 + r, i + step / 2 + r), fill=tone)
            elif texture == "checkered" and ((i + j) // step) % 2 == 0:
                draw.rectangle((j, i, j + step, i + step), fill=tone)


def _draw_object(draw: ImageDraw.ImageDraw, obj: _Placed) -> None:
    x0, y0, x1, y1 = (v * SUPERSAMPLE for v in obj.box)
    cx, cy, fill = (x0 + x1) / 2, (y0 + y1) / 2, COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape in ("square", SIGN):
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif obj.shape == "star":
        draw.polygon(_star_points(cx, cy, (x1 - x0) / 2), fill=fill)
    if obj.text:
        font = ImageFont.load_default(size=max(8, int((y1 - y0) * 0.7)))
        ink = (0, 0, 0) if sum(fill) > 400 else (255, 255, 255)
        draw.text((cx, cy), obj.text, font=font, fill=ink, anchor="mm")


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render_scene(cfg: SceneConfig, placed: list[_Placed], background: str, texture: str) -> Image.Image:
    """Draw objects in layer order at 4x and downsample (anti-aliased edges)."""
    big = cfg.image_size * SUPERSAMPLE
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, big, background, texture)
    for obj in placed:
        _draw_object(draw, obj)
    return image.resize((cfg.image_size, cfg.image_size), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------- truth


SIZE_RANK = {"large": 0, "medium": 1, "small": 2}


def main_subject_order(obj: dict) -> tuple:
    """Sort key of the main subject, first the one the short caption names: the largest object, then the
    first in reading order (top row first, then left to right), then the one in front. Every step is
    visible in the image (drawing order alone is not, where objects do not overlap)."""
    return SIZE_RANK[obj["size"] or "medium"], obj["row"], obj["col"], -obj["layer"]


def _truth(cfg: SceneConfig, placed: list[_Placed], background: str, texture: str) -> dict:
    order = sorted(range(len(placed)), key=lambda i: (placed[i].row, placed[i].col, placed[i].layer))
    new_id = {old: new for new, old in enumerate(order)}
    objects = []
    for old in order:
        p = placed[old]
        objects.append({
            "id": new_id[old], "shape": p.shape, "colour": p.colour,
            "size": p.size if len(cfg.sizes) > 1 else None,
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
        "main_subject": main["id"],
    }


def sample_scene(cfg: SceneConfig, rng: random.Random) -> tuple[Image.Image, dict]:
    """One image and its facts (truth record without key and captions)."""
    placed = _layout(cfg, rng)
    background, texture = rng.choice(cfg.backgrounds), rng.choice(cfg.textures)
    return render_scene(cfg, placed, background, texture), _truth(cfg, placed, background, texture)


# ---------------------------------------------------------------- dataset


def generate_scenes(out_dir: str | Path, cfg: SceneConfig) -> dict[str, Path]:
    """Write images, caption records and truth records for train/val/test under `out_dir`.

    Returns {split: path of DIR/<split>.jsonl}. Splits never share a key or identical pixels.
    """
    from mllm.bench.scene_captions import write_captions

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    paths: dict[str, Path] = {}
    for split_index, split in enumerate(SPLITS):
        rng = random.Random(f"{cfg.seed}/{split_index}")
        records, truths = [], []
        for i in tqdm(range(cfg.split_sizes()[split]), desc=f"scenes {split}", leave=False):
            image, truth = sample_scene(cfg, rng)
            digest = hashlib.md5(image.tobytes()).hexdigest()
            while digest in seen:
                image, truth = sample_scene(cfg, rng)
                digest = hashlib.md5(image.tobytes()).hexdigest()
            seen.add(digest)
            key = f"{split}-{i:06d}"
            image_rel = f"images/{key}.png"
            image.save(out / image_rel)
            captions = write_captions(truth, rng)
            records.append({"key": key, "image": image_rel, **captions})
            truths.append({"key": key, "image": image_rel, **truth, **captions})
        paths[split] = _write_jsonl(out / f"{split}.jsonl", records)
        _write_jsonl(out / f"{split}_truth.jsonl", truths)
    (out / "scene_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return paths


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
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
