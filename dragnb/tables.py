"""Markdown tables of plain rows (dicts or dataclasses), for notebooks, the bench's sweep.md and the README."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


def thousands(n: int) -> str:
    """``2795643`` as ``2 795 643``."""
    return f"{n:,}".replace(",", " ")


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return thousands(v)
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence) -> str:
    """A Markdown table of dicts or dataclasses: columns are every key in first-seen order, a missing cell is
    empty, None is "–", floats have 3 significant digits, integers a thin-space thousands separator."""
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r[k]) if k in r else "" for k in keys) + " |" for r in rows]
    return "\n".join(lines)
