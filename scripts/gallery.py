"""The README's pictures: six drags of the textured scene benchmark that land, and a GIF of one of them; or, with
``--benchmark occlusion``, drags of the occlusion benchmark that land, one or more of each situation asked for.

    .venv/bin/python scripts/gallery.py [--model DIR] [--start 0] [--moves 4] [--stretches 2]
        [--out docs/images] [--cases runs/gallery-cases]
    .venv/bin/python scripts/gallery.py --benchmark occlusion --want front=2,behind=2,off=1,past=1

Runs the model with its own defaults (its dragnb_defaults.json) on the benchmark's cases in order, through
DragSession, scores each result against its known answer with the scene benchmark's scorer
(dragnb.evaluation.scenebench.score_case, as scripts/eval_scenes.py does) and keeps the first ``--moves`` rigid
moves and ``--stretches`` stretches that land with the scene kept (``kept_success``: no other object lost, no
ghost, the nearer shape in front), running the cases in order until it holds them. It prints every case it ran,
landed or not, and the figure's title says how many were run and how many landed. Writes:

- ``gallery.png``: each kept case as source (mask outlined, handle red → target blue) | result;
- ``drag.gif``: x̂_0 over the drag's iterations (dragnb.drag.predicted_frames, dragnb.ui.plots.drag_animation)
  for the kept case whose handles travel farthest among those the loop dragged (each result's title says whether
  the loop moved it or ``drag.image_copy`` moved its object in the image, docs/method.md §3.6);
- with ``--benchmark occlusion``: ``occlusion.png`` (no GIF), the cases kept by ``--want``.

About ten minutes on a busy 2-core CPU (8 cases at the first run); not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure

from dragnb.drag import predicted_frames
from dragnb.evaluation.dragbench import read_sample
from dragnb.evaluation.scenebench import score_case, write_cases
from dragnb.models import load_model
from dragnb.session import DragSession
from dragnb.ui.plots import draw_edit, drag_animation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    p.add_argument("--start", type=int, default=0, help="the first case of the textured benchmark to try")
    p.add_argument("--moves", type=int, default=4, help="rigid moves to keep")
    p.add_argument("--stretches", type=int, default=2, help="stretches to keep")
    p.add_argument("--max-cases", type=int, default=60, help="give up after trying this many cases")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--cases", default=None, help="where the tried cases are written (default runs/gallery-<benchmark>)")
    p.add_argument("--benchmark", choices=("textured", "occlusion"), default="textured")
    p.add_argument("--want", default="front=2,behind=2,off=1,past=1",
                   help="occlusion benchmark: how many landing cases of each situation to keep")
    args = p.parse_args()

    model = load_model(args.model, device="cpu")
    occlusion = args.benchmark == "occlusion"
    cases = args.cases or f"runs/gallery-{args.benchmark}"
    wanted = ({k: int(v) for k, v in (kv.split("=") for kv in args.want.split(","))} if occlusion
              else {"move": args.moves, "stretch": args.stretches})
    kept, tried, landed = [], 0, 0
    for index in range(args.start, args.start + args.max_cases):
        if not any(wanted.values()):
            break
        folder = write_cases(cases, n=1, size=model.resolution, benchmark=args.benchmark, start=index)[0]
        sample = read_sample(folder)
        session = DragSession(model, sample.image, sample.prompt, model.settings)
        session.set_points(sample.points)
        session.set_mask(sample.mask)
        result = session.run(keep_latents=True)
        score = score_case(folder, result.image)
        tried += 1
        kind = score.situation if occlusion else score.kind
        print(f"{folder.name} {kind} {score.pairs}p: err {score.error_px:.2f}px area x{score.area_ratio:.2f} "
              f"psnr_out {score.psnr_outside:.1f} {'OK' if score.kept_success else '--'} "
              f"({result.drag.stop_reason}; {how(result)})", flush=True)
        if score.kept_success:
            landed += 1
            if wanted.get(kind):  # the first that land of each kind, in the benchmark's order
                wanted[kind] -= 1
                kept.append((folder, session, result, score))
    if any(wanted.values()):
        raise SystemExit(f"only {len(kept)} landing cases in {tried} tried; raise --max-cases")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "occlusion.png" if occlusion else "gallery.png"
    gallery(kept, tried, landed, model.name, args.benchmark).savefig(out / name, dpi=80)
    print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KB; {landed} of the {tried} "
          f"cases run landed, {len(kept)} shown)")
    if occlusion:
        return

    looped = [k for k in kept if k[2].drag.history]  # the GIF shows the loop at work
    if not looped:
        print("no drag.gif: every case shown was moved in the image (drag.image_copy), none by the loop")
        return
    folder, session, result, score = max(looped, key=lambda k: travel(k[2]))
    frames = predicted_frames(session.model, result.drag, result.prompt)
    frames = frames[:-1][::max(1, len(frames) // 24)] + [frames[-1]] * 5  # about 24 frames, the last held
    animation = drag_animation(frames, result, interval=150)
    animation.save(out / "drag.gif", writer=PillowWriter(fps=6), dpi=72)  # under 1 MB
    print(f"wrote {out / 'drag.gif'} ({(out / 'drag.gif').stat().st_size // 1024} KB; {folder.name}, "
          f"{len(result.drag.history)} iterations)")


def how(result) -> str:
    """Who moved an edit's objects: the image copy (``drag.image_copy``, docs/method.md §3.6), the loop, or both."""
    moved = result.drag.extras.get("moved_start")
    in_image = 0 if moved is None else int(moved.moved.sum())
    loop = f"the loop, {len(result.drag.history)} iterations"
    if in_image == 0:
        return loop
    pairs = len(result.points.handles)
    image = "moved in the image" if in_image == pairs else f"{in_image} of {pairs} pairs moved in the image"
    return image if not result.drag.history else f"{image}, {loop}"


def travel(result) -> float:
    """The longest handle → target distance of an edit, image pixels."""
    return float(np.linalg.norm(result.points.targets - result.points.handles, axis=1).max())


def gallery(kept, tried: int, landed: int, model_name: str, benchmark: str = "textured") -> Figure:
    """Two cases a row, each as source (mask outlined, red → blue) | result (where the handles ended)."""
    rows = (len(kept) + 1) // 2
    fig = Figure(figsize=(10, 2.75 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, 4).reshape(rows, 4)
    for i, (folder, _, result, score) in enumerate(kept):
        src, res = axes[i // 2, 2 * (i % 2)], axes[i // 2, 2 * (i % 2) + 1]
        draw_edit(src, res, result)
        what = score.situation or score.kind
        src.set_title(f"{folder.name}: {what}, {score.pairs} pair{'s' * (score.pairs > 1)}", fontsize=9)
        res.set_title(f"{how(result)}: {score.error_px:.1f} px off,\n{score.psnr_outside:.0f} dB outside the "
                      f"mask, ghost {score.ghost:.0%}", fontsize=9)
    for ax in axes[len(kept) // 2:].ravel()[(len(kept) % 2) * 2:]:
        ax.set_visible(False)
    shown = "all shown" if landed == len(kept) else f"the first {len(kept)} shown"
    fig.suptitle(f"Drags that land with the scene kept: {landed} of the {tried} cases 0–{tried - 1} of the "
                 f"{benchmark} scene benchmark, {shown} (model {Path(model_name).name}, its defaults)\neach pair: "
                 f"source (what may not change darkened), handle (red) → target (blue) | result, from where the "
                 f"handles ended\nghost: how strongly the shape still shows where it was (up to 15 % passes: "
                 f"fainter outlines still show,\nbut the model's own VAE leaves as much on a known answer)", fontsize=9)
    return fig


if __name__ == "__main__":
    main()
