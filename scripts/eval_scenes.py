"""Run drags on scene-benchmark cases and score them against their known answers.

    .venv/bin/python scripts/eval_scenes.py [--benchmark flat|textured] [--cases DIR] [--n N] [--model DIR]
        [--set drag.lr=0.03 ...] [--paper-defaults] [--first K] [--limit N] [--json OUT.json]
        [--time-second-drag] [--auto-mask] [--record data/tiny-scenes/scene_benchmark.json --label NAME]
        [--benchmark occlusion|occlusion-near [--look unseen]]
        [--variant "NAME:drag.schedule=alternating,drag.steps_per_timestep=5" ...]

Writes the cases first if the folder is empty (dragnb.evaluation.scenebench.write_cases, at the model's resolution). The
settings are the model's own defaults (its dragnb_defaults.json) unless --paper-defaults asks for the reference
code's. Prints one line per case and the summary (success rate, median placement error, ...).

With ``--variant`` (repeatable) every case runs once with the base settings (variant ``base``) and once per variant
in one session, so LoRA and inversion are computed once per case and each variant costs its drag and denoising
only (a variant that changes the LoRA or the inversion recomputes them); the summaries (one per variant,
``seconds_per_edit`` = drag + denoising) go to --json and, with --record, under ``variant_runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from dragnb.automask import auto_mask
from dragnb.config import Settings, apply_overrides, named_overrides, requested_weights
from dragnb.errors import InputError
from dragnb.evaluation.dragbench import read_sample
from dragnb.models import load_model
from dragnb.evaluation.scenebench import BENCHMARKS, case_dirs, record_key, score_case, summarise, write_cases
from dragnb.session import DragSession


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", choices=BENCHMARKS, default="flat")
    p.add_argument("--cases", default=None, help="case folder (default runs/scene-cases-<benchmark>-<size>)")
    p.add_argument("--n", type=int, default=None, help="cases to write (default: 50 flat, 120 textured)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--look", default="trained", help="occlusion benchmark: draw its cases in this look "
                   "(dragnb.tiny.scenes.LOOKS; 'unseen' is never trained on)")
    p.add_argument("--model", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--paper-defaults", action="store_true", help="start from the reference code's defaults")
    p.add_argument("--first", type=int, default=0, help="skip the cases before this one")
    p.add_argument("--limit", type=int, default=None, help="run this many cases at most")
    p.add_argument("--json", default=None)
    p.add_argument("--record", default=None, help="merge the summary into this JSON file (e.g. the model's "
                   "scene_benchmark.json, which notebook 08 shows) under --label")
    p.add_argument("--record-key", default=None, help="the key of --record the runs go under (default: "
                   "<benchmark>_runs, or variant_runs for --variant sweeps)")
    p.add_argument("--label", default=None, help="the run's name in --record (default: model or paper defaults)")
    p.add_argument("--save-images", default=None, help="folder for the edited images")
    p.add_argument("--time-second-drag", action="store_true", help="also time a second drag on each image")
    p.add_argument("--auto-mask", action="store_true", help="edit with the mask grown from the drag lines "
                   "(dragnb.automask) instead of the case's; the scorer keeps the case's mask")
    p.add_argument("--auto-sigma", type=float, default=None, metavar="FRACTION",
                   help="with --auto-mask: its σ as a fraction of the shorter side (default dragnb.automask.AUTO_SIGMA)")
    p.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME:STAGE.FIELD=V,...",
                   help="run every case under this variant too (settings over the others'); repeatable. The "
                   "base settings run first, as variant 'base'; --save-images then writes one folder per variant")
    args = p.parse_args()
    if args.variants:
        return sweep(args)
    model, settings, folders = prepare(args)
    scores, first, second = [], [], []
    for folder in folders:
        sample = read_sample(folder)
        session = DragSession(model, sample.image, sample.prompt, settings)
        session.set_points(sample.points)
        session.set_mask(edit_mask(sample, args))
        tick = time.perf_counter()
        result = session.run()
        first.append(time.perf_counter() - tick)
        score = score_case(folder, result.image)
        scores.append(score)
        if args.save_images:
            save_image(result.image, Path(args.save_images) / f"{folder.name}.png")
        if args.time_second_drag:
            h, t = sample.points.handles[0], sample.points.targets[0]
            session.set_points([(h[0], h[1], (h[0] + t[0]) / 2, (h[1] + t[1]) / 2)])
            tick = time.perf_counter()
            session.run()
            second.append(time.perf_counter() - tick)
        print(f"{folder.name} {score.kind} {score.pairs}p: err {score.error_px:.2f}px area x{score.area_ratio:.2f} "
              f"iou {score.iou:.2f} psnr_out {score.psnr_outside:.1f} "
              f"{'OK' if score.success else '--'} ({result.drag.stop_reason}, {len(result.drag.history)} steps, "
              f"{first[-1]:.1f}s)", flush=True)
    summary = dataclasses.asdict(summarise(scores))
    summary["median_first_edit_s"] = statistics.median(first)
    if second:
        summary["median_second_drag_s"] = statistics.median(second)
    summary["benchmark"], summary["seed"], summary["model"] = args.benchmark, args.seed, model.name
    summary["cases"] = [dataclasses.asdict(sc) for sc in scores]
    summary["settings"] = settings.to_dict()
    print(json.dumps({k: v for k, v in summary.items() if k not in ("settings", "cases")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.record:
        record = Path(args.record)
        data = json.loads(record.read_text()) if record.is_file() else {}
        label = args.label or ("paper defaults" if args.paper_defaults else "model defaults")
        summary["command"] = "python scripts/eval_scenes.py " + " ".join(sys.argv[1:])
        data.setdefault(args.record_key or record_key(args.benchmark), {})[label] = {
            k: v for k, v in summary.items() if k != "cases"}
        record.write_text(json.dumps(data, indent=1) + "\n")


def edit_mask(sample, args):
    """The mask the edit runs with: the case's, or with --auto-mask the one grown from its drag lines."""
    if not args.auto_mask:
        return sample.mask
    size = sample.image.shape[:2]
    return auto_mask(sample.points, size, None if args.auto_sigma is None else args.auto_sigma * min(size))


def read_situation(folder: Path) -> str:
    """The case's situation (occlusion benchmark) or kind, for the progress line."""
    case = json.loads((folder / "case.json").read_text())
    return case.get("situation") or ("stretch" if any(e["kind"] == "stretch" for e in case["edits"]) else "move")


def save_image(image, path: Path) -> None:
    """Write an edited image (uint8 H x W x 3), making its folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def prepare(args):
    """The model, the base settings and the case folders to run (written first if the folder is empty)."""
    model = load_model(args.model, device="cpu", dtype=requested_weights(args.overrides))
    look = "" if args.look == "trained" else f"-{args.look}"
    args.cases = args.cases or f"runs/scene-cases-{args.benchmark}-{model.resolution}{look}"
    if not case_dirs(args.cases):
        write_cases(args.cases, args.n, args.seed, model.resolution, args.benchmark, look=args.look)
    settings = apply_overrides(Settings() if args.paper_defaults else model.settings, args.overrides)
    return model, settings, case_dirs(args.cases)[args.first:][: args.limit]


def sweep(args) -> None:
    """Every case once per variant, one session per case (LoRA and inversion shared by the variants)."""
    model, base, folders = prepare(args)
    try:
        variants = {"base": [], **dict(named_overrides(v, "--variant") for v in args.variants)}
        settings = {name: apply_overrides(base, assignments) for name, assignments in variants.items()}  # checked now
        if any(s.compute.weights != base.compute.weights for s in settings.values()):
            raise InputError("--variant", f"compute.weights must be the same for every variant ({base.compute.weights}, "
                             "the dtype the model loaded in); give it with --set instead")
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    scores = {name: [] for name in variants}
    seconds = {name: [] for name in variants}
    preparing = []  # LoRA + inversion of each case, computed once (by the first variant) and shared
    for folder in folders:
        sample = read_sample(folder)
        session = DragSession(model, sample.image, sample.prompt, base)
        session.set_points(sample.points)
        session.set_mask(edit_mask(sample, args))
        line = [f"{folder.name} {read_situation(folder)}"]
        for name in variants:
            session.settings = settings[name]
            result = session.run()
            seconds[name].append(result.seconds["drag"] + result.seconds["denoise"])
            if name == "base":
                preparing.append(result.seconds["lora"] + result.seconds["inversion"])
            score = score_case(folder, result.image)
            scores[name].append(score)
            if args.save_images:
                save_image(result.image, Path(args.save_images) / name / f"{folder.name}.png")
            line.append(f"{name} {'OK' if score.success else '--'}{'K' if score.scene_kept else 'x'} {score.error_px:.1f}px "
                        f"({result.drag.stop_reason}, {len(result.drag.history)})")
        print(" | ".join(line), flush=True)
    out = {}
    for name in variants:
        summary = dataclasses.asdict(summarise(scores[name]))
        summary["seconds_per_edit"] = statistics.median(seconds[name])  # drag + denoising: a second drag
        summary["lora_inversion_s"] = statistics.median(preparing)  # + this: a first edit
        summary.update(benchmark=args.benchmark, seed=args.seed, model=model.name, first=args.first,
                       variant=variants[name], settings=settings[name].to_dict(),
                       command="python scripts/eval_scenes.py " + " ".join(sys.argv[1:]))
        out[name] = summary
        print(name, json.dumps({k: summary[k] for k in ("n", "success_rate", "kept_success_rate", "median_error_px",
                                                        "placed_rate", "area_kept_rate", "psnr_kept_rate",
                                                        "others_kept_rate", "no_ghost_rate", "depth_kept_rate",
                                                        "occluding_kept_success_rate", "kept_success_by_situation",
                                                        "kept_success_by_length", "seconds_per_edit")}))
    if args.json:
        Path(args.json).write_text(json.dumps({n: {**s, "cases": [dataclasses.asdict(c) for c in scores[n]]}
                                               for n, s in out.items()}, indent=1))
    if args.record:
        record = Path(args.record)
        data = json.loads(record.read_text()) if record.is_file() else {}
        data.setdefault(args.record_key or record_key("variant"), {}).update(
            {f"{args.label}: {n}" if args.label else n: v for n, v in out.items()})
        record.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
