"""One record and callback convention for every stage (in the spirit of k-diffusion's samplers' callbacks).

Each stage reports one small typed record per step, a :class:`StepRecord` subclass carrying ``stage``, ``step``
(0-based, the step just done), ``total`` (the steps the stage runs at most) and its own terms: the LoRA's loss
(:class:`LoraStep`), the inversion's and denoising's timestep (:class:`InversionStep`, :class:`DenoiseStep`), the
drag's losses, handles and distances (:class:`dragnb.drag.DragStep`). Every stage takes ``callbacks``, a
sequence of :data:`Callback`; all of them see every record, and any returning True stops that stage after the
step (LoRA and inversion then return their partial results marked ``interrupted``, the drag its last good
latent, the denoising its image so far, marked ``interrupted``). A session passes the same callbacks to all
four stages: a callback that cares about one stage looks at ``record.stage`` (or is wrapped by :func:`only`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(kw_only=True)
class StepRecord:
    """What every stage reports after each step."""

    stage: str  # "lora" | "inversion" | "drag" | "denoise"
    step: int  # 0-based index of the step just done
    total: int  # steps the stage runs at most

    @property
    def done(self) -> int:
        """Steps done so far (for progress bars)."""
        return self.step + 1


@dataclass(kw_only=True)
class LoraStep(StepRecord):
    stage: str = "lora"
    loss: float  # denoising MSE of this step's batch


@dataclass(kw_only=True)
class InversionStep(StepRecord):
    stage: str = "inversion"
    t: int  # timestep the latent reached


@dataclass(kw_only=True)
class DenoiseStep(StepRecord):
    stage: str = "denoise"
    t: int  # timestep this step denoised from


Callback = Callable[[StepRecord], "bool | None"]


def notify(callbacks: Sequence[Callback], record: StepRecord) -> bool:
    """Give ``record`` to every callback (all of them, even after one asks to stop); True if any asks to stop."""
    return any([bool(callback(record)) for callback in callbacks])


def only(stage: str, callback: Callable[[StepRecord], object]) -> Callback:
    """``callback`` called for the records of ``stage`` alone."""
    def filtered(record: StepRecord):
        return callback(record) if record.stage == stage else None

    return filtered
