"""The bench's summary: metrics grouped per category, setting and seed, then over seeds."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from .. import metrics
from .plan import versions

# ------------------------------------------------------------------------------------------------ summary
def _stats(values: list[float | None]) -> dict:
    """Mean ± sample std (ddof 1; None with one value) over seeds, plus the values themselves."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "per_seed": values}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "per_seed": values}


def _group_metrics(records: list[dict]) -> dict:
    """Metrics of a group of one seed's records. MD and masked MD: mean over all pairs (as DragDiffusion's and
    DragLoRA's scripts). IF and DAI_γ: mean over samples (DAI as GoodDrag's script: per-image values averaged)."""
    ok = [r for r in records if "metrics" in r]
    dists = [d for r in ok for d in (r["metrics"]["distances"] or [])]
    fid = [r["metrics"]["image_fidelity"] for r in ok if r["metrics"]["image_fidelity"] is not None]
    tracked = [d for r in ok for d in (r["metrics"].get("tracked_distance") or [])]
    masked = [d for r in ok for d in (r["metrics"].get("masked_distances") or [])]
    out = {"n_samples": len(ok), "n_failed": len(records) - len(ok), "n_pairs": sum(len(r["edit"]["points"]) // 2
                                                                                    for r in ok),
           "mean_distance": float(np.mean(dists)) if dists else None,
           "image_fidelity": float(np.mean(fid)) if fid else None,
           "tracked_distance": float(np.mean(tracked)) if tracked else None,
           "masked_mean_distance": float(np.mean(masked)) if masked else None}
    for gamma in metrics.DAI_GAMMAS:  # GoodDrag: the per-image DAI, averaged over images
        per_image = [(r["metrics"].get("dai") or {}).get(str(gamma)) for r in ok]
        per_image = [v for v in per_image if v is not None]
        out[f"dai_{gamma}"] = float(np.mean(per_image)) if per_image else None
    known = [r["metrics"]["known_answer"] for r in ok if r["metrics"].get("known_answer")]
    if known:
        errors = [k["placement_error_px"] for k in known if k["placement_error_px"] is not None]
        out["known_answer"] = {
            "n": len(known), "vanished": len(known) - len(errors),
            "placement_error_px": float(np.mean(errors)) if errors else None,
            "median_placement_error_px": float(np.median(errors)) if errors else None,
            "psnr_outside_mask": float(np.mean([k["psnr_outside_mask"] for k in known])),
            "success_rate": float(np.mean([k["success"] for k in known]))}
    return out


DAI_KEYS = tuple(f"dai_{g}" for g in metrics.DAI_GAMMAS)  # dai_1, dai_5, dai_10, dai_20
METRIC_KEYS = ("mean_distance", "image_fidelity", "tracked_distance", "masked_mean_distance", *DAI_KEYS)
KNOWN_KEYS = ("placement_error_px", "median_placement_error_px", "psnr_outside_mask", "success_rate")


def _over_seeds(per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    out = {k: _stats([per_seed[s].get(k) for s in seeds]) for k in METRIC_KEYS}
    if any("known_answer" in per_seed[s] for s in seeds):
        out["known_answer"] = {k: _stats([(per_seed[s].get("known_answer") or {}).get(k) for s in seeds])
                               for k in KNOWN_KEYS}
    return out


def summarise_records(records: list[dict], seeds: list[int]) -> dict:
    """Per-seed, per-category and overall metrics, then mean ± std over seeds.

    Overall IF is the mean of the category means and overall MD the mean over all pairs, as the reference
    scripts compute them.
    """
    categories = sorted({r["category"] for r in records})
    per_seed: dict = {}
    for seed in seeds:
        mine = [r for r in records if r["seed"] == seed]
        cats = {c: _group_metrics([r for r in mine if r["category"] == c]) for c in categories}
        overall = _group_metrics(mine)
        cat_if = [m["image_fidelity"] for m in cats.values() if m["image_fidelity"] is not None]
        overall["image_fidelity"] = float(np.mean(cat_if)) if cat_if else None
        per_seed[seed] = {"overall": overall, "categories": cats}
    return {"overall": _over_seeds({s: per_seed[s]["overall"] for s in seeds}),
            "categories": {c: _over_seeds({s: per_seed[s]["categories"][c] for s in seeds}) for c in categories},
            "per_seed": {str(s): v for s, v in per_seed.items()}}


def build_summary(plan, configs, config_settings, opts, model_name, base, fingerprints, metric_info, skipped,
                  samples, world, stats, seconds) -> dict:
    """summary.json's content, from the records on disk (so every process, or a later merge, agrees)."""
    records = {}
    for edit in plan:
        records.setdefault(edit.config.name, []).append(edit.record())
    edit_seconds = [r["seconds"] for rs in records.values() for r in rs if "seconds" in r]
    failed = [{"sample": r["sample"], "seed": r["seed"], "config": r["config"], "reason": r["failed"]}
              for rs in records.values() for r in rs if r.get("failed")]
    return {
        "command": "python -m dragnb " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
        "data": str(opts.data), "model": model_name, "model_fingerprints": fingerprints, "seeds": list(opts.seeds),
        "seed_rule": "seed s adds s to lora.seed (the drag draws no random numbers); the metric's DIFT seed stays "
                     "fixed",
        "metrics": {**metric_info, "image_fidelity_definition": "1 - LPIPS(alex), both images bilinear to 224x224",
                    "mean_distance_definition": "DIFT cosine argmax over the whole result, distance to target in "
                                                "source-image pixels, mean over pairs",
                    "masked_mean_distance_definition": "as mean_distance, the argmax searched only inside the "
                                                       "sample's editable mask (DragLoRA's m-MD); no mask = the "
                                                       "whole image, = mean_distance",
                    "dai_gammas": list(metrics.DAI_GAMMAS),
                    "dai_definition": "GoodDrag's DAI_gamma: per pair, sum over the (1+2 gamma)^2 patch and RGB of "
                                      "(source around handle - result around target)^2, images in [0, 1], divided "
                                      "by the patch's pixel count (patches cut to the image at borders); mean over "
                                      "pairs per image, then over images"},
        "settings": base.to_dict() if opts.score is None else None,
        "scored_results": None if opts.score is None else str(opts.score),
        "configs": [{"name": c.name, "assignments": list(c.assignments), "folder": c.folder or ".",
                     "settings": config_settings[c.name].to_dict() if opts.score is None else None}
                    for c in configs],
        "versions": versions(),
        "samples": {"used": len(samples), "skipped": len(skipped),
                    "skipped_reasons": [dataclasses.asdict(s) for s in skipped],
                    "categories": sorted({ref.category for ref, _ in samples})},
        "failed": failed,
        "processes": world,
        "timing": {"wall_seconds_this_process": seconds, "edits_run_by_this_process": stats["run"],
                   "edits_resumed": stats["resumed"], "edit_seconds_this_process": stats["seconds"],
                   "mean_seconds_per_edit": float(np.mean(edit_seconds)) if edit_seconds else None},
        "results": {c.name: summarise_records(records[c.name], list(opts.seeds)) for c in configs},
    }


