"""The procedural scene world: flat coloured shapes on plain or split backgrounds, with prompts.

Scenes are resolution independent: a shape's centre is stored as fractions of the image width and height
and its size as a fraction of the shorter side, so one scene renders at 64x64, 128x128 or 96x64 alike.
Every scene is a pure function of its seed (:func:`sample_scene`), and :func:`moved` gives the known
answer of a drag: the same scene with one shape translated.

Coordinates at the API edge are image pixels as (x, y) with x = column (the project's convention);
masks and arrays are indexed (row, col). numpy and PIL only: no torch here, so the world is cheap to import.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Palette: pairwise at least ~80 apart in some channel so a colour-agnostic diff separates any two.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (250, 220, 20),
    "orange": (250, 130, 10),
    "purple": (140, 40, 180),
    "cyan": (30, 210, 230),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

SUPERSAMPLE = 4  # render at 4x and box-filter down: light antialiasing, so the VAE learns clean edges
SQUARE_HALF = 0.89  # square half-side per unit size: area 3.17 r^2, close to the circle's pi r^2
TRIANGLE_RADIUS = 1.4  # equilateral triangle circumradius per unit size (area 2.55 r^2)


@dataclass(frozen=True)
class Shape:
    """One flat shape. ``cx, cy``: centre as fractions of width and height; ``size``: fraction of the shorter side.

    ``size`` is the circle's radius, the square's half-side / 0.89 and the triangle's circumradius / 1.4,
    so the three kinds have roughly the same area at one size. The centre is the shape's centroid
    (the triangle is equilateral, pointing up, centred on its centroid).
    """

    kind: str  # one of SHAPES
    colour: str  # one of COLOURS
    cx: float  # centre x, fraction of image width
    cy: float  # centre y, fraction of image height
    size: float  # fraction of min(width, height)

    @property
    def phrase(self) -> str:
        return f"a {self.colour} {self.kind}"

    def extent(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the bounding box in units of the shorter side, relative to the centre."""
        r = self.size
        if self.kind == "circle":
            return (-r, -r, r, r)
        if self.kind == "square":
            h = SQUARE_HALF * r
            return (-h, -h, h, h)
        R = TRIANGLE_RADIUS * r
        return (-R * math.sqrt(3) / 2, -R, R * math.sqrt(3) / 2, R / 2)


@dataclass(frozen=True)
class Scene:
    """Shapes drawn in order (later on top) over a background of one colour or two halves (top, bottom)."""

    shapes: tuple[Shape, ...]
    background: tuple[str, ...]  # (colour,) or (top colour, bottom colour)
    seed: int | None = field(default=None, compare=False)  # the seed it was sampled from, if any

    @property
    def prompt(self) -> str:
        """`a red circle, a blue square and a white triangle on a gray and black background`."""
        phrases = [s.phrase for s in self.shapes]
        if len(phrases) == 1:
            objects = phrases[0]
        else:
            objects = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        return f"{objects} on a {' and '.join(self.background)} background"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(
            shapes=tuple(Shape(**s) for s in data["shapes"]),
            background=tuple(data["background"]),
            seed=data.get("seed"),
        )


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as (width, height): an int means square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, w: int, h: int, fill) -> None:
    """Draw ``shape`` on a canvas of w x h pixels (already supersampled)."""
    unit = min(w, h)
    cx, cy = shape.cx * w, shape.cy * h
    if shape.kind == "circle":
        r = shape.size * unit
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "square":
        a = SQUARE_HALF * shape.size * unit
        draw.rectangle([cx - a, cy - a, cx + a, cy + a], fill=fill)
    elif shape.kind == "triangle":
        R = TRIANGLE_RADIUS * shape.size * unit
        pts = [(cx + R * math.cos(a), cy + R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; known: {SHAPES}")


def _draw_background(draw: ImageDraw.ImageDraw, background: tuple[str, ...], w: int, h: int) -> None:
    if len(background) == 1:
        draw.rectangle([0, 0, w, h], fill=COLOURS[background[0]])
    elif len(background) == 2:
        half = h // 2
        draw.rectangle([0, 0, w, half - 1], fill=COLOURS[background[0]])
        draw.rectangle([0, half, w, h], fill=COLOURS[background[1]])
    else:
        raise ValueError(f"background must have one or two colours, got {background!r}")


def render(scene: Scene, size: int | tuple[int, int] = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` (int, or (width, height)), antialiased by 4x supersampling."""
    w, h = _size_hw(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    img = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, scene.background, W, H)
    for shape in scene.shapes:
        _draw_shape(draw, shape, W, H, COLOURS[shape.colour])
    return img.reduce(SUPERSAMPLE)


def without(scene: Scene, index: int) -> Scene:
    """The scene with shape ``index`` removed (what lies under it)."""
    shapes = tuple(s for i, s in enumerate(scene.shapes) if i != index)
    return dataclasses.replace(scene, shapes=shapes)


def moved(scene: Scene, index: int, dx: float, dy: float) -> Scene:
    """The known answer of a drag: shape ``index`` translated by (dx, dy) as fractions of width and height.

    At size (w, h) the shape moves by (dx * w, dy * h) image pixels; its draw order is kept.
    """
    s = scene.shapes[index]
    shapes = list(scene.shapes)
    shapes[index] = dataclasses.replace(s, cx=s.cx + dx, cy=s.cy + dy)
    return dataclasses.replace(scene, shapes=tuple(shapes))


def shape_coverage(scene: Scene, index: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """Visible coverage in [0, 1] of shape ``index``, (H, W) float32: its area minus what later shapes hide.

    Purely geometric, hence colour-agnostic; computed on the 4x grid and box-averaged like :func:`render`.
    """
    w, h = _size_hw(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    layer = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(layer)
    _draw_shape(draw, scene.shapes[index], W, H, 255)
    for later in scene.shapes[index + 1 :]:
        _draw_shape(draw, later, W, H, 0)  # occluders erase
    hi = np.asarray(layer, dtype=np.float32) / 255.0  # (H*4, W*4)
    return hi.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))  # (H, W)


def shape_mask(scene: Scene, index: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """Boolean (H, W) mask of the visible pixels of shape ``index`` (coverage >= 1/2).

    Equal to "render the scene with and without that shape and compare" wherever the shape's colour differs
    from what lies under it, which :func:`sample_scene` guarantees; colour-agnostic by construction.
    """
    return shape_coverage(scene, index, size) >= 0.5


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid in image pixels of a boolean or weight mask (H, W); pixel centres at integer + 0.5."""
    m = np.asarray(mask, dtype=np.float64)
    total = m.sum()
    if total <= 0:
        return (float("nan"), float("nan"))
    rows, cols = np.indices(m.shape)
    return (float((m * (cols + 0.5)).sum() / total), float((m * (rows + 0.5)).sum() / total))


def _box(shape: Shape, aspect: float) -> tuple[float, float, float, float]:
    """Bounding box in fractions of (width, height); ``aspect`` = width / height."""
    l, t, r, b = shape.extent()  # units of min side
    sx = min(1.0, 1.0 / aspect)  # min side as a fraction of width
    sy = min(1.0, aspect)  # ... of height
    return (shape.cx + l * sx, shape.cy + t * sy, shape.cx + r * sx, shape.cy + b * sy)


def boxes_overlap(a: Shape, b: Shape, gap: float = 0.02, aspect: float = 1.0) -> bool:
    """Whether the bounding boxes of two shapes come closer than ``gap`` (fraction of the side)."""
    al, at, ar, ab = _box(a, aspect)
    bl, bt, br, bb = _box(b, aspect)
    return not (ar + gap <= bl or br + gap <= al or ab + gap <= bt or bb + gap <= at)


def fits(shape: Shape, margin: float = 0.02, aspect: float = 1.0) -> bool:
    """Whether the shape's bounding box lies inside the image with ``margin`` to spare."""
    l, t, r, b = _box(shape, aspect)
    return l >= margin and t >= margin and r <= 1 - margin and b <= 1 - margin


def sample_scene(
    rng: random.Random | int,
    n_shapes: int | None = None,
    *,
    size_range: tuple[float, float] = (0.10, 0.22),
    shape_weights: tuple[float, float, float] = (0.45, 0.35, 0.20),
    split_probability: float = 0.5,
    aspect: float = 1.0,
) -> Scene:
    """A random scene, deterministic in ``rng`` (a ``random.Random`` or an int seed).

    1-3 shapes (``shape_weights`` gives the chance of 1, 2, 3 unless ``n_shapes`` is set), sizes uniform in
    ``size_range``, positions uniform where the shape fits; shapes do not overlap (bounding boxes apart by 2 %
    of the side) so every shape is fully visible, and a shape's colour differs from both background colours.
    """
    seed = rng if isinstance(rng, int) else None
    if isinstance(rng, int):
        rng = random.Random(rng)
    colours = list(COLOURS)
    if rng.random() < split_probability:
        background = tuple(rng.sample(colours, 2))
    else:
        background = (rng.choice(colours),)
    if n_shapes is None:
        n_shapes = rng.choices((1, 2, 3), weights=shape_weights)[0]
    shapes: list[Shape] = []
    for _ in range(n_shapes):
        for _attempt in range(200):
            size = rng.uniform(*size_range)
            cand = Shape(
                kind=rng.choice(SHAPES),
                colour=rng.choice([c for c in colours if c not in background]),
                cx=rng.random(),
                cy=rng.random(),
                size=size,
            )
            if fits(cand, aspect=aspect) and not any(boxes_overlap(cand, s, aspect=aspect) for s in shapes):
                shapes.append(cand)
                break
        if len(shapes) == 0:  # never give an empty scene: shrink until one fits
            raise RuntimeError("could not place a shape; size_range too large?")
    return Scene(shapes=tuple(shapes), background=background, seed=seed)


def scene_array(scene: Scene, size: int | tuple[int, int] = 64) -> np.ndarray:
    """:func:`render` as a uint8 array (H, W, 3)."""
    return np.asarray(render(scene, size), dtype=np.uint8)
