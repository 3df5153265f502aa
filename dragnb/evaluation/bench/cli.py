"""``python -m dragnb bench``: arguments in, exit status out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from ...errors import InputError
from ..dift_settings import SD21
from .plan import BenchOptions, check, parse_seeds

# ------------------------------------------------------------------------------------------------ command
def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError("--shard", f"expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise InputError("--shard", f"expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return k, n


def register(sub) -> None:
    """Add ``bench`` to the ``python -m dragnb`` subcommands."""
    doc = sys.modules[__package__].__doc__  # the package's docstring describes the whole harness
    p = sub.add_parser("bench", help="run a DragBench-shaped benchmark: edits, metrics, summary, plots",
                       description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=doc.split("\n", 2)[2])
    p.add_argument("--data", required=True,
                   help="DragBench tree: <category>/<sample>/{original_image.png,meta_data.pkl}")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--model", default=None,
                   help="hub id or diffusers folder to edit with (default: the embedded model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="override a setting, e.g. --set drag.max_steps=40; dift.t=261 etc. set the Mean Distance "
                        "featurizer (repeatable)")
    p.add_argument("--seeds", default="0",
                   help="comma-separated run seeds (default 0); each offsets lora.seed "
                   "(the drag draws no random numbers)")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="STAGE.FIELD=V1,V2",
                   help="grid over settings (repeat for more axes; use | between values holding commas)")
    p.add_argument("--dift-model", default=None,
                   help=f"model for Mean Distance features (default {SD21}, the protocol's); 'embedded' or "
                        "'same' (the edited model, loaded separately) for offline use")
    p.add_argument("--no-fidelity", action="store_true", help="skip Image Fidelity (when lpips is not installed)")
    p.add_argument("--no-mean-distance", action="store_true", help="skip Mean Distance")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--offline", action="store_true", help="never use the network to fetch weights")
    p.add_argument("--cache-dir", default=None, help="LoRA/inversion cache (default RUN/cache)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N usable samples (sorted by category, name)")
    p.add_argument("--categories", default=None, help="comma-separated categories to run (default: all)")
    p.add_argument("--shard", default=None, help="K/N: run every N-th sample starting at K (manual multi-machine)")
    p.add_argument("--merge-only", action="store_true", help="run nothing; summarise the finished records")
    p.add_argument("--score", default=None, metavar="RESULTS",
                   help="score an existing result tree (RESULTS/<category>/<sample>/dragged_image.png, e.g. another "
                        "method's DragBench outputs) instead of editing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    """Entry point of ``python -m dragnb bench`` (parsed arguments in, exit code out)."""
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit", f"must be at least 1, got {args.limit}")
    opts = BenchOptions(data=args.data, out=args.out, model=args.model, overrides=list(args.overrides),
                        seeds=parse_seeds(args.seeds), sweeps=list(args.sweeps), dift_model=args.dift_model,
                        fidelity=not args.no_fidelity, mean_distance=not args.no_mean_distance, device=args.device,
                        offline=args.offline or None, cache_dir=args.cache_dir, limit=args.limit,
                        categories=[c for c in (args.categories or "").split(",") if c] or None,
                        shard=_shard(args.shard) if args.shard else None, progress=not args.quiet,
                        merge_only=args.merge_only, score=args.score)
    checked = check(opts)  # arguments, files, samples and settings, before the heavy libraries load
    from ...tables import markdown_table
    from .outputs import category_table, sweep_table
    from .run import run_bench

    summary = run_bench(opts, checked)
    if summary is None:
        print(f"process finished its share; the summary is written when every edit is done ({args.out})")
        return 0
    skipped = summary["samples"]["skipped"]
    print(f"wrote {Path(args.out) / 'summary.json'}: {summary['samples']['used']} samples, {skipped} skipped, "
          f"{len(summary['failed'])} failed edits, seeds {summary['seeds']}")
    for s in summary["samples"]["skipped_reasons"]:
        print(f"  skipped {s['path']}: {s['reason']}")
    print(markdown_table(category_table(summary)) if len(summary["configs"]) == 1
          else markdown_table(sweep_table(summary)))
    return 0
