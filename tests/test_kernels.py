"""The pure kernels against references: bilinear patch vs grid_sample, tracking on a known shift,
and the motion-supervision gradient moving content toward the target."""

import pytest
import torch
import torch.nn.functional as F

from dragnb.motion import bilinear_patch, mask_loss, motion_loss
from dragnb.tracking import point_features, search_window, track_points


def grid_sample_patch(feature, center, r):
    """Reference: the same patch through F.grid_sample (align_corners=True, border padding)."""
    _, _, h, w = feature.shape
    offs = torch.arange(-r, r + 1, dtype=torch.float32)
    rows, cols = center[0] + offs, center[1] + offs
    gy, gx = torch.meshgrid(rows, cols, indexing="ij")
    grid = torch.stack([gx / (w - 1) * 2 - 1, gy / (h - 1) * 2 - 1], dim=-1)[None]  # (1, P, P, 2) as (x, y)
    return F.grid_sample(feature, grid, mode="bilinear", padding_mode="border", align_corners=True)


@pytest.mark.parametrize("center", [(5.3, 7.8), (4.0, 4.0), (0.2, 10.9), (11.5, 0.0), (-0.7, 12.4)])
def test_bilinear_patch_matches_grid_sample(center):
    feature = torch.randn(1, 6, 12, 13)
    c = torch.tensor(center)
    torch.testing.assert_close(bilinear_patch(feature, c, 2), grid_sample_patch(feature, c, 2), atol=1e-5, rtol=1e-5)


def test_bilinear_patch_at_integer_equals_slice():
    feature = torch.randn(1, 3, 10, 10)
    torch.testing.assert_close(bilinear_patch(feature, torch.tensor([4.0, 6.0]), 1), feature[:, :, 3:6, 5:8])


def test_bilinear_patch_gradients_are_right():
    """The motion loss moves the latent through these gradients: checked against finite differences, in the
    features and in the (fractional) centre, the two things the patch depends on."""
    feature = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    centre = torch.tensor([2.3, 3.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, c: bilinear_patch(f, c, 1), (feature, centre))


def test_tracking_recovers_a_known_shift():
    torch.manual_seed(1)
    f0 = torch.randn(1, 16, 20, 20)
    f1 = torch.roll(f0, shifts=(2, -1), dims=(2, 3))  # content moved 2 rows down, 1 column left
    handles = torch.tensor([[8.0, 9.0], [12.0, 5.0]])
    refs = point_features(f0, handles)
    assert track_points(f1, refs, handles, r2=3).tolist() == [[10.0, 8.0], [14.0, 4.0]]
    # beyond the window the best match cannot be reached
    far = torch.roll(f0, shifts=(5, 0), dims=(2, 3))
    assert track_points(far, refs[:1], handles[:1], r2=3).tolist() != [[13.0, 9.0]]


def test_search_window_clips_at_border():
    f = torch.randn(1, 4, 6, 6)
    win = search_window(f, f[0, :, 0, 0], torch.tensor([0.0, 0.0]), r2=3)
    assert win.origin == (0, 0) and win.distances.shape == (4, 4) and win.best == (0, 0)


def _blob(center, size=24, sigma=2.0):
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    return torch.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * sigma**2))


def test_motion_gradient_moves_content_toward_target():
    feature = torch.stack([_blob((12, 8)), 1 - _blob((12, 8))])[None].requires_grad_(True)  # (1, 2, 24, 24)
    handles, targets = torch.tensor([[12.0, 8.0]]), torch.tensor([[12.0, 16.0]])
    optimizer = torch.optim.SGD([feature], lr=0.5)

    def centroid(f):
        m = f[0, 0].detach().clamp(min=0)
        return (m * torch.arange(24.0)[None, :]).sum() / m.sum()

    start = centroid(feature)
    for _ in range(30):
        optimizer.zero_grad()
        motion_loss(feature, handles, targets, r1=1).backward()
        optimizer.step()
    assert centroid(feature) > start + 0.05  # mass moved right, toward the target column


def test_motion_loss_normalisations_and_skip():
    feature = torch.randn(1, 8, 10, 10)
    h, g = torch.tensor([[4.0, 4.0]]), torch.tensor([[4.0, 8.0]])
    ref = motion_loss(feature, h, g, r1=1)
    expected = 9 * (bilinear_patch(feature, torch.tensor([4.0, 5.0]), 1) - feature[:, :, 3:6, 3:6]).abs().mean()
    torch.testing.assert_close(ref, expected)
    torch.testing.assert_close(motion_loss(feature, h, g, r1=1, reduction="paper"), ref * 8)
    assert float(motion_loss(feature, h, torch.tensor([[4.0, 5.5]]), stop_distance=2.0)) == 0.0


def test_mask_loss_is_a_sum_outside_the_mask():
    a, b = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(mask_loss(a, b, mask, lam=0.5)) == pytest.approx(0.5 * 12)
    assert float(mask_loss(a, b, None, lam=0.5)) == 0.0


def test_anchored_supervision_targets_the_original_patch():
    """motion_loss with anchors = the current patches is the reference loss; other anchors change it."""
    from dragnb.motion import anchor_patches, motion_loss

    torch.manual_seed(0)
    feature = torch.randn(1, 6, 12, 12, requires_grad=True)
    handles = torch.tensor([[4.0, 4.0], [7.3, 6.6]])
    targets = torch.tensor([[4.0, 9.0], [2.0, 2.0]])
    reference = motion_loss(feature, handles, targets, r1=1, stop_distance=1.0)
    same = motion_loss(feature, handles, targets, r1=1, stop_distance=1.0,
                       anchors=anchor_patches(feature, handles, 1))
    assert torch.allclose(reference, same)
    other = anchor_patches(torch.randn(1, 6, 12, 12), handles, 1)
    anchored = motion_loss(feature, handles, targets, r1=1, stop_distance=1.0, anchors=other)
    assert not torch.allclose(reference, anchored)
    anchored.backward()
    assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_choice_settings_are_checked():
    from dragnb.config import Settings, apply_overrides

    s = apply_overrides(Settings(), ["drag.supervision=anchored"])
    assert s.drag.supervision == "anchored"
    with pytest.raises(ValueError, match="drag.supervision: got .anchor.; must be one of reference, anchored"):
        apply_overrides(Settings(), ["drag.supervision=anchor"])
    with pytest.raises(ValueError, match="optimizer"):
        apply_overrides(Settings(), ["drag.optimizer=adamw"])


def test_grid_patches_read_integer_points_as_the_bilinear_patch_does():
    from dragnb.motion import bilinear_patch
    from dragnb.tracking import grid_patches

    feature = torch.randn(1, 3, 7, 9)
    patches = grid_patches(feature, 2)  # (1, C, H, W, P, P)
    for row, col in [(0, 0), (3, 4), (6, 8), (1, 7)]:  # inside and at the borders (clamped)
        torch.testing.assert_close(patches[:, :, row, col], bilinear_patch(feature, torch.tensor([float(row), float(col)]), 2))
