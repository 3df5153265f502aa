"""The shipped drag-benchmark figures of the model folder, as table rows.

:func:`scene_benchmark_rows` reads ``scene_benchmark.json`` (the figures ``scripts/eval_scenes.py`` measured for
the flat and the textured benchmark) into one row per settings label with the benchmark's summary columns
(``SCENE_BENCHMARK_COLUMNS``), for :func:`dragnb.tables.markdown_table`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dragnb.evaluation.scenebench import record_key


SCENE_BENCHMARK_COLUMNS = ("n", "success_rate", "median_error_px", "placed_rate", "area_kept_rate",
                           "psnr_kept_rate", "median_area_ratio", "median_psnr_outside")


def scene_benchmark_rows(path: str | Path, benchmark: str = "flat") -> list[dict]:
    """The shipped drag figures (``scene_benchmark.json``: {"runs": {label: eval_scenes JSON}} for the flat
    benchmark, ``"textured_runs"`` for the textured one), one row per settings label with the benchmark's
    summary columns; [] when the file or the benchmark is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = []
    for label, run in data.get(record_key(benchmark), {}).items():
        row = {"settings": label, **{k: run.get(k) for k in SCENE_BENCHMARK_COLUMNS}}
        if benchmark != "flat":  # the deformations apart: a move and a stretch are different asks
            row["median_iou"] = run.get("median_iou")
            for kind in ("move", "stretch"):
                row[f"success_{kind}"] = (run.get("success_by_kind") or {}).get(kind)
        if "seconds_per_edit" in run:  # the variant sweeps: drag + denoising, LoRA and inversion shared
            row["seconds_per_edit"] = run["seconds_per_edit"]
        rows.append(row)
    return rows
