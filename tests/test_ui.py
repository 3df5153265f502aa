"""The editor and run panel driven by synthetic frontend events (no browser): exact click -> pixel mapping for
non-square images at any display size, points, undo, brush painting, DragBench pre-fill, settings, runs,
cache reuse, Stop from another thread (its one flag the session's), and the live view's cost."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from dragnb.config import settings_from_dict
from dragnb.evaluation.dragbench import write_sample
from dragnb.errors import InputError
from dragnb.points import make_points
from dragnb.ui.runpanel import RunPanel
from dragnb.ui.correspondence import CorrespondenceView
from dragnb.ui.editor import DragEditor, disc, fit_to, mask_runs


def event(editor, kind, x, y):
    """What ipycanvas's frontend sends: canvas-pixel coordinates of the top layer."""
    editor.canvas[-1]._handle_frontend_event(None, {"event": kind, "x": float(x), "y": float(y)}, [])


def click(editor, ix, iy, where=(0.5, 0.5)):
    """Click image pixel (ix, iy) at a relative position inside it on the canvas."""
    (h, w), (ch, cw) = editor.image_size, editor.display_size
    event(editor, "mouse_down", (ix + where[0]) * cw / w, (iy + where[1]) * ch / h)
    event(editor, "mouse_up", 0, 0)


def image(h, w):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (64, 64), (7, 200)])
@pytest.mark.parametrize("display_width", [64, 317, 1000])
def test_clicks_map_to_the_image_pixel_under_them(shape, display_width):
    editor = DragEditor(image(*shape), display_width=display_width)
    h, w = shape
    assert editor.display_size == (max(1, round(display_width * h / w)), display_width)
    rng = np.random.default_rng(1)
    pixels = [(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1)] + [tuple(p) for p in rng.integers(0, (w, h), (6, 2))]
    expected = []
    for i in range(0, len(pixels), 2):
        # anywhere inside the pixel's canvas footprint (a displayed pixel may be smaller than a canvas pixel)
        click(editor, *pixels[i], where=(0.5, 0.5))
        click(editor, *pixels[i + 1], where=(0.02, 0.98) if display_width >= w else (0.5, 0.5))
        expected.append((*pixels[i], *pixels[i + 1]))
    assert editor.points == expected
    for x, y in pixels:
        assert editor.canvas_to_image(*editor.image_to_canvas(x, y)) == (x, y)
    # clicks beyond the edge (the browser reports up to the border) clamp into the image
    assert editor.canvas_to_image(-3, display_width * 10) == (0, h - 1)


def test_points_alternate_undo_and_clear():
    editor = DragEditor(image(40, 60))
    click(editor, 5, 6)
    assert editor.points == [] and editor.pending == (5, 6)  # a lone handle is not a pair yet
    click(editor, 20, 30)
    click(editor, 1, 2)
    assert editor.points == [(5, 6, 20, 30)] and editor.pending == (1, 2)
    editor.undo()  # drops the pending handle
    assert editor.pending is None and editor.points == [(5, 6, 20, 30)]
    editor.undo_button.click()  # drops the last target: its handle is pending again
    assert editor.points == [] and editor.pending == (5, 6)
    click(editor, 7, 8)
    assert editor.points == [(5, 6, 7, 8)]
    editor.clear_points_button.click()
    assert editor.points == [] and editor.pending is None
    assert make_points(DragEditor(image(40, 60), points=[(1, 2, 3, 4)]).points, (40, 60)).as_list() == [[1, 2], [3, 4]]


def test_brush_paints_and_erases_the_mask():
    editor = DragEditor(image(30, 50), display_width=317)
    editor.mode.value = "paint"
    editor.brush.value = 5
    (h, w), (ch, cw) = editor.image_size, editor.display_size
    event(editor, "mouse_down", 10.5 * cw / w, 12.5 * ch / h)
    event(editor, "mouse_move", 30.5 * cw / w, 12.5 * ch / h)  # a fast stroke: the gap is filled
    event(editor, "mouse_up", 30.5 * cw / w, 12.5 * ch / h)
    expected = np.zeros((h, w), bool)
    for col in range(10, 31):
        for dr, dc in disc(2.5):
            expected[12 + dr, col + dc] = True
    assert (editor.mask == expected).all()
    event(editor, "mouse_move", 40.5 * cw / w, 25.5 * ch / h)  # the button is up: no paint
    assert (editor.mask == expected).all()
    editor.mode.value = "erase"
    editor.brush.value = 1
    event(editor, "mouse_down", 20.5 * cw / w, 12.5 * ch / h)
    event(editor, "mouse_out", 0, 0)
    expected[12, 20] = False
    assert (editor.mask == expected).all()
    editor.mode.value = "points"  # clicks add points again, the mask stays
    click(editor, 3, 3)
    assert editor.pending == (3, 3) and (editor.mask == expected).all()
    editor.clear_mask_button.click()
    assert not editor.mask.any()
    assert "no mask" in editor.info.value


def test_auto_mask_button_grows_the_mask_from_the_drag_lines():
    from dragnb.automask import auto_mask
    from dragnb.points import make_points

    editor = DragEditor(image(40, 60))
    editor.auto_mask_button.click()
    assert not editor.mask.any() and "place a handle" in editor.info.value  # no pair yet: nothing invented
    click(editor, 10, 20)
    click(editor, 30, 20)
    editor.auto_mask_button.click()
    expected = auto_mask(make_points([(10, 20, 30, 20)], (40, 60)), (40, 60))
    assert (editor.mask == expected).all() and editor.mask[20, 10:31].all() and not editor.mask[0, 0]
    assert f"{int(expected.sum())} px editable" in editor.info.value


def test_mask_runs_tile_the_mask_exactly():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) > 0.5
    rebuilt = np.zeros_like(mask)
    for row, start, length in mask_runs(mask):
        assert length > 0
        rebuilt[row, start:start + length] = True
    assert (rebuilt == mask).all() and len(mask_runs(np.zeros((3, 3), bool))) == 0


def test_prefill_from_a_dragbench_sample(tmp_path):
    img = image(24, 40)
    mask = np.zeros((24, 40), bool)
    mask[3:10, 5:30] = True
    points = make_points([(4, 5, 20, 6), (30, 20, 35, 10)], (24, 40))
    folder = write_sample(tmp_path / "s", img, "a thing", points, mask)
    editor = DragEditor.from_sample(folder)
    assert editor.points == [(4.0, 5.0, 20.0, 6.0), (30.0, 20.0, 35.0, 10.0)]
    assert (editor.mask == mask).all() and editor.prompt == "a thing" and (editor.image == img).all()
    editor.set_mask(None)
    assert not editor.mask.any()
    with pytest.raises(InputError):
        editor.set_points([(0, 0, 40, 0)])  # x = 40 lies outside a 40-pixel-wide image


def test_every_control_has_a_stable_css_class(tiny_model):
    editor = DragEditor(image(16, 16))
    panel = RunPanel(tiny_model, editor)
    classes = {c for w in (editor.canvas, editor.mode, editor.brush, editor.undo_button, editor.clear_points_button,
                           editor.clear_mask_button, panel.run_button, panel.stop_button, panel.drag_steps, panel.lr,
                           panel.lam, panel.strength, panel.block, panel.lora_steps, panel.reference_control,
                           panel.status, panel.result_canvas, panel.loss_canvas, *panel.progress.values())
               for c in w._dom_classes}
    assert {"dragnb-canvas", "dragnb-mode", "dragnb-brush", "dragnb-undo", "dragnb-clear-points", "dragnb-clear-mask",
            "dragnb-run", "dragnb-stop", "dragnb-steps", "dragnb-lr", "dragnb-lam", "dragnb-strength", "dragnb-block",
            "dragnb-lora-steps", "dragnb-reference-control", "dragnb-status", "dragnb-result", "dragnb-loss",
            "dragnb-progress-lora", "dragnb-progress-inversion", "dragnb-progress-drag",
            "dragnb-progress-denoise"} <= classes


QUICK = {"lora": {"steps": 2}, "inversion": {"num_steps": 20, "strength": 0.5}, "drag": {"max_steps": 4}}


def test_panel_settings_come_from_the_widgets(tiny_model):
    base = settings_from_dict(QUICK, tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(image(16, 16)), settings=base)
    assert panel.settings == base
    panel.drag_steps.value, panel.lr.value, panel.lam.value = 9, 0.02, 0.5
    panel.strength.value, panel.lora_steps.value, panel.reference_control.value = 0.6, 0, False
    panel.block.value = (-1,)
    s = panel.settings
    assert s == dataclasses.replace(base, lora=dataclasses.replace(base.lora, steps=0),
                                    inversion=dataclasses.replace(base.inversion, strength=0.6),
                                    drag=dataclasses.replace(base.drag, max_steps=9, lr=0.02, lam=0.5,
                                                             feature_blocks=(-1,)),
                                    denoise=dataclasses.replace(base.denoise, reference_control=False))

    # a dropdown per method variant, its choices those DragSettings accepts
    assert panel.variants["schedule"].options == ("single", "alternating")
    panel.variants["schedule"].value, panel.variants["tracking"].value = "alternating", "line_search"
    panel.variants["supervision"].value, panel.optimize_text.value = "anchored", True
    values = panel.variant_values
    values["steps_per_timestep"].value, values["hold_steps"].value, values["text_lam"].value = 4, 7, 0.5
    drag = panel.settings.drag
    assert (drag.schedule, drag.tracking, drag.supervision, drag.optimize_text) == (
        "alternating", "line_search", "anchored", True)
    assert (drag.steps_per_timestep, drag.hold_steps, drag.text_lam) == (4, 7, 0.5)
    assert type(drag.hold_steps) is int and type(drag.text_lam) is float


def test_panel_runs_reuses_cached_stages_and_shows_the_result(tiny_model, blob_image):
    editor = DragEditor(blob_image, display_width=200)
    click(editor, 24, 24)
    click(editor, 40, 30)
    editor.mode.value = "paint"
    click(editor, 30, 28)
    panel = RunPanel(tiny_model, editor, prompt="a red disc", settings=settings_from_dict(QUICK, tiny_model.settings))
    result = panel.run()
    assert panel.error is None and result is not None, panel.error
    assert panel.received["points"] == [(24, 24, 40, 30)] and panel.received["mask"].sum() == editor.mask.sum() > 0
    assert result.points.as_list() == [[24, 24], [40, 30]] and (result.mask == editor.mask).all()
    assert result.image.shape == blob_image.shape and "done" in panel.status.value
    assert all(bar.value == bar.max for bar in panel.progress.values())
    assert len(panel.history) == len(result.drag.history) >= 1
    assert not any(result.cached.values())
    panel.drag_steps.value = 3  # only the drag changed: LoRA and inversion come from the cache
    again = panel.run()
    assert again.cached["lora"] and again.cached["inversion"] and not again.cached["drag"]
    assert "cached" in panel.progress["inversion"].description
    stats = panel.live_stats
    assert stats["loop_seconds"] > 0 and stats["view_seconds"] < 0.25 * stats["loop_seconds"] + 0.05


def test_stop_from_the_button_returns_the_partial_result(tiny_model, blob_image):
    settings = settings_from_dict({**QUICK, "drag": {"max_steps": 300, "lr": 1e-4}}, tiny_model.settings)
    editor = DragEditor(blob_image, points=[(10, 10, 60, 60)])
    panel = RunPanel(tiny_model, editor, settings=settings)
    panel.run_button.click()  # what the frontend's click does: the run goes to a worker thread
    assert panel.running and panel.run_button.disabled
    deadline = time.time() + 60
    while len(panel.history) < 2 and time.time() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()  # handled at once: this thread is free while the worker runs
    result = panel.wait(timeout=60)
    assert not panel.running and panel.error is None
    assert result.drag.stop_reason == "callback" and 2 <= len(result.drag.history) < 300
    assert result.image.shape == blob_image.shape and "partial" in panel.status.value
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_stop_pressed_before_the_drag_starts_is_kept(tiny_model, blob_image):
    # LoRA skipped, so the Stop lands in set-up or inversion (which do not stop): the drag then stops at once
    settings = settings_from_dict({**QUICK, "lora": {"steps": 0}, "drag": {"max_steps": 300, "lr": 1e-4}},
                                  tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(10, 10, 60, 60)]), settings=settings)
    panel.run_button.click()
    panel.stop_button.click()
    result = panel.wait(timeout=60)
    assert result.drag.stop_reason == "callback" and len(result.drag.history) == 1


def test_stop_during_lora_stops_the_lora_and_caches_nothing(tiny_model, blob_image):
    settings = settings_from_dict({**QUICK, "lora": {"steps": 400}}, tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(10, 10, 60, 60)]), settings=settings)
    panel.run_button.click()
    deadline = time.time() + 60
    while panel.progress["lora"].value < 2 and time.time() < deadline:
        time.sleep(0.02)
    panel.stop_button.click()
    assert panel.wait(timeout=60) is None and not panel.running and panel.error is None
    assert "stopped</b> during lora" in panel.status.value
    assert not panel.session.is_cached("lora") and not panel.run_button.disabled


def test_stop_goes_to_the_sessions_one_flag(tiny_model, blob_image):
    settings = settings_from_dict({**QUICK, "drag": {"max_steps": 6, "lr": 1e-4}}, tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(10, 10, 60, 60)]), settings=settings)
    panel.stop_button.click()  # no run going: nothing to stop, nothing carried into the next run
    on_step = panel._on_step

    def pressing_stop(step):  # Stop pressed at the drag's second iteration (from the run's own thread)
        on_step(step)
        if step.done == 2:
            panel.stop_button.click()

    panel._on_step = pressing_stop
    result = panel.run()
    assert panel.error is None and result.drag.stop_reason == "callback" and len(result.drag.history) == 2
    assert not panel.session.stop_requested  # the request ended with the run it stopped
    assert "partial" in panel.status.value and not hasattr(panel, "_stop")
    panel._on_step = on_step
    again = panel.run()
    assert again.drag.stop_reason == "max_steps" and len(again.drag.history) == 6


def test_stop_pressed_while_the_run_sets_up_stops_the_lora(tiny_model, blob_image):
    settings = settings_from_dict({**QUICK, "lora": {"steps": 400}}, tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(10, 10, 60, 60)]), settings=settings)
    panel.run_button.click()  # the session is ready before the run's thread starts: the Stop finds it
    panel.stop_button.click()
    assert panel.wait(timeout=60) is None and panel.error is None  # an Interrupted told from a Ctrl-C: not raised
    assert "stopped</b> during lora" in panel.status.value and not panel.session.stop_requested
    assert not panel.session.is_cached("lora")


def test_a_run_without_points_says_what_is_missing(tiny_model, blob_image):
    editor = DragEditor(blob_image)
    click(editor, 3, 3)  # a handle without its target is not a pair
    panel = RunPanel(tiny_model, editor, settings=settings_from_dict(QUICK, tiny_model.settings))
    assert panel.run() is None
    assert "no handle/target pair" in panel.error and "error" in panel.status.value
    assert not panel.run_button.disabled  # ready for the next try


def test_correspondence_view_matches_clicks(blob_image):
    import torch

    feature = torch.randn(1, 8, 16, 16)
    shifted = torch.roll(feature, shifts=(2, 3), dims=(2, 3))  # B = A moved by 3 columns, 2 rows (feature px)
    view = CorrespondenceView(blob_image, blob_image, feature, shifted, display_width=128)
    (h, w), (ch, cw) = view.a.image_size, view.a.display_size
    view.a.canvas[-1]._handle_frontend_event(None, {"event": "mouse_down", "x": 20.5 * cw / w, "y": 16.5 * ch / h}, [])
    ax, ay, bx, by = view.matches[-1]
    assert (ax, ay) == (20, 16) and (bx, by) == (32.0, 24.0)  # 4 image px per feature px: (20+12, 16+8)


def test_the_panel_offers_the_scrubber_after_a_run(tiny_model, blob_image):
    from dragnb.ui.scrubber import Scrubber

    settings = settings_from_dict({**QUICK, "drag": {"max_steps": 3, "lr": 1e-4}}, tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(10, 10, 60, 60)]), settings=settings)
    assert panel.scrub_button.disabled and panel.show_scrubber() is None  # nothing run yet
    result = panel.run()
    assert not panel.scrub_button.disabled
    scrubber = panel.show_scrubber()
    assert isinstance(scrubber, Scrubber) and scrubber.slider.max == len(result.drag.history)  # k = 0 .. K
    panel.keep_latents = False
    panel.drag_steps.value = 2  # another drag, kept without latents: nothing to scrub, and the panel says why
    panel.run()
    assert panel.show_scrubber() is None and "keep_latents" in panel.status.value


def test_the_panel_shows_the_image_the_image_copy_made(tiny_model, blob_image):
    quick = settings_from_dict({**QUICK, "drag": {"max_steps": 3, "start": "copy", "image_copy": "keep"}},
                               tiny_model.settings)
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(24, 24, 50, 24)]), settings=quick)
    assert panel.moved_button.disabled  # nothing run yet
    shown = []
    panel.result_canvas.put_image_data = lambda data, *at: shown.append(np.asarray(data))
    result = panel.run()
    moved = result.drag.extras["moved_start"].image
    assert not panel.moved_button.disabled and not np.array_equal(moved, blob_image)  # the disc moved in it
    panel.moved_button.value = True  # the canvas shows the moved image ...
    assert np.array_equal(shown[-1], fit_to(moved, panel.editor.display_size))
    panel.moved_button.value = False  # ... and the result again
    assert np.array_equal(shown[-1], fit_to(result.image, panel.editor.display_size))
    panel.moved_button.value = True
    panel.settings_form.variants["image_copy"].value = "off"
    panel.run()
    assert panel.moved_button.disabled and not panel.moved_button.value  # no image copy: nothing to show
    assert np.array_equal(shown[-1], fit_to(panel.result.image, panel.editor.display_size))


def test_the_panel_runs_a_drag_family_method_from_its_dropdown(tiny_model, blob_image):
    panel = RunPanel(tiny_model, DragEditor(blob_image, points=[(24, 24, 36, 24)]),
                     settings=settings_from_dict(QUICK, tiny_model.settings))
    method = panel.variants["method"]
    assert method.options == ("optimise", "fastdrag", "regiondrag", "dragnoise") and method.value == "optimise"
    method.value = "fastdrag"
    assert panel.settings.drag.method == "fastdrag"
    result = panel.run()
    assert result.drag.method == "fastdrag" and result.settings.drag.method == "fastdrag"
    assert "fastdrag moves in one step" in panel.status.value
    assert panel.show_scrubber() is None and "ran no iterations" in panel.status.value


def test_the_panel_under_a_hostile_order_of_actions(tiny_model, blob_image):
    """Issue 26: each ends in a state the panel shows in words, and the session is usable after it."""
    editor = DragEditor(blob_image)
    panel = RunPanel(tiny_model, editor, settings=settings_from_dict({**QUICK, "drag": {"max_steps": 30}},
                                                                     tiny_model.settings))
    panel.stop_button.click()  # Stop before any run: nothing to stop, nothing carried into the next run
    assert panel.status.value == "ready" and panel.session is None
    assert panel.run() is None and "point" in panel.status.value  # Run with no points: said, nothing runs
    editor.set_points([(24, 24, 40, 24)])
    panel.prompt.value = ""  # no prompt: allowed (the unconditional text), the run goes through
    first = panel.run()
    assert first is not None and first.drag.stop_reason in ("reached", "max_steps")  # the early Stop did not carry
    started = threading.Event()
    slow = panel._on_record

    def on_record(record):
        started.set()
        time.sleep(0.02)
        return slow(record)

    panel._on_record = on_record
    panel.drag_steps.value = 25
    panel.run_button.click()  # Run, and Run again at once
    panel.run_button.click()
    assert started.wait(60) and panel.running
    with pytest.raises(RuntimeError, match="a run is in progress"):
        panel.run()  # a second run from the notebook is refused in words
    editor.set_image(np.ascontiguousarray(blob_image[:, ::-1]))  # a new image while the run is going (its points
    editor.set_points([(10, 10, 20, 20)])  # go with the old one), then new points: the run keeps what it took
    result = panel.wait(120)
    assert result is not None and result.points.handles.tolist() == [[24.0, 24.0]]
    assert "done" in panel.status.value and not panel.running
    again = panel.run()  # the next run takes the new image and points, in a new session
    assert again is not None and again.points.handles.tolist() == [[10.0, 10.0]]
    assert (again.source == blob_image[:, ::-1]).all()

    def interrupt(record):  # Ctrl-C (a kernel interrupt) arriving during the drag
        raise KeyboardInterrupt

    panel._on_record = interrupt
    panel.drag_steps.value = 12
    result = panel.run()
    assert result is not None and result.drag.stop_reason == "interrupted"
    assert "interrupted: partial result" in panel.status.value
    panel._on_record = slow
    panel.drag_steps.value = 3
    assert panel.run() is not None and not panel.running  # usable after it all
