"""Point tracking (pure functions): re-locate each handle by nearest-neighbour feature search.

h_i ← argmin over q in Ω(h_i, r2) of ||F(q) - F_0(h_i^0)||_1, with F_0 the features before optimisation and
h_i^0 the initial handle (docs/method.md §3.4). Points are (row, col) feature pixels. The variant
``tracking="line_search"`` (FreeDrag) instead moves each point along its h^0→g line: :func:`line_search`,
:func:`template_weight`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .motion import bilinear_patch


@dataclass(frozen=True)
class TrackingWindow:
    """The distances searched for one handle: what the point-tracking heatmap shows (a tracker records one per pair
    in its step's ``extras["windows"]`` when features are kept)."""

    distances: torch.Tensor  # (h, w) the distance of each candidate q in the window (low = match)
    origin: tuple[int, int]  # (row, col) of the window's top-left cell on the feature grid
    best: tuple[float, float]  # (row, col) chosen, on the feature grid
    quantity: str = "‖F_k(q) − f_i‖₁"  # what ``distances`` measures, for a view's title
    line: tuple[tuple[float, float], tuple[float, float]] | None = None  # a line the search keeps to (FreeDrag's)


def point_features(feature: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features at integer-truncated points, as the reference reads F_0(h_i^0). -> (N, C)."""
    idx = points.detach().long()
    return feature[0, :, idx[:, 0], idx[:, 1]].T


def search_window(feature: torch.Tensor, reference: torch.Tensor, point: torch.Tensor, r2: int,
                  quantity: str = TrackingWindow.quantity) -> TrackingWindow:
    """Distances from ``reference`` (C,) to every feature in Ω(point, r2), clipped to the grid."""
    _, _, h, w = feature.shape
    row, col = int(point[0]), int(point[1])
    top, left = max(0, row - r2), max(0, col - r2)
    bottom, right = min(h, row + r2 + 1), min(w, col + r2 + 1)
    window = feature[0, :, top:bottom, left:right]  # (C, wh, ww)
    distances = (window - reference[:, None, None]).abs().sum(dim=0)  # (wh, ww)
    flat = int(torch.argmin(distances))
    best = (top + flat // distances.shape[1], left + flat % distances.shape[1])
    return TrackingWindow(distances=distances.detach(), origin=(top, left), best=best, quantity=quantity)


def search_windows(feature: torch.Tensor, references: torch.Tensor, handles: torch.Tensor, r2: int,
                   quantity: str = TrackingWindow.quantity) -> list[TrackingWindow]:
    """One :func:`search_window` per handle (N, 2) and its reference (N, C), on ``feature`` (1, C, H, W)."""
    with torch.no_grad():
        return [search_window(feature, ref, h, r2, quantity) for ref, h in zip(references, handles)]


def chosen_points(windows: list[TrackingWindow], like: torch.Tensor) -> torch.Tensor:
    """The points the windows chose, (N, 2) in ``like``'s dtype and device."""
    return torch.tensor([w.best for w in windows], dtype=like.dtype, device=like.device)


def track_points(feature: torch.Tensor, references: torch.Tensor, handles: torch.Tensor, r2: int) -> torch.Tensor:
    """New handles (N, 2) for current features ``feature`` (1, C, H, W) and ``references`` (N, C)."""
    return chosen_points(search_windows(feature, references, handles, r2), handles)


# ---- FreeDrag's line search (tracking = "line_search"), docs/method.md §6 ---------------------------------------
LINE_SEARCH_CANDIDATES = 10  # FreeDrag samples 10 points along each searched segment
LINE_SEARCH_ROUND = 5  # latent updates between two line searches (FreeDrag's inner loop)


def grid_patches(feature: torch.Tensor, r: int) -> torch.Tensor:
    """Every grid point's (2r+1)^2 patch at once, border-clamped as :func:`~dragnb.motion.bilinear_patch` reads an
    integer point: (1, C, H, W, P, P). For maps of :func:`template_distance` over a window."""
    padded = F.pad(feature, (r, r, r, r), mode="replicate")
    return padded.unfold(2, 2 * r + 1, 1).unfold(3, 2 * r + 1, 1)


def template_distance(feature: torch.Tensor, point: torch.Tensor, template: torch.Tensor, r: int) -> torch.Tensor:
    """mean |F(Ω(p, r)) - T|: how far the (bilinear) patch at ``point`` is from the pair's template (C, P, P)."""
    return (bilinear_patch(feature, point, r)[0] - template).abs().mean()


def line_search(feature: torch.Tensor, point: torch.Tensor, target: torch.Tensor, template: torch.Tensor, r: int,
                max_distance: float, expected: float, loss_start: float, loss_end: float) -> torch.Tensor:
    """FreeDrag's next point p for one pair, always on the line through ``point`` and ``target`` ((2,) row, col).

    If the last round kept the template well (``loss_end`` < expected / 2) it searches forward, up to
    ``max_distance`` toward the target, for the candidate whose template distance is closest to ``expected``
    (far enough to pull, close enough to keep the look); if the round at least improved (``loss_end`` <
    ``loss_start``) it stays; otherwise it backs off by ``max_distance`` and searches twice that range for the
    best-matching candidate. Candidates are 10 evenly spaced points of the segment, its start excluded.
    """
    with torch.no_grad():
        fractions = torch.arange(1, LINE_SEARCH_CANDIDATES + 1, device=point.device,
                                 dtype=point.dtype)[:, None] / LINE_SEARCH_CANDIDATES  # (10, 1)
        remaining = float(torch.linalg.norm(target - point))
        if remaining == 0:
            return point.clone()
        if loss_end < 0.5 * expected:
            end = point + min(max_distance / remaining, 1.0) * (target - point)
            pick = "expected"
        elif loss_end < loss_start:
            return point.clone()
        else:
            point = point - min(max_distance / remaining, 1.0) * (target - point)  # back off along the line
            remaining = float(torch.linalg.norm(target - point))
            end = point + min(2 * max_distance / max(remaining, 1e-8), 1.0) * (target - point)
            pick = "best"
        candidates = point + fractions * (end - point)  # (10, 2)
        dist = torch.stack([template_distance(feature, c, template, r) for c in candidates])
        index = int(torch.argmin((dist - expected).abs() if pick == "expected" else dist))
        return candidates[index].clone()


def template_weight(loss: float, expected: float) -> float:
    """FreeDrag's adaptive template update weight λ = 1 / (1 + exp(a (loss - b))), a = ln 9 / (0.6 l), b = 0.2 l:
    a patch that kept its look (small loss) replaces the template, a smeared one barely changes it."""
    a, b = math.log(9.0) / (0.6 * expected), 0.2 * expected
    return 1.0 / (1.0 + math.exp(min(a * (loss - b), 50.0)))


def end_round(feature: torch.Tensor, points: torch.Tensor, targets: torch.Tensor, templates: list[torch.Tensor],
              r: int, stop_distance: float, expected: float) -> tuple[list[float], list[bool], list[torch.Tensor]]:
    """FreeDrag's bookkeeping when a round ends: each pair's template distance ℓ_i, whether it arrived (within
    ``stop_distance`` of its target with ℓ_i ≤ l/2), and its template updated by :func:`template_weight`."""
    losses, arrived, updated = [], [], []
    with torch.no_grad():
        for point, target, template in zip(points, targets, templates):
            loss = float(template_distance(feature, point, template, r))
            near = float(torch.linalg.norm(target - point)) < max(stop_distance, 1e-6)
            done = near and loss <= 0.5 * expected
            weight = 1.0 if done else template_weight(loss, expected)
            updated.append(weight * bilinear_patch(feature, point, r)[0] + (1 - weight) * template)
            losses.append(loss)
            arrived.append(done)
    return losses, arrived, updated
