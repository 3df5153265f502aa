"""Each view returns a matplotlib Figure (never shows it) with the expected content, on one small edit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from dragnb.ui import plots
from dragnb.drag import predicted_frames
from dragnb.features import correspond, feature_maps, pca_rgb
from dragnb.inversion import round_trip_errors
from dragnb.config import settings_from_dict
from dragnb.session import DragSession
from dragnb.tracking import point_features, search_window


@pytest.fixture(scope="module")
def edit(tiny_model):
    """A 48x64 (non-square) edit on the tiny model keeping every latent and feature map."""
    image = np.full((48, 64, 3), 90, np.uint8)
    image[10:30, 12:32] = (220, 40, 40)
    settings = settings_from_dict({"lora": {"steps": 3}, "inversion": {"num_steps": 20, "strength": 0.5},
                                   "drag": {"max_steps": 4, "lr": 1e-3}}, tiny_model.settings)
    session = DragSession(tiny_model, image, "a red square", settings)
    session.set_points([(20, 20, 44, 24)])
    mask = np.zeros((48, 64), bool)
    mask[4:40, 6:56] = True
    session.set_mask(mask)
    return session.run(keep_latents=True, keep_features=True)


def test_compare_shows_source_and_result_with_arrows(edit):
    fig = plots.compare(edit)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert (left.images[0].get_array() == edit.source).all() and (right.images[0].get_array() == edit.image).all()
    assert len(left.images) == 2  # the image and the mask overlay
    mask_overlay = left.images[1].get_array()  # what may not change darkened, the editable region left as it is
    assert (mask_overlay[..., 3][edit.mask] == 0).all() and (mask_overlay[..., 3][~edit.mask] > 0).all()
    assert any(type(c).__name__.endswith("ContourSet") for c in left.collections)  # the mask's edge outlined
    assert len([t for t in left.texts]) == len(edit.points)  # one arrow per pair
    handles = [c for c in left.collections if type(c).__name__ == "PathCollection"][0].get_offsets()
    np.testing.assert_allclose(handles, edit.points.handles)
    np.testing.assert_allclose(right.collections[0].get_offsets(), edit.final_handles_xy)
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_trajectories_follow_the_recorded_handles(edit):
    fig = plots.trajectories(edit)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(np.stack(line.get_data(), 1), edit.trajectory_xy()[:, 0])


def test_loss_curves_have_one_line_per_term_and_per_pair(edit):
    fig = plots.loss_curves(edit)
    terms, distances = fig.axes
    assert [l.get_label() for l in terms.lines] == ["motion", "mask", "total"]
    np.testing.assert_allclose(terms.lines[0].get_ydata(), [s.motion_loss for s in edit.drag.history])
    np.testing.assert_allclose(terms.lines[1].get_ydata(), [s.mask_loss for s in edit.drag.history])
    assert len(distances.lines) == len(edit.points) + 1  # per pair, plus the stop distance


def test_lora_loss_curve(edit):
    fig = plots.lora_loss(edit.lora, smooth=2)
    raw, smooth = fig.axes[0].lines
    np.testing.assert_allclose(raw.get_ydata(), edit.lora.losses)
    assert len(smooth.get_ydata()) == len(edit.lora.losses) - 1


def test_inversion_error_against_the_inverted_step(tiny_model, edit):
    records = round_trip_errors(tiny_model, edit.source, edit.prompt, [0.2, 0.6], edit.settings.inversion)
    assert [r["steps"] for r in records] == [4, 12] and records[0]["t"] < records[1]["t"]
    assert all(r["latent_error"] >= 0 and np.isfinite(r["psnr"]) for r in records)
    assert records[0]["image"].shape == (48, 64, 3)  # the model size of a 48x64 image on a 64-px model
    fig = plots.inversion_error(records)
    assert len(fig.axes) == 2 + 2  # error curve, its twin axis, one reconstruction per strength
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [r["t"] for r in records])


def test_pca_rgb_separates_two_regions():
    feature = torch.zeros(1, 6, 8, 8)
    feature[0, :3, :, :4] = 1.0  # left half differs from the right half
    feature += 0.01 * torch.randn(1, 6, 8, 8)
    rgb = pca_rgb(feature)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert abs(rgb[:, :4, 0].mean() - rgb[:, 4:, 0].mean()) > 0.8  # the first component splits them


def test_feature_maps_and_pca_grid(tiny_model, edit):
    maps = feature_maps(tiny_model, edit.source, edit.prompt, blocks=(-1, -2), timesteps=(101, 681))
    assert set(maps) == {(-1, 101), (-1, 681), (-2, 101), (-2, 681)}
    assert maps[(-2, 101)].shape[-2:] == (24, 32)  # the supervision grid of a 48x64 image
    fig = plots.feature_pca(maps, edit.source)
    assert len(fig.axes) == 2 * 3


def test_correspondence_finds_a_known_shift():
    feature = torch.randn(1, 16, 12, 12)
    shifted = torch.roll(feature, shifts=(1, 2), dims=(2, 3))
    matches, sims = correspond(feature, shifted, [(8, 8), (16, 4)], (24, 24), (24, 24))
    np.testing.assert_allclose(matches, [[12, 10], [20, 6]])  # +2 cols, +1 row in feature px = x2 in image px
    assert sims.shape == (2, 12, 12)
    fig = plots.correspondence(np.zeros((24, 24, 3), np.uint8), np.zeros((24, 24, 3), np.uint8), [(8, 8), (16, 4)],
                             matches, sims)
    assert len(fig.axes) == 4 + 1  # A, B, two similarity maps, and their one colour bar
    assert fig.axes[-1].get_ylabel() == "cosine similarity (high = match)"
    assert fig.axes[2].images[0].get_clim() == fig.axes[3].images[0].get_clim() == (sims.min(), sims.max())


def test_tracking_heatmaps_mark_where_tracking_put_the_handle(edit):
    fig = plots.tracking_heatmaps(edit, steps=(1, 2))
    history = edit.drag.history
    reference = point_features(edit.drag.initial_features, edit.drag.initial_handles)[0]
    for ax, k in zip(fig.axes, (1, 2)):
        window = search_window(history[k].features, reference, history[k - 1].handles[0], edit.settings.drag.r2)
        np.testing.assert_allclose(ax.images[0].get_array(), window.distances.numpy())
        best = ax.collections[0].get_offsets()[0]  # (col, row)
        assert (best[1], best[0]) == tuple(history[k].handles[0].tolist())  # the argmin is the recorded handle
    with pytest.raises(ValueError, match="keep_features"):
        plots.tracking_heatmaps(type(edit)(**{**edit.__dict__, "drag": _without_features(edit.drag)}))


def _without_features(drag):
    import dataclasses

    return dataclasses.replace(drag, history=[dataclasses.replace(s, features=None, extras={}) for s in drag.history])


def test_animation_of_the_predicted_image(tiny_model, edit):
    frames = predicted_frames(tiny_model, edit.drag, edit.prompt, every=2)
    assert [k for k, _ in frames] == [0, 2, len(edit.drag.history)]
    assert frames[0][1].shape == (48, 64, 3) and frames[0][1].dtype == np.uint8
    assert not np.array_equal(frames[0][1], frames[-1][1])  # the latent moved
    animation = plots.drag_animation(frames, edit)
    assert isinstance(animation, FuncAnimation)
    html = animation.to_jshtml()
    assert html.count("data:image/png;base64") == len(frames)


def test_frame_rows_show_each_settings_frames_then_its_result(tiny_model, edit):
    frames = predicted_frames(tiny_model, edit.drag, edit.prompt, every=2)
    fig = plots.frame_rows({"a": (frames, edit), "b": (frames[:1], edit)}, answer=edit.source)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == (len(frames) + 2) + (1 + 2)  # each row: its frames, the result, the answer
    assert [ax.get_title() for ax in fig.axes[:len(frames) + 2]][-2:] == [
        f"result ({edit.drag.stop_reason})", "answer"]
    assert fig.axes[0].get_title() == f"k 0, t {edit.drag.history[0].t}"


def test_tracking_heatmaps_follow_the_previous_appearance_variant(tiny_model, edit):
    import dataclasses

    settings = dataclasses.replace(edit.settings, drag=dataclasses.replace(edit.settings.drag, track_from="previous"))
    session = DragSession(tiny_model, edit.source, edit.prompt, settings)
    session.set_points(edit.points)
    session.set_mask(edit.mask)
    result = session.run(keep_features=True)
    fig = plots.tracking_heatmaps(result, steps=(1, 2, 3))
    for ax, k in zip(fig.axes, (1, 2, 3)):
        best = ax.collections[0].get_offsets()[0]  # (col, row)
        assert (best[1], best[0]) == tuple(result.drag.history[k].handles[0].tolist())


def test_differences_show_each_image_and_its_distance_to_the_reference():
    reference = np.zeros((8, 8, 3), np.uint8)
    changed = reference.copy()
    changed[2:4, 2:4] = 200
    mask = np.zeros((8, 8), bool)
    mask[1:5, 1:5] = True
    fig = plots.differences(reference, {"same": reference, "changed": changed}, "source", mask=mask, answer=changed)
    maps = [ax.images[0].get_array() for ax in fig.axes[4:6]]  # the bottom row after the answer: one map per image
    assert float(np.max(maps[0])) == 0 and float(np.max(maps[1])) == 200 and maps[1][2, 2] == 200
    assert any(type(c).__name__.endswith("ContourSet") for c in fig.axes[0].collections)  # the mask outlined


def test_supervision_gradient_draws_the_gradient_size_and_the_patches():
    gradient = torch.zeros(1, 4, 8, 8)  # a 32 px image: latent px = 4 image px
    gradient[0, :, 2, 3] = 2.0  # one latent pixel with |g| = 4 over the 4 channels
    handles, targets = torch.tensor([[4.0, 6.0]]), torch.tensor([[12.0, 6.0]])  # (row, col) on a 16 x 16 grid: down
    mask = np.zeros((32, 32), bool)
    mask[4:28, 8:20] = True
    fig = plots.supervision_gradient(np.zeros((32, 32, 3), np.uint8), gradient, handles, targets, (16, 16), mask, 1)
    source, shown = fig.axes[:2]
    drawn = shown.images[0].get_array()
    assert drawn.shape == (8, 8) and drawn[2, 3] == 4.0 and drawn.sum() == 4.0
    assert fig.axes[2].get_ylabel().startswith("‖∂L/∂ẑ_t‖")  # the colour bar, with its unit
    for ax in (source, shown):
        solid, dashed = [(p.get_xy(), p.get_width()) for p in ax.patches]
        assert solid == ((12.0 - 3.0, 8.0 - 3.0), 6.0)  # Ω(h, 1): 3 grid px = 6 image px around h = (12, 8)
        assert dashed == ((12.0 - 3.0, 10.0 - 3.0), 6.0)  # shifted by d = one grid px (2 image px) towards the target
        assert ax.get_xlim() == (-0.5, 31.5) and ax.get_ylim() == (31.5, -0.5)
