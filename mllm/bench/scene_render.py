"""Drawing the synthetic scenes with Pillow: textured backgrounds, shapes with fills, signs with words.

Everything is drawn at `SUPERSAMPLE` times the scene's size and downsampled (anti-aliased edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from PIL import Image, ImageChops, ImageDraw, ImageFont

from mllm.bench.scenes import BACKGROUNDS, COLOURS, SIGN

if TYPE_CHECKING:
    from mllm.bench.scenes import Placed, SceneConfig

SUPERSAMPLE = 4
FILL_PERIOD = 6  # pixels per stripe / dot / check pair of an object's fill texture


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


def _triangle(draw: ImageDraw.ImageDraw, box, fill) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _diamond(draw: ImageDraw.ImageDraw, box, fill) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)


def _star(draw: ImageDraw.ImageDraw, box, fill) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=fill)


SHAPE_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, tuple, tuple | int], None]] = {
    "circle": lambda draw, box, fill: draw.ellipse(box, fill=fill),
    "square": lambda draw, box, fill: draw.rectangle(box, fill=fill),
    SIGN: lambda draw, box, fill: draw.rectangle(box, fill=fill),
    "triangle": _triangle,
    "diamond": _diamond,
    "star": _star,
}
"""Shape name -> draw it filling `box` (x0, y0, x1, y1) with `fill`; every one of SHAPES and SIGN."""


def _fill_pattern(size: int, box, texture: str) -> Image.Image:
    """Mask (255 = pattern tone) of a fill texture anchored at the object's top left corner."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    step = FILL_PERIOD * SUPERSAMPLE
    x0, y0, x1, y1 = (int(v) for v in box)
    for i, y in enumerate(range(y0, y1, step // 2)):
        if texture == "striped" and i % 2 == 0:
            draw.rectangle((x0, y, x1, y + step // 2 - 1), fill=255)
        for j, x in enumerate(range(x0, x1, step // 2)):
            if texture == "dotted" and i % 2 == 0 and j % 2 == 0:
                r = 0.3 * step
                draw.ellipse((x + step / 2 - r, y + step / 2 - r, x + step / 2 + r, y + step / 2 + r), fill=255)
            elif texture == "checkered" and (i + j) % 2 == 0:
                draw.rectangle((x, y, x + step // 2 - 1, y + step // 2 - 1), fill=255)
    return mask


def _pattern_tone(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A clearly different tone of the same colour: darker for light colours, lighter for dark ones."""
    if sum(rgb) > 380:
        return tuple(int(v * 0.55) for v in rgb)
    return tuple(int(v + (255 - v) * 0.55) for v in rgb)


def _draw_object(image: Image.Image, draw: ImageDraw.ImageDraw, obj: Placed) -> None:
    box = tuple(v * SUPERSAMPLE for v in obj.box)
    fill = COLOURS[obj.colour]
    SHAPE_DRAWERS[obj.shape](draw, box, fill)
    if obj.texture != "plain":
        shape = Image.new("L", image.size, 0)
        SHAPE_DRAWERS[obj.shape](ImageDraw.Draw(shape), box, 255)
        image.paste(_pattern_tone(fill), mask=ImageChops.multiply(shape, _fill_pattern(image.size[0], box, obj.texture)))
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if obj.text:
        font = ImageFont.load_default(size=max(8, int((y1 - y0) * 0.7)))
        ink = (0, 0, 0) if sum(fill) > 400 else (255, 255, 255)
        draw.text((cx, cy), obj.text, font=font, fill=ink, anchor="mm")


def render_scene(cfg: SceneConfig, placed: list[Placed], background: str, texture: str) -> Image.Image:
    """Draw objects in layer order at 4x and downsample (anti-aliased edges)."""
    big = cfg.image_size * SUPERSAMPLE
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, big, background, texture)
    for obj in placed:
        _draw_object(image, draw, obj)
    return image.resize((cfg.image_size, cfg.image_size), Image.Resampling.LANCZOS)
