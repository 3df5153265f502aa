"""Drags with known answers in the scene world: which shape moves or stretches, where a person clicks, the answer.

A case is a source scene, its edits (:class:`Edit`: a rigid move, or one side pulled out), the handle/target
pairs where a person would click, the editable mask and the known answer (the target scene). Two families:

* ``flat``: one flat shape moves by 10-20 % of the image side; the handle is its centre, the mask a box around
  its source and target (:func:`make_case`).
* ``textured``: scenes of the textured world, handles on a corner or vertex, the highlight, near an edge or at
  the centre, 1-3 pairs; 70 % rigid moves of one or two shapes, 30 % deformations with the mask over the pulled
  half only (:func:`make_textured_case`).
* ``occlusion``: scenes of the occlusion world (shapes overlapping in depth order, uneven grounds) at 64, 96 or
  128 px (a user's pictures are larger than the model's and brought down to it); 40 % of cases move a shape onto
  another (in front of it, or behind it with that shape left out of the mask) or past it, 10 % move a shape off
  one it covered, the rest are the
  textured benchmark's moves and stretches (:func:`make_occlusion_case`). Every case names its
  :data:`SITUATIONS`.
* ``occlusion-near``: the same, with no drag longer than :data:`NEAR_LONGEST` of the side (the textured
  benchmark's longest), so no ``past``: where the shapes meet in depth, apart from how far a drag must reach.

:func:`benchmark_case` gives case ``i`` of a benchmark at a seed: what the notebooks use as their example and
what :mod:`dragnb.evaluation.scenebench` writes to disk and scores.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np

from .drawing import centroid, shape_mask
from .scenes import (HIGHLIGHT_AT, LOOKS, MIN_CONTRAST, SIDES, SQUARE_HALF, TRIANGLE_RADIUS, Scene, Shape,
                     boxes_overlap, fits, moved, sample_scene, shapes_contrast, stretched, visible_fractions)

BENCHMARKS = ("flat", "textured", "occlusion", "occlusion-near")
OCCLUSION_LONGEST = 0.5  # the longest move of an occlusion case, fraction of the shorter side
NEAR_LONGEST = 0.2  # ... of an occlusion-near case (the textured benchmark's longest)
# What an occlusion-benchmark case asks: a shape moved onto another and drawn in front of it or behind it, moved
# past one (over it and beyond), moved off one it covered (which must then show whole), or a plain move or stretch.
SITUATIONS = ("front", "behind", "past", "off", "move", "stretch")
SITUATION_WEIGHTS = (0.17, 0.13, 0.10, 0.10, 0.30, 0.20)
OCCLUSION_SIZES = ((64, 0.5), (96, 0.2), (128, 0.3))  # (side in px, share of cases)
MIN_SHOWN = 0.4  # occlusion cases: every shape of the answer shows at least this much of itself
STRETCH_SHARE = 0.3  # textured benchmark: share of deformation cases
INSIDE = 0.8  # clicked points sit this far from the centre toward a corner or edge: on the object, not its border



@dataclass(frozen=True)
class Edit:
    """What the drag should do to one shape: a rigid move, or one side pulled out."""

    index: int  # which shape
    kind: str  # "move" | "stretch"
    dx: float = 0.0  # move, fraction of the image width
    dy: float = 0.0  # move, fraction of the image height
    side: str = "right"  # stretch: which side (dragnb.tiny.scenes.SIDES)
    factor: float = 1.0  # stretch: scale of that half away from the centre line

    def apply(self, scene: Scene) -> Scene:
        if self.kind == "move":
            return moved(scene, self.index, self.dx, self.dy)
        return stretched(scene, self.index, self.side, self.factor)


def apply_edits(scene: Scene, edits: tuple[Edit, ...]) -> Scene:
    """The known answer: ``scene`` with every edit applied in order."""
    for edit in edits:
        scene = edit.apply(scene)
    return scene


@dataclass(frozen=True)
class Pair:
    """One handle/target pair, image pixels (x, y), and where on which shape the handle was clicked."""

    handle: tuple[float, float]
    target: tuple[float, float]
    index: int  # the shape it is on
    where: str  # "centre" | "corner" | "highlight" | "edge"


@dataclass(frozen=True)
class Expected:
    """The known answer for one edited shape: its centroid (x, y) and visible area in pixels."""

    index: int
    centre: tuple[float, float]
    area: int


@dataclass(frozen=True)
class SceneCase:
    """One benchmark case as stored in ``case.json``; points in image pixels (x, y)."""

    name: str
    benchmark: str  # one of BENCHMARKS
    scene: Scene  # the original scene
    edits: tuple[Edit, ...]
    pairs: tuple[Pair, ...]
    size: tuple[int, int]  # (width, height) in pixels
    expected: tuple[Expected, ...]  # one per edit
    situation: str = ""  # occlusion benchmark: one of SITUATIONS ("" in the other benchmarks)

    @property
    def target_scene(self) -> Scene:
        return apply_edits(self.scene, self.edits)

    @property
    def kind(self) -> str:
        """"stretch" if any shape is deformed, else "move"."""
        return "stretch" if any(e.kind == "stretch" for e in self.edits) else "move"

    @property
    def handle(self) -> tuple[float, float]:
        """The first pair's handle (the one pair of a flat case)."""
        return self.pairs[0].handle

    @property
    def target(self) -> tuple[float, float]:
        return self.pairs[0].target

    @property
    def points(self) -> list[tuple[float, float, float, float]]:
        """Every pair as (hx, hy, tx, ty), the session's ``set_points`` layout."""
        return [(*p.handle, *p.target) for p in self.pairs]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scene"] = self.scene.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SceneCase":
        return cls(
            name=data["name"],
            benchmark=data["benchmark"],
            scene=Scene.from_dict(data["scene"]),
            edits=tuple(Edit(**e) for e in data["edits"]),
            pairs=tuple(Pair(tuple(p["handle"]), tuple(p["target"]), p["index"], p["where"]) for p in data["pairs"]),
            size=tuple(data["size"]),
            expected=tuple(Expected(e["index"], tuple(e["centre"]), e["area"]) for e in data["expected"]),
            situation=data.get("situation", ""),
        )


# ------------------------------------------------------------------------------------------------- cases
def _box_mask(masks: list[np.ndarray], size: tuple[int, int], margin: int) -> np.ndarray:
    """uint8 (H, W), 1 inside the bounding box (plus ``margin``) of the union of ``masks``."""
    w, h = size
    rows, cols = np.nonzero(np.logical_or.reduce(masks))
    mask = np.zeros((h, w), dtype=np.uint8)
    r0, r1 = max(0, rows.min() - margin), min(h, rows.max() + 1 + margin)
    c0, c1 = max(0, cols.min() - margin), min(w, cols.max() + 1 + margin)
    mask[r0:r1, c0:c1] = 1
    return mask


def _expected(target: Scene, edits: tuple[Edit, ...], size: tuple[int, int],
              mask: np.ndarray | None = None) -> tuple[Expected, ...]:
    """Centroid and area of each edited shape in the known answer, inside the editable ``mask`` when given."""
    out = []
    for e in edits:
        end = shape_mask(target, e.index, size)
        if mask is not None:
            end = end & (mask > 0)
        out.append(Expected(e.index, centroid(end), int(end.sum())))
    return tuple(out)


def make_case(seed: int, size: int | tuple[int, int] = 64, name: str | None = None,
              move_range: tuple[float, float] = (0.10, 0.20)) -> tuple[SceneCase, np.ndarray]:
    """A flat-benchmark case, deterministic in ``seed``: (record, mask). One flat shape moves; handle = its centre.

    The moved shape stays inside the image and clear of others.
    """
    w, h = (size, size) if isinstance(size, int) else size
    rng = random.Random(seed)
    while True:
        scene = sample_scene(rng, aspect=w / h)
        for _ in range(50):
            index = rng.randrange(len(scene.shapes))
            dist = rng.uniform(*move_range) * min(w, h)  # pixels
            angle = rng.uniform(0, 2 * math.pi)
            dx, dy = dist * math.cos(angle) / w, dist * math.sin(angle) / h
            target = moved(scene, index, dx, dy)
            shape = target.shapes[index]
            others = [s for i, s in enumerate(scene.shapes) if i != index]
            if fits(shape, aspect=w / h) and not any(boxes_overlap(shape, o, aspect=w / h) for o in others):
                break
        else:
            continue
        handle = centroid(shape_mask(scene, index, (w, h)))
        edits = (Edit(index, "move", dx, dy),)
        case = SceneCase(
            name=name or f"scene_{seed:06d}",
            benchmark="flat",
            scene=scene,
            edits=edits,
            pairs=(Pair(handle, (handle[0] + dx * w, handle[1] + dy * h), index, "centre"),),
            size=(w, h),
            expected=_expected(target, edits, (w, h)),
        )
        return case, edit_mask(scene, target, edits, (w, h))


def click_points(shape: Shape, rng: random.Random) -> list[tuple[str, tuple[float, float]]]:
    """Where a person would click on ``shape``: (where, shape-local (u, v) in units of the shorter side)."""
    r = shape.size
    out: list[tuple[str, tuple[float, float]]] = [("centre", (0.0, 0.0))]
    if shape.kind == "square":
        a = SQUARE_HALF * r * INSIDE
        out.append(("corner", (rng.choice((-a, a)), rng.choice((-a, a)))))
    elif shape.kind == "triangle":
        R = TRIANGLE_RADIUS * r * INSIDE
        out.append(("corner", rng.choice([(0.0, -R), (R * math.sqrt(3) / 2, R / 2), (-R * math.sqrt(3) / 2, R / 2)])))
    if shape.style != "plain":
        out.append(("highlight", (HIGHLIGHT_AT[0] * r, HIGHLIGHT_AT[1] * r)))
    angle = rng.uniform(0, 2 * math.pi)
    reach = 0.65 if shape.kind == "triangle" else INSIDE  # the triangle's inscribed circle is half its circumradius
    out.append(("edge", (r * reach * math.cos(angle), r * reach * math.sin(angle) * (0.6 if shape.kind == "triangle" else 1))))
    return out


def _side_point(shape: Shape, side: str, rng: random.Random) -> tuple[float, float]:
    """A click near the middle of ``side`` of the unstretched shape, shape-local (u, v)."""
    l, t, r, b = shape.base_extent()
    if shape.kind == "triangle":  # its sides: the two base vertices, the apex, the base
        R = TRIANGLE_RADIUS * shape.size
        u_base, v_base = R * math.sqrt(3) / 2 * INSIDE, R / 2 * INSIDE
        return {"right": (u_base, v_base), "left": (-u_base, v_base), "top": (0.0, -R * INSIDE),
                "bottom": (rng.uniform(-0.4, 0.4) * u_base, v_base)}[side]
    spread = 0.5 if shape.kind == "square" else 0.3
    along = rng.uniform(-spread, spread)
    if side in ("left", "right"):
        e = r if side == "right" else l
        return (e * INSIDE, along * (b - t) / 2)
    e = b if side == "bottom" else t
    return (along * (r - l) / 2, e * INSIDE)


def _fits_clear(target: Scene, edited: set[int], source: Scene, aspect: float, spare: frozenset[int] = frozenset()) -> bool:
    """Edited shapes in ``target`` fit the image and keep clear of every other shape's source and target (but those
    in ``spare``)."""
    for i in edited:
        s = target.shapes[i]
        if not fits(s, aspect=aspect):
            return False
        for j in range(len(target.shapes)):
            if j == i or j in spare:
                continue
            if boxes_overlap(s, target.shapes[j], aspect=aspect) or boxes_overlap(s, source.shapes[j], aspect=aspect):
                return False
    return True


def make_textured_case(seed: int, size: int | tuple[int, int] = 128, name: str | None = None,
                       move_range: tuple[float, float] = (0.10, 0.20),
                       stretch_range: tuple[float, float] = (1.6, 2.2)) -> tuple[SceneCase, np.ndarray]:
    """A textured-benchmark case, deterministic in ``seed``: (record, mask).

    Moves: one shape (two when the scene has several, in 30 % of cases) moves by ``move_range`` of the side;
    each gets one or two handles among its click points, at most three pairs in all. Stretches: the half of one
    shape on one side is scaled away from its centre line by a factor in ``stretch_range``, with one handle near
    that side's middle (two on a
    square's side, in half the cases); the mask covers only that half of the shape and the space it grows into.
    """
    w, h = (size, size) if isinstance(size, int) else size
    aspect = w / h
    side_px = min(w, h)
    rng = random.Random(seed)
    while True:
        scene = sample_scene(rng, aspect=aspect, world="textured")
        stretch = rng.random() < STRETCH_SHARE
        for _ in range(50):
            edits, pairs = _textured_edits(scene, stretch, rng, (w, h), move_range, stretch_range)
            target = apply_edits(scene, edits)
            if _fits_clear(target, {e.index for e in edits}, scene, aspect):
                break
        else:
            continue
        return _case(name or f"case_{seed:06d}", "textured", scene, edits, pairs, (w, h))


Click = tuple[int, str, tuple[float, float]]  # (shape, where, shape-local point): a pair before it meets the image


def _textured_edits(scene: Scene, stretch: bool, rng: random.Random, size: tuple[int, int],
                    move_range: tuple[float, float], stretch_range: tuple[float, float]) -> tuple[tuple[Edit, ...], list[Click]]:
    """The textured benchmark's edits of ``scene`` and their clicks: one stretch, or moves of one or two shapes."""
    w, h = size
    pairs: list[Click] = []
    if stretch:
        index = rng.randrange(len(scene.shapes))
        side = rng.choice(SIDES)
        shape = scene.shapes[index]
        edits = (Edit(index, "stretch", side=side, factor=rng.uniform(*stretch_range)),)
        pairs.append((index, "edge", _side_point(shape, side, rng)))
        if shape.kind == "square" and rng.random() < 0.5:
            pairs.append((index, "edge", _side_point(shape, side, rng)))
        return edits, pairs
    n_moved = 2 if len(scene.shapes) > 1 and rng.random() < 0.3 else 1
    indices = rng.sample(range(len(scene.shapes)), n_moved)
    edit_list = []
    for index in indices:
        dist = rng.uniform(*move_range) * min(w, h)
        angle = rng.uniform(0, 2 * math.pi)
        edit_list.append(Edit(index, "move", dist * math.cos(angle) / w, dist * math.sin(angle) / h))
        clicks = click_points(scene.shapes[index], rng)
        k = 2 if rng.random() < 0.35 and len(pairs) + 2 <= 3 else 1
        for where, uv in rng.sample(clicks, min(k, len(clicks))):
            pairs.append((index, where, uv))
    return tuple(edit_list), pairs


def _case(name: str, benchmark: str, scene: Scene, edits: tuple[Edit, ...], pairs: list[Click],
          size: tuple[int, int], situation: str = "", keep_out: int | None = None) -> tuple[SceneCase, np.ndarray]:
    """(record, mask) of a case: its clicks placed on the source and the answer, the mask (without the pixels of
    shape ``keep_out``, if given) and the expectations."""
    w, h = size
    target = apply_edits(scene, edits)
    out_pairs = tuple(
        Pair(scene.shapes[i].to_image(*uv, w, h), target.shapes[i].to_image(*uv, w, h), i, where)
        for i, where, uv in pairs
    )
    mask = edit_mask(scene, target, edits, size)
    if keep_out is not None:
        mask = mask * ~(shape_mask(scene, keep_out, size) | shape_mask(target, keep_out, size))
    case = SceneCase(name=name, benchmark=benchmark, scene=scene, edits=edits, pairs=out_pairs, size=size,
                     expected=_expected(target, edits, size, mask), situation=situation)
    return case, mask


# ------------------------------------------------------------------------------- the occlusion benchmark
def _radius(shape: Shape) -> float:
    """Half the larger side of the shape's bounding box, units of the shorter image side."""
    l, t, r, b = shape.extent()
    return max(r - l, b - t) / 2


def _shows(scene: Scene, index: int, uv: tuple[float, float], size: tuple[int, int]) -> bool:
    """Whether the shape-local point ``uv`` of shape ``index`` is in view (not under a nearer shape) at ``size``."""
    w, h = size
    x, y = scene.shapes[index].to_image(*uv, w, h)
    col, row = min(w - 1, max(0, int(x))), min(h - 1, max(0, int(y)))
    return bool(shape_mask(scene, index, size)[row, col])


def _occlusion_edit(scene: Scene, situation: str, rng: random.Random, aspect: float,
                    longest: float = OCCLUSION_LONGEST) -> tuple[Edit, int] | None:
    """A move of one shape, by at most ``longest`` of the shorter side, that puts it in ``situation`` (front,
    behind, past, off), and the other shape it meets; None where this scene has none."""
    n = len(scene.shapes)
    if n < 2:
        return None
    i, j = rng.sample(range(n), 2)
    a, b = scene.shapes[i], scene.shapes[j]
    if situation == "off":  # i must lie over j now
        if i < j:
            i, j, a, b = j, i, b, a
        if visible_fractions([b, a])[0] > 0.97:
            return None
    elif situation in ("front", "behind"):
        if (situation == "front") != (i > j):
            i, j, a, b = j, i, b, a
        if boxes_overlap(a, b, gap=0.0, aspect=aspect) or shapes_contrast(a, b) < MIN_CONTRAST:
            return None  # starts clear of the one it ends on, and stays told apart from it
    elif boxes_overlap(a, b, gap=0.0, aspect=aspect):  # past: starts clear of the one it passes
        return None
    sx, sy = min(1.0, 1.0 / aspect), min(1.0, aspect)  # the shorter side as fractions of width and height
    reach = _radius(a) + _radius(b)
    if situation in ("front", "behind"):
        angle = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.45, 0.8) * reach
        tx, ty = b.cx + dist * math.cos(angle) * sx, b.cy + dist * math.sin(angle) * sy
    elif situation == "past":
        ux, uy = (b.cx - a.cx) / sx, (b.cy - a.cy) / sy  # toward j, in units of the shorter side
        d = math.hypot(ux, uy)
        beyond = d + rng.uniform(1.05, 1.3) * reach
        tx, ty = a.cx + ux / d * beyond * sx, a.cy + uy / d * beyond * sy
    else:  # off
        angle = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(1.05, 1.4) * reach
        tx, ty = b.cx + dist * math.cos(angle) * sx, b.cy + dist * math.sin(angle) * sy
    edit = Edit(i, "move", tx - a.cx, ty - a.cy)
    moved_by = math.hypot(edit.dx / sx, edit.dy / sy)
    if not 0.08 <= moved_by <= longest:
        return None
    target = edit.apply(scene)
    if not _fits_clear(target, {i}, scene, aspect, frozenset({j}) if situation in ("front", "behind") else frozenset()):
        return None
    if situation in ("front", "behind"):
        shown = visible_fractions(target.shapes)
        if min(shown) < MIN_SHOWN or shown[j if situation == "front" else i] > 0.95:
            return None  # a real overlap (the farther shape loses 5 % or more), each shape still showing
    return edit, j


def make_occlusion_case(seed: int, name: str | None = None, look: str = "trained",
                        move_range: tuple[float, float] = (0.10, 0.20),
                        stretch_range: tuple[float, float] = (1.6, 2.2),
                        near: bool = False) -> tuple[SceneCase, np.ndarray]:
    """An occlusion-benchmark case, deterministic in ``seed``: (record, mask), drawn in ``look``; with ``near``, the
    occlusion-near benchmark's (no move longer than :data:`NEAR_LONGEST`, hence no ``past``).

    Its size (:data:`OCCLUSION_SIZES`) and situation (:data:`SITUATIONS`, by :data:`SITUATION_WEIGHTS`) are
    drawn first. front / behind: a shape that starts clear of another ends overlapping it, drawn over it or
    under it as the depth order says (the answer drawn in that order; every shape still showing
    :data:`MIN_SHOWN` of itself); past: it moves over another and ends beyond it; off: a shape that covered
    part of another moves clear of it, which must then show whole; move / stretch: the textured benchmark's
    edits. One or two clicks per moved shape, each on a visible part of it and landing on a visible part of the
    answer. The prompt says nothing of depth: the grammar has no words for it, and a drag's prompt describes
    the source image anyway. What tells the drag to go behind is what a user would do: the mask leaves out the
    shape it goes behind, so that shape may not change and the moved one can only show around it.
    """
    if look not in LOOKS:
        raise ValueError(f"look must be one of {tuple(LOOKS)}, got {look!r}")
    rng = random.Random(seed)
    side = rng.choices([s for s, _ in OCCLUSION_SIZES], weights=[p for _, p in OCCLUSION_SIZES])[0]
    weights = [0.0 if near and x == "past" else w for x, w in zip(SITUATIONS, SITUATION_WEIGHTS)]
    situation = rng.choices(SITUATIONS, weights=weights)[0]
    size = (side, side)
    while True:
        scene = sample_scene(rng, world="occlusion", n_shapes=None if situation in ("move", "stretch") else
                             rng.choice((2, 3)))
        scene = Scene(scene.shapes, scene.background, seed, scene.ground, look)
        for _ in range(50):
            if situation in ("move", "stretch"):
                edits, clicks = _textured_edits(scene, situation == "stretch", rng, size, move_range, stretch_range)
                if not _fits_clear(apply_edits(scene, edits), {e.index for e in edits}, scene, 1.0):
                    continue
            else:
                found = _occlusion_edit(scene, situation, rng, 1.0, NEAR_LONGEST if near else OCCLUSION_LONGEST)
                if found is None:
                    continue
                edit, other = found
                edits = (edit,)
                picks = click_points(scene.shapes[edit.index], rng)
                chosen = rng.sample(picks, min(rng.choice((1, 2)), len(picks)))
                clicks = [(edit.index, where, uv) for where, uv in chosen]
            target = apply_edits(scene, edits)
            if all(_shows(scene, i, uv, size) and _shows(target, i, uv, size) for i, _, uv in clicks):
                return _case(name or f"case_{seed:06d}", "occlusion-near" if near else "occlusion", scene, edits,
                             clicks, size, situation,
                             keep_out=other if situation == "behind" else None)


def edit_box(scene: Scene, target: Scene, edit: Edit, size: tuple[int, int]) -> np.ndarray:
    """One edit's editable region, uint8 (H, W): a box (5 % of the side to spare) around the edited shape's source
    and answer; for a stretch only its pulled half, so the half that stays is judged by the PSNR outside."""
    w, h = size
    margin = max(2, round(0.05 * min(w, h)))
    box = _box_mask([shape_mask(scene, edit.index, size), shape_mask(target, edit.index, size)], size, margin)
    if edit.kind == "stretch":  # keep the half that does not move outside the mask
        s = scene.shapes[edit.index]
        cx, cy = s.cx * w, s.cy * h
        cols, rows = np.arange(w) + 0.5, np.arange(h) + 0.5
        half = {"right": cols[None, :] > cx, "left": cols[None, :] < cx,
                "top": rows[:, None] < cy, "bottom": rows[:, None] > cy}[edit.side]
        box = box * np.broadcast_to(half, box.shape)
    return box.astype(np.uint8)


def edit_mask(scene: Scene, target: Scene, edits: tuple[Edit, ...], size: tuple[int, int]) -> np.ndarray:
    """Editable region, uint8 (H, W): the union of every edit's :func:`edit_box`."""
    w, h = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for e in edits:
        mask = np.maximum(mask, edit_box(scene, target, e, size))
    return mask


BENCHMARK_SEED = 1000  # the seed of the shipped figures (scripts/eval_scenes.py's default)


def benchmark_case(index: int, benchmark: str = "textured", seed: int = BENCHMARK_SEED,
                   size: int | tuple[int, int] = 64, look: str = "trained") -> tuple[SceneCase, np.ndarray]:
    """Case ``index`` of ``benchmark`` at ``seed``, as :func:`write_cases` writes it: (record, mask).

    The occlusion benchmark draws each case's size itself (``size`` is not used) and is drawn in ``look``.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if benchmark == "flat":
        return make_case(seed * 1_000_003 + index, size, name=f"scene_{index:06d}")
    if benchmark in ("occlusion", "occlusion-near"):
        return make_occlusion_case(seed * 1_000_003 + index, name=f"case_{index:06d}", look=look,
                                   near=benchmark == "occlusion-near")
    return make_textured_case(seed * 1_000_003 + index, size, name=f"case_{index:06d}")




def next_move(case: SceneCase, dx: float, dy: float = 0.0) -> tuple[list[tuple[float, float, float, float]], np.ndarray]:
    """A second round for ``case`` (:mod:`dragnb.rounds`): its first edited shape moved again, from where the
    answer put it, by (dx, dy) fractions of the width and height; the handle at the shape's centroid.

    Returns (points, mask) as :func:`benchmark_case` does: one (hx, hy, tx, ty) pair in image pixels and the
    editable box around the shape before and after the move. Raises ValueError when the shape would leave the image.
    """
    w, h = case.size
    before = case.target_scene
    edit = Edit(case.edits[0].index, "move", dx, dy)
    after = edit.apply(before)
    if not fits(after.shapes[edit.index], aspect=w / h):
        raise ValueError(f"moving shape {edit.index} by ({dx}, {dy}) takes it out of the image; move it less")
    hx, hy = centroid(shape_mask(before, edit.index, (w, h)))
    return [(hx, hy, hx + dx * w, hy + dy * h)], edit_mask(before, after, (edit,), (w, h))
