"""The one coordinate convention of dragnb and every conversion between its grids.

At the API edge points are **image pixels as (x, y)**, x = column, in the user's original image, as in
DragBench's ``meta_data.pkl``. Inside the method points are **(row, col) on the feature grid** (the UNet
feature map resized to ``DragSettings.feature_scale`` of the model image, H/2 x W/2 by default), as the
reference code keeps them. Conversions scale by the grid ratio with no half-pixel shift, as the reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import typing

import numpy as np

from .errors import InputError

if typing.TYPE_CHECKING:  # torch loads where a grid is computed: the point checks run before it (issue 26)
    import torch


@dataclass(frozen=True)
class DragPoints:
    """Handle/target pairs in image pixels of the original image."""

    handles: np.ndarray  # (N, 2) float, (x, y) image pixels, h_i
    targets: np.ndarray  # (N, 2) float, (x, y) image pixels, g_i

    def __len__(self) -> int:
        return len(self.handles)

    def lengths(self) -> np.ndarray:
        """(N,) float: each pair's drag, |g_i - h_i|, in image pixels."""
        return np.linalg.norm(np.asarray(self.targets, float) - np.asarray(self.handles, float), axis=1)

    def pixel_moves(self) -> np.ndarray:
        """(N, 2) int: each pair's drag (dx, dy) rounded to whole image pixels."""
        return np.rint(np.asarray(self.targets, float) - np.asarray(self.handles, float)).astype(int)

    def as_list(self) -> list[list[float]]:
        """Alternating handle, target [x, y] pairs, the DragBench ``points`` layout."""
        out: list[list[float]] = []
        for h, g in zip(self.handles, self.targets):
            out += [[float(h[0]), float(h[1])], [float(g[0]), float(g[1])]]
        return out


def make_points(pairs, image_size: tuple[int, int], argument: str = "points") -> DragPoints:
    """Validate pairs ``[(hx, hy, tx, ty), ...]`` or alternating ``[[hx, hy], [tx, ty], ...]``.

    ``image_size`` is (height, width) of the original image; every point must lie inside it.
    """
    try:
        arr = np.asarray(pairs, dtype=np.float64) if len(pairs) else np.zeros((0, 4))
    except (TypeError, ValueError) as exc:  # text, None, ragged lists
        raise InputError(argument, f"points must be numbers, (hx, hy, tx, ty) per pair or [x, y] per point; got "
                         f"{str(pairs)[:80]} ({exc})") from None
    if arr.ndim == 2 and arr.shape[1] == 2:  # alternating handle, target points
        if len(arr) % 2:
            raise InputError(argument, f"got {len(arr)} points; points come in handle/target pairs, "
                             "so give an even number (add the missing target or drop the last handle)")
        arr = arr.reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(argument, f"expected pairs of (hx, hy, tx, ty), got an array of shape {arr.shape}")
    if len(arr) == 0:
        raise InputError(argument, "no handle/target pair given; add at least one")
    if not np.isfinite(arr).all():
        raise InputError(argument, "points must be finite numbers")
    h, w = image_size
    for i, (hx, hy, tx, ty) in enumerate(arr):
        for kind, x, y in (("handle", hx, hy), ("target", tx, ty)):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                raise InputError(argument, f"{kind} of pair {i} at (x={x:g}, y={y:g}) lies outside the "
                                 f"{w}x{h} image; x must be in [0, {w - 1}] and y in [0, {h - 1}] (image pixels)")
    return DragPoints(handles=arr[:, :2].copy(), targets=arr[:, 2:].copy())


def parse_points(text: str, image_size: tuple[int, int], argument: str = "--points") -> DragPoints:
    """Parse ``"hx,hy,tx,ty;hx,hy,tx,ty"`` (image pixels, x = column)."""
    pairs = []
    for i, chunk in enumerate(c for c in re.split(r"[;\n]", text) if c.strip()):
        parts = [p for p in re.split(r"[,\s]+", chunk.strip()) if p]
        if len(parts) != 4:
            raise InputError(argument, f"pair {i} {chunk.strip()!r} has {len(parts)} numbers; write each pair "
                             "as hx,hy,tx,ty and separate pairs with ';'")
        try:
            pairs.append([float(p) for p in parts])
        except ValueError:
            raise InputError(argument, f"pair {i} {chunk.strip()!r} is not four numbers") from None
    return make_points(pairs, image_size, argument)


def feature_grid(model_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(rows, cols) of the supervision grid for a model image of (H, W): ``scale`` of each side (H/2 x W/2)."""
    return int(model_size[0] * scale), int(model_size[1] * scale)


def image_to_grid(xy: np.ndarray, image_size: tuple[int, int], grid_size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) image pixels (x, y) -> (N, 2) grid (row, col), scaling by the grid/image ratio."""
    import torch

    h, w = image_size
    gh, gw = grid_size
    xy = torch.as_tensor(np.asarray(xy), dtype=torch.float32)
    return torch.stack([xy[:, 1] * gh / h, xy[:, 0] * gw / w], dim=1)


def held_on_grid(rc: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) grid (row, col) held within the grid's pixels: a point on an image's last pixels scales past the
    last grid pixel (63 of 64 -> 31.5 of 32, which rounds to 32) and is held at it (31)."""
    import torch

    top = torch.tensor([grid_size[0] - 1, grid_size[1] - 1], dtype=rc.dtype, device=rc.device)
    return torch.minimum(rc.clamp(min=0), top)


def grid_to_image(rc: torch.Tensor, image_size: tuple[int, int], grid_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) grid (row, col) -> (N, 2) image pixels (x, y); the inverse of :func:`image_to_grid`."""
    h, w = image_size
    gh, gw = grid_size
    import torch

    rc = torch.as_tensor(rc, dtype=torch.float32).detach().cpu()
    return torch.stack([rc[:, 1] * w / gw, rc[:, 0] * h / gh], dim=1).numpy().astype(np.float64)
