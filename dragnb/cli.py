"""Command line: ``python -m dragnb drag ...`` for scripted edits (see README)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from .errors import DragnbError, InputError


def _drag_parser(sub) -> None:
    p = sub.add_parser("drag", help="drag points of one image and write the result plus a JSON record")
    src = p.add_argument_group("input (either --sample, or --image with --points)")
    src.add_argument("--sample", help="a DragBench sample folder (original_image.png + meta_data.pkl)")
    src.add_argument("--image", help="input image (any mode and size)")
    src.add_argument("--points", help='"hx,hy,tx,ty;hx,hy,tx,ty" in image pixels, x = column')
    src.add_argument("--mask", help="PNG of the image's size, nonzero = editable (default: whole image)")
    src.add_argument("--prompt", default=None, help="text describing the image (may be empty)")
    p.add_argument("--model", default=None, help="hub id or diffusers folder (default: the embedded tiny model)")
    p.add_argument("--out", required=True, help="output image path; OUT.json is written beside it")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--offline", action="store_true", help="never use the network to fetch weights")
    p.add_argument("--cache-dir", default=None, help="keep LoRA and inversion results here for later runs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="override a setting, e.g. --set drag.lr=0.03 --set lora.steps=40 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_drag(args) -> int:
    from PIL import Image

    from .config import Settings, apply_overrides
    from .dragbench import read_sample
    from .images import load_mask, to_rgb_array
    from .models import EMBEDDED_MODEL, load_model
    from .points import parse_points
    from .session import DragSession

    if args.sample:
        if args.image or args.points:
            raise InputError("--sample", "give either --sample or --image/--points, not both")
        sample = read_sample(args.sample)
        image, points, mask, prompt = sample.image, sample.points, sample.mask, sample.prompt
        if args.mask:
            mask = load_mask(args.mask, image.shape[:2], "--mask")
        if args.prompt is not None:
            prompt = args.prompt
    else:
        if not args.image:
            raise InputError("--image", "give an input image (or --sample DIR for a DragBench sample)")
        if not args.points:
            raise InputError("--points", 'give the drag as "hx,hy,tx,ty" (image pixels; several pairs joined by ";")')
        image = to_rgb_array(args.image, "--image")
        points = parse_points(args.points, image.shape[:2], "--points")
        mask = load_mask(args.mask, image.shape[:2], "--mask")
        prompt = args.prompt or ""
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise InputError("--out", f"{args.out!r} needs an image extension such as .png")
    if not out.parent.exists():
        raise InputError("--out", f"folder {str(out.parent)!r} does not exist; create it first")
    if args.model is None and not EMBEDDED_MODEL.is_dir():
        raise InputError("--model", "the embedded model is not in data/ yet; pass --model NAME_OR_PATH")
    try:
        apply_overrides(Settings(), args.overrides)  # check them before loading any weights
    except ValueError as exc:
        raise InputError("--set", str(exc)) from None
    if args.quiet:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    tick = time.perf_counter()
    model = load_model(args.model, device=args.device, offline=args.offline or None)
    load_seconds = time.perf_counter() - tick
    settings = apply_overrides(model.settings, args.overrides)
    session = DragSession(model, image, prompt, settings, cache_dir=args.cache_dir, progress=not args.quiet)
    session.set_points(points)
    session.mask = mask
    result = session.run()
    Image.fromarray(result.image).save(out)
    record = result.to_record()
    record["seconds"]["load_model"] = load_seconds
    record["input"] = {"sample": args.sample, "image": args.image, "mask": args.mask}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=1))
    print(f"wrote {out} and {json_path} ({result.drag.stop_reason} after {len(result.drag.history)} steps)")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser(prog="python -m dragnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _drag_parser(sub)
    train = sub.add_parser("train-tiny", help="train the embedded tiny model (see dragnb/tiny/train.py)",
                           add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    if importlib.util.find_spec("dragnb.bench") is not None:  # the evaluation harness (python -m dragnb bench)
        from .bench import register as register_bench

        register_bench(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "drag":
            return _run_drag(args)
        if args.command == "train-tiny":
            from .tiny.train import main as train_main

            return int(train_main(args.rest) or 0)
        if hasattr(args, "run"):  # subcommands registered by other modules carry their own entry point
            return int(args.run(args) or 0)
    except DragnbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1
