"""The bench's outputs: pairs.csv, summary.json, tables and plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .. import metrics
from ...files import write_atomic
from ...tables import markdown_table
from .summary import DAI_KEYS

# ------------------------------------------------------------------------------------------------ outputs
def _write_json(path: Path, data) -> None:
    """Write atomically (a crash never leaves half a record that resume would trust)."""
    text = json.dumps(_clean(data), indent=1, default=_json_default, allow_nan=False)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj):
    """Recursively replace NaN and infinities (which JSON lacks) by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _finite(x):
    """JSON has no NaN or infinity: such values become None."""
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x



PAIR_COLUMNS = ("config", "seed", "category", "sample", "pair", "handle_x", "handle_y", "target_x", "target_y",
                "matched_x", "matched_y", "distance", "image_fidelity", "tracked_x", "tracked_y", "tracked_distance",
                "drag_steps", "stop_reason", "placement_error_px", "psnr_outside_mask", "seconds",
                "masked_matched_x", "masked_matched_y", "masked_distance", *DAI_KEYS)


def pair_rows(plan) -> list[dict]:
    """One row per handle/target pair of every finished edit."""
    rows = []
    for edit in plan:
        r = edit.record()
        if "metrics" not in r:
            continue
        m, e = r["metrics"], r["edit"]
        pts = e["points"]
        known = m.get("known_answer") or {}
        masked_xy, masked_d, dai_pairs = m.get("masked_matched_xy"), m.get("masked_distances"), m.get("dai_pairs") or {}
        for i in range(len(pts) // 2):
            row = {"config": r["config"], "seed": r["seed"], "category": r["category"], "sample": r["name"],
                   "pair": i, "handle_x": pts[2 * i][0], "handle_y": pts[2 * i][1],
                   "target_x": pts[2 * i + 1][0], "target_y": pts[2 * i + 1][1],
                   "matched_x": m["matched_xy"][i][0] if m["matched_xy"] else None,
                   "matched_y": m["matched_xy"][i][1] if m["matched_xy"] else None,
                   "distance": m["distances"][i] if m["distances"] else None,
                   "image_fidelity": m["image_fidelity"],
                   "tracked_x": e["final_handles_xy"][i][0] if "final_handles_xy" in e else None,
                   "tracked_y": e["final_handles_xy"][i][1] if "final_handles_xy" in e else None,
                   "tracked_distance": (m.get("tracked_distance") or [None] * (i + 1))[i],
                   "drag_steps": e.get("drag_steps"), "stop_reason": e.get("stop_reason"),
                   "placement_error_px": known.get("placement_error_px"),
                   "psnr_outside_mask": known.get("psnr_outside_mask"), "seconds": round(r["seconds"], 3),
                   "masked_matched_x": masked_xy[i][0] if masked_xy else None,
                   "masked_matched_y": masked_xy[i][1] if masked_xy else None,
                   "masked_distance": masked_d[i] if masked_d else None}
            row.update({f"dai_{g}": (dai_pairs.get(str(g)) or [None] * (i + 1))[i] for g in metrics.DAI_GAMMAS})
            rows.append(row)
    return rows


def write_outputs(out: Path, summary: dict, plan) -> None:
    """summary.json, pairs.csv, md_vs_fidelity.png, and with a sweep sweep.csv, sweep.md, sweep.png."""
    _write_json(out / "summary.json", summary)
    with open(out / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAIR_COLUMNS)
        writer.writeheader()
        writer.writerows(pair_rows(plan))
    fig = plot_md_vs_fidelity(summary)
    fig.savefig(out / "md_vs_fidelity.png", dpi=110, bbox_inches="tight")
    if len(summary["configs"]) > 1:
        rows = sweep_table(summary)
        with open(out / "sweep.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "sweep.md").write_text(markdown_table(rows) + "\n")
        plot_sweep(summary).savefig(out / "sweep.png", dpi=110, bbox_inches="tight")


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _added_columns(res: dict) -> dict:
    """Masked MD and DAI_γ of one summary block, formatted (``.get``: summaries written before they existed)."""
    return {"masked_mean_distance": _fmt(res.get("masked_mean_distance"), 2),
            **{key: _fmt(res.get(key), 4) for key in DAI_KEYS}}


def sweep_table(summary: dict) -> list[dict]:
    """One row per setting of the grid: its assignments and mean ± std of the overall metrics (MD, IF, tracked
    distance, masked MD, DAI_γ, and the known answers when there are any)."""
    rows = []
    for config in summary["configs"]:
        res = summary["results"][config["name"]]["overall"]
        row = {a.partition("=")[0]: a.partition("=")[2] for a in config["assignments"]}
        row.update({"mean_distance": _fmt(res["mean_distance"], 2), "image_fidelity": _fmt(res["image_fidelity"]),
                    "tracked_distance": _fmt(res["tracked_distance"], 2)})
        row.update(_added_columns(res))
        if "known_answer" in res:
            row.update({"placement_error_px": _fmt(res["known_answer"]["placement_error_px"], 2),
                        "success_rate": _fmt(res["known_answer"]["success_rate"], 2)})
        rows.append(row)
    return rows


def category_table(summary: dict, config: str | None = None) -> list[dict]:
    """One row per category (and one for all) of one setting: n, MD, IF, tracked distance, masked MD, DAI_γ,
    mean ± std."""
    name = config or summary["configs"][0]["name"]
    res = summary["results"][name]
    rows = []
    for cat, m in [*res["categories"].items(), ("(all)", res["overall"])]:
        per_seed = res["per_seed"][str(summary["seeds"][0])]
        n = (per_seed["overall"] if cat == "(all)" else per_seed["categories"][cat])["n_samples"]
        row = {"category": cat, "samples": n, "mean_distance": _fmt(m["mean_distance"], 2),
               "image_fidelity": _fmt(m["image_fidelity"]), "tracked_distance": _fmt(m["tracked_distance"], 2)}
        row.update(_added_columns(m))
        if "known_answer" in m:
            row["placement_error_px"] = _fmt(m["known_answer"]["placement_error_px"], 2)
        rows.append(row)
    return rows


def _fidelity_axis(summary: dict) -> tuple[str, str, str] | None:
    """What the trade-off plots put on x: Image Fidelity when it was computed, else PSNR outside the mask when the
    cases carry known answers (how much of what may not change was kept), else None. (key, label, why)"""
    configs = [c["name"] for c in summary["configs"]]
    if summary["metrics"]["image_fidelity"] and any(
            summary["results"][c]["overall"]["image_fidelity"]["mean"] is not None for c in configs):
        return "image_fidelity", "Image Fidelity = 1 - LPIPS (higher is better)", ""
    if any("known_answer" in summary["results"][c]["overall"] for c in configs):
        return ("psnr_outside_mask", "PSNR outside the mask, dB (higher = more of the image kept)",
                "Image Fidelity not computed (lpips missing or --no-fidelity): fidelity read as PSNR outside the mask")
    return None


KNOWN_ONLY = ("psnr_outside_mask", "success_rate")  # kept under "known_answer" in a summary


def _stat(m: dict, key: str) -> dict:
    if key in KNOWN_ONLY:  # a category without known answers has no point on this axis
        return m.get("known_answer", {}).get(key) or {"mean": None, "std": None, "per_seed": []}
    return m[key]


def _points(summary: dict, config: str, key: str, where: str = "overall"):
    res = summary["results"][config]
    m = res["overall"] if where == "overall" else res["categories"][where]
    return _stat(m, key), m["mean_distance"]


def _seed_points(summary: dict, config: str, key: str):
    """(fidelity, MD) of each seed of one setting, overall."""
    f, d = _points(summary, config, key)
    return [(x, y) for x, y in zip(f["per_seed"], d["per_seed"]) if x is not None and y is not None]


def plot_md_vs_fidelity(summary: dict):
    """Mean Distance (y, lower is better) against fidelity (x, higher is better): Image Fidelity, or PSNR outside
    the mask on cases with known answers when LPIPS is missing. Each setting's mean ± std over seeds, each seed
    as a small dot, and for a single setting each category. Without either fidelity, MD per seed and category as
    points, titled with the reason."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    configs = [c["name"] for c in summary["configs"]]
    if not summary["metrics"]["mean_distance"]:
        ax.text(0.5, 0.5, "Mean Distance was not computed (--no-mean-distance)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axis = _fidelity_axis(summary)
    if axis is None:
        _md_strip(ax, summary, configs)
        ax.set_title("Image Fidelity not computed (--no-fidelity or lpips missing): Mean Distance alone", fontsize=9)
        return fig
    key, label, why = axis
    if len(configs) == 1 and len(summary["results"][configs[0]]["categories"]) > 1:
        for cat in summary["results"][configs[0]]["categories"]:
            f, d = _points(summary, configs[0], key, cat)
            if f["mean"] is not None and d["mean"] is not None:
                ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="o", alpha=0.6,
                            label=cat)
    for i, name in enumerate(configs):
        f, d = _points(summary, name, key)
        if f["mean"] is None or d["mean"] is None:
            continue
        colour = f"C{i % 10}"
        seeds = _seed_points(summary, name, key)
        ax.scatter([x for x, _ in seeds], [y for _, y in seeds], s=14, color=colour, alpha=0.5)
        ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="*", ms=12, color=colour,
                    label=("all" if len(configs) == 1 else name) + " (mean ± std; dots: seeds)")
    ax.set_xlabel(label)
    ax.set_ylabel("Mean Distance (px, lower is better)")
    n = len(summary["seeds"])
    title = f"{Path(summary['model']).name}: better is lower right ({n} seed{'s' if n > 1 else ''})"
    ax.set_title(title + (f"\n{why}" if why else ""), fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _md_strip(ax, summary: dict, configs: list[str]) -> None:
    """Mean Distance per setting, each seed a dot and the mean a bar-free line: no one-bar charts."""
    for i, name in enumerate(configs):
        d = summary["results"][name]["overall"]["mean_distance"]
        vals = [v for v in d["per_seed"] if v is not None]
        ax.scatter([i] * len(vals), vals, color=f"C{i % 10}", s=18, alpha=0.6, label="seeds" if i == 0 else None)
        if d["mean"] is not None:
            ax.hlines(d["mean"], i - 0.25, i + 0.25, color=f"C{i % 10}", label="mean" if i == 0 else None)
    ax.set_xticks(range(len(configs)), configs, rotation=30 if len(configs) > 1 else 0, ha="right", fontsize=7)
    ax.set_xlim(-0.75, len(configs) - 0.25)
    ax.set_ylabel("Mean Distance (px, lower is better)")
    ax.legend(fontsize=7)


def plot_sweep(summary: dict):
    """Each setting of the grid as one point, MD against fidelity (IF, or PSNR outside the mask on cases with
    known answers); with neither, MD per setting."""
    from matplotlib.figure import Figure

    configs = [c["name"] for c in summary["configs"]]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    axis = _fidelity_axis(summary)
    if axis is None:
        _md_strip(ax, summary, configs)
        ax.set_title("Image Fidelity not computed: Mean Distance per setting", fontsize=9)
        return fig
    key, label, why = axis
    for name in configs:
        f, d = _points(summary, name, key)
        if f["mean"] is None or d["mean"] is None:
            continue
        ax.errorbar(f["mean"], d["mean"], xerr=f["std"] or 0, yerr=d["std"] or 0, fmt="o")
        ax.annotate(name, (f["mean"], d["mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel("Mean Distance (px, lower is better)")
    ax.set_title(f"{Path(summary['model']).name}: {len(configs)} settings, better is lower right "
                 f"(± std over {len(summary['seeds'])} seed(s))" + (f"\n{why}" if why else ""), fontsize=9)
    return fig


