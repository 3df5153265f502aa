"""The trainer's plumbing: a JSON-lines log, atomic checkpoints, and a resumable phase on a time budget.

:class:`Log` appends one JSON object a line to ``<work>/log.jsonl`` and echoes it; :func:`save_atomic` writes a
torch checkpoint through a temporary file; :class:`TimedPhase` is what the VAE, UNet and decoder phases of
:mod:`dragnb.tiny.train` share: it resumes from the phase's checkpoint (weights, optimiser, step, time spent and both
random streams), counts only training-step time against the budget, logs running means and says when a checkpoint
is due. The recipe itself (losses, schedules, batches) stays in :mod:`dragnb.tiny.train`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dragnb.files import write_atomic


class Log:
    """Append JSON lines to ``<work>/log.jsonl`` and echo a short line to stdout."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, **record) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)


def save_atomic(obj, path: Path) -> None:
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


class TimedPhase:
    """What the VAE and UNet trainers share: resume from the phase's checkpoint (weights, optimiser, step, time
    spent and both random streams), step until the time budget is spent (only step time counts, so checks and
    checkpoints do not eat it), log running means every ``log_every`` steps, tell when a checkpoint is due."""

    def __init__(self, path: Path, phase: str, seed: int, budget_minutes: float, log: Log, log_every: int,
                 **extra_state):
        import torch

        self.path, self.phase, self.budget, self.log, self.log_every = path, phase, budget_minutes * 60, log, log_every
        self.state = {"step": 0, "elapsed": 0.0, "done": False, **extra_state}
        self.rng = np.random.default_rng(seed)  # batches, crops, flips, caption drops
        self.gen = torch.Generator().manual_seed(seed)  # noise and timesteps, drawn on the CPU on any device
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last_save = time.time()

    def resume(self, device) -> dict | None:
        """The saved checkpoint (its streams and state already restored here), or None to start afresh."""
        import torch

        if not self.path.exists():
            return None
        ck = torch.load(self.path, weights_only=False, map_location=device)
        self.state = ck["state"]
        self.rng.bit_generator.state = ck["rng"]
        self.gen.set_state(ck["gen"])
        self.log(phase=self.phase, event="resumed", step=self.state["step"], elapsed_min=self.state["elapsed"] / 60)
        return ck

    def save(self, **parts) -> None:
        """Checkpoint ``parts`` (state dicts) with the phase's state and random streams, atomically."""
        save_atomic({**parts, "state": self.state, "rng": self.rng.bit_generator.state, "gen": self.gen.get_state()},
                    self.path)
        self._last_save = time.time()

    def save_due(self, minutes: float) -> bool:
        return time.time() - self._last_save > minutes * 60

    @property
    def running(self) -> bool:
        return self.state["elapsed"] < self.budget

    @property
    def fraction(self) -> float:
        """Share of the budget spent, what the learning-rate schedule follows."""
        return self.state["elapsed"] / self.budget

    def step_done(self, started: float, lr: float, **terms) -> None:
        """Count a step that began at ``started`` (time.time()) and log the running means every ``log_every``."""
        self.state["step"] += 1
        self.state["elapsed"] += time.time() - started
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach())
        self._count += 1
        if self.state["step"] % self.log_every == 0:
            self.log(phase=self.phase, step=self.state["step"], elapsed_min=self.state["elapsed"] / 60, lr=lr,
                     **{k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
