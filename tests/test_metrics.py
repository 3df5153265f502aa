"""The metrics against hand-computed values: Mean Distance with known feature matches (whole image and inside
the mask), GoodDrag's DAI on 9 x 9 images, Image Fidelity around an injected distance network, the clear error
when LPIPS is missing, DIFT features on the tiny model."""

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragnb.evaluation import metrics
from dragnb.evaluation.metrics import (DAI_GAMMAS, DiftFeaturizer, DiftSettings, MetricUnavailable, dai, dai_per_pair,
                            image_fidelity, lpips_input, match_points, mean_distance)

SIDE = 8


def position_image(shift_cols: int = 0) -> np.ndarray:
    """(8, 8, 3) uint8 whose red channel is each pixel's ID row * 8 + col, content rolled right by ``shift_cols``."""
    ids = np.arange(SIDE * SIDE, dtype=np.uint8).reshape(SIDE, SIDE)
    img = np.zeros((SIDE, SIDE, 3), np.uint8)
    img[..., 0] = np.roll(ids, shift_cols, axis=1)
    return img


class OneHotFeaturizer:
    """Features = one-hot of the red channel: the cosine argmax of a source pixel is where its ID went."""

    def __init__(self):
        self.seeds = []

    def __call__(self, image, prompt, generator):
        self.seeds.append(generator.initial_seed())
        ids = torch.from_numpy(image[..., 0].astype(np.int64))  # (H, W)
        return F.one_hot(ids, SIDE * SIDE).permute(2, 0, 1)[None].float()  # (1, 64, H, W)


def test_mean_distance_hand_computed():
    source, dragged = position_image(0), position_image(2)  # everything moved 2 columns right
    handles = np.array([[3, 4], [1, 1]], float)  # (x, y)
    targets = np.array([[6, 4], [1, 5]], float)
    fz = OneHotFeaturizer()
    md = mean_distance(source, dragged, handles, targets, "a prompt", fz, seed=42)
    # handle (3, 4) went to (5, 4): 1 px from (6, 4); handle (1, 1) went to (3, 1): sqrt(2^2 + 4^2) from (1, 5)
    assert md.matched_xy == [(5.0, 4.0), (3.0, 1.0)]
    assert md.distances == pytest.approx([1.0, math.sqrt(20)])
    assert md.mean == pytest.approx((1 + math.sqrt(20)) / 2)
    assert fz.seeds == [42, 42]  # source and result featurized with the same freshly seeded generator


def test_mean_distance_unchanged_image_and_float_handles():
    img = position_image(0)
    md = mean_distance(img, img, [[2.6, 3.4]], [[2.6, 3.4]], "", OneHotFeaturizer())
    assert md.matched_xy == [(3.0, 3.0)]  # the handle is rounded to the pixel (3, 3) to read its feature
    assert md.distances == pytest.approx([math.hypot(0.4, 0.4)])


def test_match_points_uses_cosine_not_dot_product():
    src = torch.zeros(1, 2, 1, 3)
    src[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    dst = torch.zeros(1, 2, 1, 3)
    dst[0, :, 0, 1] = torch.tensor([10.0, 10.0])  # largest dot product
    dst[0, :, 0, 2] = torch.tensor([1.0, 0.01])  # most similar direction
    assert match_points(src, dst, np.array([[0, 0]])).tolist() == [[2.0, 0.0]]


def test_mean_distance_resizes_the_result_to_the_source():
    seen = []

    def featurizer(image, prompt, generator):
        seen.append(image.shape)
        return torch.ones(1, 1, *image.shape[:2])

    mean_distance(np.zeros((8, 12, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), [[1, 1]], [[1, 1]], "", featurizer)
    assert seen == [(8, 12, 3), (8, 12, 3)]


class AngleFeaturizer:
    """Features (cos θ, sin θ) with θ = red / 255 · π/2: cosine similarity cos(θ1 - θ2) falls with the gap in red,
    so the best match of a pixel is the pixel whose red value is closest to its own."""

    def __call__(self, image, prompt, generator):
        theta = torch.from_numpy(image[..., 0].astype(np.float64)) / 255 * math.pi / 2  # (H, W)
        return torch.stack([theta.cos(), theta.sin()])[None].float()  # (1, 2, H, W)


def masked_case():
    """Handle (2, 2) has red 100 in the source. In the result red 100 sits at (6, 2), outside the mask (x <= 4);
    inside it the closest reds are 90 at (3, 5) and 80 at (4, 4). Target (4, 2)."""
    source = np.zeros((SIDE, SIDE, 3), np.uint8)
    source[2, 2, 0] = 100  # (row, col) = (y, x)
    dragged = np.zeros((SIDE, SIDE, 3), np.uint8)
    dragged[2, 6, 0], dragged[5, 3, 0], dragged[4, 4, 0] = 100, 90, 80
    mask = np.zeros((SIDE, SIDE), bool)
    mask[:, :5] = True
    return source, dragged, [[2, 2]], [[4, 2]], mask


def test_masked_mean_distance_searches_inside_the_mask():
    source, dragged, handles, targets, mask = masked_case()
    fz = AngleFeaturizer()
    plain = mean_distance(source, dragged, handles, targets, "", fz)
    assert plain.matched_xy == [(6.0, 2.0)] and plain.distances == pytest.approx([2.0]) and not plain.masked
    masked = mean_distance(source, dragged, handles, targets, "", fz, mask=mask)
    # best inside the mask: red 90 at (3, 5); ||(3, 5) - (4, 2)|| = sqrt(1 + 9)
    assert masked.matched_xy == [(3.0, 5.0)] and masked.distances == pytest.approx([math.sqrt(10)])
    assert masked.masked and masked.mean == pytest.approx(math.sqrt(10))
    # a mask of another size is resized (nearest) to the image: 4 x 4 with columns 0-1 -> 8 x 8 columns 0-3
    small = np.zeros((4, 4), np.uint8)
    small[:, :2] = 1
    assert mean_distance(source, dragged, handles, targets, "", fz, mask=small).matched_xy == [(3.0, 5.0)]
    # the same through match_points on given features (no featurizer needed)
    f_src, f_drag = fz(source, "", None), fz(dragged, "", None)
    assert match_points(f_src, f_drag, np.array(handles), mask=mask).tolist() == [[3.0, 5.0]]
    assert mean_distance(source, dragged, handles, targets, "", None, source_features=f_src,
                         dragged_features=f_drag, mask=mask).distances == pytest.approx([math.sqrt(10)])


def test_masked_mean_distance_without_a_mask_is_plain_mean_distance():
    source, dragged, handles, targets, _ = masked_case()
    fz = AngleFeaturizer()
    plain = mean_distance(source, dragged, handles, targets, "", fz)
    for mask in (None, np.zeros((SIDE, SIDE), bool)):
        assert mean_distance(source, dragged, handles, targets, "", fz, mask=mask) == plain
    # a mask that is empty once resized to the feature grid: 16 x 16 with only (1, 1) set -> nearest to 8 x 8
    # reads rows/cols 0, 2, 4, ...: nothing left, so the whole image is searched and the result says so
    vanishing = np.zeros((16, 16), bool)
    vanishing[1, 1] = True
    assert metrics.search_mask(vanishing, (SIDE, SIDE)) is None
    assert mean_distance(source, dragged, handles, targets, "", fz, mask=vanishing) == plain
    with pytest.raises(ValueError, match="2-D"):
        metrics.search_mask(np.ones((SIDE, SIDE, 3)), (SIDE, SIDE))


def dai_images():
    """9 x 9 uint8: a red pixel at (x, y) = (4, 4) in the source; in the result it moved to (6, 4), with a blue 102
    (0.4) at (5, 4) and a grey 51 (0.2 in each channel) at (7, 3)."""
    source = np.zeros((9, 9, 3), np.uint8)
    source[4, 4] = (255, 0, 0)
    edited = np.zeros((9, 9, 3), np.uint8)
    edited[4, 6] = (255, 0, 0)
    edited[4, 5] = (0, 0, 102)
    edited[3, 7] = (51, 51, 51)
    return source, edited


def test_dai_hand_computed():
    source, edited = dai_images()
    # pair 1, (4, 4) -> (6, 4), γ = 1: the 3 x 3 patches differ by the blue 0.4 at offset (-1, 0) (0.16) and the
    # grey at offset (+1, -1) (3 x 0.04 = 0.12); the red centres agree. Term = 0.28 / 9.
    # pair 2, (4, 4) -> (4, 4): the red centre is gone (1) and the blue 0.4 is at offset (+1, 0) (0.16): 1.16 / 9.
    assert dai_per_pair(source, edited, [[4, 4]], [[6, 4]], 1) == pytest.approx([0.28 / 9])
    terms = dai_per_pair(source, edited, [[4, 4], [4, 4]], [[6, 4], [4, 4]], 1)
    assert terms == pytest.approx([0.28 / 9, 1.16 / 9])
    # DAI_1 = (1/N) Σ: (0.28 + 1.16) / 9 / 2 = 0.08 (GoodDrag's script, dividing by N twice, would print 0.04)
    assert dai(source, edited, [[4, 4], [4, 4]], [[6, 4], [4, 4]], 1) == pytest.approx(0.08)
    # γ = 0 compares the centre pixels only; γ = 2 (5 x 5, 25 px) also sees nothing else in this image
    assert dai(source, edited, [[4, 4]], [[6, 4]], 0) == 0.0
    assert dai(source, edited, [[4, 4]], [[6, 4]], 2) == pytest.approx(0.28 / 25)
    # floats in [0, 1] are used as they are: the same numbers
    assert dai(source / 255.0, edited / 255.0, [[4, 4]], [[6, 4]], 1) == pytest.approx(0.28 / 9)
    # points are rounded to the nearest pixel, and clamped into the image
    assert dai(source, edited, [[3.6, 4.4]], [[6.2, 3.8]], 1) == pytest.approx(0.28 / 9)
    assert dai(source, edited, [[-3, 4]], [[0, 4]], 1) == dai(source, edited, [[0, 4]], [[0, 4]], 1)


def test_dai_identity_is_zero_and_resizes_the_result():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    for gamma in DAI_GAMMAS:
        assert dai(img, img, [[4, 4], [0, 8]], [[4, 4], [0, 8]], gamma) == 0.0
    assert DAI_GAMMAS == (1, 5, 10, 20)
    # a result of another size is resized to the source first (bilinear), as for Mean Distance
    grey = np.full((9, 9, 3), 77, np.uint8)
    assert dai(grey, np.full((18, 27, 3), 77, np.uint8), [[4, 4]], [[4, 4]], 5) == 0.0
    assert math.isnan(dai(img, img, np.zeros((0, 2)), np.zeros((0, 2)), 1))
    with pytest.raises(ValueError, match="non-negative"):
        dai(img, img, [[4, 4]], [[4, 4]], -1)


def test_dai_border_keeps_the_offsets_inside_both_images():
    # handle (0, 0), target (2, 1), γ = 5 in a 9 x 9 image: offsets dx in [max(-5, -0, -2), min(5, 8, 6)] = [0, 5],
    # dy in [max(-5, -0, -1), min(5, 8, 7)] = [0, 5]: 6 x 6 = 36 offsets kept of the 11 x 11
    source = np.zeros((9, 9, 3))
    edited = np.zeros((9, 9, 3))
    edited[6, 7] = 1.0  # target + (5, 5): inside the kept patch, 3 channels x 1 = 3
    edited[7, 7] = 1.0  # target + (5, 6): dy = 6 > γ, not in the patch
    edited[1, 1] = 1.0  # target + (-1, 0): dx = -1 has no source pixel left of the handle, dropped
    assert dai(source, edited, [[0, 0]], [[2, 1]], 5) == pytest.approx(3 / 36)
    # γ = 20 (a 41 x 41 patch) on a 9 x 9 image: every pixel both patches share, no padding invented
    assert dai(source, edited, [[0, 0]], [[0, 0]], 20) == pytest.approx(9 / 81)


def test_protocol_defaults():
    s = DiftSettings()
    assert (s.model, s.t, s.up_ft_index, s.ensemble_size) == ("stabilityai/stable-diffusion-2-1", 261, 1, 8)
    assert metrics.parse_dift_overrides(s, ["dift.ensemble_size=2", "dift.t=100"]).ensemble_size == 2
    with pytest.raises(ValueError, match="unknown dift setting"):
        metrics.parse_dift_overrides(s, ["dift.tt=1"])


def test_dift_featurizer_on_tiny_model(tiny_model, blob_image):
    fz = DiftFeaturizer(tiny_model, DiftSettings(model="tiny", ensemble_size=2))
    a = fz(blob_image, "a red disc", torch.Generator().manual_seed(42))
    b = fz(blob_image, "a red disc", torch.Generator().manual_seed(42))
    c = fz(blob_image, "a red disc", torch.Generator().manual_seed(0))
    channels = tiny_model.pipe.unet.config.block_out_channels[0]  # up_blocks[1] of the 2-level tiny UNet
    assert a.shape == (1, channels, 64, 64)
    torch.testing.assert_close(a, b)  # reproducible from the seed
    assert not torch.allclose(a, c)  # and the noise matters
    # features of an odd-sized image come back at that image's size
    assert fz(blob_image[:50, :60], "", torch.Generator().manual_seed(1)).shape[-2:] == (50, 60)
    md = mean_distance(blob_image, blob_image, [[24, 24]], [[24, 24]], "a red disc", fz)
    assert md.distances == [0.0]  # same image, same noise: the handle finds itself
    with pytest.raises(ValueError, match="dift.up_ft_index"):
        DiftFeaturizer(tiny_model, DiftSettings(up_ft_index=5))


def test_image_fidelity_math_with_injected_distance():
    calls = []

    def l1(a, b):  # stands in for LPIPS: mean |a - b| of the two network inputs
        calls.append((a.shape, float(a.min()), float(a.max()), b.shape))
        return (a - b).abs().mean()

    black, white = np.zeros((40, 30, 3), np.uint8), np.full((40, 30, 3), 255, np.uint8)
    assert image_fidelity(black, black, l1) == 1.0
    assert image_fidelity(black, white, l1) == pytest.approx(1 - 2.0)  # inputs at -1 and +1
    assert calls[0][0] == calls[0][3] == (1, 3, 224, 224)
    assert calls[0][1:3] == pytest.approx((-1.0, -1.0))
    # the result is resized to the source's size first, whatever its size
    assert image_fidelity(black, np.zeros((64, 64, 3), np.uint8), l1) == 1.0


def test_lpips_input_scaling_and_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    x = lpips_input(img)
    ref = F.interpolate(torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] / 255 * 2 - 1,
                        size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, ref)
    assert x.min() >= -1 and x.max() <= 1


def test_missing_lpips_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if not installed
    with pytest.raises(MetricUnavailable, match="pip install lpips torchvision") as info:
        metrics.lpips_alex()
    assert "alexnet-owt-7be5be79.pth" in str(info.value) and "--no-fidelity" in str(info.value)


def test_missing_alexnet_weights_is_a_clear_error(monkeypatch):
    fake = types.ModuleType("lpips")

    def offline_lpips(**kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake.LPIPS = offline_lpips
    monkeypatch.setitem(sys.modules, "lpips", fake)
    with pytest.raises(MetricUnavailable, match="could not load its weights") as info:
        metrics.lpips_alex()
    assert "hub/checkpoints" in str(info.value)


def test_known_answer_scores(tmp_path):
    from PIL import Image

    from dragnb.evaluation.scenebench import write_cases

    (case,) = write_cases(tmp_path / "cases", n=1, seed=3, size=64)
    answer = np.asarray(Image.open(case / "target_image.png").convert("RGB"))
    scores = metrics.known_answer_scores(case, answer)
    assert scores["placement_error_px"] < 1.0 and scores["success"]
    assert metrics.known_answer_scores(tmp_path, answer) is None  # not a scene case
