"""The drag family (issue 24): each method's defining property on a small case, and the automatic mask.

FastDrag's warp moves a known latent blob by the drag vector and leaves no hole, with no optimiser step; RegionDrag
leaves the target region equal to the inverted latent of its source at the steps it copies; DragNoise leaves z_t as
it is and changes the bottleneck, which then replaces the edited branch's bottleneck while denoising.
"""

import dataclasses

import numpy as np
import pytest
import torch

from dragnb.automask import AUTO_SIGMA, LEVEL, auto_mask, segment_distance, soft_mask
from dragnb.config import (DragSettings, InversionSettings, LoraSettings, Settings, settings_from_dict)
from dragnb.errors import SettingError
from dragnb.family.dragnoise import BottleneckGuide, MidBlockOutput
from dragnb.drag.copy import fill_holes
from dragnb.family.fastdrag import forward_warp, warp_field
from dragnb.family.regiondrag import RegionCopy, copy_regions, copy_steps, square_regions
from dragnb.points import DragPoints
from dragnb.session import DragSession

FAST = Settings(lora=LoraSettings(steps=0), inversion=InversionSettings(num_steps=20),
                drag=DragSettings(max_steps=4, lr=0.05))


def with_method(method: str, **section) -> Settings:
    return settings_from_dict({"drag": {"method": method}, **({method: section} if section else {})}, FAST)


# ---- FastDrag ------------------------------------------------------------------------------------------
def test_fastdrag_warp_moves_a_blob_by_the_drag_vector_and_leaves_no_hole():
    z = torch.zeros(1, 4, 16, 16)
    z[0, :, 5:8, 4:7] = 5.0  # a 3 x 3 blob centred on (6, 5)
    editable = np.zeros((16, 16), bool)
    editable[2:14, 2:14] = True
    a, b = np.array([[6.0, 5.0]]), np.array([[6.0, 9.0]])  # (row, col): four latent pixels to the right
    field = warp_field((16, 16), a, b, editable)
    np.testing.assert_allclose(field[6, 5], [0.0, 4.0])  # the handle moves the whole way
    assert (field[~editable] == 0).all() and np.abs(field).max() <= 4.0
    warped, holes = forward_warp(z, field, editable)
    assert warped[0, 0, 6, 9] == 5.0  # the blob's centre is at the target
    filled = fill_holes(warped, holes)
    assert holes.any() and torch.isfinite(filled).all()
    refilled = forward_warp(filled, np.zeros_like(field), editable)[1]
    assert not refilled.any()  # nothing left unfilled: every editable pixel holds a value again
    assert filled[0, 0, 6, 5] == 0.0  # the handle's old place shows what was beside the blob, not the blob
    outside = ~editable
    assert torch.equal(filled[0][:, outside], z[0][:, outside])  # nothing outside the mask moves or is written


def test_fill_holes_takes_the_nearest_filled_pixels_weighted_by_closeness():
    z = torch.zeros(1, 1, 1, 5)
    z[0, 0, 0] = torch.tensor([0.0, 9.0, 9.0, 9.0, 4.0])
    holes = np.array([[False, True, True, True, False]])
    out = fill_holes(z, holes)[0, 0, 0]
    # pixel 1: left 0 at distance 1 (weight 1), right 4 at distance 3 (weight 1/3): (0 + 4/3) / (4/3) = 1
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))


def test_fastdrag_through_the_session_runs_no_optimiser_and_no_unet(tiny_model, blob_image, monkeypatch):
    session = DragSession(tiny_model, blob_image, "a red disc", with_method("fastdrag"))
    session.set_points([(24, 24, 36, 24)])
    mask = np.zeros((64, 64), bool)
    mask[8:44, 8:56] = True
    session.set_mask(mask)
    session.run_inversion()
    steps = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: steps.append(1))
    calls = []
    hook = tiny_model.pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        drag = session.run_drag()
    finally:
        hook.remove()
    assert steps == [] and calls == [] and drag.history == [] and drag.stop_reason == "one step"
    assert drag.method == "fastdrag" and drag.guide is None
    assert not torch.equal(drag.latent, drag.original_latent)
    torch.testing.assert_close(drag.handles, drag.targets)  # the handle pixel moved onto its target
    edit = session.run()
    assert edit.cached["inversion"] and edit.cached["drag"]  # the LoRA is off here (lora.steps 0)
    assert edit.image.shape == blob_image.shape


# ---- RegionDrag ----------------------------------------------------------------------------------------
def test_regiondrag_copies_the_source_region_onto_the_target_at_the_steps_it_copies():
    regions = square_regions(np.array([[4.0, 4.0]]), np.array([[4.0, 10.0]]), 3, (16, 16))
    assert len(regions.source) == 9 and ((regions.target - regions.source) == [0, 6]).all()
    landed = torch.randn(1, 4, 16, 16)
    edited = torch.zeros(1, 4, 16, 16)
    editable = torch.zeros(1, 1, 16, 16)
    editable[..., 2:8, 2:14] = 1
    guide = RegionCopy(regions, steps=2, editable=editable)
    out = guide.after_step(1, edited, landed)
    torch.testing.assert_close(out[0, :, 3:6, 9:12], landed[0, :, 3:6, 3:6])  # target = the source's inverted latent
    torch.testing.assert_close(out[0, :, 10:, :], landed[0, :, 10:, :])  # outside the mask: the inversion's latent
    assert (out[0, :, 6, 4] == 0).all()  # inside the mask, off the target: the edited branch's own
    assert torch.equal(guide.after_step(2, edited, landed), edited)  # past copy_until: nothing copied
    assert torch.equal(guide.after_step(0, edited, None), edited)  # no inversion (a generated image): nothing
    assert torch.equal(copy_regions(edited, landed, regions)[0, :, 3:6, 9:12], landed[0, :, 3:6, 3:6])


def test_copy_steps_follow_the_end_fraction():
    timesteps = [581, 561, 541, 521, 501]  # remaining steps from t = 581; the last lands on z_0
    assert copy_steps(timesteps, 581, 0.9) == 2  # lands on 561 and 541 >= 522.9; 521 does not
    assert copy_steps(timesteps, 581, 0.0) == 4  # every step but the last, which lands on z_0
    assert copy_steps(timesteps, 581, 1.0) == 0


def test_regiondrag_through_the_session(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "a red disc", with_method("regiondrag", region_size=0.25))
    session.set_points([(24, 24, 40, 24)])
    drag = session.run_drag()
    regions, zt = drag.extras["regions"], drag.original_latent
    s, t = regions.source, regions.target
    torch.testing.assert_close(drag.latent[0][:, t[:, 0], t[:, 1]], zt[0][:, s[:, 0], s[:, 1]])  # copied at t
    vacated = drag.extras["vacated"]
    assert vacated.any() and not torch.equal(drag.latent[0][:, vacated], zt[0][:, vacated])  # blurred with noise
    assert isinstance(drag.guide, RegionCopy) and drag.guide.steps == drag.extras["copy_steps"] > 0
    edit = session.run()
    assert edit.cached["drag"] and edit.image.shape == blob_image.shape


# ---- DragNoise -----------------------------------------------------------------------------------------
def test_dragnoise_leaves_zt_and_changes_the_bottleneck(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "a red disc", with_method("dragnoise", max_steps=3, lr=0.5))
    session.set_points([(24, 24, 36, 24)])
    inversion = session.run_inversion()
    drag = session.run_drag()
    assert torch.equal(drag.latent.cpu(), inversion.zt.cpu())  # z_t as it was
    assert 1 <= len(drag.history) <= 3 and drag.history[-1].extras["bottleneck_change"] > 0
    seen = MidBlockOutput()
    with seen.on(tiny_model.pipe.unet), torch.no_grad():
        tiny_model.pipe.unet(inversion.zt, inversion.t, session._text())
    assert isinstance(drag.guide, BottleneckGuide) and drag.guide.value.shape == seen.seen.shape
    assert not torch.allclose(drag.guide.value, seen.seen)  # the optimised bottleneck differs from z_t's own
    # while denoising, the guide replaces the edited rows only
    batch = torch.cat([inversion.zt, inversion.zt])
    text = session._text().repeat(2, 1, 1)
    after = MidBlockOutput()
    with drag.guide.unet_call(tiny_model.pipe.unet, 0, [1]), after.on(tiny_model.pipe.unet), torch.no_grad():
        tiny_model.pipe.unet(batch, inversion.t, text)
    torch.testing.assert_close(after.seen[1:], drag.guide.value)  # the guide's hook ran first: row 1 replaced
    torch.testing.assert_close(after.seen[:1], seen.seen)  # row 0, the unedited branch, its own
    with drag.guide.unet_call(tiny_model.pipe.unet, drag.guide.steps, [1]) as nothing:
        assert nothing is None  # past the replaced steps: no hook
    assert session.run().image.shape == blob_image.shape


# ---- settings and keys ---------------------------------------------------------------------------------
def test_method_settings_are_checked_up_front_and_key_the_drag(tiny_model, blob_image):
    with pytest.raises(SettingError, match="drag.method"):
        settings_from_dict({"drag": {"method": "warp"}})
    with pytest.raises(SettingError, match="regiondrag.noise_sigma"):
        settings_from_dict({"regiondrag": {"noise_sigma": 2}})
    with pytest.raises(SettingError, match="fastdrag.circle_scale"):
        settings_from_dict({"fastdrag": {"circle_scale": 0.5}})
    session = DragSession(tiny_model, blob_image, "", with_method("fastdrag"))
    session.set_points([(24, 24, 36, 24)])
    keys = session._keys()
    session.settings = dataclasses.replace(session.settings, fastdrag=dataclasses.replace(
        session.settings.fastdrag, fill="none"))
    assert session._keys()["drag"] != keys["drag"] and session._keys()["inversion"] == keys["inversion"]
    before = session._keys()["drag"]
    session.settings = dataclasses.replace(session.settings, regiondrag=dataclasses.replace(
        session.settings.regiondrag, seed=3))  # another method's section: not this drag's business
    assert session._keys()["drag"] == before


# ---- the automatic mask --------------------------------------------------------------------------------
def test_auto_mask_covers_every_segment_and_is_zero_far_from_them():
    points = DragPoints(np.array([[10.0, 10.0], [50.0, 40.0]]), np.array([[30.0, 10.0], [50.0, 20.0]]))
    size = (64, 80)
    mask = auto_mask(points, size)
    for (hx, hy), (tx, ty) in zip(points.handles, points.targets):
        for f in np.linspace(0, 1, 21):  # every pixel on each handle -> target segment is editable
            assert mask[int(round(hy + f * (ty - hy))), int(round(hx + f * (tx - hx)))]
    distance = segment_distance(points, size)
    sigma = AUTO_SIGMA * 64
    assert not mask[distance > 2 * sigma + 1e-9].any() and mask[distance <= 2 * sigma - 1e-9].all()
    soft = soft_mask(points, size)
    assert soft.max() == 1.0 and soft[distance > 6 * sigma].max() < 1e-6 and np.isclose(LEVEL, np.exp(-2))


def test_method_view_draws_the_warp_and_the_squares(tiny_model, blob_image):
    from dragnb.ui import plots

    session = DragSession(tiny_model, blob_image, "a red disc", with_method("fastdrag"))
    session.set_points([(24, 24, 36, 24)])
    fast = session.run()
    fig = plots.method_view(fast)
    field = fast.drag.extras["field"]
    arrows = fig.axes[0].collections[0]  # the quiver: one arrow per latent pixel that moves
    assert len(arrows.get_offsets()) == int((np.abs(field).sum(-1) > 0.05).sum()) > 0
    session.settings = with_method("regiondrag", region_size=0.25)
    region = session.run()
    squares = [(p.get_xy(), p.get_width(), p.get_linestyle()) for p in plots.method_view(region).axes[0].patches]
    regions = region.drag.extras["regions"]
    side = 4 * (regions.source[:, 1].max() - regions.source[:, 1].min() + 1)  # 4 image px per latent px
    assert len(squares) == 2 and all(w == side for _, w, _ in squares)  # the pair's source and target squares
    (source_xy, _, dashed), (target_xy, _, solid) = squares
    assert dashed == "--" and solid == "-" and target_xy[0] - source_xy[0] == 4 * (regions.target - regions.source)[0, 1]
    session.settings = with_method("optimise")
    with pytest.raises(ValueError, match="fastdrag's field or regiondrag's regions"):
        plots.method_view(session.run())
