"""The run panel: settings as widgets, Run / Stop, a progress bar per stage and a live view of the drag.

The panel drives a :class:`~dragnb.session.DragSession` from a :class:`~dragnb.ui.editor.DragEditor`. Run
starts the session in a worker thread, so the kernel stays free to process Stop (and any other widget
event) while the stages run; :meth:`RunPanel.run` does the same work in the calling thread for scripts and
tests. The session is kept between runs, so stages whose inputs did not change come from its cache.

The live view (handles moving on the editor's canvas, loss terms plotting) is throttled by a time budget:
it draws only while the time spent drawing stays below ``live_fraction`` of the drag's elapsed time, and
``panel.live_stats`` records what it cost. Results are plain data: ``panel.result`` (an
:class:`~dragnb.session.EditResult`), ``panel.received`` (the points and mask the run used),
``panel.history`` (per-iteration handles and loss terms).

Edits go in rounds (:mod:`dragnb.rounds`): **continue from result** makes the result the canvas's source for
the next drag (points and mask cleared; the LoRA trained again on it, or round 0's kept with *keep round 0's
LoRA*), **undo round** and **redo round** move back and forth, and the strip of thumbnails (the current one
framed) goes to any round of any branch. Moving shows that round's source, points, mask, settings and result and
runs nothing; Run then takes what it can from the session's cache.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
import typing

import io

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas
from PIL import Image

from ..callbacks import StepRecord
from ..config import DragSettings, Settings
from ..drag import DragStep
from ..errors import InputError, Interrupted
from ..models import Model
from ..points import grid_to_image
from ..rounds import Round
from ..session import DragSession, EditResult
from .editor import HANDLE_COLOUR, TARGET_COLOUR, DragEditor, draw_dot, drawing, fit_to

VARIANT_CHOICES = ("supervision", "schedule", "tracking")  # DragSettings' method switches with choices


def _drag_hints() -> dict:
    return typing.get_type_hints(DragSettings)


STAGE_LABELS = {"lora": "1 LoRA", "inversion": "2 inversion", "drag": "3 drag", "denoise": "4 denoise"}
LOSS_COLOURS = {"motion": "#e07000", "mask": "#20a040", "total": "#303030"}
THUMBNAIL = 72  # the longer side of a round's thumbnail, screen pixels


class RunPanel(widgets.VBox):
    """Run / Stop buttons, the main settings, a progress bar per stage, a live view and the result.

    ``settings``: the starting values of the widgets (default: the model's own defaults). ``live_fraction``:
    the most of the drag loop's time the live view may take; ``live_interval``: the least seconds between
    two live redraws.
    """

    def __init__(self, model: Model, editor: DragEditor, prompt: str | None = None, settings: Settings | None = None,
                 cache_dir=None, live_fraction: float = 0.02, live_interval: float = 0.1):
        self.model, self.editor = model, editor
        self.base_settings = settings or model.settings
        self.cache_dir = cache_dir
        self.live_fraction, self.live_interval = live_fraction, live_interval
        self.live = True  # draw the live view during the drag
        self.keep_latents = False  # keep each iteration's latent (for plots.drag_animation)
        self.keep_features = False  # keep each iteration's features (for plots.tracking_heatmaps)
        self.session: DragSession | None = None
        self.result: EditResult | None = None
        self.received: dict | None = None
        self.error: str | None = None
        self.history: list[dict] = []
        self.live_stats: dict = {}
        self._thread: threading.Thread | None = None
        self._session_image: np.ndarray | None = None
        self._stop = False
        s = self.base_settings

        self.prompt = widgets.Text(value=editor.prompt if prompt is None else prompt, description="prompt",
                                   layout=widgets.Layout(width="420px"))
        self.drag_steps = widgets.IntSlider(value=s.drag.max_steps, min=1, max=300, description="drag steps")
        self.lr = widgets.FloatLogSlider(value=s.drag.lr, base=10, min=-3, max=-0.5, step=0.05,
                                         description="latent lr η", readout_format=".3g")
        self.lam = widgets.FloatLogSlider(value=s.drag.lam, base=10, min=-3, max=1.5, step=0.05,
                                          description="mask λ", readout_format=".3g")
        self.strength = widgets.FloatSlider(value=s.inversion.strength, min=0.1, max=0.96, step=0.02,
                                            description="inversion", readout_format=".2f")
        n_blocks = len(model.pipe.unet.up_blocks)
        options = [(f"up_blocks[{i}]", (i - n_blocks,)) for i in range(n_blocks)]
        self.block = widgets.Dropdown(options=options, value=options[-2 if n_blocks > 1 else -1][1],
                                      description="features")
        self._show_blocks(s.drag.feature_blocks)
        self.lora_steps = widgets.IntSlider(value=s.lora.steps, min=0, max=300, description="LoRA steps")
        self.reference_control = widgets.Checkbox(value=s.denoise.reference_control,
                                                  description="reference-latent control")
        # one dropdown per method variant (docs/method.md §6), its choices read from DragSettings itself
        self.variants = {name: widgets.Dropdown(options=list(typing.get_args(_drag_hints()[name])),
                                                value=getattr(s.drag, name), description=name)
                         for name in VARIANT_CHOICES}
        self.optimize_text = widgets.Checkbox(value=s.drag.optimize_text, description="optimize text (DragText)")
        # the variants' own numbers: B of the alternating schedule, the hold after arrival, DragText's weight
        self.variant_values = {
            "steps_per_timestep": widgets.IntSlider(value=s.drag.steps_per_timestep, min=1,
                                                    max=max(50, s.drag.steps_per_timestep), description="B per timestep"),
            "hold_steps": widgets.IntSlider(value=s.drag.hold_steps, min=0, max=max(100, s.drag.hold_steps),
                                            description="hold steps"),
            "text_lam": widgets.BoundedFloatText(value=s.drag.text_lam, min=0.0, max=1e6, step=0.01,
                                                 description="text λ"),  # 0 allowed: no regulariser
        }
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = {stage: widgets.IntProgress(value=0, min=0, max=1, description=label,
                                                    style={"description_width": "160px"})
                         for stage, label in STAGE_LABELS.items()}
        self.status = widgets.HTML("ready")
        self.continue_button = widgets.Button(description="continue from result", icon="forward",
                                              tooltip="make this result the source of the next drag", disabled=True)
        self.undo_round_button = widgets.Button(description="undo round", icon="undo", disabled=True,
                                                tooltip="back to the round before: its source, points and mask")
        self.redo_round_button = widgets.Button(description="redo round", icon="repeat", disabled=True,
                                                tooltip="forward to the round undo left")
        self.keep_lora = widgets.Checkbox(value=False, description="keep round 0's LoRA", indent=False,
                                          tooltip="continue without training a LoRA on the new source")
        self.continue_button.on_click(lambda _: self.continue_round())
        self.undo_round_button.on_click(lambda _: self.undo_round())
        self.redo_round_button.on_click(lambda _: self.redo_round())
        for button in (self.continue_button, self.undo_round_button, self.redo_round_button):
            button.layout.width = "170px"
        self.rounds_strip = widgets.HBox([])
        ch, cw = editor.display_size
        self.loss_canvas = Canvas(width=360, height=200)
        self.result_canvas = Canvas(width=cw, height=ch)
        for canvas, (h, w) in ((self.loss_canvas, (200, 360)), (self.result_canvas, (ch, cw))):
            canvas.layout.width, canvas.layout.height = f"{w}px", f"{h}px"
        controls = {"prompt": self.prompt, "steps": self.drag_steps, "lr": self.lr, "lam": self.lam,
                    "strength": self.strength, "block": self.block, "lora-steps": self.lora_steps,
                    "reference-control": self.reference_control, "optimize-text": self.optimize_text,
                    **{f"variant-{name}": box for name, box in {**self.variants, **self.variant_values}.items()},
                    "run": self.run_button, "stop": self.stop_button,
                    "status": self.status, "loss": self.loss_canvas, "result": self.result_canvas,
                    "continue": self.continue_button, "undo-round": self.undo_round_button,
                    "redo-round": self.redo_round_button, "keep-lora": self.keep_lora, "rounds": self.rounds_strip}
        for name, control in controls.items():
            control.add_class(f"dragnb-{name}")
        for stage, bar in self.progress.items():
            bar.add_class(f"dragnb-progress-{stage}")
        settings_box = widgets.VBox([self.prompt, self.drag_steps, self.lr, self.lam, self.strength, self.block,
                                     self.lora_steps, self.reference_control, *self.variants.values(),
                                     self.optimize_text, *self.variant_values.values(),
                                     widgets.HBox([self.run_button, self.stop_button]), *self.progress.values(),
                                     self.status])
        results = widgets.HBox([self.result_canvas, self.loss_canvas])
        results.add_class("dragnb-results")
        rounds = widgets.VBox([widgets.HBox([self.continue_button, self.undo_round_button, self.redo_round_button,
                                             self.keep_lora]), self.rounds_strip])
        super().__init__([widgets.HBox([editor, settings_box]), results, rounds])
        self.add_class("dragnb-panel")
        self._clear_loss()

    # ---- settings -----------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The widgets' values over ``base_settings`` (dataclasses.replace, stage by stage)."""
        s = self.base_settings
        return dataclasses.replace(
            s, lora=dataclasses.replace(s.lora, steps=int(self.lora_steps.value)),
            inversion=dataclasses.replace(s.inversion, strength=round(float(self.strength.value), 4)),
            drag=dataclasses.replace(s.drag, max_steps=int(self.drag_steps.value), lr=float(self.lr.value),
                                     lam=float(self.lam.value), feature_blocks=tuple(self.block.value),
                                     optimize_text=bool(self.optimize_text.value),
                                     **{name: box.value for name, box in self.variants.items()},
                                     **{name: type(getattr(s.drag, name))(box.value)
                                        for name, box in self.variant_values.items()}),
            denoise=dataclasses.replace(s.denoise, reference_control=bool(self.reference_control.value)))

    def _show_blocks(self, blocks: tuple[int, ...]) -> None:
        """The features dropdown set to ``blocks`` (negative indices), adding a choice for a combination."""
        n_blocks = len(self.model.pipe.unet.up_blocks)
        value = tuple(b if b < 0 else b - n_blocks for b in blocks)
        if value not in [v for _, v in self.block.options]:
            self.block.options = [*self.block.options,
                                  (" + ".join(f"up_blocks[{b % n_blocks}]" for b in value), value)]
        self.block.value = value

    def _show_settings(self, s: Settings) -> None:
        """The widgets show ``s`` (a round's settings) and edit over it."""
        self.base_settings = s
        self.drag_steps.value, self.lr.value, self.lam.value = s.drag.max_steps, s.drag.lr, s.drag.lam
        self.strength.value, self.lora_steps.value = s.inversion.strength, s.lora.steps
        self.reference_control.value = s.denoise.reference_control
        self.optimize_text.value = s.drag.optimize_text
        for name, box in {**self.variants, **self.variant_values}.items():
            box.value = getattr(s.drag, name)
        self._show_blocks(s.drag.feature_blocks)

    # ---- running ------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run in a worker thread (what the Run button does); returns at once."""
        if self.running:
            return
        self._begin()  # before the thread starts, so a Stop pressed right after Run is never lost
        self._thread = threading.Thread(target=self._work, name="dragnb-run", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> EditResult | None:
        """Block until a started run ends; returns the result."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def run(self) -> EditResult | None:
        """Run in the calling thread; returns the result (None after an error, see ``panel.error``)."""
        if self.running:
            raise RuntimeError("a run is in progress: press Stop or call panel.wait() first")
        self._begin()
        self._work()
        return self.result

    def stop(self) -> None:
        """Ask the run to stop: the drag ends after its current iteration and its partial result is denoised;
        a LoRA in training stops after its current step (and is not cached)."""
        self._stop = True
        if self.session is not None:
            self.session.request_stop()
        if self.running:
            self.status.value = "stopping…"

    def _session(self) -> DragSession:
        """The panel's session, kept across runs (so caches hold) while the image stays the same."""
        if self.session is None or self._session_image is not self.editor.image:
            self.session = DragSession(self.model, self.editor.image, self.prompt.value, self.settings,
                                       cache_dir=self.cache_dir)
            self._session_image = self.editor.image
        session = self.session
        session.prompt, session.settings = self.received["prompt"], self.settings
        session.set_points(self.received["points"])
        session.set_mask(self.received["mask"])
        return session

    def _begin(self) -> None:
        """Reset the run's state and take the inputs (in the caller's thread)."""
        self._stop = False
        self.error = None
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._update_rounds(busy=True)
        self.received = {"points": self.editor.points, "mask": self.editor.mask, "prompt": self.prompt.value}
        self.history = []
        self.live_stats = {"view_seconds": 0.0, "draws": 0}
        self.status.value = "starting…"

    def _work(self) -> None:
        self.editor.layers["live"].clear()
        self._clear_loss()
        try:
            session = self._session()
            settings = session.settings
            self._grid = session.feature_grid
            for stage in self.progress:
                cached = session.is_cached(stage) if stage != "denoise" else False
                skipped = (stage == "lora" and settings.lora.steps == 0)
                self._set_progress(stage, int(cached or skipped), 1, "cached" if cached else
                                   "skipped" if skipped else None)
            self.status.value = "running…"
            tick = time.perf_counter()
            self.result = session.run(callbacks=[self._on_record], keep_latents=self.keep_latents,
                                      keep_features=self.keep_features)
            seconds = time.perf_counter() - tick
            self._finish(self.result, seconds)
        except Interrupted as exc:  # Stop (or Ctrl-C) during LoRA or inversion: nothing to denoise yet
            self.result = None
            self.status.value = f"<b>stopped</b> during {exc.stage}; nothing was cached, Run starts it again"
            if not self._stop:
                raise
        except KeyboardInterrupt:  # Ctrl-C / kernel interrupt during a run in the calling thread
            self.status.value = "<b>interrupted</b>"
            raise
        except Exception as exc:  # shown in the panel; the kernel stays usable
            self.result = None
            self.error = f"{type(exc).__name__}: {exc}"
            self.status.value = f"<b>error</b>: {self.error}"
            if not isinstance(exc, InputError):  # a user's mistake needs no traceback
                traceback.print_exc()
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
            self._update_rounds(busy=False)

    def _set_progress(self, stage: str, value: int, total: int, note: str | None = None) -> None:
        bar = self.progress[stage]
        bar.max = max(1, total)
        bar.value = min(value, bar.max)
        bar.bar_style = "success" if value >= total else "info"
        bar.description = f"{STAGE_LABELS[stage]}{' (' + note + ')' if note else ''}"

    def _on_record(self, record: StepRecord) -> bool:
        """The panel's one callback: every stage's bar; the drag's steps also feed the live view (and its bar)."""
        if record.stage == "drag":
            return self._on_step(record)
        self._set_progress(record.stage, record.done, record.total)
        return False

    def _on_step(self, step: DragStep) -> bool:
        """The drag's callback: record the iteration, redraw within the time budget, say whether to stop."""
        tick = time.perf_counter()
        if not self.history:
            self._drag_start = tick - step.seconds
        self.history.append({"step": step.step, "motion": step.motion_loss, "mask": step.mask_loss,
                             "total": step.loss, "distances": list(step.distances),
                             "handles_xy": grid_to_image(step.handles, self.editor.image_size, self._grid),
                             "seconds": step.seconds})
        stats = self.live_stats
        elapsed = tick - self._drag_start
        if self.live and tick - stats.get("last_draw", 0.0) >= self.live_interval \
                and stats["view_seconds"] <= self.live_fraction * elapsed:
            try:
                self._set_progress("drag", step.done, step.total)
                self._draw_live()
                stats["draws"] += 1
            except Exception as exc:  # a view must never break the run it shows
                stats["view_error"] = f"{type(exc).__name__}: {exc}"
            stats["last_draw"] = time.perf_counter()
        stats["view_seconds"] += time.perf_counter() - tick
        return self._stop

    def _finish(self, result: EditResult, seconds: float) -> None:
        drag = result.drag
        loop = sum(s.seconds for s in drag.history)
        self.live_stats.update(loop_seconds=loop, fraction=self.live_stats["view_seconds"] / loop if loop else 0.0,
                               steps=len(drag.history))
        self.live_stats.pop("last_draw", None)
        for stage in self.progress:
            note = "cached" if result.cached.get(stage) else None
            if stage == "drag":
                note = note or f"{len(drag.history)} steps, {drag.stop_reason}"
            self._set_progress(stage, 1, 1, note)
        if self.history:
            self._draw_live()
        self.show_result(result)
        reason = {"reached": "all handles reached their targets", "max_steps": "step limit reached",
                  "callback": "stopped: partial result", "non-finite": "stopped: non-finite loss",
                  "interrupted": "interrupted: partial result"}.get(drag.stop_reason, drag.stop_reason)
        self.status.value = (f"<b>done</b> in {seconds:.1f} s · drag {len(drag.history)} steps ({reason}) · "
                             f"live view {100 * self.live_stats['fraction']:.1f} % of the loop")

    # ---- rounds (dragnb/rounds.py) --------------------------------------------------------------------
    def continue_round(self) -> Round | None:
        """What "continue from result" does: the result becomes the canvas's source, points and mask cleared."""
        return self._move(lambda s: s.round.done, lambda s: s.new_round(keep_lora=bool(self.keep_lora.value)))

    def undo_round(self) -> Round | None:
        """What "undo round" does: show the round before (its source, points, mask, settings and result)."""
        return self._move(lambda s: s.history.can_undo, lambda s: s.undo())

    def redo_round(self) -> Round | None:
        """What "redo round" does: show the round undo left."""
        return self._move(lambda s: s.history.can_redo, lambda s: s.redo())

    def goto_round(self, index: int) -> Round | None:
        """What a thumbnail's button does: show round ``index``."""
        return self._move(lambda s: True, lambda s: s.goto(index))

    def _move(self, allowed, action) -> Round | None:
        """``action(session)`` when no run is going and ``allowed(session)``, then show the round it went to."""
        if self.running or self.session is None or not allowed(self.session):
            return None
        action(self.session)
        return self._show_round()

    def _show_round(self) -> Round:
        """The editor shows the session's current round; nothing runs (Run then finds its stages cached)."""
        rnd = self.session.round
        self.editor.set_image(rnd.source, None if rnd.points is None else rnd.points.as_list(), rnd.mask)
        self._session_image = self.editor.image  # the same session goes on
        self.prompt.value = rnd.prompt
        if rnd.settings != self.settings:
            self._show_settings(rnd.settings)
        self.result, self.history = rnd.result, []
        self._clear_loss()
        if rnd.result is not None:
            self.show_result(rnd.result)
        else:
            with drawing():
                self.result_canvas.clear()
        origin = "a first round" if rnd.parent is None else f"from round {rnd.parent}'s result"
        lora = ", round 0's LoRA kept" if rnd.keep_lora else ""
        todo = ("its result is shown; Run again comes from the cache" if rnd.done
                else "click a handle and its target, then Run")
        self.status.value = f"<b>round {rnd.index}</b> ({origin}{lora}): {todo}"
        self._update_rounds(busy=False)
        return rnd

    def _update_rounds(self, busy: bool) -> None:
        """The strip of thumbnails (the current round framed) and which round buttons can be pressed."""
        session = self.session
        rounds = [] if session is None else session.rounds
        current = None if session is None else session.round.index
        self.rounds_strip.children = [self._thumbnail(rnd, rnd.index == current, busy) for rnd in rounds]
        self.continue_button.disabled = busy or session is None or not session.round.done
        self.undo_round_button.disabled = busy or session is None or not session.history.can_undo
        self.redo_round_button.disabled = busy or session is None or not session.history.can_redo

    def _thumbnail(self, rnd: Round, current: bool, busy: bool) -> widgets.VBox:
        """A round's result (its source until it has run) and a button that goes to it."""
        image = rnd.image if rnd.done else rnd.source
        h, w = image.shape[:2]
        size = (max(1, round(THUMBNAIL * h / max(h, w))), max(1, round(THUMBNAIL * w / max(h, w))))
        buffer = io.BytesIO()
        Image.fromarray(fit_to(image, size)).save(buffer, format="png")
        picture = widgets.Image(value=buffer.getvalue(), format="png",
                                layout=widgets.Layout(width=f"{size[1]}px", height=f"{size[0]}px"))
        label = f"{rnd.index}" + ("" if rnd.parent is None else f" ← {rnd.parent}") + ("" if rnd.done else " ·")
        button = widgets.Button(description=label, disabled=busy, button_style="info" if current else "",
                                tooltip=f"round {rnd.index}" + ("" if rnd.parent is None else
                                                                f", from round {rnd.parent}'s result")
                                + ("" if rnd.done else ", not run yet"),
                                layout=widgets.Layout(width=f"{max(size[1], 56)}px"))
        button.on_click(lambda _, index=rnd.index: self.goto_round(index))
        box = widgets.VBox([picture, button],
                           layout=widgets.Layout(border=f"2px solid {TARGET_COLOUR if current else 'transparent'}",
                                                 padding="2px", margin="0 4px 0 0"))
        box.add_class("dragnb-round")
        if current:
            box.add_class("dragnb-round-current")
        return box

    # ---- drawing ------------------------------------------------------------------------------------
    def _draw_live(self) -> None:
        """Handles and their paths so far on the editor's top layer; the loss terms on the loss canvas."""
        editor, layer = self.editor, self.editor.layers["live"]
        path = np.stack([h["handles_xy"] for h in self.history])  # (K, N, 2) image pixels
        with drawing():
            layer.clear()
            draw_trajectories(layer, editor, path)
            self._draw_loss()

    def _clear_loss(self) -> None:
        c = self.loss_canvas
        with drawing():
            c.clear()
            c.fill_style = "white"
            c.fill_rect(0, 0, c.width, c.height)
            c.fill_style = "#444"
            c.font = "12px sans-serif"
            c.fill_text("loss terms per drag step, each scaled to its own maximum", 8, 14)

    def _draw_loss(self) -> None:
        """Each term over its own maximum (the mask term's sum can dwarf the motion term), maxima in the legend."""
        c = self.loss_canvas
        left, top, right, bottom = 8, 24, c.width - 8, c.height - 66
        steps = max(2, int(self.session.settings.drag.max_steps))
        values = {k: np.array([h[k] for h in self.history]) for k in LOSS_COLOURS}
        self._clear_loss()
        c.stroke_style = "#999"
        c.line_width = 1
        c.stroke_rect(left, top, right - left, bottom - top)
        c.fill_style = "#444"
        c.fill_text(f"step {len(self.history)} / {steps}", right - 90, bottom + 14)
        for i, (name, v) in enumerate(values.items()):
            peak = max(float(v.max()), 1e-12)
            x = left + (right - left) * np.arange(len(v)) / (steps - 1)
            y = bottom - (bottom - top) * v / peak
            c.stroke_style = c.fill_style = LOSS_COLOURS[name]
            c.line_width = 2
            if len(v) > 1:
                c.stroke_lines(np.stack([x, y], axis=1))
            c.fill_text(f"{name}: {v[-1]:.3g} now, {peak:.3g} max", left, bottom + 14 * (i + 1))

    def show_result(self, result: EditResult) -> None:
        """The edited image with each handle's trajectory (white), final handle (red) and target (blue)."""
        c, editor = self.result_canvas, self.editor
        with drawing():
            c.clear()
            c.put_image_data(fit_to(result.image, editor.display_size), 0, 0)
            draw_trajectories(c, editor, result.trajectory_xy(), result.points.targets)


def draw_trajectories(layer, editor: DragEditor, path: np.ndarray, targets: np.ndarray | None = None) -> None:
    """Each handle's path (K, N, 2) in image pixels as a line, its last position as a red dot."""
    radius = max(3.0, editor.display_size[1] / 100)
    for i in range(path.shape[1]):
        pts = np.array([editor.image_to_canvas(x, y) for x, y in path[:, i]])
        if targets is not None:
            draw_dot(layer, editor.image_to_canvas(*targets[i]), radius, TARGET_COLOUR)
        if len(pts) > 1:
            layer.stroke_style = "#ffe000"
            layer.line_width = 2
            layer.stroke_lines(pts)
        draw_dot(layer, tuple(pts[-1]), radius, HANDLE_COLOUR)
