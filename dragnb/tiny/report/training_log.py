"""The training log of the embedded model, read and drawn: phases, minutes, curves and headline numbers.

:func:`read_training_log` parses the ``training_log.jsonl`` that :mod:`dragnb.tiny.train` writes (one JSON object
a line) into a :class:`TrainingLog` of per-phase loss :class:`Curve` s and :class:`Event` s (evaluations, adherence
checks, restarts); :func:`phase_times` sums its minutes per phase (:class:`PhaseTime`); :func:`last_adherence` and
:func:`headline_numbers` pick the last VAE evaluation and adherence check (from the log or the model's
``training_summary.json``); :func:`training_curves` draws the four panels of VAE loss, VAE held-out PSNR, UNet loss
and adherence against step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from dragnb.tiny.scenes import COLOURS, SHAPES
from dragnb.ui.plots import Figure


@dataclass
class Curve:
    """One phase's logged training lines (each a mean over the steps since the previous line), in step order."""

    records: list[dict] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        """Float array of field ``name`` over the records; NaN where a line lacks it."""
        return np.array([float(r[name]) if isinstance(r.get(name), (int, float)) else np.nan
                         for r in self.records], dtype=float)

    @property
    def steps(self) -> np.ndarray:
        return self.column("step")

    @property
    def loss(self) -> np.ndarray:
        return self.column("loss")

    @property
    def lr(self) -> np.ndarray:
        return self.column("lr")

    @property
    def minutes(self) -> np.ndarray:
        """Training-step minutes of the phase at each line (checks and checkpoints not counted)."""
        return self.column("elapsed_min")


@dataclass(frozen=True)
class Event:
    """A log line without a loss: an eval, an adherence check, a resume, or a phase's one-line report."""

    phase: str
    kind: str  # the line's "event" ("eval", "final_eval", "adherence", "resumed"), else its phase
    step: int | None
    values: dict  # the line's numeric fields


@dataclass
class TrainingLog:
    """A parsed ``training_log.jsonl``."""

    curves: dict[str, Curve]  # phase -> its loss lines ("vae", "unet", "decoder")
    events: list[Event]
    runs: list[str]  # the command line of every (re)start
    params: dict[str, int]  # parameter counts from the "models" line
    wall_minutes: dict[str, float]  # phase -> wall-clock minutes, checks included, restart gaps excluded

    def events_of(self, phase: str, *kinds: str) -> list[Event]:
        return [e for e in self.events if e.phase == phase and (not kinds or e.kind in kinds)]

    def resumes(self, phase: str) -> list[int]:
        """Steps at which training of ``phase`` restarted from a checkpoint in the middle of the phase."""
        curve = self.curves.get(phase)
        last = np.nanmax(curve.steps) if curve is not None and curve.records else -1
        return [e.step for e in self.events_of(phase, "resumed") if e.step is not None and e.step < last]


def _time(record: dict) -> datetime | None:
    try:
        return datetime.strptime(str(record["time"]), "%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, ValueError):
        return None


def read_training_log(path: str | Path) -> TrainingLog:
    """Parse the JSON-lines log of :mod:`dragnb.tiny.train`; unreadable lines (a half-written last line) are skipped.

    A line with a ``loss`` is a point of its phase's curve; a ``resumed`` event drops the points logged after
    the step it resumed from (the restart repeats them); every other line is an :class:`Event`.
    """
    curves: dict[str, Curve] = {}
    events: list[Event] = []
    runs: list[str] = []
    params: dict[str, int] = {}
    wall: dict[str, float] = {}
    previous: datetime | None = None
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        phase = str(record.get("phase", "unknown"))
        when = _time(record)
        if when is not None:
            if previous is not None and phase != "start":  # a restart's gap is no phase's time
                wall[phase] = wall.get(phase, 0.0) + max(0.0, (when - previous).total_seconds() / 60)
            previous = when
        step = record.get("step")
        step = int(step) if isinstance(step, (int, float)) else None
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "loss" in record:
            curves.setdefault(phase, Curve()).records.append(numbers)
        elif phase == "start":
            runs.append(str(record.get("argv", "")))
        elif phase == "models":
            params = {k: int(v) for k, v in numbers.items()}
        else:
            kind = str(record.get("event", phase))
            if kind == "resumed" and step is not None and phase in curves:
                curves[phase].records = [r for r in curves[phase].records if r.get("step", 0) <= step]
            events.append(Event(phase, kind, step, numbers))
    return TrainingLog(curves, events, runs, params, wall)


def last_adherence(summary_path: str | Path) -> dict | None:
    """The last adherence check in a ``training_summary.json`` (its ``final_check`` if any); None if absent."""
    path = Path(summary_path)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    checks = summary.get("checks") or []
    last = summary.get("final_check") or (checks[-1] if checks else None)
    if last is not None and "step" not in last and "unet_step" in summary:
        last = {"step": summary["unet_step"], **last}
    return last


def headline_numbers(log: TrainingLog | None, summary_path: str | Path | None = None) -> dict[str, float]:
    """The numbers behind the limits: the VAE's last held-out evaluation and the last adherence check."""
    out: dict[str, float] = {}
    if log is not None:
        evals = [e for e in log.events_of("vae", "eval", "final_eval") if "psnr_mean" in e.values]
        evals += [e for e in log.events_of("decoder", "eval", "final_eval") if "psnr_mean" in e.values]  # later
        if evals:
            v = evals[-1].values
            out.update({f"vae_{k}": float(v[k]) for k in ("psnr_mean", "psnr_min", "hue_ok", "colour_ok_12",
                                                           "hue_shift_max") if k in v})
    last = last_adherence(summary_path) if summary_path is not None else None
    if last is None and log is not None:
        checks = log.events_of("unet", "adherence")
        last = {"step": checks[-1].step, **checks[-1].values} if checks else None
    if last is not None:
        out.update({f"adherence_{k}": float(last[k]) for k in ("colour", "shape", "background", "n", "step")
                    if isinstance(last.get(k), (int, float))})
    return out


@dataclass(frozen=True)
class PhaseTime:
    phase: str
    steps: int | None  # last step logged
    step_minutes: float  # training-step minutes (the budget the trainer counts), NaN if not logged
    wall_minutes: float  # wall clock, checks and checkpoints included


def phase_times(log: TrainingLog) -> list[PhaseTime]:
    """Minutes per phase in order of appearance: the trainer's own step-time count, and wall clock."""
    order = list(dict.fromkeys([*log.wall_minutes, *log.curves, *(e.phase for e in log.events)]))
    out = []
    for phase in order:
        if phase in ("models", "done", "start"):
            continue
        curve = log.curves.get(phase, Curve())
        events = log.events_of(phase)
        elapsed = [*curve.minutes.tolist(), *(e.values.get("elapsed_min", np.nan) for e in events)]
        elapsed = [m for m in elapsed if not math.isnan(m)]
        seconds = [e.values["seconds"] for e in events if "seconds" in e.values]
        step_minutes = max(elapsed) if elapsed else (sum(seconds) / 60 if seconds else np.nan)
        steps = [int(s) for s in curve.steps.tolist() if not math.isnan(s)]
        steps += [e.step for e in events if e.step is not None]
        out.append(PhaseTime(phase, max(steps) if steps else None, float(step_minutes),
                             float(log.wall_minutes.get(phase, np.nan))))
    return out


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` points (fewer at the start)."""
    return np.array([values[max(0, i + 1 - window): i + 1].mean() for i in range(len(values))])


def _resume_lines(ax, steps: Sequence[int]) -> None:
    for i, s in enumerate(steps):
        ax.axvline(s, color="#888888", ls=":", lw=1, label="resumed from checkpoint" if i == 0 else None)


def _decay_start(curve: Curve) -> float | None:
    """First logged step whose learning rate is below the phase's peak, after the peak: where the decay begins."""
    lr, steps = curve.lr, curve.steps
    if np.isnan(lr).all():
        return None
    peak = int(np.nanargmax(lr))
    later = np.nonzero(lr[peak:] < 0.999 * lr[peak])[0]
    return float(steps[peak + later[0]]) if len(later) else None


def _decay_line(ax, curve: Curve, label: str) -> None:
    step = _decay_start(curve)
    if step is not None:
        ax.axvline(step, color="#444444", ls="--", lw=1, label=label)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the log", ha="center", va="center", transform=ax.transAxes, color="gray")


def training_curves(log: TrainingLog, smooth: int = 5) -> Figure:
    """Four panels: VAE loss; VAE held-out PSNR; UNet loss (raw and smoothed); adherence checks, against step.

    Dotted vertical lines mark restarts from a checkpoint in the middle of a phase.
    """
    fig = Figure(figsize=(9.5, 5.6), layout="constrained")
    (vae_ax, psnr_ax), (unet_ax, adh_ax) = fig.subplots(2, 2)

    vae = log.curves.get("vae")
    if vae is not None and vae.records:
        ok = ~np.isnan(vae.loss)
        vae_ax.plot(vae.steps[ok], vae.loss[ok], color="#d04000", lw=1.5, label="loss = L1 + MSE + colour + 1e-6 KL")
        for name, colour in (("l1", "#2050a0"), ("mse", "#20a050"), ("colour", "#a020a0")):
            values = vae.column(name)
            if not np.isnan(values).all():
                vae_ax.plot(vae.steps, values, lw=1, color=colour, alpha=0.8, label=name)
        vae_ax.set_yscale("log")
        _resume_lines(vae_ax, log.resumes("vae"))
        _decay_line(vae_ax, vae, "lr decay and whole images (last 25 %)")
        vae_ax.legend(fontsize=7)
    else:
        _no_data(vae_ax, "VAE loss")
    vae_ax.set_xlabel("VAE step")
    vae_ax.set_ylabel("training loss (per pixel, [-1, 1] scale)")
    vae_ax.set_title("VAE: reconstruction loss", fontsize=10)

    evals = log.events_of("vae", "eval", "final_eval")
    evals = [e for e in evals if "psnr_mean" in e.values and e.step is not None]
    if evals:
        steps = [e.step for e in evals]
        psnr_ax.plot(steps, [e.values["psnr_mean"] for e in evals], "o-", color="#2050a0", label="mean")
        if all("psnr_min" in e.values for e in evals):
            psnr_ax.plot(steps, [e.values["psnr_min"] for e in evals], "s--", color="#2050a0", mfc="white",
                         label="worst image")
        last = evals[-1].values
        title = f"VAE: held-out PSNR (this phase's last: {last['psnr_mean']:.1f} dB mean"
        decoder = [e for e in log.events_of("decoder", "eval", "final_eval") if "psnr_mean" in e.values]
        if decoder:  # the decoder fine-tuned afterwards (encoder frozen): what the shipped model has
            title += f";\nafter the decoder's fine-tuning: {decoder[-1].values['psnr_mean']:.1f} dB"
        if "hue_ok" in last:
            title += f",\n{100 * last['hue_ok']:.0f} % of shapes within 20 RGB of their colour"
        psnr_ax.set_title(title + ")", fontsize=10)
        _resume_lines(psnr_ax, log.resumes("vae"))
        if vae is not None and vae.records:
            _decay_line(psnr_ax, vae, "lr decay and whole images (last 25 %)")
        psnr_ax.legend(fontsize=7)
    else:
        _no_data(psnr_ax, "VAE evaluations")
        psnr_ax.set_title("VAE: held-out PSNR", fontsize=10)
    psnr_ax.set_xlabel("VAE step")
    psnr_ax.set_ylabel("PSNR reconstruction vs scene (dB)")

    unet = log.curves.get("unet")
    if unet is not None and unet.records:
        ok = ~np.isnan(unet.loss)
        steps, loss = unet.steps[ok], unet.loss[ok]
        unet_ax.plot(steps, loss, color="#bbbbbb", lw=1, label="logged (mean of 25 steps)")
        if len(loss) >= smooth > 1:
            unet_ax.plot(steps, _smooth(loss, smooth), color="#d04000", lw=2, label=f"running mean of {smooth}")
        unet_ax.set_yscale("log")
        _resume_lines(unet_ax, log.resumes("unet"))
        _decay_line(unet_ax, unet, "lr cosine decay (last 15 %)")
        unet_ax.legend(fontsize=7)
    else:
        _no_data(unet_ax, "UNet loss")
    unet_ax.set_xlabel("UNet step (batch 64)")
    unet_ax.set_ylabel("min-SNR-5 weighted ε MSE")
    unet_ax.set_title("UNet + text encoder: denoising loss", fontsize=10)

    checks = [e for e in log.events_of("unet", "adherence") if e.step is not None and "colour" in e.values]
    if checks:
        steps = [e.step for e in checks]
        for name, colour, marker in (("colour", "#d04000", "o"), ("shape", "#2050a0", "s"),
                                     ("background", "#20a050", "^")):
            if all(name in e.values for e in checks):
                adh_ax.plot(steps, [e.values[name] for e in checks], marker + "-", color=colour, label=name)
        adh_ax.axhline(1 / len(SHAPES), color="#2050a0", ls=":", lw=1, label=f"shape by chance (1 in {len(SHAPES)})")
        adh_ax.axhline(1 / len(COLOURS), color="#d04000", ls=":", lw=1,
                       label=f"colour by chance (1 in {len(COLOURS)})")
        n = checks[-1].values.get("n")
        adh_ax.set_title("adherence: single-shape prompts read back" + (f" (n = {int(n)} each)" if n else ""),
                         fontsize=10)
        _resume_lines(adh_ax, log.resumes("unet"))
        adh_ax.legend(fontsize=7, loc="upper left")
    else:
        _no_data(adh_ax, "adherence checks")
        adh_ax.set_title("adherence: single-shape prompts read back", fontsize=10)
    adh_ax.set_ylim(0, 1.02)
    adh_ax.set_xlabel("UNet step")
    adh_ax.set_ylabel("fraction of samples right")
    return fig
