"""The scene world as the report shows it: which world a model knows, scenes it never saw, a gallery, prompts.

:func:`model_world` reads the world a model folder was trained on (its ``training_summary.json``);
:func:`held_out_scenes` draws scenes of that world from seed ``HELD_OUT_SEED``, beyond the training seeds and the
trainer's own checks (:mod:`dragnb.tiny.checks`); :func:`scene_gallery` shows scenes with their prompts as titles;
:func:`parse_prompt` reads a prompt of the scene grammar back into (colour, kind) pairs and background colours.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dragnb.tiny.checks import holdout_scenes
from dragnb.tiny.drawing import render
from dragnb.tiny.model import HOLDOUT_SEED_BASE
from dragnb.tiny.report._plot import _axes_off
from dragnb.tiny.scenes import COLOURS, SHAPES, STYLES, sample_scene
from dragnb.ui.plots import Figure

HELD_OUT_SEED = 900_000  # scenes for checks: training used seeds from 10 000 000 (dragnb.tiny.model.TRAIN_SEED_BASE)


def held_out_scenes(n: int, n_shapes: int | None = None, world: str = "flat"):
    """``n`` scenes of ``world`` the model never saw, from seed ``HELD_OUT_SEED`` (the trainer's hold-out mechanism,
    further on than the scenes its own adherence checks use)."""
    return holdout_scenes(n, n_shapes, offset=HELD_OUT_SEED - HOLDOUT_SEED_BASE, world=world)


def model_world(model_dir: str | Path) -> str:
    """The scene world a model folder was trained on (its ``training_summary.json``; "flat" when it does not say)."""
    path = Path(model_dir) / "training_summary.json"
    if not path.is_file():
        return "flat"
    return json.loads(path.read_text()).get("world", "flat")


def scene_gallery(seeds: Sequence[int], size: int = 64, columns: int = 6, width: int = 24,
                  world: str = "flat") -> Figure:
    """The scenes of ``seeds`` (:func:`dragnb.tiny.scenes.sample_scene` in ``world``) at ``size``, prompts as titles."""
    seeds = list(seeds)
    rows = max(1, math.ceil(len(seeds) / columns))
    fig = Figure(figsize=(1.75 * columns, 2.15 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, seed in zip(axes, seeds):
        scene = sample_scene(seed, world=world)
        ax.axis("on")
        ax.imshow(np.asarray(render(scene, size)), interpolation="nearest")
        _axes_off(ax, textwrap.fill(scene.prompt, width), fontsize=7)
    return fig


_PROMPT = re.compile(r"^(?P<objects>.+) on an? (?P<background>.+) background$")
_LOOKS = "|".join(s for s in STYLES if s != "plain")
_OBJECT = re.compile(rf"^an? (?:(?P<style>{_LOOKS}) )?(?P<colour>\w+) (?P<kind>\w+)$")


def parse_prompt(prompt: str) -> tuple[list[tuple[str, str]], tuple[str, ...]] | None:
    """The scene grammar's prompt as ([(colour, kind), ...], background colours); None if it is not one."""
    match = _PROMPT.match(prompt.strip().lower())
    if match is None:
        return None
    parts = re.split(r", | and ", match["objects"])
    shapes = []
    for part in parts:
        m = _OBJECT.match(part.strip())
        if m is None or m["colour"] not in COLOURS or m["kind"] not in SHAPES:
            return None
        shapes.append((m["colour"], m["kind"]))
    background = tuple(c.strip() for c in match["background"].split(" and "))
    if not 1 <= len(background) <= 2 or any(c not in COLOURS for c in background):
        return None
    return shapes, background
