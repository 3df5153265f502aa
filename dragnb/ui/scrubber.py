"""A scrubber over a finished drag: one slider, the iteration k, and every view of that iteration follows it.

For iteration k it shows x̂_0 predicted from ẑ_t^k (:func:`dragnb.drag.predicted_frames`, which needs
``session.run(keep_latents=True)``) with the handles h^k, the path they took so far and the targets; the tracker's
search at k (its :class:`~dragnb.tracking.TrackingWindow`, kept with ``keep_features=True``, drawn as
:func:`dragnb.ui.plots.tracking_heatmaps` draws it); the motion, mask and total loss over the iterations with a
cursor at k; and the timestep t of ẑ_t^k. Positions run k = 0, …, K for a drag of K iterations: k < K is the
latent iteration k optimised, k = K the final latent (the one denoised), which no iteration optimised.

Two edits of the same image (two settings, two methods) scrub in lockstep, side by side, under one slider: an
edit whose drag stopped earlier stays at its last position, and its title says so.

Every position is drawn once, when the scrubber is made, and kept as a PNG: moving the slider sets the figure's
artists to k (so ``scrubber.figure`` is what is shown) and swaps the picture, without rendering
(``scrubber.redraw_seconds`` records what each move cost). :meth:`Scrubber.save_gif` and :meth:`Scrubber.save_mp4`
write every position for slides.
"""

from __future__ import annotations

import bisect
import io
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.animation import FFMpegWriter, MovieWriter, PillowWriter

from ..drag import predicted_frames
from ..edit import EditResult
from ..errors import InputError
from ..models import Model
from .plots import HANDLE, PATH, TARGET, Figure, _axes_off, _show

Frames = Sequence[tuple[int, np.ndarray]]  # (k, (H, W, 3) uint8) as dragnb.drag.predicted_frames returns them
LOSS_TERMS = (("motion", "-", 1.5), ("mask", "-", 1.5), ("total", "--", 1.0))  # name, line style, width


class _EditView:
    """One edit's panels in the scrubber's figure and how to set them to a position k."""

    def __init__(self, figure: Figure, cell, name: str, edit: EditResult, frames: Frames, pair: int, last: int):
        self.name, self.edit, self.pair = name, edit, pair
        self.history = edit.drag.history
        self.end = len(self.history)  # K_e: this edit's final position
        self.frames = dict(frames)
        self.frame_steps = sorted(self.frames)  # the positions that have an x̂_0 (all of them unless every > 1)
        first = self.frames[self.frame_steps[0]]
        h, w = edit.image_size
        scale = np.array([first.shape[1] / w, first.shape[0] / h])  # (x, y): frames are at the model size
        self.path = edit.trajectory_xy() * scale  # (K_e + 1, N, 2) handles in frame pixels
        self.searched = any(s.extras.get("windows") for s in self.history)  # the tracker's windows were kept
        grid = cell.subgridspec(2, 2 if self.searched else 1, height_ratios=[3, 1.4])

        # x̂_0 with the handles, their paths so far and the targets
        self.image_ax = figure.add_subplot(grid[0, 0])
        _show(self.image_ax, first)
        self.image = self.image_ax.images[0]
        targets = edit.points.targets * scale
        self.image_ax.scatter(targets[:, 0], targets[:, 1], c=TARGET, s=40, edgecolors="white", zorder=3)
        self.paths = [self.image_ax.plot([], [], "-", color=PATH, lw=1.5)[0] for _ in range(self.path.shape[1])]
        self.handles = self.image_ax.scatter(self.path[0, :, 0], self.path[0, :, 1], c=HANDLE, s=40,
                                             edgecolors="white", zorder=4)
        _axes_off(self.image_ax)

        # the tracker's search at k: distance over its window, the point it chose, where it searched from
        if self.searched:
            self.heat_ax = ax = figure.add_subplot(grid[0, 1])
            window = next(s.extras["windows"][pair] for s in self.history if s.extras.get("windows"))
            self.heat = ax.imshow(window.distances.numpy(), cmap="viridis")
            figure.colorbar(self.heat, ax=ax, shrink=0.8, label="distance (low = match)")
            self.guide = ax.plot([], [], color=TARGET, lw=1)[0]  # FreeDrag's h⁰→g line, else h^{k-1}→g
            self.chosen = ax.scatter([0], [0], marker="x", c="red", s=60, label="chosen $h^k$", zorder=4)
            self.previous = ax.scatter([0], [0], marker="o", facecolors="none", edgecolors="white", s=60,
                                       label="$h^{k-1}$", zorder=4)
            self.idle = ax.text(0.5, 0.5, "", transform=ax.transAxes, ha="center", va="center", fontsize=8)
            ax.set_xlabel("col (feature px)")
            ax.set_ylabel("row")
            ax.legend(fontsize=6, loc="lower left", facecolor="0.6")  # grey: the white ring shows

        # the loss terms over the iterations, a cursor at k
        self.loss_ax = figure.add_subplot(grid[1, :])
        steps = [s.step for s in self.history]
        values = {"motion": [s.motion_loss for s in self.history], "mask": [s.mask_loss for s in self.history],
                  "total": [s.loss for s in self.history]}
        for term, style, width in LOSS_TERMS:
            self.loss_ax.plot(steps, values[term], style, lw=width, label=term)
        self.cursor = self.loss_ax.axvline(0, color="0.3", lw=1)
        self.loss_ax.set_xlim(-0.5, last + 0.5)
        self.loss_ax.set_xlabel("iteration k")
        self.loss_ax.set_ylabel("loss")
        self.loss_ax.legend(fontsize=7, loc="upper right")

    def draw(self, k: int) -> None:
        """Set every panel to position k (clamped to this edit's last); draws nothing."""
        at = min(k, self.end)
        shown = self.frame_steps[max(0, bisect.bisect_right(self.frame_steps, at) - 1)]  # x̂_0 at or before k
        self.image.set_data(self.frames[shown])
        for i, line in enumerate(self.paths):
            line.set_data(self.path[:at + 1, i, 0], self.path[:at + 1, i, 1])
        self.handles.set_offsets(self.path[at])
        t = self.history[at].t if at < self.end else self.edit.drag.t
        what = f"x̂₀ at k={at}" if at < self.end else f"final x̂₀ (after {self.end} steps)"
        if shown != at:
            what += f" (x̂₀ of k={shown})"
        prefix = f"{self.name}: " if self.name else ""
        below = (f"held here: its drag ended at k={self.end} ({self.edit.drag.stop_reason})" if k > self.end else
                 "handles (red), their paths, targets (blue)")
        self.image_ax.set_title(f"{prefix}{what}, t={t}\n{below}", fontsize=9)  # two lines always: the layout is fixed
        if self.searched:
            self._draw_search(at)
        self.cursor.set_xdata([at, at])
        if at < self.end:
            s = self.history[at]
            self.loss_ax.set_title(f"k={at}: motion {s.motion_loss:.3g}, mask {s.mask_loss:.3g}, total {s.loss:.3g}",
                                   fontsize=9)
        else:
            self.loss_ax.set_title(f"final latent: no loss computed ({self.edit.drag.stop_reason})", fontsize=9)

    def _draw_search(self, at: int) -> None:
        windows = self.history[at].extras.get("windows") if at < self.end else None
        found = bool(windows)
        for artist in (self.heat, self.guide, self.chosen, self.previous):
            artist.set_visible(found)
        if not found:
            self.idle.set_text("k = 0: nothing tracked yet\n(h⁰ is the click)" if at == 0 else
                               "final latent:\nnot searched" if at == self.end else
                               f"no search recorded at k={at}")
            self.heat_ax.set_title("tracking\n(no search here)", fontsize=9)
            return
        self.idle.set_text("")
        window = windows[self.pair]
        distances = window.distances.numpy()
        top, left = window.origin
        hh, ww = distances.shape
        self.heat.set_data(distances)
        self.heat.set_extent((left - 0.5, left + ww - 0.5, top + hh - 0.5, top - 0.5))
        self.heat.set_clim(float(distances.min()), float(distances.max()))
        before = self.history[at - 1].handles if at > 0 else self.edit.drag.initial_handles
        previous = before[self.pair].numpy()  # (row, col) h^{k-1}, where the search started from
        start, end = window.line if window.line is not None else (previous, self.edit.drag.targets[self.pair].numpy())
        self.guide.set_data([start[1], end[1]], [start[0], end[0]])
        self.chosen.set_offsets([[window.best[1], window.best[0]]])
        self.previous.set_offsets([[previous[1], previous[0]]])
        self.heat_ax.set_xlim(left - 0.5, left + ww - 0.5)
        self.heat_ax.set_ylim(top + hh - 0.5, top - 0.5)
        self.heat_ax.set_title(f"tracking at k={at}: where $h^k$ was found\n{window.quantity}", fontsize=9)


class Scrubber(widgets.VBox):
    """An "iteration k" slider over one finished drag, or over several of the same image in lockstep, above a picture
    of x̂_0, the handles and their paths, the tracker's search and the loss curves at k.

    ``edits``: one :class:`~dragnb.edit.EditResult`, or several by name (side by side, one slider; two is what fits
    a slide). ``frames``: :func:`dragnb.drag.predicted_frames` of each (the same names), or use
    :meth:`from_model`. ``pair``: which handle-target pair's search to show. ``dpi``: of the picture and the saved
    animations. The slider runs over k = 0, …, K (the longest drag's K iterations, then its final latent).
    """

    def __init__(self, edits: EditResult | Mapping[str, EditResult], frames: Frames | Mapping[str, Frames],
                 pair: int = 0, dpi: int = 80):
        if isinstance(edits, EditResult):
            edits, frames = {"": edits}, {"": frames}
        if not isinstance(frames, Mapping) or set(frames) != set(edits):
            raise InputError("frames", "give predicted_frames for each edit, by the same names as the edits")
        for name, edit in edits.items():
            if not frames[name]:
                raise InputError("frames", f"{name or 'the edit'} has no frames: run predicted_frames on a drag "
                                 "kept with keep_latents=True")
            if not 0 <= pair < len(edit.points):
                raise InputError("pair", f"{pair} is not a pair of {name or 'the edit'} ({len(edit.points)} pairs)")
        self.edits, self.dpi = dict(edits), dpi
        self.last = max(len(e.drag.history) for e in self.edits.values())  # K: the longest drag's final position
        widths = [6.4 if any(s.extras.get("windows") for s in e.drag.history) else 3.8 for e in self.edits.values()]
        self.figure = Figure(figsize=(sum(widths), 5.0), layout="constrained")
        cells = self.figure.add_gridspec(1, len(widths), width_ratios=widths)
        self.views = [_EditView(self.figure, cells[0, i], name, edit, frames[name], pair, self.last)
                      for i, (name, edit) in enumerate(self.edits.items())]
        self.draw(1 if self.last > 1 else 0)  # a position with a search: its titles are the tallest
        self.figure.draw_without_rendering()
        self.figure.set_layout_engine("none")  # laid out once: panels do not jump from one position to the next
        self.pictures = [self._render(k) for k in range(self.last + 1)]  # one PNG per position
        self.redraw_seconds: list[float] = []  # slider move -> picture and artists set to k, per move

        self.slider = widgets.IntSlider(value=0, min=0, max=self.last, description="iteration k",
                                        continuous_update=True, layout=widgets.Layout(width="480px"))
        width, height = (self.figure.get_size_inches() * dpi).round().astype(int)
        self.image = widgets.Image(value=self.pictures[0], format="png",
                                   layout=widgets.Layout(width=f"{width}px", height=f"{height}px"))
        self.slider.observe(self._moved, names="value")
        self.slider.add_class("dragnb-scrubber-slider")
        self.image.add_class("dragnb-scrubber-image")
        super().__init__([self.slider, self.image])
        self.add_class("dragnb-scrubber")

    @classmethod
    def from_model(cls, model: Model, edits: EditResult | Mapping[str, EditResult], pair: int = 0,
                   every: int = 1, dpi: int = 80) -> Scrubber:
        """Compute each edit's x̂_0 frames (:func:`dragnb.drag.predicted_frames`, one UNet pass and one decode per
        kept latent) and make the scrubber over them."""
        if isinstance(edits, EditResult):
            return cls(edits, predicted_frames(model, edits.drag, edits.prompt, every), pair, dpi)
        frames = {name: predicted_frames(model, e.drag, e.prompt, every) for name, e in edits.items()}
        return cls(edits, frames, pair, dpi)

    @property
    def k(self) -> int:
        return self.slider.value

    def show(self, k: int) -> None:
        """Move the slider to position k (what dragging it does)."""
        self.slider.value = k

    def draw(self, k: int) -> None:
        """Set the figure's artists to position k; renders nothing (the picture is the kept PNG)."""
        for view in self.views:
            view.draw(k)

    def _moved(self, change) -> None:
        start = time.perf_counter()
        self.draw(change["new"])
        self.image.value = self.pictures[change["new"]]
        self.redraw_seconds.append(time.perf_counter() - start)

    def _render(self, k: int) -> bytes:
        self.draw(k)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=self.dpi)
        return buffer.getvalue()

    # ---- for slides ---------------------------------------------------------------------------------
    def save_gif(self, path, fps: float = 4) -> Path:
        """Every position k = 0, …, K as one GIF frame (Pillow; plays anywhere, no network)."""
        return self._save(Path(path), PillowWriter(fps=fps))

    def save_mp4(self, path, fps: float = 4) -> Path:
        """Every position as an H.264 MP4 (matplotlib's FFMpegWriter, which runs the ffmpeg program)."""
        program = matplotlib.rcParams["animation.ffmpeg_path"]
        if shutil.which(program) is None:
            raise RuntimeError(f"save_mp4 needs the ffmpeg program and {program!r} is not on the PATH: install it "
                               "(apt-get install ffmpeg, or conda install ffmpeg), or use save_gif, which needs "
                               "nothing more")
        return self._save(Path(path), FFMpegWriter(fps=fps, codec="h264", extra_args=["-pix_fmt", "yuv420p"]))

    def _save(self, path: Path, writer: MovieWriter) -> Path:
        size = self.figure.get_size_inches().copy()  # FFMpegWriter may round it to even pixels for H.264
        try:
            with writer.saving(self.figure, str(path), self.dpi):
                for k in range(self.last + 1):
                    self.draw(k)
                    writer.grab_frame()
        finally:
            self.figure.set_size_inches(size)
            self.draw(self.k)
        return path
