"""The run panel: settings as widgets, Run / Stop, a progress bar per stage and a live view of the drag.

The panel drives a :class:`~dragnb.session.DragSession` from a :class:`~dragnb.ui.editor.DragEditor`. Run
starts the session in a worker thread, so the kernel stays free to process Stop (and any other widget
event) while the stages run; :meth:`RunPanel.run` does the same work in the calling thread for scripts and
tests. The session is kept between runs, so stages whose inputs did not change come from its cache.

The live view (handles moving on the editor's canvas, loss terms plotting) is throttled by a time budget:
it draws only while the time spent drawing stays below ``live_fraction`` of the drag's elapsed time, and
``panel.live_stats`` records what it cost. Results are plain data: ``panel.result`` (an
:class:`~dragnb.edit.EditResult`), ``panel.received`` (the points and mask the run used),
``panel.history`` (per-iteration handles and loss terms). When ``drag.image_copy`` moved objects in the image
(docs/method.md §3.6), the **moved image** button shows that image, where the loop started, in place of the
result.

Stop asks the session (``session.request_stop()``, its one stop flag, which holds until the run ends); the panel
holds none. The settings' widgets are a :class:`~dragnb.ui.settingsform.SettingsForm`
(``panel.settings_form``), the rounds' a :class:`~dragnb.ui.roundstrip.RoundStrip` (``panel.round_strip``); their
widgets are the panel's attributes too (``panel.drag_steps``, ``panel.continue_button``, ...).

Edits go in rounds (:mod:`dragnb.rounds`): **continue from result** makes the result the canvas's source for
the next drag (points and mask cleared; the LoRA trained again on it, or round 0's kept with *keep round 0's
LoRA*), **undo round** and **redo round** move back and forth, and the strip of thumbnails (the current one
framed) goes to any round of any branch. Moving shows that round's source, points, mask, settings and result and
runs nothing; Run then takes what it can from the session's cache.
"""

from __future__ import annotations

import threading
import time
import traceback

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas
from IPython.display import display

from ..callbacks import StepRecord
from ..config import Settings
from ..drag import DragStep
from ..edit import EditResult
from ..errors import InputError, Interrupted
from ..models import Model
from ..points import grid_to_image
from ..rounds import Round
from ..session import DragSession
from .editor import HANDLE_COLOUR, TARGET_COLOUR, DragEditor, draw_dot, drawing, fit_to
from .roundstrip import RoundStrip
from .scrubber import Scrubber
from .settingsform import SettingsForm

STAGE_LABELS = {"lora": "1 LoRA", "inversion": "2 inversion", "drag": "3 drag", "denoise": "4 denoise"}
LOSS_COLOURS = {"motion": "#e07000", "mask": "#20a040", "total": "#303030"}


class RunPanel(widgets.VBox):
    """Run / Stop buttons, the main settings, a progress bar per stage, a live view and the result.

    ``settings``: the starting values of the widgets (default: the model's own defaults). ``live_fraction``:
    the most of the drag loop's time the live view may take; ``live_interval``: the least seconds between
    two live redraws.
    """

    def __init__(self, model: Model, editor: DragEditor, prompt: str | None = None, settings: Settings | None = None,
                 cache_dir=None, live_fraction: float = 0.02, live_interval: float = 0.1):
        self.model, self.editor = model, editor
        self.cache_dir = cache_dir
        self.live_fraction, self.live_interval = live_fraction, live_interval
        self.live = True  # draw the live view during the drag
        self.keep_latents = True  # keep each iteration's latent (the scrubber's x̂_0; small beside the model)
        self.keep_features = False  # keep each iteration's features (for plots.tracking_heatmaps)
        self.session: DragSession | None = None
        self.result: EditResult | None = None
        self.received: dict | None = None
        self.error: str | None = None
        self.history: list[dict] = []
        self.live_stats: dict = {}
        self._thread: threading.Thread | None = None
        self._session_image: np.ndarray | None = None

        self.prompt = widgets.Text(value=editor.prompt if prompt is None else prompt, description="prompt",
                                   layout=widgets.Layout(width="420px"))
        self.settings_form = form = SettingsForm(settings or model.settings, len(model.pipe.unet.up_blocks))
        self.round_strip = strip = RoundStrip(on_continue=self.continue_round, on_undo=self.undo_round,
                                              on_redo=self.redo_round, on_goto=self.goto_round)
        # the form's and the strip's widgets under the panel's names (scripts, tests and notebooks use them)
        self.drag_steps, self.lr, self.lam, self.strength = form.drag_steps, form.lr, form.lam, form.strength
        self.block, self.lora_steps, self.reference_control = form.block, form.lora_steps, form.reference_control
        self.variants, self.optimize_text, self.variant_values = form.variants, form.optimize_text, form.variant_values
        self.continue_button, self.undo_round_button = strip.continue_button, strip.undo_button
        self.redo_round_button, self.keep_lora, self.rounds_strip = strip.redo_button, strip.keep_lora, strip.thumbnails
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = {stage: widgets.IntProgress(value=0, min=0, max=1, description=label,
                                                    style={"description_width": "160px"})
                         for stage, label in STAGE_LABELS.items()}
        self.status = widgets.HTML("ready")
        self.scrub_button = widgets.Button(description="scrub iterations", icon="film", disabled=True,
                                           tooltip="the finished drag under one slider: x̂_0, handles, search, losses")
        self.scrub_button.on_click(lambda _: self.show_scrubber())
        self.moved_button = widgets.ToggleButton(description="moved image", icon="clone", disabled=True,
                                                 tooltip="drag.image_copy: the image with the objects moved (and the "
                                                         "place they left filled), where the loop started")
        self.moved_button.observe(lambda _: self.result is not None and self.show_result(self.result), "value")
        self.scrub_area = widgets.Output()  # where the scrubber appears
        ch, cw = editor.display_size
        self.loss_canvas = Canvas(width=360, height=200)
        self.result_canvas = Canvas(width=cw, height=ch)
        for canvas, (h, w) in ((self.loss_canvas, (200, 360)), (self.result_canvas, (ch, cw))):
            canvas.layout.width, canvas.layout.height = f"{w}px", f"{h}px"
        controls = {"prompt": self.prompt, "run": self.run_button, "stop": self.stop_button, "status": self.status,
                    "loss": self.loss_canvas, "result": self.result_canvas, "scrub": self.scrub_button,
                    "moved": self.moved_button}
        for name, control in controls.items():
            control.add_class(f"dragnb-{name}")
        for stage, bar in self.progress.items():
            bar.add_class(f"dragnb-progress-{stage}")
        settings_box = widgets.VBox([self.prompt, form, widgets.HBox([self.run_button, self.stop_button,
                                                                       self.scrub_button, self.moved_button]),
                                     *self.progress.values(), self.status])
        results = widgets.HBox([self.result_canvas, self.loss_canvas])
        results.add_class("dragnb-results")
        super().__init__([widgets.HBox([editor, settings_box]), results, self.scrub_area, strip])
        self.add_class("dragnb-panel")
        self._clear_loss()

    # ---- settings -----------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The form's values over ``base_settings`` (:attr:`SettingsForm.settings`)."""
        return self.settings_form.settings

    @property
    def base_settings(self) -> Settings:
        """The settings the form edits over: the panel's starting ones, or the round it shows."""
        return self.settings_form.base

    # ---- running ------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run in a worker thread (what the Run button does); returns at once."""
        if self.running or not self._begin():  # the session is ready before the thread starts: a Stop finds it
            return
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
        if self._begin():
            self._work()
        return self.result

    def stop(self) -> None:
        """Ask the run to stop: the drag ends after its current iteration and its partial result is denoised;
        a LoRA in training stops after its current step (and is not cached). The request goes to the session's one
        flag (``session.request_stop()``), which holds until that run ends."""
        if self.stop_button.disabled or self.session is None:  # no run in progress: nothing to stop
            return
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
        mask = self.received["mask"]
        session.set_mask(mask if mask.any() else None)  # nothing painted: no mask, as the editor's info line says
        return session

    def _begin(self) -> bool:
        """Take the inputs and ready the session, in the caller's thread (so a Stop pressed right after Run finds
        it); False, with the error shown, when they cannot run."""
        self.error = None
        self.received = {"points": self.editor.points, "mask": self.editor.mask, "prompt": self.prompt.value}
        self.history = []
        self.live_stats = {"view_seconds": 0.0, "draws": 0}
        try:
            self._session()
        except Exception as exc:  # a bad input or setting: shown in the panel, nothing runs
            self._show_error(exc)
            return False
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._update_rounds(busy=True)
        self.status.value = "starting…"
        return True

    def _show_error(self, exc: Exception) -> None:
        self.result = None
        self.error = f"{type(exc).__name__}: {exc}"
        self.status.value = f"<b>error</b>: {self.error}"
        if not isinstance(exc, InputError):  # a user's mistake needs no traceback
            traceback.print_exc()

    def _work(self) -> None:
        self.editor.layers["live"].clear()
        self._clear_loss()
        try:
            session = self.session
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
            self.stop_button.disabled = True  # the run is over: a Stop now would carry into the next one
            seconds = time.perf_counter() - tick
            self._finish(self.result, seconds)
        except Interrupted as exc:  # Stop (or Ctrl-C) during LoRA or inversion: nothing to denoise yet
            self.result = None
            self.status.value = f"<b>stopped</b> during {exc.stage}; nothing was cached, Run starts it again"
            if not exc.stopped:  # Ctrl-C, not Stop
                raise
        except KeyboardInterrupt:  # Ctrl-C / kernel interrupt during a run in the calling thread
            self.status.value = "<b>interrupted</b>"
            raise
        except Exception as exc:  # shown in the panel; the kernel stays usable
            self._show_error(exc)
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.scrub_button.disabled = self.result is None
            self.moved_button.disabled = self.result is None or "moved_start" not in self.result.drag.extras
            if self.moved_button.disabled:
                self.moved_button.value = False
            self._update_rounds(busy=False)

    def _set_progress(self, stage: str, value: int, total: int, note: str | None = None) -> None:
        bar = self.progress[stage]
        bar.max = max(1, total)
        bar.value = min(value, bar.max)
        bar.bar_style = "success" if value >= total else "info"
        bar.description = f"{STAGE_LABELS[stage]}{' (' + note + ')' if note else ''}"

    def _on_record(self, record: StepRecord) -> None:
        """The panel's one callback: every stage's bar; the drag's steps also feed the live view (and its bar).
        It never asks to stop: Stop asks the session, whose own callback stops LoRA and the drag."""
        if record.stage == "drag":
            self._on_step(record)
        else:
            self._set_progress(record.stage, record.done, record.total)

    def _on_step(self, step: DragStep) -> None:
        """The drag's steps: record the iteration, redraw within the time budget."""
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
                  "interrupted": "interrupted: partial result",
                  "one step": f"{drag.method} moves in one step"}.get(drag.stop_reason, drag.stop_reason)
        self.status.value = (f"<b>done</b> in {seconds:.1f} s · drag {len(drag.history)} steps ({reason}) · "
                             f"live view {100 * self.live_stats['fraction']:.1f} % of the loop")

    # ---- rounds (dragnb/rounds.py) --------------------------------------------------------------------
    def continue_round(self, keep_lora: bool | None = None) -> Round | None:
        """What "continue from result" does: the result becomes the canvas's source, points and mask cleared;
        ``keep_lora`` (default: the strip's checkbox) keeps round 0's LoRA instead of training one on it."""
        keep = bool(self.keep_lora.value if keep_lora is None else keep_lora)
        return self._move(lambda s: s.round.done, lambda s: s.new_round(keep_lora=keep))

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
            self.settings_form.show(rnd.settings)
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
        """The strip shows the session's rounds (the current one framed) and which moves it allows."""
        s = self.session
        if s is None:
            self.round_strip.show([], None, can_continue=False, can_undo=False, can_redo=False, busy=busy)
        else:
            self.round_strip.show(s.rounds, s.round.index, can_continue=s.round.done, can_undo=s.history.can_undo,
                                  can_redo=s.history.can_redo, busy=busy)

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

    def show_scrubber(self) -> Scrubber | None:
        """The last result's drag under one slider (:class:`~dragnb.ui.scrubber.Scrubber`), shown below the result;
        None, with a word in the status, when the run kept no latents (``panel.keep_latents``)."""
        result = self.result
        if result is not None and not result.drag.history:
            self.status.value = f"nothing to scrub: {result.drag.method} ran no iterations ({result.drag.stop_reason})"
            return None
        if result is None or result.drag.history[0].latent is None:
            self.status.value = "nothing to scrub: run with <code>panel.keep_latents = True</code>"
            return None
        scrubber = Scrubber.from_model(self.model, result)
        self.scrub_area.clear_output()
        with self.scrub_area:
            display(scrubber)
        return scrubber

    def show_result(self, result: EditResult) -> None:
        """The edited image with each handle's trajectory (white), final handle (red) and target (blue); with the
        "moved image" button down, the image ``drag.image_copy`` made instead (the objects moved in it, the place
        they left filled: ``DragResult.extras["moved_start"].image``), with the drags as lines."""
        c, editor = self.result_canvas, self.editor
        moved = result.drag.extras.get("moved_start") if self.moved_button.value else None
        with drawing():
            c.clear()
            if moved is None:
                c.put_image_data(fit_to(result.image, editor.display_size), 0, 0)
                draw_trajectories(c, editor, result.trajectory_xy(), result.points.targets)
            else:
                c.put_image_data(fit_to(moved.image, editor.display_size), 0, 0)
                draw_trajectories(c, editor, np.stack([result.points.handles, result.points.targets]),
                                  result.points.targets)


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
