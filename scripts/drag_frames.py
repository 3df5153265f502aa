"""x̂₀ over one drag, one row per setting: where a drag goes wrong, iteration by iteration (not a test).

    .venv/bin/python scripts/drag_frames.py CASE_DIR [--every 12] [--model DIR] [--out frames.png]
        [--variant "NAME:STAGE.FIELD=V,..." ...]

CASE_DIR is a DragBench-format folder (a scene-benchmark case adds its known answer, shown at the row's end). Each
row runs the edit with the model's defaults (row ``defaults``) or with a ``--variant``'s settings over them, keeps
the drag's latents and shows x̂₀ predicted from every ``--every``-th of them (dragnb.drag.predicted_frames, each at
its own timestep), then the result. docs/embedded-model.md shows one: the ghost that comes back in the alternating
schedule's later timesteps.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from PIL import Image

from dragnb.config import apply_overrides, named_overrides
from dragnb.drag import predicted_frames
from dragnb.errors import InputError
from dragnb.evaluation.dragbench import read_sample
from dragnb.models import load_model
from dragnb.session import DragSession
from dragnb.ui import plots


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", help="a DragBench-format case folder")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    p.add_argument("--every", type=int, default=12, help="show x̂₀ of every N-th drag iteration")
    p.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME:STAGE.FIELD=V,...",
                   help="a row with these settings over the model's defaults; repeatable")
    p.add_argument("--out", default="frames.png")
    args = p.parse_args()
    try:
        if args.every < 1:
            raise InputError("--every", f"must be 1 or more, got {args.every}")
        sample = read_sample(args.case)
        rows = {"defaults": [], **dict(named_overrides(v, "--variant") for v in args.variants)}
        model = load_model(args.model, device="cpu")
        settings = {name: apply_overrides(model.settings, assignments) for name, assignments in rows.items()}
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    answer = Path(args.case) / "target_image.png"
    shown = {}
    for name, chosen in settings.items():
        session = DragSession(model, sample.image, sample.prompt, chosen)
        session.set_points(sample.points)
        session.set_mask(sample.mask)
        result = session.run(keep_latents=True)
        shown[name] = (predicted_frames(model, result.drag, sample.prompt, every=args.every), result)
        print(name, result.drag.stop_reason, len(result.drag.history), "iterations", flush=True)
    fig = plots.frame_rows(shown, np.asarray(Image.open(answer).convert("RGB")) if answer.is_file() else None)
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
