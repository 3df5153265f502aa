"""The scene world: deterministic by seed, prompts in the issue's grammar, moves that are exact."""

import re

import numpy as np
import pytest

from dragnb.tiny.drawing import centroid, render, shape_mask
from dragnb.tiny.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    Shape,
    moved,
    sample_scene,
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


# ------------------------------------------------------------------------------------------ textured world
TEXTURED_PHRASE = r"an? (?:(?:shiny|striped|dotted|outlined) )?\w+ \w+"
TEXTURED_PROMPT = re.compile(
    rf"^{TEXTURED_PHRASE}(, {TEXTURED_PHRASE})*( and {TEXTURED_PHRASE})? on a \w+( and \w+)? background$"
)


def test_flat_world_is_unchanged_by_the_textured_one():
    """The first 40 flat scenes render to the bytes the flat-only renderer gave (hash taken before the change)."""
    import hashlib

    h = hashlib.sha256()
    for s in range(40):
        h.update(np.asarray(render(sample_scene(s), 64)).tobytes())
        h.update(sample_scene(s).prompt.encode())
    assert h.hexdigest() == "48fa4159beface880978d9496d3c4e738580a9027dc5f361c14b657eaaf88390"


def test_textured_world_is_deterministic_and_follows_its_grammar():
    from dragnb.tiny.scenes import MIN_CONTRAST, STYLES, contrast

    styles = set()
    for seed in range(150):
        scene = sample_scene(seed, world="textured")
        assert scene == sample_scene(seed, world="textured")
        assert TEXTURED_PROMPT.match(scene.prompt), scene.prompt
        for i, s in enumerate(scene.shapes):
            styles.add(s.style)
            assert all(contrast(s.colour, s.style, b) >= MIN_CONTRAST for b in scene.background)
            assert shape_mask(scene, i).sum() > 20
    assert styles == set(STYLES)
    a = np.asarray(render(sample_scene(3, world="textured"), 64))
    assert np.array_equal(a, np.asarray(render(sample_scene(3, world="textured"), 64)))
    with pytest.raises(ValueError, match="world"):
        sample_scene(0, world="photo")


def test_textured_shapes_are_position_discriminative():
    """Inside a shaded shape no two pixels far apart look alike, unlike a flat one (what motion supervision needs)."""
    flat = Scene((Shape("circle", "red", 0.5, 0.5, 0.35),), ("gray",))
    shiny = Scene((Shape("circle", "red", 0.5, 0.5, 0.35, style="shiny"),), ("gray",))
    for scene, expect_flat in ((flat, True), (shiny, False)):
        img = np.asarray(render(scene, 64), dtype=float)
        from dragnb.tiny.drawing import shape_coverage

        inside = img[shape_coverage(scene, 0, 64) == 1.0]  # (P, 3) wholly covered pixels, no antialiased rim
        distinct = len({tuple(p) for p in inside})
        if expect_flat:
            assert distinct == 1, distinct
        else:
            assert distinct > 0.5 * len(inside), (distinct, len(inside))


def test_stretch_keeps_the_other_half_and_moves_the_pulled_edge():
    from dragnb.tiny.scenes import stretched

    for style in ("plain", "striped"):
        scene = Scene((Shape("square", "blue", 0.4, 0.5, 0.15, style=style),), ("white",))
        long = stretched(scene, 0, "right", 1.5)
        a, b = np.asarray(render(scene, 128)), np.asarray(render(long, 128))
        centre_col = int(0.4 * 128)
        left = np.abs(a[:, :centre_col].astype(int) - b[:, :centre_col]).max(-1) > 0
        if style == "plain":  # unstretched flat shapes are drawn by PIL, stretched ones analytically: rim pixels
            assert left.sum() <= 2 * 128
        else:
            assert not left.any()  # the left half is untouched
        before, after = shape_mask(scene, 0, 128), shape_mask(long, 0, 128)
        right_before = np.nonzero(before.any(0))[0].max()
        right_after = np.nonzero(after.any(0))[0].max()
        half = 0.89 * 0.15 * 128
        assert right_after - right_before == pytest.approx(0.5 * half, abs=1.5)
        x, y = long.shapes[0].to_image(0.89 * 0.15, 0.0, 128, 128)
        assert x == pytest.approx(0.4 * 128 + 1.5 * half)
    with pytest.raises(ValueError, match="side"):
        stretched(scene, 0, "middle", 1.2)


def test_single_shape_reader_reads_textured_scenes_back():
    """Shading, stripes, dots, outlines and highlights do not fool the colour reading (body_colour)."""
    from dragnb.tiny.adherence import read_single_shape

    for seed in range(40):
        scene = sample_scene(seed, n_shapes=1, world="textured")
        reading = read_single_shape(render(scene))
        assert (reading.colour, reading.kind, reading.background) == (
            scene.shapes[0].colour, scene.shapes[0].kind, scene.background), scene.prompt


# ------------------------------------------------------------------------------------ the occlusion world
def test_occlusion_world_overlaps_in_depth_order_and_keeps_every_shape_in_view():
    """Shapes may overlap, the later drawn over the earlier; each keeps MIN_VISIBLE of itself in view and differs
    from any shape it touches; some grounds are lit unevenly, within GROUND_REACH; the prompts are the textured
    world's grammar (no words for depth)."""
    from dragnb.tiny.drawing import ground_light
    from dragnb.tiny.scenes import (GROUND_REACH, MIN_CONTRAST, MIN_VISIBLE, boxes_overlap, shapes_contrast,
                                    visible_fractions)

    overlapping = uneven = 0
    for seed in range(120):
        scene = sample_scene(seed, world="occlusion")
        assert scene == sample_scene(seed, world="occlusion")
        assert TEXTURED_PROMPT.match(scene.prompt), scene.prompt
        shown = visible_fractions(scene.shapes)
        assert min(shown) >= MIN_VISIBLE
        overlapping += min(shown) < 0.99
        for i, a in enumerate(scene.shapes):
            for b in scene.shapes[:i]:
                if boxes_overlap(a, b, gap=0.0):
                    assert shapes_contrast(a, b) >= MIN_CONTRAST
        if not scene.ground.flat:
            uneven += 1
            light = ground_light(scene.ground, 64, 64)
            assert 1 - GROUND_REACH - 1e-9 <= light.min() and light.max() <= 1 + GROUND_REACH + 1e-9
    assert 15 <= overlapping <= 60 and 40 <= uneven <= 80


def test_a_nearer_shape_hides_the_farther_one():
    """Drawn in order: where two shapes overlap the pixels are the later one's, and the earlier one's mask is its
    visible part only."""
    back = Shape("square", "blue", 0.45, 0.5, 0.2, style="shiny")
    front = Shape("circle", "red", 0.6, 0.5, 0.2, style="shiny")
    scene = Scene((back, front), ("gray",))
    both = shape_mask(Scene((back,), ("gray",)), 0) & shape_mask(Scene((front,), ("gray",)), 0)
    assert both.sum() > 30
    assert not (shape_mask(scene, 0) & both).any() and shape_mask(scene, 1)[both].all()
    swapped = np.asarray(render(Scene((front, back), ("gray",)), 64))
    assert not np.array_equal(np.asarray(render(scene, 64))[both], swapped[both])


def test_the_unseen_look_draws_the_same_shapes_another_way():
    """The same description in the unseen look: the same coverage (geometry), other pixels on textured shapes, the
    same pixels on plain ones and on the ground."""
    import dataclasses

    for style in ("shiny", "striped", "dotted", "outlined"):
        scene = Scene((Shape("circle", "red", 0.5, 0.5, 0.3, style=style),), ("gray",))
        other = dataclasses.replace(scene, look="unseen")
        assert np.array_equal(shape_mask(scene, 0), shape_mask(other, 0))
        a, b = np.asarray(render(scene, 64), float), np.asarray(render(other, 64), float)
        inside = shape_mask(scene, 0)
        assert np.abs(a - b)[inside].max() > 40 and np.array_equal(a[~inside & ~np.roll(inside, 2, 0)][:50],
                                                                  b[~inside & ~np.roll(inside, 2, 0)][:50])
    plain = Scene((Shape("square", "blue", 0.5, 0.5, 0.3),), ("gray",))
    assert np.array_equal(np.asarray(render(plain)), np.asarray(render(dataclasses.replace(plain, look="unseen"))))
    assert Scene.from_dict(other.to_dict()) == other
