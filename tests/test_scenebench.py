"""The scene benchmark: the known answer passes, the unedited original fails by the move distance."""

import math
import pickle

import numpy as np
import pytest

from dragnb.evaluation.scenebench import load_case, score_case, summarise, write_cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("scenebench"), n=3, seed=0, size=64)


def test_cases_are_in_dragbench_format(cases):
    for folder in cases:
        assert (folder / "original_image.png").exists() and (folder / "target_image.png").exists()
        with open(folder / "meta_data.pkl", "rb") as f:
            meta = pickle.load(f)
        assert set(meta) == {"prompt", "points", "mask"}
        (hx, hy), (tx, ty) = meta["points"]
        assert meta["mask"].dtype == np.uint8 and meta["mask"].shape == (64, 64)
        assert meta["mask"][int(hy), int(hx)] == 1 and meta["mask"][int(ty), int(tx)] == 1
        assert 0.10 * 64 - 1e-6 <= math.dist((hx, hy), (tx, ty)) <= 0.20 * 64 + 1e-6


def test_writing_is_deterministic(cases, tmp_path):
    again = write_cases(tmp_path, n=3, seed=0, size=64)
    for a, b in zip(cases, again):
        assert (a / "case.json").read_text() == (b / "case.json").read_text()


def test_known_answer_succeeds(cases):
    scores = [score_case(folder, folder / "target_image.png") for folder in cases]
    assert all(s.success for s in scores), scores
    assert all(s.error_px < 1.0 and 0.9 < s.area_ratio < 1.15 for s in scores)
    summary = summarise(scores)
    assert summary.success_rate == 1.0 and summary.n == 3


def test_unedited_original_fails_by_the_move_distance(cases):
    for folder in cases:
        case, _ = load_case(folder)
        distance = math.dist(case.handle, case.target)
        score = score_case(folder, folder / "original_image.png")
        assert not score.success
        assert score.error_px == pytest.approx(distance, abs=1.0)
        assert score.psnr_outside >= 30  # the failure is placement, not damage outside the mask


# ------------------------------------------------------------------------------------ textured benchmark
@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("textured"), n=24, seed=0, size=64, benchmark="textured")


def test_textured_cases_mix_clicks_pairs_and_deformations(textured):
    cases = [load_case(f)[0] for f in textured]
    assert {c.kind for c in cases} == {"move", "stretch"}
    assert {len(c.pairs) for c in cases} >= {1, 2}
    assert max(len(c.pairs) for c in cases) <= 3
    assert {p.where for c in cases for p in c.pairs} >= {"centre", "edge", "highlight"}
    for folder, case in zip(textured, cases):
        meta = pickle.load(open(folder / "meta_data.pkl", "rb"))
        assert len(meta["points"]) == 2 * len(case.pairs)
        for (hx, hy), (tx, ty) in zip(meta["points"][::2], meta["points"][1::2]):
            assert meta["mask"][int(ty), int(tx)] == 1  # every target lies where the edit may change the image


def test_textured_known_answers_pass_and_originals_fail(textured):
    good = [score_case(f, f / "target_image.png") for f in textured]
    assert all(s.success for s in good), [s for s in good if not s.success]
    bad = [score_case(f, f / "original_image.png") for f in textured]
    assert not any(s.success for s in bad)
    summary = summarise(good)
    assert summary.success_by_kind == {"move": 1.0, "stretch": 1.0}
    assert summary.median_iou > 0.9


def test_the_scene_kept_sees_a_ghost_and_a_lost_object(textured):
    from PIL import Image

    from dragnb.tiny.drawing import render, shape_mask
    from dragnb.tiny.scenes import without

    for folder in textured:
        case, _ = load_case(folder)
        answer = score_case(folder, folder / "target_image.png")
        assert answer.scene_kept and answer.kept_success and answer.others_kept == answer.vacated_clear == 1.0
        if case.kind == "move":  # the unedited image: the shape is still where it was, a ghost
            source = score_case(folder, folder / "original_image.png")
            assert source.vacated_clear < 0.2 and not source.scene_kept
        others = [i for i in range(len(case.target_scene.shapes)) if i not in {e.index for e in case.edits}]
        if others:  # the answer with another shape painted over by the background: that object is lost
            lost = np.asarray(Image.open(folder / "target_image.png").convert("RGB")).copy()
            gone = shape_mask(case.target_scene, others[0], case.size)
            background = np.asarray(render(without(case.target_scene, others[0]), case.size))
            lost[gone] = background[gone]
            score = score_case(folder, lost)
            assert score.others_kept < 0.2 and not score.scene_kept and not score.kept_success


def test_a_faint_ghost_within_the_pixel_threshold_is_still_a_ghost(textured):
    """A copy of the moved shape where it was, as faint as keeps every pixel within 44 of the answer (the per-pixel
    threshold is 48): the place counts as clear, but the ghost's strength (0.17 or more) fails the scene kept."""
    from PIL import Image

    from dragnb.evaluation.scenebench import MAX_GHOST, ghost_strength

    moves = [f for f in textured if load_case(f)[0].kind == "move"]
    assert moves
    for folder in moves:
        answer = np.asarray(Image.open(folder / "target_image.png").convert("RGB"), dtype=np.float32)
        source = np.asarray(Image.open(folder / "original_image.png").convert("RGB"), dtype=np.float32)
        strength = 44.0 / np.abs(source - answer).max()  # >= 44 / 255
        faint = np.clip(answer + strength * (source - answer), 0, 255).round().astype(np.uint8)
        score = score_case(folder, faint)
        assert score.vacated_clear == 1.0 and score.ghost == pytest.approx(strength, abs=0.01)
        assert score.ghost > MAX_GHOST and not score.scene_kept and not score.kept_success
        assert score_case(folder, folder / "original_image.png").ghost == pytest.approx(1.0)
        assert score_case(folder, folder / "target_image.png").ghost == 0.0
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 20, 3))
    assert ghost_strength(pixels[0], pixels[0], pixels[0]) == 0.0  # nothing left the place: nothing to see


def test_summaries_break_kept_success_down_by_drag_length(textured):
    from dragnb.evaluation.scenebench import length_bin

    scores = [score_case(f, f / "target_image.png") for f in textured]
    summary = summarise(scores)
    assert sum(summary.n_by_length.values()) == len(scores)
    assert all(rate == 1.0 for rate in summary.kept_success_by_length.values())
    assert all(0 < s.length < 0.5 for s in scores)
    assert [length_bin(x) for x in (0.05, 0.1, 0.25, 0.3, 0.6)] == ["<0.1", "0.1-0.2", "0.2-0.3", ">=0.3", ">=0.3"]


def test_a_rigid_move_does_not_pass_for_a_stretch(textured):
    """Moving the whole shape by the handle's displacement puts the handle on target but is not the deformation."""
    from dragnb.tiny.drawing import render
    from dragnb.tiny.scenes import moved

    case, _ = next((c, m) for c, m in map(load_case, textured) if c.kind == "stretch")
    folder = next(f for f in textured if f.name == case.name)
    (pair,) = case.pairs[:1]
    w, h = case.size
    dx, dy = (pair.target[0] - pair.handle[0]) / w, (pair.target[1] - pair.handle[1]) / h
    rigid = render(moved(case.scene, case.edits[0].index, dx, dy), case.size)
    assert not score_case(folder, rigid).success


def test_two_moved_shapes_are_scored_each_in_its_own_box(tmp_path):
    """When two shapes move, one shape's look coming out different is not counted as the other shape, and the
    shape that stayed behind is the one that fails."""
    from dataclasses import replace

    from dragnb.tiny.cases import benchmark_case
    from dragnb.tiny.drawing import render

    index = next(i for i in range(200) if len(benchmark_case(i, seed=0)[0].edits) == 2)
    folder = write_cases(tmp_path, n=index + 1, seed=0, size=64, benchmark="textured")[index]
    case, _ = load_case(folder)
    i, j = (e.index for e in case.edits)
    answer = case.target_scene
    other = answer.shapes[j]
    restyled = replace(other, style="plain" if other.style != "plain" else "striped")
    restyled_answer = replace(answer, shapes=tuple(restyled if k == j else s for k, s in enumerate(answer.shapes)))
    score = score_case(folder, render(restyled_answer, case.size))
    assert score.success, score
    assert all(s.error_px < 1.0 and 0.85 < s.area_ratio < 1.2 for s in score.shapes), score.shapes

    left_behind = replace(answer, shapes=tuple(case.scene.shapes[j] if k == j else s
                                               for k, s in enumerate(answer.shapes)))
    score = score_case(folder, render(left_behind, case.size))
    by_index = {s.index: s for s in score.shapes}
    assert not score.success
    assert by_index[i].error_px < 1.0
    assert by_index[j].error_px > 0.05 * 64


# ----------------------------------------------------------------------------------- occlusion benchmark
@pytest.fixture(scope="module")
def occlusion(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("occlusion"), n=30, seed=0, benchmark="occlusion")


def test_occlusion_cases_ask_for_every_situation_at_a_users_sizes(occlusion):
    from dragnb.tiny.cases import MIN_SHOWN, SITUATIONS
    from dragnb.tiny.scenes import boxes_overlap, visible_fractions

    cases = [load_case(f)[0] for f in occlusion]
    assert {c.situation for c in cases} == set(SITUATIONS)
    assert {c.size for c in cases} == {(64, 64), (96, 96), (128, 128)}
    for case in cases:
        (edit, *_) = case.edits
        before, after = case.scene.shapes[edit.index], case.target_scene.shapes[edit.index]
        others = [j for j in range(len(case.scene.shapes)) if j != edit.index]
        if case.situation in ("front", "behind"):  # starts clear of a shape it ends on, in its depth order
            (j,) = [j for j in others if boxes_overlap(after, case.target_scene.shapes[j], gap=0.0)]
            assert not boxes_overlap(before, case.scene.shapes[j], gap=0.0)
            assert (edit.index > j) == (case.situation == "front")
            assert min(visible_fractions(case.target_scene.shapes)) >= MIN_SHOWN
        if case.situation == "off":  # covered part of another, ends clear of every shape
            assert min(visible_fractions(case.scene.shapes)) < 0.97
            assert not any(boxes_overlap(after, case.target_scene.shapes[j]) for j in others)
        for pair in case.pairs:  # clicked on a visible part, dropped on a visible part of the answer
            assert shape_visible(case.scene, pair.index, pair.handle, case.size)
            assert shape_visible(case.target_scene, pair.index, pair.target, case.size)


def test_occlusion_near_asks_the_same_situations_without_long_drags(tmp_path):
    """occlusion-near: the occlusion world and situations, no drag past NEAR_LONGEST of the side, so no past; the
    known answers pass; the same seed draws the same size as the occlusion benchmark's case."""
    from dragnb.tiny.cases import NEAR_LONGEST

    near = write_cases(tmp_path / "near", n=12, seed=0, benchmark="occlusion-near")
    far = write_cases(tmp_path / "far", n=12, seed=0, benchmark="occlusion")
    cases = [load_case(f)[0] for f in near]
    assert {"front", "off"} <= {c.situation for c in cases} and "past" not in {c.situation for c in cases}
    assert [c.size for c in cases] == [load_case(f)[0].size for f in far]
    for folder, case in zip(near, cases):
        score = score_case(folder, folder / "target_image.png")
        assert score.kept_success and score.length <= NEAR_LONGEST + 1e-9
        assert case.benchmark == "occlusion-near"


def shape_visible(scene, index, point, size):
    from dragnb.tiny.drawing import shape_mask

    x, y = point
    return bool(shape_mask(scene, index, size)[int(y), int(x)])


def test_occlusion_answers_pass_and_a_wrong_depth_or_a_hidden_reveal_fails(occlusion):
    """The answer passes with the scene kept; the source fails; the moved shape drawn at its place but at the wrong
    depth loses the other shape (front) or hides behind it (behind); moving a shape off another without showing what
    it covered fails the scene kept."""
    from dataclasses import replace

    from dragnb.tiny.drawing import render

    seen = set()
    for folder in occlusion:
        case, _ = load_case(folder)
        answer = score_case(folder, folder / "target_image.png")
        assert answer.kept_success, answer
        assert not score_case(folder, folder / "original_image.png").kept_success
        target = case.target_scene
        i = case.edits[0].index
        if case.situation in ("front", "behind"):
            order = list(target.shapes)
            moved_shape = order.pop(i)
            order = order + [moved_shape] if case.situation == "behind" else [moved_shape] + order
            wrong = score_case(folder, render(replace(target, shapes=tuple(order)), case.size))
            assert not wrong.kept_success
            seen.add(case.situation)
        if case.situation == "off":  # the covered shape stays hidden where the moved one was: a hole, not a reveal
            hole = np.asarray(render(target, case.size)).copy()
            source = np.asarray(render(case.scene, case.size))
            from dragnb.tiny.drawing import shape_mask

            was = shape_mask(case.scene, i, case.size)
            hole[was] = source[was]
            assert not score_case(folder, hole).scene_kept
            seen.add("off")
    assert seen == {"front", "behind", "off"}


def test_the_unseen_look_is_the_same_cases_drawn_another_way(occlusion, tmp_path):
    unseen = write_cases(tmp_path, n=6, seed=0, benchmark="occlusion", look="unseen")
    for a, b in zip(occlusion[:6], unseen):
        ca, cb = load_case(a)[0], load_case(b)[0]
        assert cb.scene.look == "unseen" and replace_look(cb) == ca
        assert score_case(b, b / "target_image.png").kept_success


def replace_look(case):
    from dataclasses import replace

    return replace(case, scene=replace(case.scene, look="trained"))


def test_a_result_brought_up_from_64_px_is_not_failed_by_its_blurred_rims(occlusion):
    """At 96 and 128 px the result is the model's 64 px brought up: the answer resized down and up again keeps its
    place (one-pixel rims are not shape), while the source still fails."""
    from PIL import Image

    for folder in occlusion:
        case, _ = load_case(folder)
        if case.size[0] < 96:
            continue
        answer = Image.open(folder / "target_image.png").convert("RGB")
        blurred = answer.resize((64, 64), Image.LANCZOS).resize(case.size, Image.BICUBIC)
        score = score_case(folder, blurred)
        assert score.error_fraction <= 0.05 and 0.6 <= score.area_ratio <= 1.6, (case.name, score)
