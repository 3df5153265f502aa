"""The scene benchmarks: drag cases with known answers, in the DragBench folder format, and their scoring.

Two benchmarks, both written by :func:`write_cases`:

* ``flat`` (the first one, 50 cases at seed 1000 in ``scene_benchmark.json``): one flat shape moves by 10-20 %
  of the image side; the handle is its centre, the mask a box around its source and target.
* ``textured`` (issue 8; 120 cases at seed 1000): scenes of the textured world, handles where a person clicks
  (a corner or vertex, the highlight, a point near the edge, the centre), 1-3 pairs per case; 70 % rigid
  moves of one or two shapes (one or two handles on each), 30 % deformations: one side of a shape pulled
  out (:func:`dragnb.scenes.stretched`), its mask covering only that half, so the rest must stay.

Each case folder holds what DragBench holds (``original_image.png``, ``meta_data.pkl`` = ``{'prompt',
'points': [[hx, hy], [tx, ty], ...], 'mask'}``, points in image pixels with x = column, mask uint8 H x W with
1 = editable) plus the known answer: ``target_image.png`` and ``case.json``.

Scoring is colour-agnostic: each edited shape is segmented in the edited image as the pixels, inside the
editable mask, that differ from the known answer rendered *without* that shape (other shapes and the
background stay in that reference, so only the edited shape - and whatever the edit smeared - shows up).
Success (issue 3): for every edited shape, centre within 5 % of the image side of where it should be and area
kept within x0.6-1.6; and PSNR >= 30 dB outside the mask. For a stretch, where only the pulled half lies in
the mask, the edited shape must also overlap the answer's half by IoU >= 0.7 (the unedited image would
otherwise pass a short stretch: its half overlaps the answer's by 1 / factor <= 0.63). Centre, area and IoU are measured inside the mask.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dragnb.dragbench import safe_load_pickle, write_sample
from dragnb.images import psnr
from dragnb.points import DragPoints
from dragnb.scenes import (HIGHLIGHT_AT, SIDES, SQUARE_HALF, TRIANGLE_RADIUS, Scene, Shape, boxes_overlap, centroid,
                           fits, moved, render, sample_scene, shape_mask, stretched, without)

DIFF_THRESHOLD = 48.0  # max-channel RGB difference that counts as "shape here"; shapes differ from backgrounds by >= 64
MAX_ERROR_FRACTION = 0.05  # success: centre error <= 5 % of the image side
AREA_RANGE = (0.6, 1.6)  # success: area kept within this ratio
MIN_PSNR_OUTSIDE = 30.0  # success: dB outside the mask
MIN_IOU_STRETCH = 0.7  # success of a deformation also needs this overlap with the answer's pulled half: centre
# and area alone would pass a shape that did not stretch at all, as the half inside the mask barely moves
BENCHMARKS = ("flat", "textured")
DEFAULT_CASES = {"flat": 50, "textured": 120}  # the shipped figures' case counts
STRETCH_SHARE = 0.3  # textured benchmark: share of deformation cases
INSIDE = 0.8  # clicked points sit this far from the centre toward a corner or edge: on the object, not its border


@dataclass(frozen=True)
class Edit:
    """What the drag should do to one shape: a rigid move, or one side pulled out."""

    index: int  # which shape
    kind: str  # "move" | "stretch"
    dx: float = 0.0  # move, fraction of the image width
    dy: float = 0.0  # move, fraction of the image height
    side: str = "right"  # stretch: which side (dragnb.scenes.SIDES)
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


def record_key(benchmark: str) -> str:
    """Where ``scene_benchmark.json`` keeps a benchmark's runs: ``runs`` (flat, its first key) or ``<name>_runs``."""
    return "runs" if benchmark == "flat" else f"{benchmark}_runs"


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
        )


@dataclass(frozen=True)
class ShapeScore:
    """How one edited shape came out."""

    index: int
    centre: tuple[float, float]  # centroid (x, y) of the segmented shape, image pixels (nan if none)
    expected_centre: tuple[float, float]
    error_px: float  # placement error, image pixels (inf if the shape vanished)
    area_ratio: float  # segmented area / expected area
    iou: float  # overlap of the segmentation with the known answer's shape


@dataclass(frozen=True)
class CaseScore:
    """How one edited image scores against its case's known answer (worst edited shape for multi-shape cases)."""

    name: str
    kind: str  # "move" | "stretch"
    pairs: int
    centre: tuple[float, float]  # of the worst-placed edited shape
    expected_centre: tuple[float, float]
    error_px: float  # the largest placement error over edited shapes, image pixels (inf if one vanished)
    error_fraction: float  # error_px / image side (shorter side)
    area_ratio: float  # the edited shape's area ratio farthest from 1
    iou: float  # the lowest IoU over edited shapes
    psnr_outside: float  # dB between edited and original outside the mask (99 when identical)
    success: bool
    shapes: tuple[ShapeScore, ...] = ()


@dataclass(frozen=True)
class BenchSummary:
    """Figures over a set of cases."""

    n: int
    success_rate: float
    median_error_px: float
    median_error_fraction: float
    mean_error_px: float  # over cases where a shape was found
    median_area_ratio: float
    median_psnr_outside: float
    placed_rate: float  # fraction with error <= 5 % of the side
    area_kept_rate: float  # fraction with area ratio in 0.6-1.6
    psnr_kept_rate: float  # fraction with PSNR outside >= 30 dB
    median_iou: float = float("nan")
    success_by_kind: dict | None = None  # {"move": rate, "stretch": rate} where present
    n_by_kind: dict | None = None


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


def _fits_clear(target: Scene, edited: set[int], source: Scene, aspect: float) -> bool:
    """Edited shapes in ``target`` fit the image and keep clear of every other shape's source and target."""
    for i in edited:
        s = target.shapes[i]
        if not fits(s, aspect=aspect):
            return False
        for j in range(len(target.shapes)):
            if j == i:
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
            pairs: list[tuple[int, str, tuple[float, float]]] = []  # (shape, where, local point)
            if stretch:
                index = rng.randrange(len(scene.shapes))
                side = rng.choice(SIDES)
                shape = scene.shapes[index]
                edits = (Edit(index, "stretch", side=side, factor=rng.uniform(*stretch_range)),)
                pairs.append((index, "edge", _side_point(shape, side, rng)))
                if shape.kind == "square" and rng.random() < 0.5:
                    pairs.append((index, "edge", _side_point(shape, side, rng)))
            else:
                n_moved = 2 if len(scene.shapes) > 1 and rng.random() < 0.3 else 1
                indices = rng.sample(range(len(scene.shapes)), n_moved)
                edit_list = []
                for index in indices:
                    dist = rng.uniform(*move_range) * side_px
                    angle = rng.uniform(0, 2 * math.pi)
                    edit_list.append(Edit(index, "move", dist * math.cos(angle) / w, dist * math.sin(angle) / h))
                    clicks = click_points(scene.shapes[index], rng)
                    k = 2 if rng.random() < 0.35 and len(pairs) + 2 <= 3 else 1
                    for where, uv in rng.sample(clicks, min(k, len(clicks))):
                        pairs.append((index, where, uv))
                edits = tuple(edit_list)
            target = apply_edits(scene, edits)
            if _fits_clear(target, {e.index for e in edits}, scene, aspect):
                break
        else:
            continue
        out_pairs = tuple(
            Pair(scene.shapes[i].to_image(*uv, w, h), target.shapes[i].to_image(*uv, w, h), i, where)
            for i, where, uv in pairs
        )
        mask = edit_mask(scene, target, edits, (w, h))
        case = SceneCase(name=name or f"case_{seed:06d}", benchmark="textured", scene=scene, edits=edits,
                         pairs=out_pairs, size=(w, h), expected=_expected(target, edits, (w, h), mask))
        return case, mask


def edit_mask(scene: Scene, target: Scene, edits: tuple[Edit, ...], size: tuple[int, int]) -> np.ndarray:
    """Editable region, uint8 (H, W): a box (5 % of the side to spare) around each edited shape's source and answer;
    for a stretch only its pulled half, so the half that stays is judged by the PSNR outside."""
    w, h = size
    margin = max(2, round(0.05 * min(w, h)))
    mask = np.zeros((h, w), dtype=np.uint8)
    for e in edits:
        box = _box_mask([shape_mask(scene, e.index, size), shape_mask(target, e.index, size)], size, margin)
        if e.kind == "stretch":  # keep the half that does not move outside the mask
            s = scene.shapes[e.index]
            cx, cy = s.cx * w, s.cy * h
            cols, rows = np.arange(w) + 0.5, np.arange(h) + 0.5
            half = {"right": cols[None, :] > cx, "left": cols[None, :] < cx,
                    "top": rows[:, None] < cy, "bottom": rows[:, None] > cy}[e.side]
            box = box * np.broadcast_to(half, box.shape)
        mask = np.maximum(mask, box.astype(np.uint8))
    return mask


BENCHMARK_SEED = 1000  # the seed of the shipped figures (scripts/eval_scenes.py's default)


def benchmark_case(index: int, benchmark: str = "textured", seed: int = BENCHMARK_SEED,
                   size: int | tuple[int, int] = 64) -> tuple[SceneCase, np.ndarray]:
    """Case ``index`` of ``benchmark`` at ``seed``, as :func:`write_cases` writes it: (record, mask)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if benchmark == "flat":
        return make_case(seed * 1_000_003 + index, size, name=f"scene_{index:06d}")
    return make_textured_case(seed * 1_000_003 + index, size, name=f"case_{index:06d}")


def write_cases(out_dir: str | Path, n: int | None = None, seed: int = BENCHMARK_SEED, size: int | tuple[int, int] = 64,
                benchmark: str = "flat", start: int = 0) -> list[Path]:
    """Write cases ``start .. start + n - 1`` of ``benchmark`` in DragBench format plus known answers; the folders.

    Folders are ``scene_000000`` ... (flat) or ``case_000000`` ... (textured); ``n`` defaults to the shipped count.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    n = DEFAULT_CASES[benchmark] if n is None else n
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for i in range(start, start + n):
        case, mask = benchmark_case(i, benchmark, seed, size)
        folder = out / case.name
        w, h = case.size
        points = DragPoints(np.array([p.handle for p in case.pairs]), np.array([p.target for p in case.pairs]))
        write_sample(folder, np.asarray(render(case.scene, (w, h))), case.scene.prompt, points, mask)
        render(case.target_scene, (w, h)).save(folder / "target_image.png")
        (folder / "case.json").write_text(json.dumps(case.to_dict(), indent=2) + "\n")
        folders.append(folder)
    return folders


def load_case(case_dir: str | Path) -> tuple[SceneCase, np.ndarray]:
    """(record, mask uint8 (H, W)) of a case folder written by :func:`write_cases`."""
    folder = Path(case_dir)
    case = SceneCase.from_dict(json.loads((folder / "case.json").read_text()))
    mask = np.asarray(safe_load_pickle(folder / "meta_data.pkl")["mask"], dtype=np.uint8)
    return case, mask


# ------------------------------------------------------------------------------------------------- scoring
def segment_shape(answer: Scene, index: int, mask: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Boolean (H, W): editable pixels of ``edited`` (H, W, 3) that differ from the known ``answer`` rendered
    without shape ``index``."""
    size = (edited.shape[1], edited.shape[0])
    reference = np.asarray(render(without(answer, index), size), dtype=np.float32)  # (H, W, 3)
    differs = np.abs(edited.astype(np.float32) - reference).max(-1) > DIFF_THRESHOLD  # (H, W)
    return differs & (mask > 0)


def _as_array(image, size: tuple[int, int]) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("RGB")
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)  # (H, W, 3)


def score_case(case_dir: str | Path, edited_image) -> CaseScore:
    """Score an edited image (PIL, uint8 array or path) against the case's known answer."""
    case, mask = load_case(case_dir)
    if isinstance(edited_image, (str, Path)):
        edited_image = Image.open(edited_image)
    edited = _as_array(edited_image, case.size)
    original = np.asarray(Image.open(Path(case_dir) / "original_image.png").convert("RGB"), dtype=np.uint8)
    target = case.target_scene
    side = min(case.size)
    shapes = []
    for exp in case.expected:
        seg = segment_shape(target, exp.index, mask, edited)
        centre = centroid(seg)
        error = math.dist(centre, exp.centre) if seg.any() else math.inf
        answer = shape_mask(target, exp.index, case.size) & (mask > 0)
        union = (seg | answer).sum()
        shapes.append(ShapeScore(exp.index, centre, exp.centre, error, float(seg.sum()) / exp.area,
                                 float((seg & answer).sum() / union) if union else 0.0))
    worst = max(shapes, key=lambda s: s.error_px)
    area = max(shapes, key=lambda s: abs(math.log(s.area_ratio)) if s.area_ratio > 0 else math.inf).area_ratio
    outside = mask == 0
    psnr_out = psnr(edited[outside], original[outside]) if outside.any() else 99.0
    success = (all(s.error_px / side <= MAX_ERROR_FRACTION and AREA_RANGE[0] <= s.area_ratio <= AREA_RANGE[1]
                   for s in shapes) and psnr_out >= MIN_PSNR_OUTSIDE
               and (case.kind == "move" or min(s.iou for s in shapes) >= MIN_IOU_STRETCH))
    return CaseScore(case.name, case.kind, len(case.pairs), worst.centre, worst.expected_centre, worst.error_px,
                     worst.error_px / side, area, min(s.iou for s in shapes), psnr_out, bool(success), tuple(shapes))


def summarise(scores: list[CaseScore]) -> BenchSummary:
    """Success rate, median placement error and the rates of each success criterion."""
    n = len(scores)
    if n == 0:
        nan = float("nan")
        return BenchSummary(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    err = np.array([s.error_px for s in scores])
    frac = np.array([s.error_fraction for s in scores])
    area = np.array([s.area_ratio for s in scores])
    psnr_ = np.array([s.psnr_outside for s in scores])
    found = np.isfinite(err)
    kinds = sorted({s.kind for s in scores})
    return BenchSummary(
        n=n,
        success_rate=float(np.mean([s.success for s in scores])),
        median_error_px=float(np.median(err)),
        median_error_fraction=float(np.median(frac)),
        mean_error_px=float(err[found].mean()) if found.any() else math.inf,
        median_area_ratio=float(np.median(area)),
        median_psnr_outside=float(np.median(psnr_)),
        placed_rate=float(np.mean(frac <= MAX_ERROR_FRACTION)),
        area_kept_rate=float(np.mean((area >= AREA_RANGE[0]) & (area <= AREA_RANGE[1]))),
        psnr_kept_rate=float(np.mean(psnr_ >= MIN_PSNR_OUTSIDE)),
        median_iou=float(np.median([s.iou for s in scores])),
        success_by_kind={k: float(np.mean([s.success for s in scores if s.kind == k])) for k in kinds},
        n_by_kind={k: sum(s.kind == k for s in scores) for k in kinds},
    )


def case_dirs(root: str | Path) -> list[Path]:
    """Case folders under ``root`` (those holding a ``case.json``), sorted."""
    return sorted(p.parent for p in Path(root).glob("*/case.json"))


# ---------------------------------------------------------------------------------------------- command
def main(argv=None) -> int:
    """``write OUT [--benchmark flat|textured --n N --seed 1000 --size 64]`` or ``score CASES EDITED``.

    EDITED holds ``<case>.png`` or ``<case>/edited.png`` per case.
    """
    p = argparse.ArgumentParser(prog="python -m dragnb.scenebench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write N cases with known answers")
    w.add_argument("out")
    w.add_argument("--benchmark", choices=BENCHMARKS, default="flat")
    w.add_argument("--n", type=int, default=None, help="cases (default: 50 flat, 120 textured)")
    w.add_argument("--seed", type=int, default=BENCHMARK_SEED)
    w.add_argument("--size", type=int, default=64)
    s = sub.add_parser("score", help="score edited images against the cases")
    s.add_argument("cases")
    s.add_argument("edited", help="folder of <case>.png or <case>/edited.png")
    args = p.parse_args(argv)
    if args.command == "write":
        folders = write_cases(args.out, args.n, args.seed, args.size, args.benchmark)
        print(f"wrote {len(folders)} cases to {args.out}")
        return 0
    scores = []
    for folder in case_dirs(args.cases):
        for candidate in (Path(args.edited) / f"{folder.name}.png", Path(args.edited) / folder.name / "edited.png"):
            if candidate.exists():
                scores.append(score_case(folder, candidate))
                break
    for sc in scores:
        print(json.dumps(asdict(sc)))
    print(json.dumps(asdict(summarise(scores))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
