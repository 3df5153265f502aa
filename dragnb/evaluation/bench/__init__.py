"""The evaluation harness: ``python -m dragnb bench`` runs DragBench-shaped data through DragSession and scores it.

Input is a DragBench tree: ``DATA/<category>/<sample>/{original_image.png, meta_data.pkl}`` (sample folders
directly under ``DATA`` also work; their category is the folder's name). Malformed samples are skipped with
a message naming the file, and counted. Output::

    RUN/summary.json          every setting, versions, seeds, per-category and overall metrics (mean ± std over seeds)
    RUN/pairs.csv             one row per handle/target pair, seed and setting
    RUN/md_vs_fidelity.png    Mean Distance against Image Fidelity, the papers' plot
    RUN/sweep.csv, sweep.md, sweep.png    (with --sweep) one row/point per setting of the grid
    RUN/[<setting>/]seed_<s>/<category>/<sample>/dragged_image.png + record.json   (DragBench result tree)
    RUN/cache/                LoRA and inversion per sample (DragSession's disk cache), shared by seeds and settings

A finished edit (its ``record.json`` with the same settings digest) is never redone, so an interrupted run
resumes where it stopped. Seed s adds s to ``lora.seed`` (seed 0 = the reference's 0);
the metrics' own seed (DIFT noise) stays fixed. Under ``accelerate launch`` each process takes every n-th
sample and process 0 merges all records into one summary; ``--shard K/N`` does the same by hand.
``--score RESULTS`` scores another method's result tree (``RESULTS/<category>/<sample>/dragged_image.png``)
with the same metrics instead of editing.
"""


import importlib

# name -> module of this package; loaded on first use, so that ``python -m dragnb bench`` reads and checks its
# arguments (plan.py, light) before the metrics and the model bring in torch (issue 26)
_HOMES = {"markdown_table": "...tables",
          **dict.fromkeys(("PAIR_COLUMNS", "category_table", "pair_rows", "plot_md_vs_fidelity", "plot_sweep",
                           "sweep_table", "write_outputs"), ".outputs"),
          **dict.fromkeys(("BenchConfig", "BenchOptions", "Checked", "PlannedEdit", "SampleRef", "Skipped", "check", "discover",
                           "load_samples", "model_fingerprint", "parse_seeds", "parse_sweeps", "seeded",
                           "split_overrides", "versions"), ".plan"),
          **dict.fromkeys(("run_bench", "score"), ".run"),
          **dict.fromkeys(("build_summary", "summarise_records"), ".summary")}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
