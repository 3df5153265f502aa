"""One real-browser test: JupyterLab in headless Chromium opens the editor notebook, clicks a handle and a
target on the canvas, paints the mask over the moving shape (brush strokes filling the case's own editable box),
presses Run, waits for the result, and checks the kernel got exactly those points, a mask that covers the case's
and a result. It saves two screenshots to artifacts/screenshots/: the editor with its run panel before Run, and the
result at the drag's last iteration. ``DRAGNB_SCREENSHOTS=docs/images`` refreshes the README's, and then the
edit must land (scored against its known answer by the scene benchmark's scorer), so the README never shows a
failure as the showcase.
Then it starts a long drag and presses Stop: the click is handled while the run goes on (the run panel runs
the session in a worker thread) and the partial result comes back. Last, one round trip (issue 12): "continue from
result" puts the result on the canvas (two thumbnails in the strip), "undo round" brings round 0's source back.

It needs Debian's chromium (``.ci/run`` installs it); without it the test fails, saying so.
"""

from __future__ import annotations

import re
import tempfile
import time
import os
from pathlib import Path

import numpy as np
import pytest

from browser_support import (CHROMIUM_FLAGS, canvas_point, chromium_path, jupyterlab, kernel_json, run_all_cells,
                             wait_for_all_cells)
from notebook_support import model_for_tests, read_notebook

# Screenshots go to artifacts/ (ignored); DRAGNB_SCREENSHOTS=docs/images refreshes the README's own.
FOR_DOCS = "DRAGNB_SCREENSHOTS" in os.environ
DOCS_IMAGES = Path(os.environ.get("DRAGNB_SCREENSHOTS", Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"))
CASE = 2  # the notebook's case of the textured scene benchmark: a ball's side pulled out, which the model's loop lands
BRUSH = 6  # brush diameter (image pixels) for filling the case's mask box with strokes
# The model's own defaults (LoRA 20 steps, up to 120 drag iterations): a real edit for the README's screenshots.
SETTINGS: dict = {}
# The sum of the editor's canvas (its layers composited) as the browser drew it.
CANVAS_SUM = """() => {
  const c = document.querySelector('canvas.dragnb-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i];
  return s;
}"""


def settled_sum(page, timeout: float = 20.0) -> int:
    """The canvas's sum once two reads 0.25 s apart agree (the frontend has drawn what the kernel sent)."""
    deadline, last = time.time() + timeout, None
    while True:
        now = page.evaluate(CANVAS_SUM)
        if now == last or time.time() > deadline:
            return now
        last = now
        page.wait_for_timeout(250)


@pytest.mark.slow
@pytest.mark.browser
def test_editor_in_jupyterlab(tiny_dir, tmp_path):
    chromium = chromium_path()
    if chromium is None:
        pytest.fail("chromium is missing: install Debian's chromium (`apt-get install -y chromium`, as .ci/run does) "
                    "or point DRAGNB_CHROMIUM at a Chromium binary; the browser test needs it")
    from playwright.sync_api import expect, sync_playwright

    from dragnb.evaluation.dragbench import read_sample
    from dragnb.evaluation.scenebench import write_cases

    # The sample the notebook builds (same seed), to click where the moving shape is.
    from dragnb.models import EMBEDDED_MODEL, load_model

    resolution = load_model(model_for_tests(tiny_dir) or EMBEDDED_MODEL, device="cpu").resolution
    case_dir = write_cases(tempfile.mkdtemp(dir=tmp_path), n=1, size=resolution, benchmark="textured", start=CASE)[0]
    sample = read_sample(case_dir)
    size = sample.image.shape[:2]
    hx, hy = (int(v) for v in sample.points.handles[0])
    tx, ty = (int(v) for v in sample.points.targets[0])
    strokes = fill_strokes(sample.mask > 0, BRUSH)
    root = tmp_path / "root"
    root.mkdir()
    nb = read_notebook("06_editor.ipynb", MODEL=model_for_tests(tiny_dir), OVERRIDES=SETTINGS, PREFILL=False,
                       AUTORUN=False, CASE=CASE)
    import nbformat

    nbformat.write(nb, root / "06_editor.ipynb")
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)

    with jupyterlab(root, tmp_path / "lab") as (base, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.goto(f"{base}/lab/tree/06_editor.ipynb?token={token}&reset")
            run_all_cells(page)
            canvas = page.locator("canvas.dragnb-canvas")
            expect(canvas).to_be_visible(timeout=120_000)
            wait_for_all_cells(page)  # later cells' outputs no longer move the canvas
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()

            # a handle, then its target
            page.mouse.click(*canvas_point(box, size, hx, hy))
            page.mouse.click(*canvas_point(box, size, tx, ty))
            expect(page.locator(".dragnb-info")).to_contain_text("1 pair(s)", timeout=60_000)
            # the mask: strokes across the case's editable box, which holds the shape and where it goes
            page.locator(".dragnb-mode button", has_text="paint mask").click()
            kernel_json(page, f"editor.brush.value = {BRUSH}; print(1)")
            box = canvas.bounding_box()
            for (x0, y), (x1, _) in strokes:
                page.mouse.move(*canvas_point(box, size, x0, y))
                page.mouse.down()
                page.mouse.move(*canvas_point(box, size, x1, y), steps=6)
                page.mouse.up()
            expect(page.locator(".dragnb-info")).to_contain_text("px editable", timeout=60_000)
            painted = kernel_json(page, "import json; print(json.dumps(editor.mask.astype(int).tolist()))")
            settled_sum(page)
            page.locator(".dragnb-editor").scroll_into_view_if_needed()
            page.screenshot(path=str(DOCS_IMAGES / "editor.png"), clip=union_box(*(
                page.locator(name).bounding_box() for name in (".dragnb-editor", ".dragnb-prompt", ".dragnb-settings",
                                                               ".dragnb-status"))))

            page.locator(".dragnb-run").click()
            # a whole first edit: seconds on an idle CPU, minutes when other jobs share its cores
            expect(page.locator(".dragnb-status")).to_contain_text(re.compile("done|error"), timeout=600_000)
            got = kernel_json(page, "import json; print(json.dumps({'points': [list(map(float, p)) for p in "
                                    "panel.received['points']], 'mask': int(panel.received['mask'].sum()), "
                                    "'error': panel.error, 'result': None if panel.result is None else "
                                    "list(panel.result.image.shape), 'steps': len(panel.result.drag.history)}))")
            score = kernel_json(page, "import json; from dragnb.evaluation.scenebench import score_case; "
                                      f"s = score_case({str(case_dir)!r}, panel.result.image); "
                                      "print(json.dumps({'success': s.success, 'error_px': s.error_px, "
                                      "'psnr_outside': s.psnr_outside}))")
            settled_sum(page)
            page.locator(".dragnb-results").scroll_into_view_if_needed()
            results, loss = page.locator(".dragnb-results").bounding_box(), page.locator(".dragnb-loss").bounding_box()
            page.screenshot(path=str(DOCS_IMAGES / "result.png"),  # the row of the result and the loss plot, no more
                            clip={**results, "width": loss["x"] + loss["width"] - results["x"]})

            # Stop, pressed while a long drag runs in the kernel's worker thread, returns the partial result.
            kernel_json(page, "panel.drag_steps.value = 300; panel.lr.value = 0.001; print('true')")
            page.locator(".dragnb-run").click()
            deadline = time.time() + 60
            while not kernel_json(page, "print(str(panel.running and len(panel.history) >= 2).lower())"):
                assert time.time() < deadline, "the drag did not start"  # (the kernel answers during the run)
            page.locator(".dragnb-stop").click()
            expect(page.locator(".dragnb-status")).to_contain_text(re.compile("partial|error"), timeout=60_000)
            stopped = kernel_json(page, "import json; print(json.dumps({'reason': panel.result.drag.stop_reason, "
                                        "'steps': len(panel.result.drag.history), 'error': panel.error}))")

            # Rounds: continue from the (partial) result, then undo; the canvas is read back in the page. Round 0
            # drawn afresh first (no live trajectories), as undo draws it.
            kernel_json(page, "editor.layers['live'].clear(); editor.redraw(); print(1)")
            source_sum = settled_sum(page)
            page.locator(".dragnb-continue").click()
            expect(page.locator(".dragnb-rounds .dragnb-round")).to_have_count(2, timeout=30_000)
            page.wait_for_function(f"() => ({CANVAS_SUM})() !== {source_sum}", timeout=30_000)
            continued = kernel_json(page, "import json, numpy as np; print(json.dumps({'round': panel.session.round"
                                          ".index, 'shows_result': bool(np.array_equal(editor.image, panel.session"
                                          ".rounds[0].image)), 'points': editor.points}))")
            page.locator(".dragnb-undo-round").click()
            page.wait_for_function(f"() => ({CANVAS_SUM})() === {source_sum}", timeout=30_000)
            undone = kernel_json(page, "import json, numpy as np; print(json.dumps({'round': panel.session.round"
                                       ".index, 'shows_source': bool(np.array_equal(editor.image, image)), "
                                       "'points': [list(map(float, p)) for p in editor.points]}))")
            expect(page.locator(".dragnb-rounds .dragnb-round-current")).to_have_count(1)
        finally:
            browser.close()

    assert got["error"] is None, f"the run failed in the kernel: {got['error']}"
    assert got["points"] == [[hx, hy, tx, ty]], got  # exactly the pixels clicked
    painted = np.array(painted, bool)  # (H, W) the editor's mask as the kernel holds it
    wanted = sample.mask > 0
    assert got["mask"] == int(painted.sum()), got
    assert (painted & wanted).sum() >= 0.9 * wanted.sum(), "the strokes should cover the case's mask box"
    assert (painted & ~wanted).sum() <= 0.05 * wanted.sum(), "the strokes should stay inside the case's mask box"
    assert got["result"] == [*size, 3] and got["steps"] >= 1, got
    assert stopped["error"] is None and stopped["reason"] == "callback" and 2 <= stopped["steps"] < 300, stopped
    assert continued == {"round": 1, "shows_result": True, "points": []}, continued
    assert undone == {"round": 0, "shows_source": True, "points": [[hx, hy, tx, ty]]}, undone
    if FOR_DOCS:  # the README's showcase must be an edit that lands
        assert score["success"], f"case {CASE} did not land this time ({score}): do not commit these screenshots"
        print(f"case {CASE}: {got['steps']} drag iterations, {score}")


def fill_strokes(mask: np.ndarray, brush: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Horizontal brush strokes ((x0, y), (x1, y)) in image pixels that fill ``mask``'s bounding box from inside:
    centres one brush radius in from each edge, one row apart (smooth edges), so the round brush stays in the box."""
    rows, cols = np.nonzero(mask)
    r = brush // 2
    top, bottom, left, right = rows.min() + r, rows.max() - r, cols.min() + r, cols.max() - r
    return [((left, y), (right, y)) for y in range(top, bottom + 1)]


def union_box(*boxes: dict) -> dict:
    """The smallest page rectangle holding every bounding box (for a screenshot of neighbouring widgets)."""
    x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    x1, y1 = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
