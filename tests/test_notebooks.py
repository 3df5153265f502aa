"""Every notebook runs top to bottom headless (nbclient) on the embedded model (or the tiny random one until
it lands), with small settings; notebooks are stored without outputs and open with what they teach.

The notebooks share one kernel (imports are most of a notebook's time on 2 cores); ``%reset -f`` before each
empties the namespace, so no notebook can lean on another's variables.
"""

from __future__ import annotations

import os

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from notebook_support import NOTEBOOKS, QUICK, model_for_tests, read_notebook

ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
# Notebook-specific small values on top of MODEL and OVERRIDES.
EXTRA = {"07_benchmark.ipynb": {"CASES": 1, "DIFT": ["dift.ensemble_size=1"]}}
MAX_EXECUTED_BYTES = 500_000  # an executed notebook (outputs included) a reader can open and a lecturer can show


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    km = AsyncKernelManager(kernel_name="python3")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    run_sync(km.start_kernel)(cwd=str(tmp_path_factory.mktemp("notebooks")), env=env)
    yield km
    run_sync(km.shutdown_kernel)(now=True)


def test_the_notebooks_are_numbered_and_stored_without_outputs():
    assert ALL[:8] == ["00_quickstart.ipynb", "01_lora.ipynb", "02_inversion.ipynb", "03_features.ipynb",
                       "04_motion_supervision.ipynb", "05_point_tracking.ipynb", "05b_denoising.ipynb",
                       "06_editor.ipynb"]
    for name in ALL:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and "What it teaches" in first.source and "Where it lives" in first.source
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_notebook_runs(name, kernel, tiny_dir):
    nb = read_notebook(name, MODEL=model_for_tests(tiny_dir), OVERRIDES=QUICK, **EXTRA.get(name, {}))
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    NotebookClient(nb, km=kernel, timeout=300).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "every notebook shows at least one figure"
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{name} printed to stderr (a warning or a stuck progress bar):\n" + "".join(stderr)[:2000]
    size = len(nbformat.writes(nb).encode())
    print(f"{name}: {size / 1000:.0f} KB executed")
    assert size <= MAX_EXECUTED_BYTES, f"{name}: {size / 1000:.0f} KB executed, over {MAX_EXECUTED_BYTES / 1000:.0f} KB"
