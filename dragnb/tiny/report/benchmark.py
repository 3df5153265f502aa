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



def what_defaults_buy(model_dir: str | Path,
                      group: str = "v3.2, 50 fresh cases (seed 2000), session 23 defaults") -> list[dict]:
    """What a model folder's defaults add to the paper's loop and what each buys, from its measured variant table.

    One row per setting where ``dragnb_defaults.json`` departs from the reference (``config.Settings()``) in the
    loop's variant switches (``config.VARIANT_SWITCHES``) or the denoising, then one row per run of ``group`` (in
    ``scene_benchmark.json``'s ``variant_runs``) that sets several of them back at once. A row's success is that
    run's (%), the setting(s) at the paper's value and every other one at the model's; "it buys" is the model's
    defaults' success minus it, in percentage points; None where no run of ``group`` measured it. Where the group's
    runs were scored with the scene kept (``kept_success_rate``: no ghost, no other object lost), the same two
    columns for it follow. The first row is the model's defaults themselves. [] when the file or the group is
    absent."""
    from dragnb.config import VARIANT_SWITCHES, Settings, model_defaults

    def value(settings: Settings, key: str):
        stage, _, name = key.partition(".")
        return getattr(getattr(settings, stage), name)

    path = Path(model_dir) / "scene_benchmark.json"
    measured = json.loads(path.read_text()).get("variant_runs", {}) if path.is_file() else {}
    runs = [run for label, run in measured.items() if label.startswith(group + ": ")]
    base = next((run for run in runs if not run.get("variant")), None)
    if base is None:
        return []
    model, paper = model_defaults(model_dir), Settings()
    added = [f"{stage}.{name}" for stage in ("drag", "denoise") for name in getattr(paper, stage).__dataclass_fields__
             if (stage == "denoise" or name in VARIANT_SWITCHES)
             and value(model, f"{stage}.{name}") != value(paper, f"{stage}.{name}")]
    back = [([key for key, _, _ in assignments], run) for run in runs if run.get("variant")  # runs that only set
            for assignments in [[a.partition("=") for a in run["variant"]]]  # settings back to the paper's
            if all(str(value(paper, key)).lower() == v.lower() for key, _, v in assignments)]
    success = round(100 * base["success_rate"])
    kept = None if base.get("kept_success_rate") is None else round(100 * base["kept_success_rate"])

    def row(setting: str, keys: list[str], run: dict | None) -> dict:
        rate = None if run is None else round(100 * run["success_rate"])
        out = {"setting": setting, "this model": ", ".join(str(value(model, k)) for k in keys),
               "the paper's loop": ", ".join(str(value(paper, k)) for k in keys),
               "success (%)": rate, "it buys (points)": None if rate is None else success - rate}
        if kept is not None:  # success with the scene kept (no ghost, no other object lost), where measured
            measured = None if run is None else run.get("kept_success_rate")
            rate = None if measured is None else round(100 * measured)
            out["with the scene kept (%)"] = rate
            out["it buys, kept (points)"] = None if rate is None else kept - rate
        return out

    rows = [{**row(f"the model's defaults (all of the below), {base['n']} cases", [], base), "it buys (points)": None}]
    if kept is not None:
        rows[0]["it buys, kept (points)"] = None
    rows += [row(key, [key], next((run for keys, run in back if keys == [key]), None)) for key in added]
    rows += [row(" + ".join(keys), keys, run) for keys, run in back if len(keys) > 1]
    return rows
