"""FreeDrag (Ling et al. 2024): line search along h^0→g with an adaptive template (docs/method.md §6).

Both jobs change together: :class:`LineSearch` finds the points p_i and keeps FreeDrag's state (one template T_i
per pair, rounds of 5 updates, the start and end losses of the last round, which pairs are done);
:class:`TemplateSupervision` pulls the patch at each p_i toward its template, Σ_i mean|F(Ω(p_i)) − T_i|, and tells
the tracker how the round goes. The kernels (:func:`~dragnb.tracking.line_search`,
:func:`~dragnb.tracking.end_round`, :func:`~dragnb.tracking.template_distance`) are pure functions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import DragSettings
from ..motion import bilinear_patch
from ..tracking import LINE_SEARCH_ROUND, TrackingWindow, end_round, grid_patches, line_search, template_distance
from .parts import Reference, Supervision, Tracker


class LineSearch(Tracker):
    """FreeDrag's points: a new search along each line when a round ends (and at k = 0); a pair is done within
    ``stop_distance`` of g_i with its template distance at most l/2."""

    templates: list[torch.Tensor] | None = None

    def begin(self, reference: Reference) -> None:
        super().begin(reference)
        if self.templates is None:  # once per drag: the templates carry over to later timesteps
            self.templates = [bilinear_patch(reference.features, h, self.settings.r1)[0].detach()
                              for h in reference.handles]  # T_i, (C, P, P)
            n = len(reference.handles)
            self.loss_start, self.loss_end, self.done = [0.0] * n, [0.0] * n, [False] * n
            self.round_step = 0  # updates since the last search

    def track(self, step: int, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.features, self.previous, self.targets = features.detach(), handles.detach(), targets.detach()
        self.chosen = self._search(step, handles, targets)
        return self.chosen

    def _search(self, step: int, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if step > 0 and self.round_step < LINE_SEARCH_ROUND:
            return handles  # within a round the points stay
        s = self.settings
        if step > 0:  # a round ends: judge it, update the templates
            self.loss_end, self.done, self.templates = end_round(self.features, handles, targets, self.templates,
                                                                 s.r1, s.stop_distance, s.line_search_loss)
        if all(self.done):
            return handles
        self.round_step = 0
        return torch.stack([h if done else line_search(self.features, h, g, template, s.r1, s.line_search_distance,
                                                       s.line_search_loss, start, end)
                            for h, g, template, start, end, done in zip(handles, targets, self.templates,
                                                                         self.loss_start, self.loss_end, self.done)])

    def arrived(self, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.done, dtype=torch.bool)

    def round_terms(self, terms: list[torch.Tensor], pending: list[torch.Tensor]) -> None:
        """One update of the round: its first terms are the round's start losses; every patch already close to its
        template (below l/2) ends the round early."""
        if self.round_step == 0:
            self.loss_start = [float(term.detach()) for term in terms]
        self.round_step += 1
        if pending and max(float(x.detach()) for x in pending) < 0.5 * self.settings.line_search_loss:
            self.round_step = LINE_SEARCH_ROUND

    def record(self, keep_features: bool) -> dict[str, Any]:
        if not keep_features:
            return {}
        return {"templates": torch.stack(self.templates).cpu(), "windows": self._windows()}

    def _windows(self) -> list[TrackingWindow]:
        """The template distance mean|F(Ω(q, r1)) − T_i| over a window as far as one search reaches around each
        point p^{k-1}, the point chosen, and the line searched along (what the tracking heatmap draws for FreeDrag)."""
        s, windows = self.settings, []
        reach = max(s.r2, math.ceil(s.line_search_distance))
        rows, cols = self.features.shape[-2:]
        for point, template, chosen, h0, g in zip(self.previous, self.templates, self.chosen, self.reference.handles,
                                                  self.targets):
            top, left = max(0, int(point[0]) - reach), max(0, int(point[1]) - reach)
            bottom, right = min(rows, int(point[0]) + reach + 1), min(cols, int(point[1]) + reach + 1)
            patches = grid_patches(self.features, s.r1)[0, :, top:bottom, left:right]  # (C, h, w, P, P)
            distances = (patches - template[:, None, None]).abs().mean(dim=(0, 3, 4)).cpu()  # (h, w)
            windows.append(TrackingWindow(distances=distances, origin=(top, left), best=tuple(chosen.tolist()),
                                          quantity="mean|F_k(Ω(q)) − T|", line=(tuple(h0.tolist()), tuple(g.tolist()))))
        return windows


class TemplateSupervision(Supervision):
    """FreeDrag's motion term: Σ over pairs not done of mean|F(Ω(p_i, r1)) − T_i| (FreeDrag's mean, not §3.2's)."""

    def __init__(self, settings: DragSettings, search: LineSearch):
        super().__init__(settings)
        self.search = search  # the tracker whose templates and rounds this term feeds

    def loss(self, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        search = self.search
        terms = [template_distance(features, h, t, self.settings.r1) for h, t in zip(handles, search.templates)]
        pending = [term for term, done in zip(terms, search.done) if not done]
        search.round_terms(terms, pending)
        return torch.stack(pending).sum() if pending else features.new_zeros(())
