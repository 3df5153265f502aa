"""Where the motion term's source comes from (step 4, docs/method.md §3.2 and §6).

* :class:`MotionSupervision`, the paper's: S_i = sg(F(Ω(⌊h_i^k⌋))), the patch the handle shows now; a pair that
  arrived is skipped, and the loop stops when all have.
* :class:`Anchored`, GoodDrag's information-preserving supervision: S_i = F_0(Ω(⌊h_i^0⌋)), the original patch,
  so the content pulled along keeps its first look (``drag.supervision = "anchored"``).
* :class:`Held`, this project's: an arrived pair is not skipped but its patch at g_i is pulled toward the original
  one, and the loop runs ``drag.hold_steps`` iterations more once all arrived (wraps either source).

FreeDrag's template supervision lives with its tracker (:mod:`dragnb.drag.line_search`).
"""

from __future__ import annotations

import torch

from ..config import DragSettings
from ..motion import anchor_patches, motion_loss
from .parts import Reference, Supervision


class MotionSupervision(Supervision):
    """The paper's motion term Σ_i (2r1+1)² mean|F(Ω(h_i) + d_i) − sg(F(Ω(h_i)))| over the pairs not yet arrived."""

    anchors: torch.Tensor | None = None  # (N, C, P, P) fixed sources S_i; None: sg(F(Ω(⌊h_i^k⌋))) each iteration

    def loss(self, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
             hold: torch.Tensor | None = None) -> torch.Tensor:
        s = self.settings
        return motion_loss(features, handles, targets, s.r1, s.stop_distance, s.loss_reduction, self.anchors,
                           hold=hold)


class Anchored(MotionSupervision):
    """GoodDrag: every iteration pulls the shifted patch toward F_0(Ω(⌊h_i^0⌋)) of the timestep dragged at."""

    def begin(self, reference: Reference) -> None:
        super().begin(reference)
        self.anchors = anchor_patches(reference.features, reference.handles, self.settings.r1)


class Held(Supervision):
    """``source`` until every handle has arrived, then ``hold_steps`` iterations more in which each arrived pair's
    term is (2r1+1)² mean|F(Ω(g_i)) − F_0(Ω(⌊h_i^0⌋))|: the patch at the target pulled toward the original one."""

    def __init__(self, settings: DragSettings, source: MotionSupervision):
        super().__init__(settings)
        self.source = source
        self.held = 0  # iterations run since every handle arrived

    def begin(self, reference: Reference) -> None:
        super().begin(reference)
        self.source.begin(reference)
        self.hold = anchor_patches(reference.features, reference.handles, self.settings.r1)  # F_0(Ω(⌊h_i^0⌋))

    def loss(self, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.source.loss(features, handles, targets, hold=self.hold)

    def done(self, arrived: torch.Tensor) -> bool:
        if not bool(arrived.all()):
            return False
        if self.held >= self.settings.hold_steps:
            return True
        self.held += 1  # every handle has arrived: hold them there a few iterations more
        return False
