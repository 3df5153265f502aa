"""Side-by-side speed (not a test): the same edits on the same model under two versions of dragnb, in one run.

    .venv/bin/python scripts/speed_compare.py --baseline c4310a6 [--model-rev c4310a6] [--cases DIR] [--limit 6]
        [--set STAGE.FIELD=V ...] [--new-set STAGE.FIELD=V ...] [--fixed-work] [--reference-defaults] [--json FILE]

``--baseline`` is a git revision of this repository (default: c4310a6, the code when issue 13 was filed); its
``dragnb/`` is exported to a temporary folder (``git archive``, no worktree is touched) and run in a child process
beside the checked-out code, case by case, alternating, on the model folder of ``--model-rev`` (default: the
same revision's ``data/tiny-scenes``, so both versions read the same weights and the same ``dragnb_defaults.json``).
``--set`` applies to both versions, ``--new-set`` to the checked-out one only (its speed options, e.g.
``compute.fuse_lora=true``). ``--fixed-work`` sets ``drag.stop_distance=0`` on both, and on the checked-out code
``drag.round_points=false`` (a handle tracked onto a target rounded to the grid is at distance 0, which stops even
that rule), so every drag runs all ``max_steps`` iterations and both versions do the same work whatever their
trackers say.

``--baseline HEAD`` runs the same code on both sides (the committed code, when nothing is uncommitted, and without
``--fixed-work`` or ``--new-set``, which change the new side only): the ratios it prints (1.00 on a quiet machine)
say how much of a difference the machine alone makes. On a busy host in session 17, with old always going first, the same code
came out 15 % slower on the second side's first edits; the order now alternates from case to case.

Per case: a first edit (all four stages) and a second drag on the same image (the handle moved half-way: LoRA and
inversion cached), each timed around ``session.run()``. Prints per-stage medians and the ratio old / new, and
whether the two versions' edited images are identical byte for byte (the behaviour check: with
``--reference-defaults`` both start from the reference's ``Settings()`` instead of the model's defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside either version: only the API both have (load_model, apply_overrides, DragSession, read_sample).
CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import torch
torch.set_num_threads(int(os.environ.get("DRAGNB_THREADS", "2")))
from dragnb.config import Settings, apply_overrides
from dragnb.models import load_model
from dragnb.session import DragSession
try:
    from dragnb.evaluation.dragbench import read_sample
except ImportError:  # the layout before issue 11
    from dragnb.dragbench import read_sample
import hashlib
model_dir, overrides, folders = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
# (the old code has no dragnb.config.requested_weights nor dragnb.compute.WEIGHTS: spelled out here for both)
named = [a.partition("=")[2].strip() for a in overrides if a.partition("=")[0].strip() == "compute.weights"]
model = load_model(model_dir, device="cpu", dtype={"fp32": torch.float32, "fp16": torch.float16,
                                                   "bf16": torch.bfloat16}[named[-1] if named else "fp32"])
settings = apply_overrides(Settings() if sys.argv[4] == "reference" else model.settings, overrides)
digest = lambda image: hashlib.sha256(image.tobytes()).hexdigest()[:16]

def case(folder):
    sample = read_sample(folder)
    pairs = [(*h, *t) for h, t in zip(sample.points.handles.tolist(), sample.points.targets.tolist())]
    return sample.image, sample.prompt, pairs, sample.mask

for i, folder in enumerate([folders[0]] + folders):  # the first case once more, untimed: imports, allocator
    image, prompt, pairs, mask = case(folder)
    session = DragSession(model, image, prompt, settings)
    session.set_points(pairs)
    session.set_mask(mask)
    tick = time.perf_counter(); first = session.run(); first_s = time.perf_counter() - tick
    hx, hy, tx, ty = pairs[0]
    session.set_points([(hx, hy, (hx + tx) / 2, (hy + ty) / 2)] + pairs[1:])
    tick = time.perf_counter(); second = session.run(); second_s = time.perf_counter() - tick
    if i == 0:
        continue
    print(json.dumps({"case": os.path.basename(folder), "first_s": first_s, "second_s": second_s,
                      "first_stages": first.seconds, "second_stages": second.seconds,
                      "first_drag_steps": len(first.drag.history), "second_drag_steps": len(second.drag.history),
                      "first_image": digest(first.image), "second_image": digest(second.image)}),
          flush=True)
"""


def export(rev: str, paths: list[str], into: Path) -> None:
    """``git archive REV PATHS`` unpacked into ``into``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def run_child(src: Path, model: Path, overrides: list[str], folder: str, base: str = "model") -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), json.dumps(overrides), json.dumps([folder]), base],
                         env=env, cwd=src, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: the run under {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="c4310a6", help="git revision of the old code (default: issue 13's start)")
    p.add_argument("--model-rev", default=None, help="revision whose data/tiny-scenes both run (default: --baseline)")
    p.add_argument("--cases", default="runs/cases-textured-64-120", help="DragBench-format case folders")
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--set", dest="both", action="append", default=[], metavar="STAGE.FIELD=V")
    p.add_argument("--new-set", dest="new", action="append", default=[], metavar="STAGE.FIELD=V")
    p.add_argument("--fixed-work", action="store_true", help="drag.stop_distance=0 on both: every drag runs max_steps")
    p.add_argument("--reference-defaults", action="store_true",
                   help="both versions start from the reference's Settings(), not the model's own defaults")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    base = "reference" if args.reference_defaults else "model"
    folders = sorted(str(f) for f in Path(args.cases).iterdir() if (f / "meta_data.pkl").is_file())[: args.limit]
    if not folders:
        raise SystemExit(f"error: --cases {args.cases!r} holds no case folders; write them with "
                         "python -m dragnb.evaluation.scenebench write DIR --benchmark textured")
    both = [*args.both, *(["drag.stop_distance=0"] if args.fixed_work else [])]
    new = [*(["drag.round_points=false"] if args.fixed_work else []), *args.new]
    with tempfile.TemporaryDirectory() as tmp:
        old_src, model_src = Path(tmp) / "old", Path(tmp) / "model"
        export(args.baseline, ["dragnb"], old_src)
        export(args.model_rev or args.baseline, ["data/tiny-scenes"], model_src)
        model = model_src / "data" / "tiny-scenes"
        rows = {"old": [], "new": []}
        runs = {"old": (old_src, both), "new": (ROOT, [*both, *new])}
        for i, folder in enumerate(folders):  # alternating, and which goes first too, so a change of machine load
            for version in ("old", "new") if i % 2 == 0 else ("new", "old"):  # (or a bias of going second) hits both
                src, overrides = runs[version]
                rows[version].append(run_child(src, model, overrides, str(Path(folder).resolve()), base))
            o, n = rows["old"][-1], rows["new"][-1]
            same = ["first" if o["first_image"] == n["first_image"] else "",
                    "second" if o["second_image"] == n["second_image"] else ""]
            print(f"{Path(folder).name}: first {o['first_s']:.2f} -> {n['first_s']:.2f} s, "
                  f"second {o['second_s']:.2f} -> {n['second_s']:.2f} s "
                  f"(drag steps {o['first_drag_steps']}/{o['second_drag_steps']} -> "
                  f"{n['first_drag_steps']}/{n['second_drag_steps']}; identical images: "
                  f"{' and '.join(x for x in same if x) or 'none'})", flush=True)
    identical = {k: sum(o[f"{k}_image"] == n[f"{k}_image"] for o, n in zip(rows["old"], rows["new"]))
                 for k in ("first", "second")}
    print(f"identical images: first edits {identical['first']} of {len(folders)}, "
          f"second drags {identical['second']} of {len(folders)}")
    med = lambda rs, f: statistics.median(f(r) for r in rs)  # noqa: E731
    print(f"\n{'median over ' + str(len(folders)) + ' cases':28s} {'old':>8s} {'new':>8s} {'old/new':>8s}")
    summary = {}
    for label, getter in [("first edit s", lambda r: r["first_s"]), ("second drag s", lambda r: r["second_s"]),
                          *[(f"first: {s} s", (lambda s: lambda r: r["first_stages"][s])(s))
                            for s in ("lora", "inversion", "drag", "denoise")],
                          *[(f"second: {s} s", (lambda s: lambda r: r["second_stages"][s])(s)) for s in ("drag", "denoise")]]:
        o, n = med(rows["old"], getter), med(rows["new"], getter)
        summary[label] = {"old": o, "new": n, "speedup": o / n if n else None}
        print(f"{label:28s} {o:8.3f} {n:8.3f} {o / n if n else float('nan'):8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": "python scripts/speed_compare.py " + " ".join(sys.argv[1:]),
                                               "baseline": args.baseline, "model_rev": args.model_rev or args.baseline,
                                               "set": both, "new_set": new, "identical_images": identical,
                                               "base_settings": base, "threads": os.environ.get(
                                                   "OMP_NUM_THREADS", "2"), "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
