"""Helpers shared by the notebook and browser tests: which model to run, and small settings for the notebooks.

Notebooks start with a cell tagged ``parameters`` (papermill's convention); the tests replace its
assignments with small values so every notebook runs top to bottom in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from dragnb.models import EMBEDDED_MODEL

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# Enough of every stage to exercise it, small enough for 2 CPU cores.
QUICK = {"lora": {"steps": 2}, "inversion": {"num_steps": 20, "strength": 0.5}, "drag": {"max_steps": 4}}


def model_for_tests(tiny_dir: Path) -> str | None:
    """The embedded model (None: the notebooks' default) once it is in data/, else the tiny random one."""
    return None if (EMBEDDED_MODEL / "model_index.json").is_file() else str(tiny_dir)


def parameterise(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """Append ``name = value`` lines to the notebook's ``parameters`` cell (later assignments win)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "each notebook has exactly one cell tagged 'parameters'"
    lines = [f"{name} = {json.dumps(value) if isinstance(value, dict) else repr(value)}"
             for name, value in values.items()]
    cells[0].source += "\n# set by the tests\n" + "\n".join(lines)
    return nb


def read_notebook(name: str, **values) -> nbformat.NotebookNode:
    return parameterise(nbformat.read(NOTEBOOKS / name, as_version=4), **values)
