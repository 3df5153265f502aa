"""Command line: ``python -m dragnb drag ...`` for scripted edits, ``replay`` for a saved history of rounds (see README)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import DragnbError, InputError, Interrupted, Notice


def _drag_parser(sub) -> None:
    p = sub.add_parser("drag", help="drag points of one image and write the result plus a JSON record")
    src = p.add_argument_group("input (either --sample, or --image with --points)")
    src.add_argument("--sample", help="a DragBench sample folder (original_image.png + meta_data.pkl)")
    src.add_argument("--image", help="input image (any mode and size)")
    src.add_argument("--points", help='"hx,hy,tx,ty;hx,hy,tx,ty" in image pixels, x = column')
    src.add_argument("--mask", help="PNG of the image's size, nonzero = editable (default: whole image); 'auto': "
                     "grown from the drag lines (dragnb.automask)")
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
    # every argument, file, point, mask and setting is checked here, before torch and diffusers load (issue 26)
    from .config import EMBEDDED_MODEL, apply_overrides, model_defaults, requested_weights
    from .evaluation.dragbench import read_sample
    from .files import open_cache, output_file
    from .images import to_rgb_array
    from .points import parse_points

    if args.sample:
        if args.image or args.points:
            raise InputError("--sample", "give either --sample or --image/--points, not both")
        sample = read_sample(args.sample)
        image, points, mask, prompt = sample.image, sample.points, sample.mask, sample.prompt
        if args.mask:
            mask = _mask(args.mask, image.shape[:2], points)
        if args.prompt is not None:
            prompt = args.prompt
    else:
        if not args.image:
            raise InputError("--image", "give an input image (or --sample DIR for a DragBench sample)")
        if not args.points:
            raise InputError("--points", 'give the drag as "hx,hy,tx,ty" (image pixels; several pairs joined by ";")')
        image = to_rgb_array(args.image, "--image")
        points = parse_points(args.points, image.shape[:2], "--points")
        mask = _mask(args.mask, image.shape[:2], points)
        prompt = args.prompt or ""
    out = output_file(args.out, "--out")
    json_path = out.with_suffix(".json")  # the record, beside the image
    if json_path.is_dir():
        raise InputError("--out", f"the record {str(json_path)!r} would be written beside the image, but a folder "
                         "has that name; give --out another name")
    output_file(json_path, "--out", suffixes=())  # and it can be written
    cache_dir = open_cache(args.cache_dir, "--cache-dir") if args.cache_dir else None
    if args.model is None and not EMBEDDED_MODEL.is_dir():
        raise InputError("--model", "the embedded model is not in data/ yet; pass --model NAME_OR_PATH")
    local = Path(args.model or EMBEDDED_MODEL).expanduser()
    apply_overrides(model_defaults(local if local.is_dir() else None), args.overrides)  # on the model's defaults
    _device_name(args.device)

    from PIL import Image

    from .models import load_model, resolve_device
    from .session import DragSession

    device = resolve_device(args.device, "--device")  # whether this machine has it: torch knows
    if args.quiet:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    tick = time.perf_counter()
    model = load_model(args.model, device=device, dtype=requested_weights(args.overrides),
                       offline=args.offline or None)
    load_seconds = time.perf_counter() - tick
    settings = apply_overrides(model.settings, args.overrides)
    session = DragSession(model, image, prompt, settings, cache_dir=cache_dir, progress=not args.quiet)
    session.set_points(points)
    session.set_mask(mask)
    result = session.run()
    Image.fromarray(result.image).save(out)
    record = result.to_record()
    record["seconds"]["load_model"] = load_seconds
    record["input"] = {"sample": args.sample, "image": args.image, "mask": args.mask}
    json_path.write_text(json.dumps(record, indent=1))
    print(f"wrote {out} and {json_path} ({result.drag.stop_reason} after {len(result.drag.history)} steps)")
    return 0


def _device_name(name: str | None, argument: str = "--device") -> None:
    """The form of a device name (cpu, cuda, cuda:N, mps), checked before torch loads; whether this machine has
    it is :func:`dragnb.models.resolve_device`'s to say, once torch is there."""
    import re

    if name is not None and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(name).strip()):
        raise InputError(argument, f"{name!r} is not a device name; give cpu, cuda, cuda:N or mps (or leave it out "
                         "for the best one here)")


def _mask(given: str | None, size: tuple[int, int], points):
    """--mask: a PNG, 'auto' (from the drag lines), or none."""
    from .automask import auto_mask
    from .images import load_mask

    return auto_mask(points, size) if given == "auto" else load_mask(given, size, "--mask")


def _replay_parser(sub) -> None:
    p = sub.add_parser("replay", help="re-run a saved history of rounds (session.save_history) round by round")
    p.add_argument("history", metavar="HISTORY_DIR", help="folder holding history.json and the rounds' images")
    p.add_argument("--out", required=True, help="folder for the replay: the same files (history.json, images)")
    p.add_argument("--model", default=None, help="hub id or diffusers folder (default: the history's own model)")
    p.add_argument("--settings", choices=("saved", "model"), default="saved",
                   help="saved: each round's settings as saved; model: rebased on --model's own defaults (what a "
                   "round changed from its model's defaults is kept)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--offline", action="store_true", help="never use the network to fetch weights")
    p.add_argument("--cache-dir", default=None, help="keep LoRA and inversion results here for later runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_replay(args) -> int:
    """Everything is read and checked (history, images, --out) before the model loads; then each round runs
    again and is compared with the saved result."""
    import numpy as np

    from .config import EMBEDDED_MODEL
    from .files import open_cache, writable_folder
    from .images import psnr
    from .rounds import History

    history = History.load(args.history, "HISTORY_DIR")
    if args.settings == "model":
        history.rebase_from("--settings")  # refused now, before the model loads, if the history cannot say
    weights = history.rounds[0].settings.compute.weights  # one model, one weights dtype, kept by a replay anywhere
    source_dir = Path(args.history).expanduser().resolve()
    if Path(args.out).expanduser().resolve() == source_dir:
        raise InputError("--out", f"{args.out!r} is the history folder itself; give another folder (the replay "
                         "writes the same file names)")
    out = writable_folder(args.out, "--out")
    if (out / "history.json").exists():  # its round images would mix with the replay's
        raise InputError("--out", f"{args.out!r} already holds a history (history.json); give a new or empty folder")
    cache_dir = open_cache(args.cache_dir, "--cache-dir") if args.cache_dir else None
    name = args.model if args.model is not None else history.model or None
    if name is None and not EMBEDDED_MODEL.is_dir():
        raise InputError("--model", "the embedded model is not in data/ yet; pass --model NAME_OR_PATH")
    _device_name(args.device)

    from .models import load_model, resolve_device  # torch and diffusers from here on
    from .replay import replay

    device = resolve_device(args.device, "--device")
    if args.quiet:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    model = load_model(name, device=device, dtype=weights, offline=args.offline or None)

    def report(before, again) -> None:
        origin = "a first round" if before.parent is None else f"from round {before.parent}"
        if not before.done:
            verdict = "not run (no result was saved)"
        elif np.array_equal(before.image, again.image):
            verdict = "identical to the saved result"
        else:
            verdict = f"differs from the saved result (PSNR {psnr(before.image, again.image):.1f} dB)"
        print(f"round {before.index} ({origin}): {verdict}")

    session = replay(model, history, cache_dir=cache_dir, progress=not args.quiet, on_round=report,
                                 settings=args.settings)
    path = session.save_history(out)
    print(f"wrote {path} and the images of {len(session.rounds)} round(s)")
    return 0


def _negative_values(argv: list[str]) -> list[str]:
    """``--points -1,18,30,30`` as ``--points=-1,18,30,30``: argparse takes a value starting with '-' for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--points" and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][1:2] in \
                tuple("0123456789."):
            out.append(f"--points={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def interrupted_message(exc: Interrupted, cache_dir: str | None) -> str:
    """What Ctrl-C during a stage kept: the stages before it (on disk with a cache), nothing of the stage."""
    done = [stage for stage in exc.partial if stage != exc.stage and exc.partial[stage] is not None]
    kept = (f"{', '.join(done)} {'is' if len(done) == 1 else 'are'} cached in {cache_dir!r} for the next run"
            if done and cache_dir else "nothing was written")
    return f"interrupted during {exc.stage}: nothing from {exc.stage} was cached; {kept}"


def _notices_as_lines() -> None:
    """dragnb's notices (:class:`dragnb.errors.Notice`: what was taken from an input, a drag that diverged) as one
    line each on stderr, ``note: ...``; other warnings as Python shows them."""
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Notice):
            print(f"note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    _notices_as_lines()
    parser = argparse.ArgumentParser(prog="python -m dragnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _drag_parser(sub)
    _replay_parser(sub)
    train = sub.add_parser("train-tiny", help="train the embedded tiny model (see dragnb/tiny/train.py)",
                           add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    if importlib.util.find_spec("dragnb.evaluation.bench") is not None:  # the evaluation harness (python -m dragnb bench)
        from .evaluation.bench.cli import register as register_bench

        register_bench(sub)
    args, unknown = parser.parse_known_args(_negative_values(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "train-tiny":  # its own arguments, --help included, go to its own parser
        args.rest = [*unknown, *args.rest]
    elif unknown:
        parser.parse_args(_negative_values(list(sys.argv[1:] if argv is None else argv)))  # argparse's own message
    try:
        if args.command == "drag":
            return _run_drag(args)
        if args.command == "replay":
            return _run_replay(args)
        if args.command == "train-tiny":
            from .tiny.train import main as train_main

            return int(train_main(args.rest) or 0)
        if hasattr(args, "run"):  # subcommands registered by other modules carry their own entry point
            return int(args.run(args) or 0)
    except DragnbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(interrupted_message(exc, getattr(args, "cache_dir", None)), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1
