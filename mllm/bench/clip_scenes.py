"""Synthetic clips: the image scenes' shapes appearing, moving from cell to cell and disappearing
at known times, written as real mp4 files (PyAV) with timestamped captions and the truth.

A clip lasts `frames * frame_interval` seconds. Something is in view from its start (appear
events at 0.0 s); every later event happens at a multiple of `frame_interval`, the sampling
interval of the frames the captioner is given (`data.video` fps = 1 / frame_interval), so the
frame labelled with an event's time is the first one showing it. Frames are drawn by the image
scenes' renderer with the image scenes' look (`ClipConfig.look`, a `SceneConfig`), so a tower
pretrained on the image scenes reads them. The truth lists the clip's objects where each first
appears (the usual fidelity categories score those) and its `events` (`temporal` scores them):

    {"kind": "appear" | "move" | "disappear", "object": id, "time": seconds, "from": cell | None,
     "to": cell | None}

Layout of the output folder: `videos/<key>.mp4`, `<split>.jsonl` (records `{key, video, start,
end, caption, short_caption}`), `<split>_truth.jsonl`, `clip_config.json`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image
from mllm.bench.scenes import Placed, SceneConfig, _box, position_name, scene_preset, write_splits

EVENT_KINDS = ("appear", "move", "disappear")


@dataclass
class ClipConfig:
    """What clips to make. `max_changes_per_object` keeps a caption from naming one object after a
    timestamp more than twice (more would repeat one 5-token run three times, which the captioning
    engine's loop guard cuts)."""

    n_train: int = 1000
    n_val: int = 100
    n_test: int = 100
    frames: int = 4  # sampled frames per clip, at 0, 1, ... (frames - 1) * frame_interval seconds
    frame_interval: float = 1.0  # seconds between sampled frames; events happen on this grid
    video_fps: int = 4  # frames per second written to the file (a multiple of 1 / frame_interval)
    min_objects: int = 1
    max_objects: int = 2
    max_events: int = 4  # appear events included
    max_changes_per_object: int = 2  # moves and disappearing, per object
    max_moves: int = 2
    change_prob: float = 0.7  # at each sampled frame after the first, the chance that something changes
    look: SceneConfig = field(default_factory=lambda: scene_preset("quickstart", image_size=48))
    seed: int = 0

    def __post_init__(self) -> None:
        cells = self.look.grid_rows * self.look.grid_cols
        if not 1 <= self.min_objects <= self.max_objects < cells:
            raise ValueError(f"ClipConfig: need 1 <= min_objects <= max_objects < grid cells ({cells}), "
                             "so that an object can move to a free cell")
        if self.frames < 2 or self.max_events <= self.max_objects:
            raise ValueError("ClipConfig: need frames >= 2 and max_events > max_objects (room for a change)")
        per_frame = self.video_fps * self.frame_interval
        if self.frame_interval <= 0 or abs(per_frame - round(per_frame)) > 1e-9 or round(per_frame) < 1:
            raise ValueError("ClipConfig: video_fps * frame_interval must be a whole number >= 1")

    @property
    def duration(self) -> float:
        return self.frames * self.frame_interval

    def times(self) -> list[float]:
        """The sampled frames' times, seconds from the clip's start."""
        return [round(i * self.frame_interval, 6) for i in range(self.frames)]

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


@dataclass
class _Object:
    shape: str
    colour: str
    appear: int  # frame index
    changes: int = 0


def _objects(cfg: ClipConfig, rng: random.Random) -> list[_Object]:
    """Distinct (shape, colour) objects, the first in view from the start, the others appearing at
    a random sampled frame."""
    look = cfg.look
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:
        kind = (rng.choice(look.shapes), rng.choice(look.palette))
        if kind not in kinds:
            kinds.append(kind)
    appear = [0] + [rng.randrange(cfg.frames) for _ in kinds[1:]]
    return [_Object(shape, colour, frame) for (shape, colour), frame in zip(kinds, appear)]


def _timeline(cfg: ClipConfig, rng: random.Random) -> tuple[list[_Object], list[dict], list[dict[int, tuple]]]:
    """(objects, events, state per sampled frame: object index -> cell), at least one change."""
    cells = [(r, c) for r in range(cfg.look.grid_rows) for c in range(cfg.look.grid_cols)]
    while True:
        objects = _objects(cfg, rng)
        events, states, here, moves = [], [], {}, 0
        for frame in range(cfg.frames):
            time = round(frame * cfg.frame_interval, 6)
            for i, obj in enumerate(objects):
                if obj.appear == frame:
                    here[i] = rng.choice([c for c in cells if c not in here.values()])
                    events.append({"kind": "appear", "object": i, "time": time, "from": None, "to": here[i]})
            changing = [i for i in here
                        if objects[i].appear < frame and objects[i].changes < cfg.max_changes_per_object]
            if changing and len(events) < cfg.max_events and rng.random() < cfg.change_prob:
                i = rng.choice(changing)
                free = [c for c in cells if c not in here.values()]
                kind = "move" if moves < cfg.max_moves and free and rng.random() < 0.6 else "disappear"
                objects[i].changes += 1
                if kind == "move":
                    moves += 1
                    events.append({"kind": "move", "object": i, "time": time, "from": here[i],
                                   "to": (to := rng.choice(free))})
                    here[i] = to
                else:
                    events.append({"kind": "disappear", "object": i, "time": time, "from": here.pop(i), "to": None})
            states.append(dict(here))
        if len(objects) < len(events) <= cfg.max_events:  # every object appears once, and something changes
            return objects, events, states


def sample_clip(cfg: ClipConfig, rng: random.Random) -> tuple[list[Image.Image], dict]:
    """The sampled frames of one clip and its truth (without key, video and captions). Object ids
    follow the order of appearance (reading order among objects appearing together)."""
    from mllm.bench.scene_render import render_scene

    objects, events, states = _timeline(cfg, rng)
    look = cfg.look
    first_cell = {e["object"]: e["to"] for e in events if e["kind"] == "appear"}
    order = sorted(range(len(objects)), key=lambda i: (objects[i].appear, *first_cell[i]))
    new_id = {old: new for new, old in enumerate(order)}
    size = look.sizes[0]
    boxes: dict[tuple[int, tuple], tuple] = {}  # an object keeps its jitter while it stays in a cell
    frames = []
    for state in states:
        placed = []
        for i in sorted(state, key=new_id.get):
            cell = state[i]
            if (i, cell) not in boxes:
                boxes[(i, cell)] = _box(look, rng, *cell, objects[i].shape, size)
            placed.append(Placed(objects[i].shape, objects[i].colour, size, *cell, boxes[(i, cell)], layer=len(placed)))
        frames.append(render_scene(look, placed, look.backgrounds[0], look.textures[0]))

    def name(cell):
        return None if cell is None else position_name(*cell, look.grid_rows, look.grid_cols)

    truth_objects = []
    for new, old in enumerate(order):
        row, col = first_cell[old]
        truth_objects.append({"id": new, "shape": objects[old].shape, "colour": objects[old].colour, "size": None,
                              "position": name((row, col)), "row": row, "col": col, "layer": 0, "text": None,
                              "bbox": [round(v, 1) for v in boxes[(old, (row, col))]]})
    timed = sorted(events, key=lambda e: (e["time"], new_id[e["object"]]))
    return frames, {
        "image_size": look.image_size,
        "grid": [look.grid_rows, look.grid_cols],
        "background": {"colour": look.backgrounds[0], "texture": look.textures[0]},
        "duration": cfg.duration,
        "frame_interval": cfg.frame_interval,
        "frame_times": cfg.times(),
        "objects": truth_objects,
        "counts": [{"shape": o["shape"], "colour": o["colour"], "count": 1} for o in truth_objects],
        "relations": [],
        "texts": [],
        "main_subject": 0,
        "events": [{**e, "object": new_id[e["object"]], "from": name(e["from"]), "to": name(e["to"])} for e in timed],
    }


def write_clip_video(path: Path, frames: list[Image.Image], cfg: ClipConfig) -> Path:
    """An H.264 mp4 at `video_fps`: each sampled frame held until the next sampled time."""
    import av

    repeat = round(cfg.video_fps * cfg.frame_interval)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=cfg.video_fps, options={"crf": "12", "preset": "veryfast"})
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for index, image in enumerate(frame for frame in frames for _ in range(repeat)):
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = index, Fraction(1, cfg.video_fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def generate_clips(out_dir: str | Path, cfg: ClipConfig) -> dict[str, Path]:
    """Write videos, caption records and truth records for train/val/test under `out_dir`.

    Returns {split: path of DIR/<split>.jsonl}. Splits never share a key or identical frames.
    """
    from mllm.bench.clip_captions import write_clip_captions

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)

    def draw(rng: random.Random, split: str) -> tuple[bytes, tuple[list[Image.Image], dict]]:
        frames, truth = sample_clip(cfg, rng)
        return b"".join(frame.tobytes() for frame in frames), (frames, truth)

    def write(split: str, i: int, drawn: tuple[list[Image.Image], dict], rng: random.Random) -> tuple[dict, dict]:
        frames, truth = drawn
        key = f"{split}-clip-{i:06d}"
        video = f"videos/{key}.mp4"
        write_clip_video(out / video, frames, cfg)
        captions = write_clip_captions(truth, rng)
        return ({"key": key, "video": video, "start": 0.0, "end": cfg.duration, **captions},
                {"key": key, "video": video, **truth, **captions})

    paths = write_splits(out, cfg.split_sizes(), f"clips/{cfg.seed}", "clips", draw, write)
    (out / "clip_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return paths
