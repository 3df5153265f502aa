"""The scene benchmark: drag cases with known answers, in the DragBench folder format, and their scoring.

A case moves one shape of a procedural scene (:mod:`dragnb.scenes`) by 10-20 % of the image side: the handle
is the shape's centre, the target its centre after the move, the mask a box around its source and target.
Each case folder holds what DragBench holds (``original_image.png``, ``meta_data.pkl`` =
``{'prompt', 'points': [[hx, hy], [tx, ty]], 'mask'}``, points in image pixels with x = column, mask uint8
H x W with 1 = editable) plus the known answer: ``target_image.png`` and ``case.json``.

Scoring is colour-agnostic: the moved shape is segmented in the edited image as the pixels, inside the
editable mask, that differ from the scene rendered *without* that shape (other shapes and the background
stay in that reference, so only the moved shape - and whatever the edit smeared - shows up). Success
(issue 3): centre within 5 % of the image side of where it should be, area kept within x0.6-1.6, and
PSNR >= 30 dB outside the mask.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dragnb.scenes import Scene, boxes_overlap, centroid, fits, moved, render, sample_scene, shape_mask, without

DIFF_THRESHOLD = 48.0  # max-channel RGB difference that counts as "shape here"; palette colours differ by >= 80
MAX_ERROR_FRACTION = 0.05  # success: centre error <= 5 % of the image side
AREA_RANGE = (0.6, 1.6)  # success: area kept within this ratio
MIN_PSNR_OUTSIDE = 30.0  # success: dB outside the mask


@dataclass(frozen=True)
class SceneCase:
    """One benchmark case as stored in ``case.json``; points in image pixels (x, y)."""

    name: str
    scene: Scene  # the original scene
    index: int  # which shape moves
    dx: float  # move as a fraction of the image width
    dy: float  # ... of the image height
    size: tuple[int, int]  # (width, height) in pixels
    handle: tuple[float, float]  # the shape's centre before the move
    target: tuple[float, float]  # where the handle should go
    expected_centre: tuple[float, float]  # centroid of the shape in the known answer
    expected_area: int  # its pixels in the known answer

    @property
    def target_scene(self) -> Scene:
        return moved(self.scene, self.index, self.dx, self.dy)


@dataclass(frozen=True)
class CaseScore:
    """How one edited image scores against its case's known answer."""

    name: str
    centre: tuple[float, float]  # centroid (x, y) of the segmented moved shape, image pixels (nan if none)
    expected_centre: tuple[float, float]
    error_px: float  # placement error, image pixels (inf if the shape vanished)
    error_fraction: float  # error_px / image side (shorter side)
    area_ratio: float  # segmented area / expected area
    psnr_outside: float  # dB between edited and original outside the mask (99 when identical)
    success: bool


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


# ------------------------------------------------------------------------------------------------- cases
def _edit_box(scene: Scene, index: int, target: Scene, size: tuple[int, int], margin: int) -> np.ndarray:
    """uint8 (H, W) mask, 1 inside a box around the shape's source and target pixels (plus ``margin``)."""
    w, h = size
    m = shape_mask(scene, index, size) | shape_mask(target, index, size)
    rows, cols = np.nonzero(m)
    mask = np.zeros((h, w), dtype=np.uint8)
    r0, r1 = max(0, rows.min() - margin), min(h, rows.max() + 1 + margin)
    c0, c1 = max(0, cols.min() - margin), min(w, cols.max() + 1 + margin)
    mask[r0:r1, c0:c1] = 1
    return mask


def make_case(seed: int, size: int | tuple[int, int] = 64, name: str | None = None,
              move_range: tuple[float, float] = (0.10, 0.20)) -> tuple[SceneCase, np.ndarray]:
    """A case, deterministic in ``seed``: (record, mask). The moved shape stays inside the image and clear of others."""
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
        end = shape_mask(target, index, (w, h))
        expected = centroid(end)
        case = SceneCase(
            name=name or f"scene_{seed:06d}",
            scene=scene,
            index=index,
            dx=dx,
            dy=dy,
            size=(w, h),
            handle=handle,
            target=(handle[0] + dx * w, handle[1] + dy * h),
            expected_centre=expected,
            expected_area=int(end.sum()),
        )
        margin = max(2, round(0.05 * min(w, h)))
        return case, _edit_box(scene, index, target, (w, h), margin)


def write_cases(out_dir: str | Path, n: int = 50, seed: int = 0, size: int | tuple[int, int] = 64) -> list[Path]:
    """Write ``n`` cases (folders ``scene_000000`` ...) in DragBench format plus known answers; return the folders."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for i in range(n):
        case, mask = make_case(seed * 1_000_003 + i, size, name=f"scene_{i:06d}")
        folder = out / case.name
        folder.mkdir(exist_ok=True)
        w, h = case.size
        render(case.scene, (w, h)).save(folder / "original_image.png")
        render(case.target_scene, (w, h)).save(folder / "target_image.png")
        meta = {"prompt": case.scene.prompt, "points": [list(case.handle), list(case.target)], "mask": mask}
        with open(folder / "meta_data.pkl", "wb") as f:
            pickle.dump(meta, f)
        record = asdict(case)
        record["scene"] = case.scene.to_dict()
        (folder / "case.json").write_text(json.dumps(record, indent=2) + "\n")
        folders.append(folder)
    return folders


def load_case(case_dir: str | Path) -> tuple[SceneCase, np.ndarray]:
    """(record, mask uint8 (H, W)) of a case folder written by :func:`write_cases`."""
    folder = Path(case_dir)
    data = json.loads((folder / "case.json").read_text())
    data["scene"] = Scene.from_dict(data["scene"])
    for key in ("size", "handle", "target", "expected_centre"):
        data[key] = tuple(data[key])
    with open(folder / "meta_data.pkl", "rb") as f:
        mask = np.asarray(pickle.load(f)["mask"], dtype=np.uint8)
    return SceneCase(**data), mask


# ------------------------------------------------------------------------------------------------- scoring
def segment_moved_shape(case: SceneCase, mask: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Boolean (H, W): editable pixels of ``edited`` that differ from the scene rendered without the moved shape."""
    reference = np.asarray(render(without(case.scene, case.index), case.size), dtype=np.float32)  # (H, W, 3)
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
    seg = segment_moved_shape(case, mask, edited)
    side = min(case.size)
    centre = centroid(seg)
    if seg.any():
        error = math.dist(centre, case.expected_centre)
    else:
        error = math.inf
    area_ratio = float(seg.sum()) / case.expected_area
    outside = mask == 0
    if outside.any():
        mse = float(((edited[outside].astype(np.float64) - original[outside]) ** 2).mean())
        psnr_out = 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)
    else:
        psnr_out = 99.0
    success = (error / side <= MAX_ERROR_FRACTION and AREA_RANGE[0] <= area_ratio <= AREA_RANGE[1]
               and psnr_out >= MIN_PSNR_OUTSIDE)
    return CaseScore(case.name, centre, case.expected_centre, error, error / side, area_ratio, psnr_out, bool(success))


def summarise(scores: list[CaseScore]) -> BenchSummary:
    """Success rate, median placement error and the rates of each success criterion."""
    n = len(scores)
    if n == 0:
        nan = float("nan")
        return BenchSummary(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    err = np.array([s.error_px for s in scores])
    frac = np.array([s.error_fraction for s in scores])
    area = np.array([s.area_ratio for s in scores])
    psnr = np.array([s.psnr_outside for s in scores])
    found = np.isfinite(err)
    return BenchSummary(
        n=n,
        success_rate=float(np.mean([s.success for s in scores])),
        median_error_px=float(np.median(err)),
        median_error_fraction=float(np.median(frac)),
        mean_error_px=float(err[found].mean()) if found.any() else math.inf,
        median_area_ratio=float(np.median(area)),
        median_psnr_outside=float(np.median(psnr)),
        placed_rate=float(np.mean(frac <= MAX_ERROR_FRACTION)),
        area_kept_rate=float(np.mean((area >= AREA_RANGE[0]) & (area <= AREA_RANGE[1]))),
        psnr_kept_rate=float(np.mean(psnr >= MIN_PSNR_OUTSIDE)),
    )


def case_dirs(root: str | Path) -> list[Path]:
    """Case folders under ``root`` (those holding a ``case.json``), sorted."""
    return sorted(p.parent for p in Path(root).glob("*/case.json"))


# ---------------------------------------------------------------------------------------------- command
def main(argv=None) -> int:
    """``write OUT [--n 50 --seed 0 --size 64]`` or ``score CASES EDITED`` (EDITED/<case>.png or <case>/edited.png)."""
    p = argparse.ArgumentParser(prog="python -m dragnb.scenebench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write N cases with known answers")
    w.add_argument("out")
    w.add_argument("--n", type=int, default=50)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--size", type=int, default=64)
    s = sub.add_parser("score", help="score edited images against the cases")
    s.add_argument("cases")
    s.add_argument("edited", help="folder of <case>.png or <case>/edited.png")
    args = p.parse_args(argv)
    if args.command == "write":
        folders = write_cases(args.out, args.n, args.seed, args.size)
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
