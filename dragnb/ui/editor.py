"""The interactive editor: an ipycanvas widget to click handle/target points and paint the editable mask.

The editor holds plain data only: ``editor.points`` is a list of (hx, hy, tx, ty) in image pixels of the
original image (x = column, :mod:`dragnb.points`), ``editor.mask`` an (H, W) bool array (True = editable).
Clicks map to image pixels exactly for any image shape and display size: the canvas is ``display_width``
canvas pixels wide, ipycanvas reports mouse positions in canvas pixels whatever CSS stretching the page
applies, and canvas pixel (x, y) lies over image pixel ``(floor(x W / cw), floor(y H / ch))``.

Every control carries a stable CSS class (``dragnb-canvas``, ``dragnb-mode``, ``dragnb-brush``,
``dragnb-undo``, ``dragnb-clear-points``, ``dragnb-clear-mask``, ``dragnb-info``) so browser tests and
notebooks' custom CSS can find it. The run panel that drives a :class:`~dragnb.session.DragSession` from
an editor lives in :mod:`dragnb.ui.runpanel`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from PIL import Image

from ..automask import auto_mask
from ..errors import InputError
from ..evaluation.dragbench import Sample, read_sample
from ..images import load_mask, to_rgb_array
from ..points import make_points

HANDLE_COLOUR = "#e02020"  # red, as the reference's gradio UI
TARGET_COLOUR = "#2050f0"  # blue
FIXED_SHADE = "rgba(0, 0, 0, 0.55)"  # over what may not change once a mask is painted (as the authors' UI darkens it)
LAYERS = ("image", "mask", "points", "live")  # bottom to top; the top layer receives the mouse
_DRAW_LOCK = threading.RLock()


@contextmanager
def drawing():
    """Batch canvas commands (ipycanvas's ``hold_canvas``), one thread at a time.

    ``hold_canvas`` toggles one global batch; the run panel draws from its worker thread while mouse events
    draw from the kernel's, so batches are serialised here.
    """
    with _DRAW_LOCK, hold_canvas():
        yield


def mask_runs(mask: np.ndarray) -> np.ndarray:
    """Horizontal runs of True in an (H, W) bool array as (K, 3) int rows (row, first col, length)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.zeros((m.shape[0], m.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = m
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # np.nonzero scans row by row, so starts and ends pair up
    return np.stack([rows, starts, ends - starts], axis=1) if len(rows) else np.zeros((0, 3), int)


def disc(radius: float) -> np.ndarray:
    """(dr, dc) offsets of the image pixels within ``radius`` of a pixel centre (a round brush)."""
    r = int(np.ceil(radius))
    dr, dc = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dr ** 2 + dc ** 2 <= radius ** 2
    return np.stack([dr[keep], dc[keep]], axis=1)


class DragEditor(widgets.VBox):
    """Click handle (red) then target (blue) points; paint or erase the editable mask; read plain data back.

    ``image``: path, PIL image or array. ``points``: pre-filled pairs [(hx, hy, tx, ty), ...] or alternating
    [[x, y], ...] in image pixels. ``mask``: (H, W), nonzero = editable. ``display_width``: canvas width in
    canvas pixels (the height follows the image's aspect). ``brush``: brush diameter in image pixels.
    """

    def __init__(self, image, points=None, mask=None, display_width: int = 512, brush: int | None = None,
                 prompt: str = ""):
        self.image = to_rgb_array(image, "image")  # (H, W, 3) uint8
        self.image_size: tuple[int, int] = self.image.shape[:2]  # (H, W)
        h, w = self.image_size
        self.prompt = prompt
        self._pairs: list[tuple[float, float, float, float]] = []
        self.pending: tuple[float, float] | None = None  # a handle waiting for its target
        self._mask = np.zeros((h, w), dtype=bool)
        self._stroke_last: tuple[int, int] | None = None  # (row, col) of the last brush stamp while pressed

        cw = int(display_width)
        ch = max(1, int(round(cw * h / w)))
        self.canvas = MultiCanvas(len(LAYERS), width=cw, height=ch)
        self.canvas.add_class("dragnb-canvas")
        self.canvas.layout.width = f"{cw}px"  # keep the display size (ipycanvas would stretch to the cell)
        self.canvas.layout.height = f"{ch}px"
        self.layers = {name: self.canvas[i] for i, name in enumerate(LAYERS)}

        self.mode = widgets.ToggleButtons(options=[("points", "points"), ("paint mask", "paint"),
                                                   ("erase mask", "erase")], value="points",
                                          tooltips=["click a handle, then its target",
                                                    "drag to paint the region that may change",
                                                    "drag to erase the mask"])
        self.mode.style.button_width = "100px"
        default_brush = brush or max(1, round(min(h, w) / 12))
        self.brush = widgets.IntSlider(value=default_brush, min=1, max=max(2, min(h, w) // 2),
                                       description="brush (px)", continuous_update=False)
        self.undo_button = widgets.Button(description="undo", icon="undo", tooltip="remove the last point")
        self.clear_points_button = widgets.Button(description="clear points")
        self.clear_mask_button = widgets.Button(description="clear mask")
        self.auto_mask_button = widgets.Button(description="auto mask", icon="magic",
                                               tooltip="a mask grown from the drag lines (dragnb.automask)")
        self.info = widgets.HTML()
        for control, name in ((self.mode, "mode"), (self.brush, "brush"), (self.undo_button, "undo"),
                              (self.clear_points_button, "clear-points"), (self.clear_mask_button, "clear-mask"),
                              (self.auto_mask_button, "auto-mask"), (self.info, "info")):
            control.add_class(f"dragnb-{name}")
        self.undo_button.on_click(lambda _: self.undo())
        self.clear_points_button.on_click(lambda _: self.clear_points())
        self.clear_mask_button.on_click(lambda _: self.clear_mask())
        self.auto_mask_button.on_click(lambda _: self.auto_mask())

        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_mouse_up(self._on_mouse_up)
        self.canvas.on_mouse_out(self._on_mouse_up)
        self.canvas.on_client_ready(self.redraw)  # a reopened page gets an empty canvas: draw again

        for button in (self.undo_button, self.clear_points_button, self.clear_mask_button, self.auto_mask_button):
            button.layout.width = "120px"
        super().__init__([self.mode,
                          widgets.HBox([self.undo_button, self.clear_points_button, self.clear_mask_button,
                                        self.auto_mask_button, self.brush]),
                          self.canvas, self.info])
        self.add_class("dragnb-editor")
        self._fill(points, mask)

    @classmethod
    def from_sample(cls, sample: Sample | str | Path, **kwargs) -> DragEditor:
        """An editor pre-filled from a DragBench sample folder (or a read :class:`~dragnb.evaluation.dragbench.Sample`)."""
        sample = sample if isinstance(sample, Sample) else read_sample(sample)
        pairs = np.concatenate([sample.points.handles, sample.points.targets], axis=1).tolist()
        return cls(sample.image, points=pairs, mask=sample.mask, prompt=sample.prompt, **kwargs)

    # ---- plain data ---------------------------------------------------------------------------------
    @property
    def points(self) -> list[tuple[float, float, float, float]]:
        """Complete handle/target pairs (hx, hy, tx, ty) in image pixels; a lone handle is not included."""
        return list(self._pairs)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True = editable (a copy; all False = nothing painted = the whole image editable)."""
        return self._mask.copy()

    def set_points(self, pairs) -> None:
        """Replace the points: [(hx, hy, tx, ty), ...] or alternating [[x, y], ...], validated against the image."""
        checked = make_points(pairs, self.image_size)
        self._pairs = [tuple(float(v) for v in (*hh, *tt)) for hh, tt in zip(checked.handles, checked.targets)]
        self.pending = None
        self.draw_points()

    def set_mask(self, mask) -> None:
        """Replace the mask ((H, W), nonzero = editable; None clears it)."""
        loaded = load_mask(mask, self.image_size)
        self._mask = np.zeros(self.image_size, bool) if loaded is None else loaded.copy()
        self.draw_mask()

    def set_image(self, image, points=None, mask=None) -> None:
        """Show another image of the same size (a round's source, :mod:`dragnb.rounds`) with its points and mask
        (none given: cleared)."""
        replacement = to_rgb_array(image, "image")
        if replacement.shape[:2] != self.image_size:
            h, w = self.image_size
            raise InputError("image", f"got {replacement.shape[1]}x{replacement.shape[0]}, this editor's canvas is "
                             f"for {w}x{h} images; make a new DragEditor for another size")
        self.image = replacement
        self._pairs, self.pending = [], None
        self._mask = np.zeros(self.image_size, bool)
        self.layers["live"].clear()
        self._fill(points, mask)

    def _fill(self, points, mask) -> None:
        """Take the given points and mask (None: leave them empty) and draw everything."""
        if points is not None and len(points):
            self.set_points(points)
        if mask is not None:
            self.set_mask(mask)
        self.redraw()

    # ---- geometry -----------------------------------------------------------------------------------
    @property
    def display_size(self) -> tuple[int, int]:
        """(height, width) of the canvas in canvas pixels."""
        return int(self.canvas.height), int(self.canvas.width)

    def canvas_to_image(self, x: float, y: float) -> tuple[int, int]:
        """Canvas pixels (x, y) -> the image pixel (x, y) under them, clipped to the image."""
        (h, w), (ch, cw) = self.image_size, self.display_size
        return (int(min(w - 1, max(0, np.floor(x * w / cw)))), int(min(h - 1, max(0, np.floor(y * h / ch)))))

    def image_to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Image pixel (x, y) -> the canvas position of its centre."""
        (h, w), (ch, cw) = self.image_size, self.display_size
        return ((x + 0.5) * cw / w, (y + 0.5) * ch / h)

    def _column_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer canvas edges of every image column and row, so tinted pixels tile without seams."""
        (h, w), (ch, cw) = self.image_size, self.display_size
        return np.floor(np.arange(w + 1) * cw / w), np.floor(np.arange(h + 1) * ch / h)

    # ---- actions ------------------------------------------------------------------------------------
    def add_point(self, x: float, y: float) -> None:
        """Add a point in image pixels: a handle when none is pending, else the pending handle's target."""
        if self.pending is None:
            self.pending = (x, y)
        else:
            self._pairs.append((*self.pending, x, y))
            self.pending = None
        self.draw_points()

    def undo(self) -> None:
        """Remove the last point placed (a pending handle, or the target of the last pair)."""
        if self.pending is not None:
            self.pending = None
        elif self._pairs:
            hx, hy, _, _ = self._pairs.pop()
            self.pending = (hx, hy)
        self.draw_points()

    def clear_points(self) -> None:
        self._pairs, self.pending = [], None
        self.layers["live"].clear()
        self.draw_points()

    def auto_mask(self) -> None:
        """The mask grown from the drag lines of the current pairs (:func:`dragnb.automask.auto_mask`); with no
        pair, the info line says so and the mask stays."""
        if not self._pairs:
            self.info.value = "auto mask: place a handle and its target first"
            return
        self._mask = auto_mask(make_points(self._pairs, self.image_size), self.image_size)
        self.draw_mask()

    def clear_mask(self) -> None:
        self._mask[:] = False
        self.draw_mask()

    def paint(self, x: int, y: int, erase: bool = False, previous: tuple[int, int] | None = None) -> None:
        """Stamp the brush at image pixel (x, y), and along the segment from ``previous`` (row, col) if given."""
        h, w = self.image_size
        steps = 1 if previous is None else max(1, int(np.ceil(np.hypot(y - previous[0], x - previous[1]))))
        start = (y, x) if previous is None else previous
        centres = np.round(np.linspace(start, (y, x), steps + 1)).astype(int)  # (S, 2) (row, col)
        cells = (centres[:, None, :] + disc(self.brush.value / 2)[None]).reshape(-1, 2)
        cells = cells[(cells[:, 0] >= 0) & (cells[:, 0] < h) & (cells[:, 1] >= 0) & (cells[:, 1] < w)]
        changed = np.zeros_like(self._mask)
        changed[cells[:, 0], cells[:, 1]] = self._mask[cells[:, 0], cells[:, 1]] == erase
        self._mask[changed] = not erase
        if changed.any():
            self._repaint(changed, editable=not erase)

    # ---- mouse --------------------------------------------------------------------------------------
    def _on_mouse_down(self, x: float, y: float) -> None:
        ix, iy = self.canvas_to_image(x, y)
        if self.mode.value == "points":
            self.add_point(ix, iy)
        else:
            self.paint(ix, iy, erase=self.mode.value == "erase")
            self._stroke_last = (iy, ix)
            self._update_info()

    def _on_mouse_move(self, x: float, y: float) -> None:
        if self._stroke_last is None or self.mode.value == "points":
            return
        ix, iy = self.canvas_to_image(x, y)
        if (iy, ix) != self._stroke_last:
            self.paint(ix, iy, erase=self.mode.value == "erase", previous=self._stroke_last)
            self._stroke_last = (iy, ix)

    def _on_mouse_up(self, x: float, y: float) -> None:
        if self._stroke_last is not None:
            self._stroke_last = None
            self._update_info()

    # ---- drawing ------------------------------------------------------------------------------------
    def redraw(self, *_) -> None:
        self.draw_image()
        self.draw_mask()
        self.draw_points()

    def draw_image(self, image: np.ndarray | None = None) -> None:
        """Draw ``image`` (default: the source) scaled to the canvas; nearest-neighbour when enlarging."""
        layer = self.layers["image"]
        with drawing():
            layer.clear()
            layer.put_image_data(fit_to(self.image if image is None else image, self.display_size), 0, 0)

    def draw_mask(self) -> None:
        """Shade what may not change: with a mask painted, everything outside it is darkened and the editable
        region shows the image as it is; with none, nothing is shaded (the whole image may change)."""
        layer = self.layers["mask"]
        with drawing():
            layer.clear()
            if self._mask.any():
                layer.fill_style = FIXED_SHADE
                layer.fill_rect(0, 0, self.display_size[1], self.display_size[0])
                self._draw_mask_cells(self._mask, editable=True)
        self._update_info()

    def _repaint(self, cells: np.ndarray, editable: bool) -> None:
        """After a brush stamp changed ``cells``: redraw all when the mask just appeared or vanished, else only them."""
        if self._mask.any() and (not editable or self._mask.sum() > cells.sum()):
            self._draw_mask_cells(cells, editable)
        else:
            self.draw_mask()

    def _draw_mask_cells(self, cells: np.ndarray, editable: bool) -> None:
        """Unshade (editable) or shade the image pixels set in ``cells`` (H, W), one rectangle per horizontal run."""
        runs = mask_runs(cells)
        if not len(runs):
            return
        xs, ys = self._column_edges()
        layer = self.layers["mask"]
        x0, y0 = xs[runs[:, 1]], ys[runs[:, 0]]
        widths, heights = xs[runs[:, 1] + runs[:, 2]] - x0, ys[runs[:, 0] + 1] - y0
        with drawing():
            if editable:  # punch the runs out of the shade
                layer.global_composite_operation = "destination-out"
                layer.fill_style = "black"
                layer.fill_rects(x0, y0, widths, heights)
                layer.global_composite_operation = "source-over"
            else:
                layer.fill_style = FIXED_SHADE
                layer.fill_rects(x0, y0, widths, heights)

    def draw_points(self) -> None:
        layer = self.layers["points"]
        radius = max(4.0, self.display_size[1] / 80)
        with drawing():
            layer.clear()
            for hx, hy, tx, ty in self._pairs:
                draw_arrow(layer, self.image_to_canvas(hx, hy), self.image_to_canvas(tx, ty), radius)
                draw_dot(layer, self.image_to_canvas(hx, hy), radius, HANDLE_COLOUR)
                draw_dot(layer, self.image_to_canvas(tx, ty), radius, TARGET_COLOUR)
            if self.pending is not None:
                draw_dot(layer, self.image_to_canvas(*self.pending), radius, HANDLE_COLOUR)
        self._update_info()

    def _update_info(self) -> None:
        h, w = self.image_size
        pending = " + 1 handle waiting for its target" if self.pending is not None else ""
        painted = int(self._mask.sum())
        area = f"{painted} px editable" if painted else "no mask (whole image editable)"
        self.info.value = f"{w}x{h} image · {len(self._pairs)} pair(s){pending} · {area}"


def fit_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) uint8 resized to ``size`` (H, W): nearest when enlarging (pixels stay visible), box otherwise."""
    if image.shape[:2] == tuple(size):
        return image
    enlarge = size[0] >= image.shape[0] and size[1] >= image.shape[1]
    method = Image.Resampling.NEAREST if enlarge else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), method))


def draw_dot(layer, centre: tuple[float, float], radius: float, colour: str) -> None:
    layer.fill_style = colour
    layer.fill_circle(centre[0], centre[1], radius)
    layer.stroke_style = "white"
    layer.line_width = 1.5
    layer.stroke_circle(centre[0], centre[1], radius)


def draw_arrow(layer, start: tuple[float, float], end: tuple[float, float], radius: float,
               colour: str = "white") -> None:
    """A line from ``start`` to ``end`` with an arrow head stopping at the target dot's edge."""
    (x0, y0), (x1, y1) = start, end
    length = float(np.hypot(x1 - x0, y1 - y0))
    if length < 1e-6:
        return
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    tip = (x1 - ux * radius, y1 - uy * radius)
    head = 2.2 * radius
    layer.stroke_style = colour
    layer.line_width = 2
    layer.stroke_line(x0, y0, tip[0], tip[1])
    left = (tip[0] - head * ux + 0.5 * head * uy, tip[1] - head * uy - 0.5 * head * ux)
    right = (tip[0] - head * ux - 0.5 * head * uy, tip[1] - head * uy + 0.5 * head * ux)
    layer.fill_style = colour
    layer.fill_polygon([tip, left, right])
