"""One real-browser test: JupyterLab in headless Chromium opens the editor notebook, clicks a handle and a
target on the canvas, paints a mask stroke, presses Run, waits for the result, and checks the kernel got
exactly those points, a non-empty mask and a result. It saves two screenshots to artifacts/screenshots/
(DRAGNB_SCREENSHOTS=docs/images refreshes the README's).
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

import pytest

from browser_support import (CHROMIUM_FLAGS, canvas_point, chromium_path, jupyterlab, kernel_json, run_all_cells,
                             wait_for_all_cells)
from notebook_support import model_for_tests, read_notebook

# Screenshots go to artifacts/ (ignored); DRAGNB_SCREENSHOTS=docs/images refreshes the README's own.
DOCS_IMAGES = Path(os.environ.get("DRAGNB_SCREENSHOTS", Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"))
CASE = 36  # the notebook's case of the textured scene benchmark
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
    sample = read_sample(write_cases(tempfile.mkdtemp(dir=tmp_path), n=1, size=resolution, benchmark="textured",
                                     start=CASE)[0])
    size = sample.image.shape[:2]
    hx, hy = (int(v) for v in sample.points.handles[0])
    tx, ty = (int(v) for v in sample.points.targets[0])
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
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
            # a mask stroke from the handle to the target
            page.locator(".dragnb-mode button", has_text="paint mask").click()
            kernel_json(page, "editor.brush.value = max(editor.brush.value, min(editor.image_size) // 3); print(1)")
            box = canvas.bounding_box()
            page.mouse.move(*canvas_point(box, size, hx, hy))
            page.mouse.down()
            page.mouse.move(*canvas_point(box, size, tx, ty), steps=10)
            page.mouse.up()
            expect(page.locator(".dragnb-info")).to_contain_text("px editable", timeout=60_000)
            page.locator(".dragnb-editor").screenshot(path=str(DOCS_IMAGES / "editor.png"))

            page.locator(".dragnb-run").click()
            expect(page.locator(".dragnb-status")).to_contain_text(re.compile("done|error"), timeout=180_000)
            got = kernel_json(page, "import json; print(json.dumps({'points': [list(map(float, p)) for p in "
                                    "panel.received['points']], 'mask': int(panel.received['mask'].sum()), "
                                    "'error': panel.error, 'result': None if panel.result is None else "
                                    "list(panel.result.image.shape), 'steps': len(panel.result.drag.history)}))")
            page.locator(".dragnb-results").screenshot(path=str(DOCS_IMAGES / "result.png"))

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
    assert got["mask"] >= 20, got  # a stroke of a brush several pixels wide (counts vary slightly with timing)
    assert got["result"] == [*size, 3] and got["steps"] >= 1, got
    assert stopped["error"] is None and stopped["reason"] == "callback" and 2 <= stopped["steps"] < 300, stopped
    assert continued == {"round": 1, "shows_result": True, "points": []}, continued
    assert undone == {"round": 0, "shows_source": True, "points": [[hx, hy, tx, ty]]}, undone
