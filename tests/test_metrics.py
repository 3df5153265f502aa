"""The metrics against hand-computed values: Mean Distance with known feature matches, Image Fidelity around
an injected distance network, the clear error when LPIPS is missing, DIFT features on the tiny model."""

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragnb import metrics
from dragnb.metrics import (DiftFeaturizer, DiftSettings, MetricUnavailable, image_fidelity, lpips_input,
                            match_points, mean_distance)

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

    from dragnb.scenebench import write_cases

    (case,) = write_cases(tmp_path / "cases", n=1, seed=3, size=64)
    answer = np.asarray(Image.open(case / "target_image.png").convert("RGB"))
    scores = metrics.known_answer_scores(case, answer)
    assert scores["placement_error_px"] < 1.0 and scores["success"]
    assert metrics.known_answer_scores(tmp_path, answer) is None  # not a scene case
