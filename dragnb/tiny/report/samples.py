"""Samples per prompt, read back into words: what the model draws for a prompt and how much of it is right.

:func:`draw_samples` generates DDIM samples of each prompt and :func:`score_image` reads each back by segmentation
(:mod:`dragnb.tiny.adherence`; :func:`read_shapes` for several shapes) into a :class:`Sample` that counts the
colours, shape kinds and background it got right against the prompt (parsed by
:func:`dragnb.tiny.report.world.parse_prompt`); :func:`samples_per_prompt` shows them one row per prompt and
:func:`sample_tally` gives the fractions right.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dragnb.tiny.adherence import (Reading, body_colour, largest_component, nearest_colour, read_single_shape,
                                   template_ious)
from dragnb.tiny.report._plot import _axes_off
from dragnb.tiny.report.world import parse_prompt
from dragnb.ui.plots import Figure


def read_shapes(image: np.ndarray, n: int, threshold: float = 60.0, min_area: int = 12) -> list[tuple[str, str]]:
    """Up to ``n`` (colour, kind) of the largest blobs that differ from the background, largest first.

    :func:`dragnb.tiny.adherence.read_single_shape` for several shapes: the background and the difference mask
    are read the same way, then the largest component is named and removed, ``n`` times.
    """
    a = np.asarray(image, dtype=np.float32)[..., :3]  # (H, W, 3)
    h = a.shape[0]
    bg = np.empty_like(a)  # the border medians of the top and bottom halves, as read_single_shape takes them
    bg[: h // 2] = np.median(np.concatenate([a[0, :], a[: h // 2, 0], a[: h // 2, -1]]), 0)
    bg[h // 2 :] = np.median(np.concatenate([a[-1, :], a[h // 2 :, 0], a[h // 2 :, -1]]), 0)
    remaining = np.abs(a - bg).max(-1) > threshold  # (H, W)
    out = []
    for _ in range(n):
        blob = largest_component(remaining)
        if blob.sum() < min_area:
            break
        ious = template_ious(blob)
        out.append((nearest_colour(body_colour(a[blob])), max(ious, key=ious.get)))
        remaining &= ~blob
    return out


@dataclass(frozen=True)
class Sample:
    """One generated image, what segmentation reads in it, and how much of its prompt that matches."""

    prompt: str
    seed: int
    image: np.ndarray  # (H, W, 3) uint8
    shapes_read: tuple[tuple[str, str], ...]  # (colour, kind) of the largest blobs
    background_read: tuple[str, ...]
    n_shapes: int  # shapes the prompt asks for (0: not a prompt of the grammar, nothing scored)
    colours_right: int  # prompt colours found among the read shapes (multiset intersection)
    kinds_right: int  # prompt shape kinds found
    background_right: bool


def score_image(image: np.ndarray, prompt: str, seed: int = 0) -> Sample:
    """Read ``image`` back into words and compare with ``prompt`` (single shapes exactly as training checked them)."""
    parsed = parse_prompt(prompt)
    wanted, background = parsed if parsed is not None else ([], ())
    if len(wanted) <= 1:
        reading: Reading = read_single_shape(image)
        read = [(reading.colour, reading.kind)] if reading.colour is not None else []
        read_bg = reading.background
    else:
        read = read_shapes(image, len(wanted))
        read_bg = read_single_shape(image).background
    colours = sum((Counter(c for c, _ in wanted) & Counter(c for c, _ in read)).values())
    kinds = sum((Counter(k for _, k in wanted) & Counter(k for _, k in read)).values())
    return Sample(prompt, seed, image, tuple(read), tuple(read_bg), len(wanted), colours, kinds,
                  bool(wanted) and tuple(read_bg) == tuple(background))


def draw_samples(model, prompts: Sequence[str], n_per_prompt: int = 3, steps: int = 20, guidance: float = 4.0,
                 seed: int = 0) -> list[Sample]:
    """``n_per_prompt`` DDIM samples of each prompt (seeds ``seed``, ``seed + 1``, ...), each read and scored."""
    from dragnb.generate import generate
    from dragnb.images import from_model_tensor

    out = []
    for prompt in prompts:
        for i in range(n_per_prompt):
            g = generate(model, prompt, guidance_scale=guidance, seed=seed + i, num_steps=steps)
            out.append(score_image(from_model_tensor(g.image), prompt, seed + i))
    return out


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def samples_per_prompt(samples: Sequence[Sample], width: int = 30) -> Figure:
    """One row per prompt: its samples, each titled with what segmentation read and whether it matches."""
    prompts = list(dict.fromkeys(s.prompt for s in samples))
    columns = max(Counter(s.prompt for s in samples).values()) if samples else 1
    fig = Figure(figsize=(2.1 + 1.75 * columns, 2.05 * max(1, len(prompts))), layout="constrained")
    axes = fig.subplots(max(1, len(prompts)), columns + 1, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, prompt in enumerate(prompts):
        axes[row, 0].text(1.0, 0.5, textwrap.fill(prompt, width // 2 + 4), ha="right", va="center", fontsize=8,
                          transform=axes[row, 0].transAxes)
        for col, s in enumerate([s for s in samples if s.prompt == prompt]):
            ax = axes[row, col + 1]
            ax.axis("on")
            ax.imshow(s.image, interpolation="nearest")
            read = ", ".join(f"{c} {k}" for c, k in s.shapes_read) or "(no shape)"
            read += " / " + " & ".join(s.background_read)
            if s.n_shapes == 1:
                verdict = (f"colour {_mark(s.colours_right == 1)} shape {_mark(s.kinds_right == 1)} "
                           f"bg {_mark(s.background_right)}")
            elif s.n_shapes > 1:
                verdict = (f"colour {s.colours_right}/{s.n_shapes} shape {s.kinds_right}/{s.n_shapes} "
                           f"bg {_mark(s.background_right)}")
            else:
                verdict = "(prompt outside the grammar)"
            _axes_off(ax, f"{textwrap.fill(read, width)}\n{verdict}", fontsize=6.5)
    return fig


def sample_tally(samples: Sequence[Sample]) -> dict[str, float]:
    """Fractions right over the scored samples: colours, shape kinds (per asked shape) and backgrounds."""
    scored = [s for s in samples if s.n_shapes > 0]
    asked = sum(s.n_shapes for s in scored)
    return {
        "samples": len(scored),
        "colour": sum(s.colours_right for s in scored) / asked if asked else float("nan"),
        "shape": sum(s.kinds_right for s in scored) / asked if asked else float("nan"),
        "background": sum(s.background_right for s in scored) / len(scored) if scored else float("nan"),
    }
