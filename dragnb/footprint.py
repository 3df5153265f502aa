"""Where the dragged object lies in the image: its footprint, for ``drag.start = "copy"`` (docs/method.md §3.6).

Pure functions on (H, W) arrays. The footprint of a handle is the 4-connected region of pixels whose colour lies
within a tolerance of the handle's own (the median of the 3 x 3 pixels around it), inside the editable mask, with
the holes it encloses filled in (a dotted or striped object is one region). An object lies inside the region the
user lets change, so while the region reaches the editable region's edge (or the image's, without a mask) it has
leaked into what lies around the object, and the tolerance is halved (down to :data:`MIN_TOLERANCE`). It is an
estimate made for objects of one main colour, such as the embedded model's shapes: on a photograph it finds the
part of the object that shares the handle's colour.

A striped, dotted or outlined object's colour region is often one stripe or its rim. The *figure* footprint
(:func:`figure_footprint`, ``drag.footprint = "figure"``) adds the pixels connected to that region whose colour is
unlike every colour on the editable region's edge (the ground the object stands on; :data:`UNLIKE_GROUND`), holes
filled: the whole object, and with it whatever touches it in another colour unlike the ground. Found in the whole
image, it tells whether the mask holds the object whole (:func:`lies_inside`): a move, not a deformation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

MIN_TOLERANCE = 10.0  # the tolerance is not halved below this (RGB distance, 0-255)
LATENT_COVER = 0.25  # on the latent grid, a footprint holds every cell it covers this fraction of or more
UNLIKE_GROUND = 60.0  # figure footprint: a pixel farther than this (RGB distance) from every ground colour is figure
GROUND_SAMPLES = 400  # figure footprint: at most this many pixels of the editable region's edge stand for the ground


def connected(region: np.ndarray, seeds: list[tuple[int, int]]) -> np.ndarray:
    """(H, W) bool: the pixels of ``region`` (H, W) bool 4-connected to any of ``seeds`` ((row, col), those in it)."""
    h, w = region.shape
    out = np.zeros_like(region, dtype=bool)
    stack = [(r, c) for r, c in seeds if 0 <= r < h and 0 <= c < w and region[r, c]]
    for r, c in stack:
        out[r, c] = True
    while stack:
        r, c = stack.pop()
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < h and 0 <= cc < w and region[rr, cc] and not out[rr, cc]:
                out[rr, cc] = True
                stack.append((rr, cc))
    return out


def fill_enclosed(region: np.ndarray) -> np.ndarray:
    """``region`` (H, W) bool with every hole it encloses filled: what cannot reach the border around it."""
    h, w = region.shape
    border = [(r, c) for r in range(h) for c in (0, w - 1)] + [(r, c) for c in range(w) for r in (0, h - 1)]
    return region | ~connected(~region, border)


def edge(region: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``region`` with a 4-neighbour outside it or on the image's border."""
    padded = np.pad(region, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inner


def colour_footprint(image: np.ndarray, point: tuple[float, float], editable: np.ndarray | None,
                     tolerance: float) -> np.ndarray:
    """(H, W) bool: the object under ``point`` (x, y) in ``image`` (H, W, 3) uint8, inside ``editable`` (H, W) bool
    (None: everywhere); pixels within ``tolerance`` (Euclidean RGB distance, 0-255 scale) of the handle's colour,
    connected to it, holes filled, the tolerance halved while the region reaches the edge of ``editable``. The
    handle's own pixel always belongs to it."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    allowed = np.ones((h, w), bool) if editable is None else np.asarray(editable, bool)
    r, c = int(np.clip(round(point[1]), 0, h - 1)), int(np.clip(round(point[0]), 0, w - 1))
    colour = np.median(img[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, 3), axis=0)
    distance = np.linalg.norm(img - colour, axis=-1)
    border = edge(allowed)
    while True:
        close = (distance <= tolerance) & allowed
        close[r, c] = True
        found = fill_enclosed(connected(close, [(r, c)]))
        if not (found & border).any() or tolerance <= MIN_TOLERANCE:
            return found
        tolerance = max(tolerance / 2, MIN_TOLERANCE)


def figure_footprint(image: np.ndarray, point: tuple[float, float], editable: np.ndarray | None,
                     tolerance: float, unlike: float = UNLIKE_GROUND) -> np.ndarray:
    """(H, W) bool: :func:`colour_footprint` together with the pixels connected to it whose colour lies farther
    than ``unlike`` from every colour on the edge of ``editable`` (the image's border without one), inside it, holes
    filled: the object whole, its stripes, dots and outline included, when the ground around it differs from it (an
    object whose own colour is also the ground's still reaches its outline through its colour region)."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    allowed = np.ones((h, w), bool) if editable is None else np.asarray(editable, bool)
    r, c = int(np.clip(round(point[1]), 0, h - 1)), int(np.clip(round(point[0]), 0, w - 1))
    ground = img[edge(allowed)]
    if len(ground) > GROUND_SAMPLES:
        ground = ground[np.linspace(0, len(ground) - 1, GROUND_SAMPLES).astype(int)]
    nearest = np.full((h, w), np.inf, np.float32)
    for colour in ground:  # the distance to the nearest ground colour, one colour at a time (memory stays H x W)
        np.minimum(nearest, np.linalg.norm(img - colour, axis=-1), out=nearest)
    figure = ((nearest > unlike) & allowed) | colour_footprint(image, point, editable, tolerance)
    return fill_enclosed(connected(figure, [(r, c)]))


def lies_inside(image: np.ndarray, point: tuple[float, float], editable: np.ndarray | None, tolerance: float,
                find: Callable[..., np.ndarray] = figure_footprint) -> bool:
    """Whether the object under ``point`` (x, y) in ``image`` (H, W, 3) uint8 lies wholly inside ``editable``
    (H, W) bool (None: everywhere): its footprint (``find``: :func:`figure_footprint` or :func:`colour_footprint`)
    found in the whole image (the ground: the colours on the image's border) has no pixel outside it. An object the
    mask cuts (a side the user means to pull) does not; as a figure, nor does one touching a shape the mask cuts."""
    if editable is None:
        return True
    return not (find(image, point, None, tolerance) & ~np.asarray(editable, bool)).any()


FOOTPRINTS = {"colour": colour_footprint, "figure": figure_footprint}  # drag.footprint


def shifted(region: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(H, W) bool: ``region`` moved ``dx`` pixels right and ``dy`` down; what leaves the image is dropped."""
    h, w = region.shape
    out = np.zeros_like(region, dtype=bool)
    rows, cols = np.nonzero(region)
    rows, cols = rows + dy, cols + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out[rows[inside], cols[inside]] = True
    return out


def dilated(region: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool: the pixels within ``radius`` of ``region`` (a square neighbourhood, in rows and columns)."""
    out = np.asarray(region, bool)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        n = out.shape[axis]
        out = np.logical_or.reduce([np.take(padded, range(k, k + n), axis=axis) for k in range(2 * radius + 1)])
    return out


def moved_region(footprints: list[np.ndarray], moves, margin: int) -> np.ndarray:
    """(H, W) bool: the pixels within ``margin`` of any object (``footprints``, each (H, W) bool) where it is and
    where its drag takes it (``moves``, (N, 2) (dx, dy) whole pixels): what a drag of these objects changes, for
    ``denoise.edit_region = "moved"``."""
    region = np.zeros(np.shape(footprints[0]), bool)
    for footprint, (dx, dy) in zip(footprints, moves):
        region |= footprint | shifted(footprint, dx, dy)
    return dilated(region, margin)
