"""The parts the settings name: ``drag.schedule``, ``optimize_text``, ``tracking`` / ``track_from``, ``supervision`` /
``hold_steps`` each choose one part of the loop (docs/method.md §6); a :class:`~.parts.DragParts` may give its own."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DragSettings
from .line_search import LineSearch, TemplateSupervision
from .optimised import Latent, LatentAndText, prompt_tokens
from .parts import DragParts, Optimised, Reference, Supervision, Timesteps, Tracker
from .supervision import Anchored, Held, MotionSupervision
from .timesteps import Alternating, OneTimestep
from .trackers import FollowLatest, NearestNeighbour


@dataclass
class Parts:
    """The four parts of one drag, made."""

    timesteps: Timesteps
    optimised: Optimised
    tracker: Tracker
    supervision: Supervision

    def begin(self, reference: Reference) -> None:
        """The tracker and the supervision start from ``reference`` (again at each new timestep)."""
        self.tracker.begin(reference)
        self.supervision.begin(reference)

    def record(self, keep_features: bool) -> dict:
        """What every part adds to this iteration's step record."""
        return {k: v for part in vars(self).values() for k, v in part.record(keep_features).items()}


def make_parts(s: DragSettings, given: DragParts | None = None, tokenizer=None, prompt: str | None = None) -> Parts:
    """Fresh parts for one drag: each one ``given`` names, else the one ``s`` names. ``tokenizer`` and ``prompt``:
    the prompt's tokens, which DragText's regulariser covers (None: every token)."""
    given = given or DragParts()
    timesteps = given.timesteps or {"single": OneTimestep, "alternating": Alternating}[s.schedule]
    if given.optimised is not None:
        optimised = given.optimised(s)
    elif s.optimize_text:
        optimised = LatentAndText(s, None if tokenizer is None else prompt_tokens(tokenizer, prompt))
    else:
        optimised = Latent(s)
    tracker = (given.tracker or {"nearest": {"initial": NearestNeighbour, "previous": FollowLatest}[s.track_from],
                                 "line_search": LineSearch}[s.tracking])(s)
    if given.supervision is not None:
        supervision = given.supervision(s)
    elif isinstance(tracker, LineSearch):  # FreeDrag's term pulls toward its tracker's templates
        supervision = TemplateSupervision(s, tracker)
    else:
        source = {"reference": MotionSupervision, "anchored": Anchored}[s.supervision](s)
        supervision = Held(s, source) if s.hold_steps > 0 else source
    return Parts(timesteps(s), optimised, tracker, supervision)

