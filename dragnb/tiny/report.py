"""How the embedded model was made, as data and figures: its training log, its scenes, samples, inversion.

The functions behind ``notebooks/08_embedded_model.ipynb``. Data functions return plain dataclasses; figure
functions take those and return a :class:`dragnb.ui.plots.Figure` (never shown, not registered with pyplot).

- :func:`read_training_log` parses the ``training_log.jsonl`` that :mod:`dragnb.tiny.train` writes (one JSON
  object a line), :func:`phase_times` sums its minutes per phase, :func:`training_curves` plots it;
- :func:`scene_gallery` shows scenes of the world with their prompts;
- :func:`draw_samples` generates images per prompt and reads them back into words by segmentation
  (:mod:`dragnb.tiny.adherence`); :func:`samples_per_prompt` shows them;
- :func:`inversion_quality` measures the DDIM round trip (invert to the drag's step, denoise, decode) against
  the VAE's own reconstruction, as ``scripts/eval_inversion.py`` does; :func:`inversion_figure` shows it;
- :func:`architecture`, :func:`tokens` and :func:`markdown_table` describe the model.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ..evaluation.scenebench import record_key
from ..images import psnr
from ..ui.plots import Figure
from ..tables import markdown_table, thousands  # noqa: F401 - the notebook's report.markdown_table
from .adherence import Reading, body_colour, largest_component, nearest_colour, read_single_shape, template_ious
from .scenes import COLOURS, SHAPES, STYLES, render, sample_scene
from .train import HOLDOUT_SEED_BASE, holdout_scenes

HELD_OUT_SEED = 900_000  # scenes for checks: training used seeds from 10 000 000 (dragnb.tiny.train)


# ------------------------------------------------------------------------------------------ training log
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
    fig = Figure(figsize=(11, 6.4), layout="constrained")
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
        title = f"VAE: held-out PSNR (last: {last['psnr_mean']:.1f} dB mean"
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


# ------------------------------------------------------------------------------------------ scene world
def _axes_off(ax, title: str = "", fontsize: float = 8) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def scene_gallery(seeds: Sequence[int], size: int = 64, columns: int = 6, width: int = 24,
                  world: str = "flat") -> Figure:
    """The scenes of ``seeds`` (:func:`dragnb.tiny.scenes.sample_scene` in ``world``) at ``size``, prompts as titles."""
    seeds = list(seeds)
    rows = max(1, math.ceil(len(seeds) / columns))
    fig = Figure(figsize=(1.75 * columns, 2.15 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, seed in zip(axes, seeds):
        scene = sample_scene(seed, world=world)
        ax.axis("on")
        ax.imshow(np.asarray(render(scene, size)), interpolation="nearest")
        _axes_off(ax, textwrap.fill(scene.prompt, width), fontsize=7)
    return fig


def tokens(tokenizer, text: str) -> list[str]:
    """How ``tokenizer`` (a CLIPTokenizer, e.g. ``model.pipe.tokenizer``) splits ``text``, start and end included."""
    return tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)


_PROMPT = re.compile(r"^(?P<objects>.+) on an? (?P<background>.+) background$")
_LOOKS = "|".join(s for s in STYLES if s != "plain")
_OBJECT = re.compile(rf"^an? (?:(?P<style>{_LOOKS}) )?(?P<colour>\w+) (?P<kind>\w+)$")


def parse_prompt(prompt: str) -> tuple[list[tuple[str, str]], tuple[str, ...]] | None:
    """The scene grammar's prompt as ([(colour, kind), ...], background colours); None if it is not one."""
    match = _PROMPT.match(prompt.strip().lower())
    if match is None:
        return None
    parts = re.split(r", | and ", match["objects"])
    shapes = []
    for part in parts:
        m = _OBJECT.match(part.strip())
        if m is None or m["colour"] not in COLOURS or m["kind"] not in SHAPES:
            return None
        shapes.append((m["colour"], m["kind"]))
    background = tuple(c.strip() for c in match["background"].split(" and "))
    if not 1 <= len(background) <= 2 or any(c not in COLOURS for c in background):
        return None
    return shapes, background


# ---------------------------------------------------------------------------------------------- samples
def read_shapes(image: np.ndarray, n: int, threshold: float = 60.0, min_area: int = 12) -> list[tuple[str, str]]:
    """Up to ``n`` (colour, kind) of the largest blobs that differ from the background, largest first.

    :func:`dragnb.tiny.adherence.read_single_shape` for several shapes: the background and the difference mask
    are read the same way, then the largest component is named and removed, ``n`` times.
    """
    a = np.asarray(image, dtype=np.float32)[..., :3]  # (H, W, 3)
    h = a.shape[0]
    bg = np.empty_like(a)  # the border medians of the top and bottom halves, as read_single_shape takes them
    bg[: h // 2] = np.median(np.concatenate([a[0, :], a[: h // 2, 0], a[: h // 2, -1]]), 0)
    bg[h // 2 :] = np.median(np.concatenate([a[-1, :], a[h // 2 :, 0], a[h // 2 :, -1]]), 0)
    remaining = np.abs(a - bg).max(-1) > threshold  # (H, W)
    out = []
    for _ in range(n):
        blob = largest_component(remaining)
        if blob.sum() < min_area:
            break
        ious = template_ious(blob)
        out.append((nearest_colour(body_colour(a[blob])), max(ious, key=ious.get)))
        remaining &= ~blob
    return out


@dataclass(frozen=True)
class Sample:
    """One generated image, what segmentation reads in it, and how much of its prompt that matches."""

    prompt: str
    seed: int
    image: np.ndarray  # (H, W, 3) uint8
    shapes_read: tuple[tuple[str, str], ...]  # (colour, kind) of the largest blobs
    background_read: tuple[str, ...]
    n_shapes: int  # shapes the prompt asks for (0: not a prompt of the grammar, nothing scored)
    colours_right: int  # prompt colours found among the read shapes (multiset intersection)
    kinds_right: int  # prompt shape kinds found
    background_right: bool


def score_image(image: np.ndarray, prompt: str, seed: int = 0) -> Sample:
    """Read ``image`` back into words and compare with ``prompt`` (single shapes exactly as training checked them)."""
    parsed = parse_prompt(prompt)
    wanted, background = parsed if parsed is not None else ([], ())
    if len(wanted) <= 1:
        reading: Reading = read_single_shape(image)
        read = [(reading.colour, reading.kind)] if reading.colour is not None else []
        read_bg = reading.background
    else:
        read = read_shapes(image, len(wanted))
        read_bg = read_single_shape(image).background
    colours = sum((Counter(c for c, _ in wanted) & Counter(c for c, _ in read)).values())
    kinds = sum((Counter(k for _, k in wanted) & Counter(k for _, k in read)).values())
    return Sample(prompt, seed, image, tuple(read), tuple(read_bg), len(wanted), colours, kinds,
                  bool(wanted) and tuple(read_bg) == tuple(background))


def draw_samples(model, prompts: Sequence[str], n_per_prompt: int = 3, steps: int = 20, guidance: float = 4.0,
                 seed: int = 0) -> list[Sample]:
    """``n_per_prompt`` DDIM samples of each prompt (seeds ``seed``, ``seed + 1``, ...), each read and scored."""
    from ..generate import generate
    from ..images import from_model_tensor

    out = []
    for prompt in prompts:
        for i in range(n_per_prompt):
            g = generate(model, prompt, guidance_scale=guidance, seed=seed + i, num_steps=steps)
            out.append(score_image(from_model_tensor(g.image), prompt, seed + i))
    return out


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def samples_per_prompt(samples: Sequence[Sample], width: int = 30) -> Figure:
    """One row per prompt: its samples, each titled with what segmentation read and whether it matches."""
    prompts = list(dict.fromkeys(s.prompt for s in samples))
    columns = max(Counter(s.prompt for s in samples).values()) if samples else 1
    fig = Figure(figsize=(2.1 + 1.75 * columns, 2.05 * max(1, len(prompts))), layout="constrained")
    axes = fig.subplots(max(1, len(prompts)), columns + 1, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, prompt in enumerate(prompts):
        axes[row, 0].text(1.0, 0.5, textwrap.fill(prompt, width // 2 + 4), ha="right", va="center", fontsize=8,
                          transform=axes[row, 0].transAxes)
        for col, s in enumerate([s for s in samples if s.prompt == prompt]):
            ax = axes[row, col + 1]
            ax.axis("on")
            ax.imshow(s.image, interpolation="nearest")
            read = ", ".join(f"{c} {k}" for c, k in s.shapes_read) or "(no shape)"
            read += " / " + " & ".join(s.background_read)
            if s.n_shapes == 1:
                verdict = (f"colour {_mark(s.colours_right == 1)} shape {_mark(s.kinds_right == 1)} "
                           f"bg {_mark(s.background_right)}")
            elif s.n_shapes > 1:
                verdict = (f"colour {s.colours_right}/{s.n_shapes} shape {s.kinds_right}/{s.n_shapes} "
                           f"bg {_mark(s.background_right)}")
            else:
                verdict = "(prompt outside the grammar)"
            _axes_off(ax, f"{textwrap.fill(read, width)}\n{verdict}", fontsize=6.5)
    return fig


def sample_tally(samples: Sequence[Sample]) -> dict[str, float]:
    """Fractions right over the scored samples: colours, shape kinds (per asked shape) and backgrounds."""
    scored = [s for s in samples if s.n_shapes > 0]
    asked = sum(s.n_shapes for s in scored)
    return {
        "samples": len(scored),
        "colour": sum(s.colours_right for s in scored) / asked if asked else float("nan"),
        "shape": sum(s.kinds_right for s in scored) / asked if asked else float("nan"),
        "background": sum(s.background_right for s in scored) / len(scored) if scored else float("nan"),
    }


# -------------------------------------------------------------------------------------------- inversion
@dataclass(frozen=True)
class RoundTrip:
    """DDIM inversion of one image to the drag's step and back, against the VAE reconstruction."""

    prompt: str
    source: np.ndarray  # (H, W, 3) uint8 at the model size
    reconstruction: np.ndarray  # decode(encode(source)): the best any latent edit can give back
    round_trip: np.ndarray  # decode(DDIM(invert(encode(source))))
    t: int  # the inverted timestep
    steps: int  # DDIM steps inverted (and denoised)
    psnr: float  # round trip vs reconstruction (dB): the inversion's own error
    vae_psnr: float  # reconstruction vs source (dB): the VAE's error


def held_out_scenes(n: int, n_shapes: int | None = None, world: str = "flat"):
    """``n`` scenes of ``world`` the model never saw, from seed ``HELD_OUT_SEED`` (the trainer's hold-out mechanism,
    further on than the scenes its own adherence checks use)."""
    return holdout_scenes(n, n_shapes, offset=HELD_OUT_SEED - HOLDOUT_SEED_BASE, world=world)


def model_world(model_dir: str | Path) -> str:
    """The scene world a model folder was trained on (its ``training_summary.json``; "flat" when it does not say)."""
    path = Path(model_dir) / "training_summary.json"
    if not path.is_file():
        return "flat"
    return json.loads(path.read_text()).get("world", "flat")


def inversion_quality(model, images: Sequence[np.ndarray], prompts: Sequence[str] | str = "",
                      settings=None) -> list[RoundTrip]:
    """Invert each image (with its prompt) by ``settings`` (default: the model's), denoise, decode; PSNRs.

    The measure of ``scripts/eval_inversion.py``: the round trip is compared with the VAE reconstruction, not
    with the source, so it isolates the inversion's error from the VAE's (reported separately).
    """
    from ..images import from_model_tensor, model_size, resize_array, to_model_tensor
    from ..inversion import decode_latent, denoise_latent, encode_image, invert
    from ..models import encode_prompt

    settings = settings or model.settings.inversion
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    out = []
    for image, prompt in zip(images, prompts):
        size = model_size(image.shape[:2], model.resolution, model.size_multiple)
        source = resize_array(np.asarray(image, dtype=np.uint8), size)
        z0 = encode_image(model, to_model_tensor(source, size))
        text = encode_prompt(model, prompt, settings.guidance_scale)  # [uncond, cond] when inverting with guidance
        reconstruction = from_model_tensor(decode_latent(model, z0))
        inverted = invert(model, z0, text, settings)
        back_z = denoise_latent(model, inverted.zt, text, settings, settings.guidance_scale)
        back = from_model_tensor(decode_latent(model, back_z))
        out.append(RoundTrip(prompt, source, reconstruction, back, inverted.t, settings.inverted_steps,
                             psnr(back, reconstruction), psnr(reconstruction, source)))
    return out


def round_trip_summary(records: Sequence[RoundTrip]) -> dict[str, float]:
    """Median and worst PSNR of the round trips, and the median VAE PSNR, in dB."""
    trips, vae = [r.psnr for r in records], [r.vae_psnr for r in records]
    return {"images": len(records), "round_trip_median_db": float(np.median(trips)) if trips else float("nan"),
            "round_trip_min_db": min(trips, default=float("nan")),
            "vae_median_db": float(np.median(vae)) if vae else float("nan")}


def inversion_figure(records: Sequence[RoundTrip], amplify: float = 4.0) -> Figure:
    """One row per image: source, VAE reconstruction, round trip, and |round trip − reconstruction| × ``amplify``."""
    fig = Figure(figsize=(8.4, 2.3 * max(1, len(records))), layout="constrained")
    axes = fig.subplots(max(1, len(records)), 4, squeeze=False)
    for row, r in zip(axes, records):
        row[0].imshow(r.source, interpolation="nearest")
        _axes_off(row[0], textwrap.fill(r.prompt, 30), fontsize=6.5)
        row[1].imshow(r.reconstruction, interpolation="nearest")
        _axes_off(row[1], f"VAE reconstruction\n{r.vae_psnr:.1f} dB vs source")
        row[2].imshow(r.round_trip, interpolation="nearest")
        _axes_off(row[2], f"invert {r.steps} steps to t={r.t}, denoise\n{r.psnr:.1f} dB vs reconstruction")
        diff = np.abs(r.round_trip.astype(float) - r.reconstruction.astype(float)) * amplify
        row[3].imshow(np.clip(diff, 0, 255).astype(np.uint8), interpolation="nearest")
        _axes_off(row[3], f"|round trip − reconstruction| × {amplify:g}")
    return fig


# ---------------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Component:
    name: str
    cls: str
    shape: str  # what goes in and out
    config: str  # the sizes that matter
    params: int


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def architecture(model) -> list[Component]:
    """The pipeline's parts with their sizes read from their configs, and parameter counts."""
    pipe = model.pipe
    vae, unet, te, tok, sched = pipe.vae.config, pipe.unet.config, pipe.text_encoder.config, pipe.tokenizer, \
        pipe.scheduler.config
    f = model.vae_scale
    side, latent = model.resolution, unet.sample_size
    return [
        Component("VAE", type(pipe.vae).__name__,
                  f"{side}×{side}×3 → {side // f}×{side // f}×{vae.latent_channels} (f = {f})",
                  f"channels {tuple(vae.block_out_channels)}, {vae.layers_per_block} layer/block, "
                  f"scaling factor {vae.scaling_factor:.3f}", _count(pipe.vae)),
        Component("UNet", type(pipe.unet).__name__, f"{latent}×{latent}×{unet.in_channels} latent, t, text → ε",
                  f"channels {tuple(unet.block_out_channels)}, {unet.layers_per_block} layer/block, "
                  f"cross-attention dim {unet.cross_attention_dim}, "
                  f"{sum('CrossAttn' in b for b in unet.down_block_types)}+"
                  f"{sum('CrossAttn' in b for b in unet.up_block_types)} cross-attention blocks",
                  _count(pipe.unet)),
        Component("text encoder", type(pipe.text_encoder).__name__,
                  f"{tok.model_max_length} tokens → {tok.model_max_length}×{te.hidden_size}",
                  f"{te.num_hidden_layers} layers, width {te.hidden_size}, {te.num_attention_heads} heads, "
                  f"MLP {te.intermediate_size}", _count(pipe.text_encoder)),
        Component("tokenizer", type(tok).__name__, "text → token ids", f"vocabulary {len(tok)}", 0),
        Component("scheduler", type(pipe.scheduler).__name__, "sampling and inversion",
                  f"{sched.num_train_timesteps} steps, {sched.beta_schedule} β {sched.beta_start}–{sched.beta_end}, "
                  f"{sched.prediction_type} prediction", 0),
    ]


# ------------------------------------------------------------------------------------------ drag benchmark
SCENE_BENCHMARK_COLUMNS = ("n", "success_rate", "median_error_px", "placed_rate", "area_kept_rate",
                           "psnr_kept_rate", "median_area_ratio", "median_psnr_outside")


def scene_benchmark_rows(path: str | Path, benchmark: str = "flat") -> list[dict]:
    """The shipped drag figures (``scene_benchmark.json``: {"runs": {label: eval_scenes JSON}} for the flat
    benchmark, ``"textured_runs"`` for the textured one), one row per settings label with the benchmark's
    summary columns; [] when the file or the benchmark is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = []
    for label, run in data.get(record_key(benchmark), {}).items():
        row = {"settings": label, **{k: run.get(k) for k in SCENE_BENCHMARK_COLUMNS}}
        if benchmark != "flat":  # the deformations apart: a move and a stretch are different asks
            row["median_iou"] = run.get("median_iou")
            for kind in ("move", "stretch"):
                row[f"success_{kind}"] = (run.get("success_by_kind") or {}).get(kind)
        if "seconds_per_edit" in run:  # the variant sweeps: drag + denoising, LoRA and inversion shared
            row["seconds_per_edit"] = run["seconds_per_edit"]
        rows.append(row)
    return rows
