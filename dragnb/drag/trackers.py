"""How the handles are found (step 2, docs/method.md §3.4 and §6).

* :class:`NearestNeighbour`, the paper's: h_i^k = argmin over q ∈ Ω(⌊h_i^{k-1}⌋, r2) of ‖F(q) − F_0(⌊h_i^0⌋)‖₁.
* :class:`FollowLatest`, this project's: the reference feature becomes F at the last handle after each search
  (``drag.track_from = "previous"``).

FreeDrag's line search is in :mod:`dragnb.drag.line_search`. Each records the windows it searched
(:class:`~dragnb.tracking.TrackingWindow`, what the tracking heatmap draws) when features are kept.
"""

from __future__ import annotations

from typing import Any

import torch

from ..tracking import TrackingWindow, chosen_points, point_features, search_windows
from .parts import Reference, Tracker


class NearestNeighbour(Tracker):
    """The paper's point tracking: the nearest neighbour of f_i = F_0(⌊h_i^0⌋) in the window around each handle."""

    windows: list[TrackingWindow] = []  # this iteration's searches, one per pair (none at k = 0)
    quantity = "‖F_k(q) − F_0(h⁰)‖₁"  # what a window's distances measure

    def begin(self, reference: Reference) -> None:
        super().begin(reference)
        self.references = point_features(reference.features, reference.handles)  # f_i, (N, C)

    def track(self, step: int, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if step == 0:  # nothing to track yet: the handles are where the loop starts them (h^0, or drag.start's)
            self.windows = []
            return handles
        self.windows = search_windows(features.detach(), self.references, handles, self.settings.r2, self.quantity)
        return chosen_points(self.windows, handles)

    def record(self, keep_features: bool) -> dict[str, Any]:
        return {"windows": self.windows} if keep_features and self.windows else {}


class FollowLatest(NearestNeighbour):
    """After each search f_i ← F(h_i^k): the search follows the handle's latest look rather than its first."""

    quantity = "‖F_k(q) − F_k-1(h^k-1)‖₁"

    def track(self, step: int, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        handles = super().track(step, features, handles, targets)
        if step > 0:
            self.references = point_features(features.detach(), handles)
        return handles
