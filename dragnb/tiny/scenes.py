"""The procedural scene world, described and sampled: its words, its Shape and Scene records, drags' known answers.

This module holds what a scene *is*: the vocabulary (:data:`COLOURS`, :data:`SHAPES`, :data:`STYLES`,
:data:`SIDES`), the shapes' geometry and appearance numbers, the :class:`Shape` and :class:`Scene` records with
their prompts, the edits whose answers are known (:func:`moved`, :func:`stretched`, :func:`without`) and
:func:`sample_scene`. How a scene is drawn (pixels, textures, coverage masks) is :mod:`dragnb.tiny.drawing`.

Two worlds share one grammar. The *flat* world (the first embedded models') draws single-colour shapes:
``a red circle and a blue square on a gray background``. The *textured* world adds appearance words that
make pixels position-discriminative, as in photographs: every textured shape is shaded by one light from
the upper left with a highlight, and ``striped`` / ``dotted`` / ``outlined`` add a pattern on top
(``a shiny red circle``, ``a striped blue square``, ``an outlined green triangle``). Plain shapes keep
the flat world's words, so every flat scene is also a scene of the textured world.

A shape can be *stretched*: one side pulled out beyond a split line through its centre, the rest left
pixel-identical (:func:`stretched`), the known answer of a deformation drag. Textures are drawn in the
shape's own coordinates, so they stretch with it.

The *occlusion* world is the textured world with two things a user's pictures have and the first worlds
lacked: shapes may overlap (in half its scenes), drawn in depth order (later in ``Scene.shapes`` = nearer,
drawn over the farther), every shape keeping at least :data:`MIN_VISIBLE` of itself in view and differing
in colour from what it overlaps; and the ground may be lit unevenly (:class:`Ground`: a tilt of brightness
and a soft ripple, no words in the prompt). How a scene is *drawn* is its :class:`Look`: ``trained`` (the
numbers the models were trained on) or ``unseen`` (another shading model, outline and highlight, used only
to evaluate, never to train or tune).

Scenes are resolution independent: a shape's centre is stored as fractions of the image width and height
and its size as a fraction of the shorter side, so one scene renders at 64x64, 128x128 or 96x64 alike.
Every scene is a pure function of its seed (:func:`sample_scene`), and :func:`moved` gives the known
answer of a drag: the same scene with one shape translated.

Coordinates at the API edge are image pixels as (x, y) with x = column (the project's convention);
masks and arrays are indexed (row, col). numpy only: no torch here, so the world is cheap to import.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

import numpy as np

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

STYLES: tuple[str, ...] = ("plain", "shiny", "striped", "dotted", "outlined")  # appearance words ("plain" says none)
SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")

SQUARE_HALF = 0.89  # square half-side per unit size: area 3.17 r^2, close to the circle's pi r^2
TRIANGLE_RADIUS = 1.4  # equilateral triangle circumradius per unit size (area 2.55 r^2)

# Appearance of textured shapes, in the shape's own coordinates (units of its size, centre at 0).
LIGHT = (-0.6, -0.8)  # direction the light comes from (x, y): the upper left, as in most photographs
SHADE_RANGE = (0.62, 1.12)  # brightness factor from the shadowed to the lit side of a shape
HIGHLIGHT_AT = (-0.38, -0.42)  # highlight centre (u, v), toward the light
HIGHLIGHT_SIGMA = 0.28  # its Gaussian width
HIGHLIGHT_GAIN = 0.55  # how far toward white the highlight goes at its peak
PATTERN_DARK = 0.55  # brightness factor of stripes, dots and outlines (on top of shading)
STRIPE_PERIOD = 0.7  # diagonal stripes (u + v), period in units of size
DOT_PERIOD = 0.8  # square grid of dots, period in units of size
DOT_RADIUS = 0.2  # dot radius, units of size
OUTLINE_WIDTH = 0.16  # outline width, units of size
MIN_CONTRAST = 64.0  # every colour a shape shows differs from each background colour by this much (max channel)
MIN_VISIBLE = 0.5  # occlusion world: every shape keeps at least this fraction of its area in view


@dataclass(frozen=True)
class Look:
    """How textured shapes are drawn: the shading model and its numbers (shape-local units of its size).

    ``trained`` is the module's constants above, the look every model was trained on; ``unseen``
    (:data:`LOOKS`) shades a lit dome instead of a tilted plane, from the upper right, with a smaller, sharper
    highlight, a thicker outline and narrower stripes: the same scene descriptions drawn another way, to tell
    learning the world from learning its renderer. Plain shapes are one flat colour in every look.
    """

    shading: str = "plane"  # "plane": brightness linear along the light; "dome": Lambert on a hemisphere
    light: tuple[float, float] = LIGHT
    shade_range: tuple[float, float] = SHADE_RANGE
    highlight_at: tuple[float, float] = HIGHLIGHT_AT
    highlight_sigma: float = HIGHLIGHT_SIGMA
    highlight_gain: float = HIGHLIGHT_GAIN
    pattern_dark: float = PATTERN_DARK
    stripe_period: float = STRIPE_PERIOD
    dot_period: float = DOT_PERIOD
    dot_radius: float = DOT_RADIUS
    outline_width: float = OUTLINE_WIDTH


LOOKS: dict[str, Look] = {
    "trained": Look(),
    "unseen": Look(shading="dome", light=(0.6, -0.8), shade_range=(0.55, 1.08), highlight_at=(0.3, -0.35),
                   highlight_sigma=0.16, highlight_gain=0.75, pattern_dark=0.6, stripe_period=0.5,
                   dot_period=0.7, dot_radius=0.16, outline_width=0.26),
}


@dataclass(frozen=True)
class Ground:
    """Uneven light on the background: brightness ``1 + tilt_x (x - 1/2) + tilt_y (y - 1/2)
    + ripple sin(2 pi RIPPLE_CYCLES (x cos a + y sin a) + phase)``, x and y fractions of the width and height.

    All zero (the default) is the flat ground of the first worlds.
    """

    tilt_x: float = 0.0
    tilt_y: float = 0.0
    ripple: float = 0.0
    ripple_angle: float = 0.0
    ripple_phase: float = 0.0

    @property
    def flat(self) -> bool:
        return self.tilt_x == 0 and self.tilt_y == 0 and self.ripple == 0


RIPPLE_CYCLES = 1.2  # the ground's ripple: cycles across the image (soft, so a VAE of f = 4 keeps it)


@dataclass(frozen=True)
class Shape:
    """One shape. ``cx, cy``: centre as fractions of width and height; ``size``: fraction of the shorter side.

    ``size`` is the circle's radius, the square's half-side / 0.89 and the triangle's circumradius / 1.4,
    so the three kinds have roughly the same area at one size. The centre is the shape's centroid
    (the triangle is equilateral, pointing up, centred on its centroid) before any stretch.

    ``style`` is its appearance word (``plain``: one flat colour). ``stretch_side`` / ``stretch``: the part
    of the shape beyond the line through its centre on that side is scaled by ``stretch`` away from it
    (1 = not stretched); the other half is unchanged.
    """

    kind: str  # one of SHAPES
    colour: str  # one of COLOURS
    cx: float  # centre x, fraction of image width
    cy: float  # centre y, fraction of image height
    size: float  # fraction of min(width, height)
    style: str = "plain"  # one of STYLES
    stretch_side: str = "right"  # one of SIDES: which half ``stretch`` scales
    stretch: float = 1.0  # scale of that half away from the centre line (>= 1 pulls it out)

    @property
    def phrase(self) -> str:
        if self.style == "plain":
            return f"a {self.colour} {self.kind}"
        article = "an" if self.style[0] in "aeiou" else "a"
        return f"{article} {self.style} {self.colour} {self.kind}"

    def base_extent(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the unstretched bounding box, units of the shorter side, from the centre."""
        r = self.size
        if self.kind == "circle":
            return (-r, -r, r, r)
        if self.kind == "square":
            h = SQUARE_HALF * r
            return (-h, -h, h, h)
        R = TRIANGLE_RADIUS * r
        return (-R * math.sqrt(3) / 2, -R, R * math.sqrt(3) / 2, R / 2)

    def extent(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the bounding box in units of the shorter side, relative to the centre."""
        l, t, r, b = self.base_extent()  # l, t < 0 < r, b: the box straddles the centre lines, so it stretches too
        (l, r), (t, b) = _stretch(self, np.array([l, r]), np.array([t, b]), self.stretch)
        return (float(l), float(t), float(r), float(b))

    @property
    def flat(self) -> bool:
        """Drawn as one colour, unstretched (the flat world's shapes: rendered exactly as before)."""
        return self.style == "plain" and self.stretch == 1.0

    def to_image(self, u: float, v: float, w: int, h: int) -> tuple[float, float]:
        """Image pixel (x, y) of the shape-local point (u, v) (units of the shorter side, unstretched)."""
        u, v = _stretch(self, np.float64(u), np.float64(v), self.stretch)
        unit = min(w, h)
        return (self.cx * w + float(u) * unit, self.cy * h + float(v) * unit)


def _stretch(shape: Shape, u, v, factor: float):
    """Scale the shape-local points (u, v) on ``shape.stretch_side`` of its centre lines by ``factor``.

    ``factor = shape.stretch`` maps the unstretched shape to where the stretch puts it; ``1 / shape.stretch``
    maps back. Points on the other side are returned unchanged.
    """
    if factor == 1.0:
        return u, v
    side = shape.stretch_side
    if side in ("left", "right"):
        pulled = u > 0 if side == "right" else u < 0
        return np.where(pulled, u * factor, u), v
    pulled = v > 0 if side == "bottom" else v < 0
    return u, np.where(pulled, v * factor, v)


def shape_colours(colour: str, style: str) -> np.ndarray:
    """(K, 3) the colours a shape of ``colour`` and ``style`` can show (extremes of shading, pattern, highlight)."""
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    if style == "plain":
        return base[None]
    lo, hi = SHADE_RANGE
    factors = [lo, hi, (lo + hi) / 2]
    if style in ("striped", "dotted"):
        factors += [lo * PATTERN_DARK, hi * PATTERN_DARK]
    if style == "outlined":
        factors += [lo * PATTERN_DARK * 0.7, hi * PATTERN_DARK * 0.7]
    out = [np.clip(base * f, 0, 255) for f in factors]
    top = np.clip(base * hi, 0, 255)
    out += [top + g * (255 - top) for g in (HIGHLIGHT_GAIN / 2, HIGHLIGHT_GAIN)]
    return np.stack(out)


def _least_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Least max-channel difference between any colour of ``a`` (K, 3) and any of ``b`` (L, 3)."""
    return float(np.abs(a[:, None] - b[None]).max(-1).min())


def contrast(colour: str, style: str, background: str, light: tuple[float, ...] = (1.0,)) -> float:
    """Least max-channel difference between any colour the shape shows and the ``background`` colour, that colour
    lit by each factor of ``light`` (an uneven :class:`Ground` spans a range of them)."""
    bg = np.asarray(COLOURS[background], dtype=np.float64)
    lit = np.clip(np.asarray(light, dtype=np.float64)[:, None] * bg[None], 0, 255)  # (L, 3)
    return _least_difference(shape_colours(colour, style), lit)


def shapes_contrast(a: Shape, b: Shape) -> float:
    """Least max-channel difference between any colour shape ``a`` shows and any ``b`` shows (overlapping shapes
    must stay apart, so each one's edge is seen where it lies over the other)."""
    return _least_difference(shape_colours(a.colour, a.style), shape_colours(b.colour, b.style))


def ground_range(ground: Ground) -> tuple[float, float]:
    """The least and greatest brightness factor ``ground`` puts on the background."""
    reach = abs(ground.tilt_x) / 2 + abs(ground.tilt_y) / 2 + abs(ground.ripple)
    return (1.0 - reach, 1.0 + reach)


@dataclass(frozen=True)
class Scene:
    """Shapes drawn in order (later on top) over a background of one colour or two halves (top, bottom).

    ``ground`` lights the background unevenly (no words in the prompt); ``look`` names how it is drawn
    (:data:`LOOKS`), which is not part of the description either.
    """

    shapes: tuple[Shape, ...]
    background: tuple[str, ...]  # (colour,) or (top colour, bottom colour)
    seed: int | None = field(default=None, compare=False)  # the seed it was sampled from, if any
    ground: Ground = Ground()
    look: str = "trained"  # one of LOOKS

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
            ground=Ground(**data.get("ground", {})),
            look=data.get("look", "trained"),
        )


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


def stretched(scene: Scene, index: int, side: str, factor: float) -> Scene:
    """The known answer of a deformation drag: the half of shape ``index`` on ``side`` pulled out by ``factor``.

    The half beyond the line through the shape's centre is scaled away from that line (a point on the
    ``side`` edge at distance e from the centre line moves by e * (factor - 1)); the other half keeps its
    pixels. A shape can carry one stretch; stretching it again on the same side multiplies the factors.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    s = scene.shapes[index]
    if s.stretch != 1.0 and s.stretch_side != side:
        raise ValueError(f"shape {index} is already stretched on the {s.stretch_side}; one side per shape")
    shapes = list(scene.shapes)
    shapes[index] = dataclasses.replace(s, stretch_side=side, stretch=s.stretch * factor)
    return dataclasses.replace(scene, shapes=tuple(shapes))


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


WORLDS: tuple[str, ...] = ("flat", "textured", "occlusion")
# Chance of each appearance word in the textured world; plain shapes stay so the flat grammar is still trained.
STYLE_WEIGHTS: dict[str, float] = {"plain": 0.15, "shiny": 0.3, "striped": 0.2, "dotted": 0.15, "outlined": 0.2}
OVERLAP_SHARE = 0.5  # occlusion world: share of scenes whose shapes may overlap
NEAR_SHARE = 0.7  # ... in which a shape is placed next to (often onto) one already there
OCCLUSION_SHAPE_WEIGHTS = (0.2, 0.45, 0.35)  # ... chance of 1, 2, 3 shapes (overlaps need two)
GROUND_SHARE = 0.5  # occlusion world: share of scenes with an uneven ground
GROUND_REACH = 0.2  # ... its brightness stays within 1 +- this


def sample_ground(rng: random.Random) -> Ground:
    """An uneven ground whose brightness stays within 1 +- GROUND_REACH."""
    tilt_x, tilt_y = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2)
    room = GROUND_REACH - abs(tilt_x) / 2 - abs(tilt_y) / 2
    return Ground(tilt_x, tilt_y, rng.uniform(0.3, 1.0) * room, rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi))


def visible_fractions(shapes: list[Shape] | tuple[Shape, ...], size: int = 32) -> list[float]:
    """Each shape's visible share of its own area when drawn in order (later nearer), measured at ``size``."""
    from .drawing import shape_coverage  # the drawing imports this module

    scene = Scene(tuple(shapes), ("black",))
    alone = [shape_coverage(Scene((s,), ("black",)), 0, size).sum() for s in shapes]
    return [float(shape_coverage(scene, i, size).sum() / a) if a > 0 else 0.0 for i, a in enumerate(alone)]


def _near(rng: random.Random, other: Shape, size: float, aspect: float) -> tuple[float, float]:
    """A centre next to ``other`` for a shape of ``size``: from half to 1.2 times the sum of their sizes away."""
    dist = rng.uniform(0.5, 1.2) * (other.size + size) * 1.3
    angle = rng.uniform(0, 2 * math.pi)
    sx, sy = min(1.0, 1.0 / aspect), min(1.0, aspect)  # the shorter side as fractions of width and height
    return other.cx + dist * math.cos(angle) * sx, other.cy + dist * math.sin(angle) * sy


def sample_scene(
    rng: random.Random | int,
    n_shapes: int | None = None,
    *,
    size_range: tuple[float, float] = (0.10, 0.22),
    shape_weights: tuple[float, float, float] = (0.45, 0.35, 0.20),
    split_probability: float = 0.5,
    aspect: float = 1.0,
    world: str = "flat",
) -> Scene:
    """A random scene, deterministic in ``rng`` (a ``random.Random`` or an int seed).

    1-3 shapes (``shape_weights`` gives the chance of 1, 2, 3 unless ``n_shapes`` is set), sizes uniform in
    ``size_range``, positions uniform where the shape fits; shapes do not overlap (bounding boxes apart by 2 %
    of the side) so every shape is fully visible, and a shape's colour differs from both background colours.
    ``world="textured"`` also draws an appearance word per shape (:data:`STYLE_WEIGHTS`) and only colours
    whose every shaded, patterned and highlighted tone differs from both backgrounds by :data:`MIN_CONTRAST`;
    ``world="flat"`` draws exactly the scenes of the first embedded models (same seeds, same scenes).
    ``world="occlusion"``: the textured world's shapes (1-3 by :data:`OCCLUSION_SHAPE_WEIGHTS`), in
    :data:`OVERLAP_SHARE` of scenes allowed to overlap (often placed next to a shape already there), each
    keeping :data:`MIN_VISIBLE` of itself in view and :data:`MIN_CONTRAST` from any shape it touches; an uneven
    :class:`Ground` in :data:`GROUND_SHARE` of scenes, shape colours kept apart from the ground at every light.
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    seed = rng if isinstance(rng, int) else None
    if isinstance(rng, int):
        rng = random.Random(rng)
    colours = list(COLOURS)
    if rng.random() < split_probability:
        background = tuple(rng.sample(colours, 2))
    else:
        background = (rng.choice(colours),)
    occlusion = world == "occlusion"
    ground = sample_ground(rng) if occlusion and rng.random() < GROUND_SHARE else Ground()
    light = ground_range(ground)
    overlapping = occlusion and rng.random() < OVERLAP_SHARE
    if n_shapes is None:
        n_shapes = rng.choices((1, 2, 3), weights=OCCLUSION_SHAPE_WEIGHTS if occlusion else shape_weights)[0]
    shapes: list[Shape] = []
    for _ in range(n_shapes):
        for _attempt in range(200):
            size = rng.uniform(*size_range)
            kind = rng.choice(SHAPES)
            style = "plain"
            allowed = [c for c in colours if c not in background]
            if world != "flat":
                style = rng.choices(list(STYLE_WEIGHTS), weights=list(STYLE_WEIGHTS.values()))[0]
                allowed = [c for c in allowed if all(contrast(c, style, b, light) >= MIN_CONTRAST for b in background)]
                if not allowed:
                    continue
            colour = rng.choice(allowed)
            if overlapping and shapes and rng.random() < NEAR_SHARE:
                cx, cy = _near(rng, rng.choice(shapes), size, aspect)
            else:
                cx, cy = rng.random(), rng.random()
            cand = Shape(kind=kind, colour=colour, cx=cx, cy=cy, size=size, style=style)
            if not fits(cand, aspect=aspect):
                continue
            touching = [s for s in shapes if boxes_overlap(cand, s, aspect=aspect)]
            if touching and not overlapping:
                continue
            if touching and (any(shapes_contrast(cand, s) < MIN_CONTRAST for s in touching)
                             or min(visible_fractions(shapes + [cand])) < MIN_VISIBLE):
                continue
            shapes.append(cand)
            break
        if len(shapes) == 0:  # never give an empty scene: shrink until one fits
            raise RuntimeError("could not place a shape; size_range too large?")
    return Scene(shapes=tuple(shapes), background=background, seed=seed, ground=ground)
