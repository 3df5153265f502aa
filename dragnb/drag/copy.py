"""``drag.start = "copy"``: the optimisation starts from z_t with each long drag's object already moved (§3.6).

An extension, not in the paper. Drags longer than about a fifth of the image's side do not land by motion
supervision on the embedded model with any setting measured (docs/embedded-model.md): the handle's look is pulled
along one feature pixel at a time, the shape smears or stays behind, and what it leaves is drawn again as a ghost.
So before the loop, each such pair's object (its footprint, :mod:`dragnb.footprint`, on the latent grid) is copied
in z_t by the whole latent cells nearest its drag, the place it leaves first filled from around it
(:func:`fill_holes`, FastDrag's bilateral fill); the loop then starts with each handle where its content now is and
drags what remains (less than a cell), or holds it there. The unedited branch, F_0 and the handles the tracker and
the motion term compare with stay those of the unedited z_t.

With ``drag.image_copy``, the pairs dragging ``drag.image_beyond`` or more are moved in the image instead, by
whole image pixels (:func:`copy_in_image`), the place each leaves filled from around it or, with
``drag.image_fill = "repaint"``, painted anew by the model (:mod:`.repaint`, on :func:`vacated`), and the session
inverts that image (:class:`MovedStart`): the loop starts from its z_t with each such handle at its target.

Pure functions on latents and images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..footprint import dilated, shifted


@dataclass
class MovedStart:
    """``drag.image_copy``: where the loop starts, made by the session (:func:`copy_in_image`, then inverted)."""

    latent: torch.Tensor  # z_t (1, C, h, w) of ``image``, at the drag's timestep
    encoded: torch.Tensor  # z_0 (1, C, h, w) of ``image``, the VAE's encoding the inversion started from
    moved: torch.Tensor  # (N,) bool: the pairs moved in the image (their handles start at their targets)
    image: np.ndarray  # (H, W, 3) uint8, the input with the objects moved


def fill_holes(z: torch.Tensor, holes: np.ndarray) -> torch.Tensor:
    """Bilateral nearest-neighbour interpolation of ``z`` (1, C, h, w) at ``holes`` (h, w) bool: each hole takes the
    nearest pixels that are not holes to its left, right, up and down (those that exist), weighted by 1 / distance
    and normalised. A new tensor."""
    values = z[0].detach().cpu().numpy()  # (C, h, w)
    filled = values.copy()
    h, w = holes.shape
    for r, c in zip(*np.nonzero(holes)):
        found = []  # (distance, value) of the nearest non-hole in each direction
        for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0)):
            k, rr, cc = 1, r + dr, c + dc
            while 0 <= rr < h and 0 <= cc < w and holes[rr, cc]:
                k, rr, cc = k + 1, rr + dr, cc + dc
            if 0 <= rr < h and 0 <= cc < w:
                found.append((k, values[:, rr, cc]))
        if found:
            weights = np.array([1.0 / k for k, _ in found])
            filled[:, r, c] = np.tensordot(weights / weights.sum(), np.stack([v for _, v in found]), axes=1)
    return torch.from_numpy(filled)[None].to(z.device, z.dtype)


def cell_moves(handles: torch.Tensor, targets: torch.Tensor, scale: tuple[float, float]) -> np.ndarray:
    """(N, 2) int: each drag in whole latent cells (rows, cols), nearest; ``handles``, ``targets`` (N, 2) (row, col)
    on the supervision grid, ``scale`` latent cells per feature pixel (rows, cols)."""
    moves = (targets - handles).detach().cpu().double().numpy() * np.asarray(scale, float)
    return np.rint(moves).astype(int)


def copy_start(z: torch.Tensor, footprints: np.ndarray, moves: np.ndarray, holes: np.ndarray | None = None,
               allowed: np.ndarray | None = None) -> torch.Tensor:
    """``z`` (1, C, h, w) with each footprint's cells (``footprints`` (N, h, w) bool, one per pair; an empty one is
    not copied) moved by its pair's ``moves`` (N, 2) whole cells (rows, cols): ``holes`` (h, w) bool (default: every
    footprint) are first filled from around them (:func:`fill_holes`), then each footprint receives ``z``'s own
    values at its moved place (later pairs over earlier ones; what would leave the grid, or land outside ``allowed``
    (h, w) bool when given, is dropped). A new tensor."""
    h, w = z.shape[-2:]
    out = fill_holes(z, footprints.any(0) if holes is None else holes)
    for footprint, (dr, dc) in zip(footprints, moves):
        rows, cols = np.nonzero(footprint)
        to_rows, to_cols = rows + dr, cols + dc
        inside = (to_rows >= 0) & (to_rows < h) & (to_cols >= 0) & (to_cols < w)
        if allowed is not None:
            inside[inside] = allowed[to_rows[inside], to_cols[inside]]
        out[:, :, to_rows[inside], to_cols[inside]] = z[:, :, rows[inside], cols[inside]].to(out.dtype)
    return out


def _left(footprints: np.ndarray, editable: np.ndarray | None) -> np.ndarray:
    """(H, W) bool: the places the objects (``footprints`` (N, H, W) bool) leave, grown by one pixel (an object's
    soft rim), inside ``editable`` (None: everywhere): what :func:`copy_in_image` fills."""
    out = dilated(np.any(footprints, 0), 1)
    return out if editable is None else out & np.asarray(editable, bool)


def vacated(footprints: np.ndarray, moves: np.ndarray, editable: np.ndarray | None) -> np.ndarray:
    """(H, W) bool: where :func:`copy_in_image` fills and draws no object: the places the objects leave
    (:func:`_left`) less where each lands after its ``moves`` (N, 2) (dx, dy) pixels."""
    out = _left(footprints, editable)
    for footprint, (dx, dy) in zip(footprints, moves):
        out &= ~shifted(footprint, int(dx), int(dy))
    return out


def copy_in_image(image: np.ndarray, footprints: np.ndarray, moves: np.ndarray,
                  editable: np.ndarray | None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with each object (``footprints`` (N, H, W) bool) moved by its ``moves`` (N, 2)
    (dx, dy) whole pixels: :func:`copy_start` on the pixels, the places the objects leave grown by one pixel (an
    object's soft rim) before they are filled, and each object drawn only where ``editable`` (H, W) bool allows
    (None: everywhere), so what the mask leaves out stays in front. A new array."""
    allowed = None if editable is None else np.asarray(editable, bool)
    pixels = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None]
    out = copy_start(pixels, footprints, np.asarray(moves)[:, ::-1], _left(footprints, allowed), allowed)
    return np.clip(np.rint(out[0].permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
