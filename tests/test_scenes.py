"""The scene world: deterministic by seed, prompts in the issue's grammar, moves that are exact."""

import re

import numpy as np
import pytest

from dragnb.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    Shape,
    centroid,
    moved,
    render,
    sample_scene,
    shape_mask,
    without,
)

PROMPT = re.compile(
    r"^a (?P<c>\w+) (?P<s>\w+)(, a \w+ \w+)*( and a \w+ \w+)? on a \w+( and \w+)? background$"
)


def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene(7), sample_scene(7)
    assert a == b
    assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
    assert any(sample_scene(s) != a for s in range(8, 12))


def test_prompt_grammar_example():
    scene = Scene(
        shapes=(
            Shape("circle", "red", 0.2, 0.2, 0.1),
            Shape("square", "blue", 0.5, 0.5, 0.1),
            Shape("triangle", "white", 0.8, 0.8, 0.1),
        ),
        background=("gray", "black"),
    )
    assert scene.prompt == "a red circle, a blue square and a white triangle on a gray and black background"
    assert Scene((Shape("circle", "red", 0.5, 0.5, 0.1),), ("blue",)).prompt == "a red circle on a blue background"
    two = Scene((Shape("circle", "red", 0.3, 0.3, 0.1), Shape("square", "green", 0.7, 0.7, 0.1)), ("white",))
    assert two.prompt == "a red circle and a green square on a white background"


def test_sampled_scenes_follow_the_world_rules():
    counts = set()
    for seed in range(200):
        scene = sample_scene(seed)
        assert PROMPT.match(scene.prompt), scene.prompt
        assert 1 <= len(scene.shapes) <= 3 and len(scene.background) in (1, 2)
        counts.add(len(scene.shapes))
        for i, s in enumerate(scene.shapes):
            assert s.kind in SHAPES and s.colour in COLOURS and s.colour not in scene.background
            assert shape_mask(scene, i).sum() > 20  # fully visible, not hidden by others
    assert counts == {1, 2, 3}


def test_moved_translates_the_mask_centroid_exactly():
    scene = sample_scene(3, n_shapes=3)
    for index in range(3):
        before = centroid(shape_mask(scene, index, 64))
        after = centroid(shape_mask(moved(scene, index, 0.125, -0.0625), index, 64))
        assert after == pytest.approx((before[0] + 8.0, before[1] - 4.0), abs=1e-9)


def test_shape_mask_is_what_differs_from_the_scene_without_it():
    scene = sample_scene(5, n_shapes=2)
    full = np.asarray(render(scene), dtype=int)
    under = np.asarray(render(without(scene, 0)), dtype=int)
    differs = np.abs(full - under).max(-1) > 0
    mask = shape_mask(scene, 0)
    assert np.all(differs[mask])  # every mask pixel changes when the shape is removed
    assert (differs & ~mask).sum() <= 0.6 * mask.sum() ** 0.5 * 4  # only antialiased rim pixels beyond it


def test_non_square_rendering():
    scene = sample_scene(11, aspect=96 / 64)
    img = render(scene, (96, 64))
    assert img.size == (96, 64)
    assert shape_mask(scene, 0, (96, 64)).shape == (64, 96)


def test_single_shape_reader_reads_rendered_scenes_back():
    from dragnb.tiny.adherence import read_single_shape

    for seed in range(30):
        scene = sample_scene(seed, n_shapes=1)
        reading = read_single_shape(render(scene))
        assert (reading.colour, reading.kind, reading.background) == (
            scene.shapes[0].colour,
            scene.shapes[0].kind,
            scene.background,
        ), scene.prompt
