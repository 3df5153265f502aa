"""Point tracking (pure functions): re-locate each handle by nearest-neighbour feature search.

h_i ← argmin over q in Ω(h_i, r2) of ||F(q) - F_0(h_i^0)||_1, with F_0 the features before optimisation and
h_i^0 the initial handle (docs/method.md §3.4). Points are (row, col) feature pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrackingWindow:
    """The distances searched for one handle: what the point-tracking heatmap shows."""

    distances: torch.Tensor  # (h, w) L1 feature distance of each candidate q in the window
    origin: tuple[int, int]  # (row, col) of the window's top-left cell on the feature grid
    best: tuple[int, int]  # (row, col) chosen, on the feature grid


def point_features(feature: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features at integer-truncated points, as the reference reads F_0(h_i^0). -> (N, C)."""
    idx = points.detach().long()
    return feature[0, :, idx[:, 0], idx[:, 1]].T


def search_window(feature: torch.Tensor, reference: torch.Tensor, point: torch.Tensor, r2: int) -> TrackingWindow:
    """Distances from ``reference`` (C,) to every feature in Ω(point, r2), clipped to the grid."""
    _, _, h, w = feature.shape
    row, col = int(point[0]), int(point[1])
    top, left = max(0, row - r2), max(0, col - r2)
    bottom, right = min(h, row + r2 + 1), min(w, col + r2 + 1)
    window = feature[0, :, top:bottom, left:right]  # (C, wh, ww)
    distances = (window - reference[:, None, None]).abs().sum(dim=0)  # (wh, ww)
    flat = int(torch.argmin(distances))
    best = (top + flat // distances.shape[1], left + flat % distances.shape[1])
    return TrackingWindow(distances=distances.detach(), origin=(top, left), best=best)


def track_points(feature: torch.Tensor, references: torch.Tensor, handles: torch.Tensor, r2: int) -> torch.Tensor:
    """New handles (N, 2) for current features ``feature`` (1, C, H, W) and ``references`` (N, C)."""
    with torch.no_grad():
        best = [search_window(feature, ref, h, r2).best for ref, h in zip(references, handles)]
    return torch.tensor(best, dtype=handles.dtype, device=handles.device)
