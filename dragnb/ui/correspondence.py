"""The correspondence widget of notebook 03: click a point on one image, see where its features match on another."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from ..features import correspond
from .editor import DragEditor, draw_dot, drawing, fit_to


class CorrespondenceView(widgets.VBox):
    """Click a point on image A; its best feature match on image B appears with B's similarity map.

    ``feature_a``, ``feature_b``: (1, C, h, w) features of the two images (e.g. from
    :func:`dragnb.features.feature_maps`); matching is :func:`dragnb.features.correspond` (cosine, nearest
    neighbour).
    ``view.matches`` keeps the clicked points and their matches as (ax, ay, bx, by) image pixels.
    """

    def __init__(self, image_a, image_b, feature_a, feature_b, display_width: int = 256):
        self.feature_a, self.feature_b = feature_a, feature_b
        self.a = DragEditor(image_a, display_width=display_width)
        self.b = DragEditor(image_b, display_width=display_width)
        for editor in (self.a, self.b):  # plain views here: no editing controls
            editor.children = (editor.canvas,)
        self.a.canvas.on_mouse_down(self._on_click)
        self.a.canvas.on_mouse_down(self.a._on_mouse_down, remove=True)
        self.b.canvas.on_mouse_down(self.b._on_mouse_down, remove=True)
        self.matches: list[tuple[float, float, float, float]] = []
        self.info = widgets.HTML("click on the left image")
        self.info.add_class("dragnb-info")
        super().__init__([widgets.HBox([self.a, self.b]), self.info])
        self.add_class("dragnb-correspondence")

    def _on_click(self, x: float, y: float) -> None:
        self.query(*self.a.canvas_to_image(x, y))

    def query(self, x: float, y: float) -> tuple[float, float]:
        """Match image pixel (x, y) of A; draw it, its match and B's similarity map. Returns the match."""
        matches, sims = correspond(self.feature_a, self.feature_b, [(x, y)], self.a.image_size, self.b.image_size)
        bx, by = (float(v) for v in matches[0])
        self.matches.append((float(x), float(y), bx, by))
        heat = sims[0]
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-8)  # (h, w) in [0, 1]
        rgba = np.zeros((*heat.shape, 4), np.uint8)
        rgba[..., 0], rgba[..., 3] = 255, (heat ** 2 * 170).astype(np.uint8)
        radius = max(4.0, self.a.display_size[1] / 40)
        with drawing():
            self.b.layers["mask"].clear()
            self.b.layers["mask"].put_image_data(fit_to(rgba, self.b.display_size), 0, 0)
            for editor, (px, py) in ((self.a, (x, y)), (self.b, (bx, by))):
                editor.layers["points"].clear()
                draw_dot(editor.layers["points"], editor.image_to_canvas(px, py), radius, "#00e0ff")
        self.info.value = f"A ({x:.0f}, {y:.0f}) → B ({bx:.0f}, {by:.0f})"
        return bx, by
