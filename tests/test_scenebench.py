"""The scene benchmark: the known answer passes, the unedited original fails by the move distance."""

import math
import pickle

import numpy as np
import pytest

from dragnb.scenebench import load_case, score_case, summarise, write_cases


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
