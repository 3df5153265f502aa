"""Replay a saved history (:mod:`dragnb.rounds`) round by round: what ``python -m dragnb replay`` runs.

The first round starts from its saved source (a generated one generated again), every later one from the *replayed*
result of its parent, with the saved prompt, points, mask, settings and LoRA choice; on the same model and settings
the results are the saved ones (bit for bit on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .callbacks import Callback
from .config import Settings, rebase
from .errors import InputError
from .generate import generate
from .models import Model
from .rounds import History, Round
from .session import DragSession


def _stopped_as_saved(record: dict | None) -> list[Callback]:
    """For a replay: a round whose drag was stopped early (the Stop button, a callback, Ctrl-C) stops after as many
    iterations again, so its result is the saved one; a finished drag needs nothing (nor can a drag stopped before
    its first iteration be replayed as stopped: it runs in full)."""
    if not record or record.get("stop_reason") not in ("callback", "interrupted") or not record.get("drag_steps"):
        return []
    steps = int(record["drag_steps"])
    return [lambda step: step.stage == "drag" and step.step + 1 >= steps]


def replay(model: Model, history: History, cache_dir: str | Path | None = None, progress: bool = False,
           on_round: Callable[[Round, Round], object] | None = None, settings: str = "saved") -> DragSession:
    """Run a saved history (:meth:`History.load`) again, round by round, on ``model``: the first round from its
    saved source (a generated one generated again), every later one from the *replayed* result of its parent,
    with the saved prompt, points, mask, settings and LoRA choice. ``on_round(saved, replayed)`` is called
    after each round. On the same model and settings the results are the saved ones (bit for bit on the CPU).
    ``settings="model"``: each round's settings rebased on ``model``'s own defaults (:func:`config.rebase`:
    what the round changed from its model's defaults is kept, the rest is ``model``'s), for a history replayed
    on another model; the default ``"saved"`` uses them as saved.
    """
    if settings not in ("saved", "model"):
        raise InputError("settings", f"got {settings!r}; must be 'saved' or 'model'")
    old_base = history.rebase_from("settings") if settings == "model" else None

    def of(rnd: Round) -> Settings:
        return rnd.settings if old_base is None else rebase(rnd.settings, old_base, model.settings)

    first = history.rounds[0]
    if first.generation is not None:
        g = first.generation
        generated = generate(model, g["prompt"], tuple(g["size"]), g["guidance_scale"], g["seed"], g["num_steps"])
        session = DragSession.from_generated(model, generated, of(first), cache_dir=cache_dir, progress=progress)
    else:
        session = DragSession(model, first.source, first.prompt, of(first), cache_dir=cache_dir, progress=progress)
    if settings == "saved":  # the rounds still hold the first model's choices: say so for a later rebase
        session.history.model_settings = history.model_settings
    for saved in history.rounds:
        if saved.index > 0 and saved.parent is None:  # another first round: a branch beside round 0
            session.goto(0)
            session.branch()
        elif saved.index > 0:
            session.goto(saved.parent)
            session.new_round(keep_lora=saved.keep_lora, prompt=saved.prompt)
        session.prompt, session.settings = saved.prompt, of(saved)
        session.points, session.mask = saved.points, saved.mask
        if saved.done:
            session.run(callbacks=_stopped_as_saved(saved.record))
        if on_round is not None:
            on_round(saved, session.round)
    session.goto(history.current)
    return session
