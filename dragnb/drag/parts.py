"""The four jobs of the drag loop a variant may change, each a small object with the same few methods.

The loop (:mod:`dragnb.drag.loop`) never asks which part it holds, as a diffusers pipeline never asks which
scheduler it has. Each job's reference choice is the paper's; the variants live in modules named after the job:

==============  ====================================  =====================================================
job             the paper's part                      variants
==============  ====================================  =====================================================
timesteps       :class:`~.timesteps.OneTimestep`      GoodDrag's :class:`~.timesteps.Alternating`
optimised       :class:`~.optimised.Latent`           DragText's :class:`~.optimised.LatentAndText`
tracker         :class:`~.trackers.NearestNeighbour`  :class:`~.trackers.FollowLatest`, FreeDrag's
                                                      :class:`~.line_search.LineSearch`
supervision     :class:`~.supervision.MotionSupervision`  GoodDrag's :class:`~.supervision.Anchored`,
                                                      :class:`~.supervision.Held`, FreeDrag's templates
==============  ====================================  =====================================================

A part is made from the drag's :class:`~dragnb.config.DragSettings` for one drag and holds its own state (FreeDrag's
templates and rounds, the hold counter, the unedited branch walked down). :meth:`begin` gives it the
:class:`Reference` of the timestep dragged at (again when a timesteps part moves to another). :meth:`record` returns
what it adds to each iteration's :class:`~dragnb.drag.loop.DragStep` (its ``extras``): small numbers always, tensors
only when the caller keeps features. A researcher's own part subclasses one of these and is passed in
:class:`DragParts` (docs/method.md §6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import DragSettings
from ..motion import arrived


@dataclass(frozen=True)
class Reference:
    """What the unedited branch gives at the timestep the drag works at (computed once per timestep)."""

    t: int  # the timestep
    latent: torch.Tensor  # (1, 4, h, w) the unedited latent z_t
    features: torch.Tensor  # (1, C, H, W) F_0 = F(z_t), on the supervision grid
    x_prev: torch.Tensor  # (1, 4, h, w) x_{t-1}^0, the mask term's anchor
    handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^0


class Part:
    """What every part has: the settings it was made from, a reference to begin at, its record."""

    def __init__(self, settings: DragSettings):
        self.settings = settings

    def begin(self, reference: Reference) -> None:
        """The drag starts, or moves to another timestep: F_0, x_{t-1}^0 and h^0 are ``reference``'s."""
        self.reference = reference

    def record(self, keep_features: bool) -> dict[str, Any]:
        """What this part adds to the iteration's step record; tensors only with ``keep_features``."""
        return {}


class Tracker(Part):
    """Step 2: where the handles are now. The paper's is :class:`~dragnb.drag.trackers.NearestNeighbour`."""

    def track(self, step: int, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """h^k (N, 2) from this iteration's features F (1, C, H, W) and the last handles h^{k-1}."""
        raise NotImplementedError

    def arrived(self, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) bool: which pairs are done (step 3). The paper's: within ``stop_distance`` of the target."""
        return arrived(torch.linalg.norm(targets - handles, dim=1), self.settings.stop_distance)


class Supervision(Part):
    """Step 4's motion term and step 3's stop rule. The paper's is :class:`~dragnb.drag.supervision.MotionSupervision`."""

    def loss(self, features: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_motion, a 0-dim tensor differentiable in ``features``."""
        raise NotImplementedError

    def done(self, arrived: torch.Tensor) -> bool:
        """Whether the loop stops, given which pairs arrived ((N,) bool). The paper's: all of them."""
        return bool(arrived.all())


class Timesteps(Part):
    """Which timesteps the drag walks. The paper's is :class:`~dragnb.drag.timesteps.OneTimestep`."""

    walked: list[int]  # the timesteps dragged at so far, in order

    def start(self, look, latent: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor) -> Reference:
        """The first reference: ``look`` (:class:`~dragnb.drag.forward.Forward`) at the unedited ``latent``."""
        raise NotImplementedError

    def finished(self, step: int) -> bool:
        """Whether iteration ``step`` has no timestep left to run at."""
        return False

    def move(self, step: int, latent: torch.Tensor, text: torch.Tensor) -> tuple[Reference, torch.Tensor] | None:
        """Before iteration ``step``: None to stay, or the new timestep's reference and the edited latent there."""
        return None


class Optimised(Part):
    """What the optimiser changes. The paper's is :class:`~dragnb.drag.optimised.Latent`."""

    optimizer: torch.optim.Optimizer  # one optimiser, one parameter group per variable

    @property
    def text(self) -> torch.Tensor:
        """The text embedding the edited branch reads now."""
        raise NotImplementedError

    def start(self, latent: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """ẑ_t^0 = a copy of ``latent`` as a leaf to optimise; builds :attr:`optimizer` over every variable."""
        raise NotImplementedError

    def restart(self, latent: torch.Tensor) -> torch.Tensor:
        """The drag moved to another timestep: ``latent`` is the new ẑ, its optimiser state starts afresh."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        """A term the variables add to the loss (0 for the latent alone)."""
        raise NotImplementedError


PartMaker = Callable[[DragSettings], Part]  # a part's class, or any callable making one from the drag's settings


@dataclass(frozen=True)
class DragParts:
    """Which part does each job of one drag; None = the part the settings name (:func:`dragnb.drag.choice.make_parts`).

    Each is a class or callable taking the :class:`~dragnb.config.DragSettings` and returning a fresh part, e.g.
    ``DragParts(tracker=PatchTracker)`` for a researcher's own tracker, everything else as the settings say.
    """

    timesteps: PartMaker | None = None
    optimised: PartMaker | None = None
    tracker: PartMaker | None = None
    supervision: PartMaker | None = None

    def named(self) -> dict[str, str]:
        """The given parts by name (module.qualname), for cache keys and records; empty for the settings' own."""
        return {job: f"{getattr(maker, '__module__', '?')}.{getattr(maker, '__qualname__', repr(maker))}"
                for job, maker in vars(self).items() if maker is not None}
