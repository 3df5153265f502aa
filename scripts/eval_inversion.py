"""DDIM inversion at the model's default step and back, against the VAE reconstruction, on held-out scenes.

    .venv/bin/python scripts/eval_inversion.py [--model DIR] [--n 10] [--set inversion.strength=0.5 ...]

The measure is dragnb.tiny.report.inversion_quality (in dragnb/tiny/report/roundtrip.py; also shown in
notebooks/08_embedded_model.ipynb).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from dragnb.config import apply_overrides, requested_weights
from dragnb.models import load_model
from dragnb.tiny.drawing import scene_array
from dragnb.tiny.report import held_out_scenes, inversion_quality, round_trip_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="diffusers folder or hub id (default: the embedded model)")
    p.add_argument("--n", type=int, default=10, help="held-out scenes")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="stage.field=value")
    args = p.parse_args()
    model = load_model(args.model, device="cpu", dtype=requested_weights(args.overrides))
    settings = apply_overrides(model.settings, args.overrides).inversion
    scenes = held_out_scenes(args.n)
    images = [np.asarray(scene_array(s, model.resolution)) for s in scenes]
    trips = inversion_quality(model, images, [s.prompt for s in scenes], settings)
    print(json.dumps(round_trip_summary(trips), indent=1))


if __name__ == "__main__":
    main()
