"""Read a single-shape image back into words: which colour, which shape, which background.

Used to score prompt adherence of generated samples by segmentation (not by eye): the background colour is
the median of the image border (top and bottom halves separately, for split backgrounds), the shape is the
largest blob of pixels that differ from the background, its colour is the nearest palette colour of the
blob's median, and its kind is the template (circle, square, upright triangle of the world, placed at the
blob's centroid with the blob's area) that overlaps it best by IoU. The bounding-box fill ratio
(triangle 0.5, circle pi/4 = 0.79, square 1.0) is kept as evidence; it reads rounded triangles as circles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dragnb.footprint import connected
from dragnb.tiny.drawing import shape_coverage
from dragnb.tiny.scenes import COLOURS, SHAPES, SQUARE_HALF, TRIANGLE_RADIUS, Scene, Shape

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (10, 3)
_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Reading:
    """What a single-shape image shows, as words, with the evidence."""

    colour: str | None  # nearest palette colour of the shape, None when no shape was found
    kind: str | None  # circle / square / triangle by bounding-box fill ratio
    background: tuple[str, ...]  # (colour,) or (top, bottom)
    area: int  # shape pixels
    fill: float  # area / bounding-box area
    iou: float = 0.0  # overlap with the best template


def nearest_colour(rgb: np.ndarray) -> str:
    """Palette name nearest (Euclidean RGB) to ``rgb`` (3,)."""
    d = ((_PALETTE - np.asarray(rgb, dtype=np.float32)[None]) ** 2).sum(1)
    return _NAMES[int(d.argmin())]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a boolean (H, W) mask (the first found among equals)."""
    mask = np.asarray(mask, dtype=bool)
    seen, best = np.zeros_like(mask), np.zeros_like(mask)
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        part = connected(mask, [(r0, c0)])
        seen |= part
        if part.sum() > best.sum():
            best = part
    return best


_AREA_PER_SIZE2 = {  # shape area / size^2 for the world's shapes (size in pixels of the shorter side)
    "circle": np.pi,
    "square": (2 * SQUARE_HALF) ** 2,
    "triangle": 3 * np.sqrt(3) / 4 * TRIANGLE_RADIUS**2,
}


def template_ious(blob: np.ndarray) -> dict[str, float]:
    """IoU of a boolean (H, W) blob with each shape kind placed at its centroid with its area."""
    h, w = blob.shape
    rows, cols = np.nonzero(blob)
    cx, cy = (cols.mean() + 0.5) / w, (rows.mean() + 0.5) / h
    out = {}
    for kind in SHAPES:
        size = np.sqrt(blob.sum() / _AREA_PER_SIZE2[kind]) / min(w, h)
        template = shape_coverage(Scene((Shape(kind, "white", cx, cy, size),), ("black",)), 0, (w, h)) >= 0.5
        out[kind] = float((template & blob).sum() / max(1, (template | blob).sum()))
    return out


def read_single_shape(image, threshold: float = 60.0) -> Reading:
    """Segment a single-shape image (PIL or uint8 (H, W, 3)) and name its colour, shape and background."""
    a = np.asarray(image, dtype=np.float32)[..., :3]  # (H, W, 3)
    h, w, _ = a.shape
    top = np.concatenate([a[0, :], a[: h // 2, 0], a[: h // 2, -1]])  # border pixels of the top half
    bottom = np.concatenate([a[-1, :], a[h // 2 :, 0], a[h // 2 :, -1]])
    top_c, bottom_c = np.median(top, 0), np.median(bottom, 0)
    top_n, bottom_n = nearest_colour(top_c), nearest_colour(bottom_c)
    background = (top_n,) if top_n == bottom_n else (top_n, bottom_n)
    bg = np.empty_like(a)
    bg[: h // 2] = top_c
    bg[h // 2 :] = bottom_c
    differs = np.abs(a - bg).max(-1) > threshold  # (H, W)
    blob = largest_component(differs)
    area = int(blob.sum())
    if area < 4:
        return Reading(None, None, background, area, 0.0)
    rows, cols = np.nonzero(blob)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = area / box
    ious = template_ious(blob)
    kind = max(ious, key=ious.get)
    colour = nearest_colour(body_colour(a[blob]))
    return Reading(colour, kind, background, area, float(fill), ious[kind])


def body_colour(pixels: np.ndarray) -> np.ndarray:
    """(3,) the colour a shape is painted in, from its pixels (P, 3): the median of those between the 50th and 85th
    percentile of brightness, so shading, dark stripes, dots and outlines below and the highlight above do not
    pull it off (for a flat shape, simply its colour)."""
    lum = pixels.mean(1)  # (P,)
    lo, hi = np.percentile(lum, [50, 85])
    body = pixels[(lum >= lo) & (lum <= hi)]
    return np.median(body if len(body) else pixels, 0)
