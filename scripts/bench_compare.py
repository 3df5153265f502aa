"""Compare two benchmark runs (``summary.json`` of ``python -m dragnb bench``): numbers, settings, versions.

    python scripts/bench_compare.py RUN_A RUN_B [--config NAME] [--tolerance 1e-9]

Prints every setting and package version that differs, then the overall and per-category metrics side by
side with their difference. Exit code 0 when the metrics agree within the tolerance, 1 otherwise, so a
reproduction check can run in CI (``bench_compare.py runs/before runs/after``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def flatten(obj, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept whole."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def load(run: str) -> dict:
    path = Path(run)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        sys.exit(f"error: no summary.json at {str(path)!r}; give a run folder of `python -m dragnb bench`")
    return json.loads(path.read_text())


def metric_rows(summary: dict, config: str) -> dict[str, float | None]:
    """{"overall.mean_distance": mean, "categories.animals.image_fidelity": mean, ...} of one setting."""
    res = summary["results"][config]
    rows = {}
    for scope, block in [("overall", res["overall"]), *((f"categories.{c}", m) for c, m in res["categories"].items())]:
        for key, stat in flatten(block).items():
            if key.endswith(".mean"):
                rows[f"{scope}.{key[:-5]}"] = stat
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--config", default=None, help="which setting of a sweep (default: the first)")
    p.add_argument("--tolerance", type=float, default=1e-9, help="largest absolute difference that counts as equal")
    args = p.parse_args(argv)
    a, b = load(args.run_a), load(args.run_b)
    for what in ("settings", "versions", "metrics", "seeds", "model"):
        fa, fb = flatten(a.get(what)), flatten(b.get(what))
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key) and key not in ("platform",):
                print(f"{what}.{key}: {fa.get(key)!r} -> {fb.get(key)!r}".replace("..", "."))
    config = args.config or a["configs"][0]["name"]
    if config not in b["results"]:
        sys.exit(f"error: setting {config!r} is not in {args.run_b}")
    ra, rb = metric_rows(a, config), metric_rows(b, config)
    worst = 0.0
    print(f"\n{'metric':60s} {'A':>12s} {'B':>12s} {'B - A':>12s}")
    for key in sorted(set(ra) | set(rb)):
        va, vb = ra.get(key), rb.get(key)
        diff = (vb - va) if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        if diff is not None:
            worst = max(worst, abs(diff))
        elif va != vb:
            worst = float("inf")
        fmt = lambda v: f"{v:12.4f}" if isinstance(v, (int, float)) else f"{str(v):>12s}"  # noqa: E731
        print(f"{key:60s} {fmt(va)} {fmt(vb)} {fmt(diff)}")
    same = worst <= args.tolerance
    print(f"\n{'same' if same else 'different'} (largest difference {worst:.3g}, tolerance {args.tolerance:g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
