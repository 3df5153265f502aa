"""FastDrag (Zhao et al., NeurIPS 2024): z_t moved in one step along a warp field (docs/method.md §11.1).

No optimiser and no UNet call: each editable latent pixel C moves, for each drag A → B, by
``|PC| / |AP| · (B − A)``, where P is where the ray from A through C meets a circle around the editable region
(the pixel at A moves the whole way, pixels near the circle hardly at all: an elastic stretch); several drags
combine with weights ∝ 1 / |C − A_i|, normalised. The latent is scattered to the moved positions, and the holes left
behind are filled by bilateral nearest-neighbour interpolation (each hole from the nearest filled pixel left, right,
up and down, weighted by 1 / distance). The denoising then runs as for the paper's drag, with reference-latent control
keeping the look (FastDrag swaps in the inversion's keys and values instead, the same idea).

Where this differs from the authors' code (XuanjiaZ/FastDrag), by choice: where two pixels land on one, the one that
moved farther is kept (dragged content lies over what it passes; the authors keep the first in row order), and a
pixel lands only inside the editable region (theirs may overwrite outside it). With no mask the whole latent is the
region (theirs needs a mask).

The pure functions :func:`warp_field` and :func:`forward_warp` work on the latent grid (the holes are filled by
:func:`dragnb.drag.copy.fill_holes`, which ``drag.start = "copy"`` shares).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ..callbacks import Callback
from ..config import Settings
from ..drag import DragResult
from ..drag.copy import fill_holes
from ..models import Model
from ..points import feature_grid


def warp_field(size: tuple[int, int], handles: np.ndarray, targets: np.ndarray, editable: np.ndarray,
               circle_scale: float = 1.0) -> np.ndarray:
    """(h, w, 2) displacement (rows, cols) of each latent pixel; 0 outside ``editable`` (h, w) bool.

    ``handles``, ``targets``: (N, 2) (row, col) on the latent grid. The circle: centred on the editable region's
    bounding box through its corner pixels (radius half the box's diagonal between pixel centres), times
    ``circle_scale``.
    """
    h, w = size
    rows, cols = np.nonzero(editable)
    if not len(rows):
        return np.zeros((h, w, 2))
    centre = np.array([(rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2])
    radius = circle_scale * 0.5 * max(np.hypot(rows.max() - rows.min(), cols.max() - cols.min()), 1.0)
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1).reshape(-1, 2).astype(float)
    moves, weights = [], []
    for a, b in zip(np.asarray(handles, float), np.asarray(targets, float)):
        ac = grid - a
        dist = np.linalg.norm(ac, axis=1)  # |AC|
        u = ac / np.maximum(dist, 1e-9)[:, None]
        f = a - centre
        along = u @ f
        reach = -along + np.sqrt(np.maximum(along ** 2 - (f @ f - radius ** 2), 0.0))  # |AP|: A + |AP| u on the circle
        scale = np.where(dist < 1e-9, 1.0, np.clip(1.0 - dist / np.maximum(reach, 1e-9), 0.0, 1.0))  # |PC| / |AP|
        moves.append(scale[:, None] * (b - a))
        weights.append(1.0 / np.maximum(dist, 1e-6))
    weights = np.stack(weights)  # (N, h*w)
    field = np.einsum("np,npc->pc", weights / weights.sum(0), np.stack(moves)).reshape(h, w, 2)
    return np.where(editable[..., None], field, 0.0)


def forward_warp(z: torch.Tensor, field: np.ndarray, editable: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Scatter the editable pixels of ``z`` (1, C, h, w) to their rounded moved positions inside the editable region.

    Returns the warped latent and its holes (h, w) bool: editable pixels nothing landed on. Where several land on one
    pixel the one that moved farthest is kept; pixels outside ``editable`` neither move nor are written."""
    h, w = field.shape[:2]
    rows, cols = np.nonzero(editable)
    move = field[rows, cols]
    to_rows, to_cols = np.rint(rows + move[:, 0]).astype(int), np.rint(cols + move[:, 1]).astype(int)
    inside = (to_rows >= 0) & (to_rows < h) & (to_cols >= 0) & (to_cols < w)
    inside[inside] &= editable[to_rows[inside], to_cols[inside]]
    order = np.argsort(np.linalg.norm(move, axis=1)[inside], kind="stable")  # the farthest-moved written last
    src_r, src_c = rows[inside][order], cols[inside][order]
    dst_r, dst_c = to_rows[inside][order], to_cols[inside][order]
    values = z[0].detach().cpu().numpy()  # (C, h, w)
    out = values.copy()
    out[:, dst_r, dst_c] = values[:, src_r, src_c]  # numpy: with repeated indices the last assignment holds
    landed = np.zeros((h, w), bool)
    landed[dst_r, dst_c] = True
    return torch.from_numpy(out)[None].to(z.device, z.dtype), editable & ~landed


def moved_points(points: np.ndarray, field: np.ndarray) -> np.ndarray:
    """(N, 2) latent (row, col) points moved by the field at their nearest latent pixel."""
    h, w = field.shape[:2]
    at = np.clip(np.rint(points).astype(int), 0, [h - 1, w - 1]) if len(points) else np.zeros((0, 2), int)
    return points + field[at[:, 0], at[:, 1]]


def fastdrag(settings: Settings, model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor,
             targets: torch.Tensor, mask: torch.Tensor | None, *, inverted: Sequence[torch.Tensor] | None = None,
             callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
             keep_features: bool = False, progress: bool = False) -> DragResult:
    """Warp ``zt`` (1, 4, h, w) so the content at each handle lands on its target. ``handles``, ``targets``: (N, 2)
    (row, col) on the supervision grid; ``mask``: (1, 1, h, w) latent, 1 = editable, None = all. The result's
    ``extras`` keep the field and the holes for the views."""
    start = time.perf_counter()
    size = tuple(zt.shape[-2:])
    grid = feature_grid((size[0] * model.vae_scale, size[1] * model.vae_scale), settings.drag.feature_scale)
    to_latent = np.array([size[0] / grid[0], size[1] / grid[1]])
    editable = np.ones(size, bool) if mask is None else mask[0, 0].detach().cpu().numpy() > 0.5
    field = warp_field(size, handles.cpu().numpy() * to_latent, targets.cpu().numpy() * to_latent, editable,
                       settings.fastdrag.circle_scale)
    warped, holes = forward_warp(zt, field, editable)
    if settings.fastdrag.fill == "bilateral":
        warped = fill_holes(warped, holes)
    moved = torch.from_numpy(moved_points(handles.cpu().numpy() * to_latent, field) / to_latent).float()
    return DragResult(latent=warped, initial_handles=handles.cpu().float().clone(), handles=moved,
                      targets=targets.cpu().float(), feature_size=grid, stop_reason="one step",
                      mask_used=mask is not None, t=int(t), original_latent=zt.detach().clone(), text=text,
                      timesteps=[int(t)], seconds=time.perf_counter() - start, method="fastdrag",
                      extras={"field": field, "holes": holes, "editable": editable})
