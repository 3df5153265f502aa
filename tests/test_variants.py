"""The method variants as switches of the one loop (issue 9): each off reproduces the reference loop exactly, each
on shows its defining property on a small case."""

import dataclasses

import numpy as np
import pytest
import torch

from dragnb.config import DragSettings, InversionSettings, LoraSettings, Settings
from dragnb.drag import drag, guided_features
from dragnb.lora import remove_lora
from dragnb.models import encode_prompt
from dragnb.session import DragSession
from dragnb.tracking import line_search, template_weight

FAST = Settings(lora=LoraSettings(steps=0), inversion=InversionSettings(num_steps=20),
                drag=DragSettings(max_steps=12, lr=0.05))


def _inputs(tiny_model):
    remove_lora(tiny_model.pipe)
    torch.manual_seed(0)
    tiny_model.pipe.scheduler.set_timesteps(20)
    t = int(tiny_model.pipe.scheduler.timesteps[6])
    return torch.randn(1, 4, 16, 16), t, encode_prompt(tiny_model, "a red disc")


def _drag(tiny_model, **changes):
    zt, t, text = _inputs(tiny_model)
    settings = dataclasses.replace(FAST.drag, **changes)
    return drag(tiny_model, zt, t, text, torch.tensor([[8.4, 8.6]]), torch.tensor([[8.0, 20.0]]), None, settings,
                schedule_steps=20)


def test_switches_off_are_the_reference_loop(tiny_model):
    """Naming every switch at its default changes nothing, bit for bit."""
    plain = _drag(tiny_model)
    named = _drag(tiny_model, supervision="reference", schedule="single", tracking="nearest", optimize_text=False,
                  round_points=True)
    assert torch.equal(plain.latent, named.latent) and [s.loss for s in plain.history] == [s.loss for s in named.history]


def test_points_are_rounded_to_the_grid_as_the_reference(tiny_model):
    rounded, kept = _drag(tiny_model), _drag(tiny_model, round_points=False)
    assert rounded.initial_handles.tolist() == [[8.0, 9.0]]
    np.testing.assert_allclose(kept.initial_handles.numpy(), [[8.4, 8.6]], rtol=1e-6)


def test_anchored_source_term_is_constant(tiny_model):
    """Anchored supervision: the patch the motion term pulls toward is F_0(Ω(h^0)) at every step, so a step that
    does not move the handle sees the same target; with the reference target it follows the current features."""
    from dragnb.motion import anchor_patches, motion_loss

    feat0 = torch.randn(1, 3, 12, 12)
    h, g = torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 9.0]])
    anchors = anchor_patches(feat0, h, 1)
    later = feat0 + torch.randn_like(feat0)  # the features after some optimisation
    anchored = motion_loss(later, h, g, 1, anchors=anchors)
    from dragnb.motion import bilinear_patch

    expected = 9 * (bilinear_patch(later, h[0] + torch.tensor([0.0, 1.0]), 1) - anchors).abs().mean()  # d = (0, 1)
    assert torch.allclose(anchored, expected) and not torch.allclose(motion_loss(later, h, g, 1), expected)


def test_hold_steps_pull_the_target_patch_toward_the_original_after_arrival(tiny_model):
    """hold_steps: an arrived pair is held, its term the distance of the patch at g to F_0(Ω(h^0)), and the loop
    runs that many iterations after every handle arrived; 0 stops at arrival (the reference)."""
    from dragnb.motion import anchor_patches, bilinear_patch, motion_loss

    feat = torch.randn(1, 3, 12, 12)
    h, g = torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 6.0]])
    anchors = anchor_patches(torch.randn(1, 3, 12, 12), h, 1)
    held = motion_loss(feat, h, g, 1, stop_distance=2.0, hold=anchors)
    assert torch.allclose(held, 9 * (bilinear_patch(feat, g[0], 1) - anchors).abs().mean())
    assert float(motion_loss(feat, h, g, 1, stop_distance=2.0, anchors=anchors)) == 0.0  # skipped without hold
    stopped = _drag(tiny_model, stop_distance=100.0)
    holding = _drag(tiny_model, stop_distance=100.0, hold_steps=3)
    assert stopped.stop_reason == holding.stop_reason == "reached"
    assert len(stopped.history) == 0 and len(holding.history) == 3
    assert all(s.motion_loss > 0 for s in holding.history)
    assert not torch.equal(holding.latent, stopped.latent)


def test_alternating_schedule_drags_over_several_timesteps(tiny_model, blob_image):
    result = _drag(tiny_model, schedule="alternating", steps_per_timestep=4)
    ts = [s.t for s in result.history]
    assert len(set(ts)) == 3 and ts == sorted(ts, reverse=True)  # 12 steps, 4 per timestep, walking down
    assert result.denoised_steps == 2 and result.t == ts[-1] and result.original_latent is not None
    assert sorted(result.reference_features) == sorted(set(ts))
    session = DragSession(tiny_model, blob_image, "a red disc", dataclasses.replace(
        FAST, drag=dataclasses.replace(FAST.drag, schedule="alternating", steps_per_timestep=4)))
    session.set_points([(16, 16, 40, 16)])
    edit = session.run()
    assert edit.drag.denoised_steps >= 1 and edit.image.shape == blob_image.shape
    assert edit.to_record()["loss_history"][-1]["t"] == edit.drag.t  # the records carry each step's timestep


def test_line_search_keeps_handles_on_their_line(tiny_model):
    result = _drag(tiny_model, tracking="line_search", round_points=False)
    h0, g = torch.tensor([8.4, 8.6]), torch.tensor([8.0, 20.0])
    direction = (g - h0) / torch.linalg.norm(g - h0)
    for step in result.history:
        offset = step.handles[0] - h0
        cross = float(offset[0] * direction[1] - offset[1] * direction[0])
        assert abs(cross) < 1e-4, (step.step, step.handles)
    assert any(float(torch.linalg.norm(s.handles[0] - h0)) > 0 for s in result.history)  # and it moved


def test_line_search_rules_by_hand():
    feature = torch.zeros(1, 1, 10, 10)
    feature[0, 0, :, 6:] = 1.0  # a step edge at column 6
    template = torch.ones(1, 3, 3)  # what lies right of the edge
    p, g = torch.tensor([4.0, 2.0]), torch.tensor([4.0, 9.0])
    ahead = line_search(feature, p, g, template, 1, 5.0, 1.0, loss_start=0.0, loss_end=0.0)
    assert ahead[0] == 4.0 and 2.0 < ahead[1] <= 7.0  # forward, at most 5 px, on the line
    assert torch.equal(line_search(feature, p, g, template, 1, 5.0, 1.0, loss_start=0.9, loss_end=0.8), p)
    back = line_search(feature, p, g, template, 1, 2.0, 1.0, loss_start=0.5, loss_end=0.9)
    assert back[0] == 4.0  # backed off and searched twice the range, still on the line
    assert template_weight(0.0, 1.0) > 0.5 > template_weight(1.0, 1.0)  # a kept look updates the template more


def test_optimize_text_moves_the_embedding_within_its_bound(tiny_model):
    result = _drag(tiny_model, optimize_text=True, text_lr=0.01)
    zt, t, text = _inputs(tiny_model)
    moved = float((result.text - text).abs().max())
    steps = len(result.history)
    assert moved > 0 and result.text.shape == text.shape
    assert moved <= 0.01 * steps * 1.01  # Adam moves each element at most about lr per step
    assert all(0 < s.text_distance <= 0.01 * (s.step + 1) * 1.01 for s in result.history)


def test_generated_features_are_weighted_as_the_reference():
    feat = torch.ones(2, 3, 4, 4)
    weighted = guided_features(feat, 7.5, True)
    c = 7.5 / 14.0
    assert torch.allclose(weighted[:, :3], torch.full((1, 3, 4, 4), 1 - c))
    assert torch.allclose(weighted[:, 3:], torch.full((1, 3, 4, 4), c))
    assert torch.equal(guided_features(feat, 7.5, False), torch.ones(1, 6, 4, 4))


@pytest.mark.parametrize("changes", [{"tracking": "line_search"}, {"optimize_text": True},
                                     {"supervision": "anchored", "schedule": "alternating", "steps_per_timestep": 3}])
def test_every_variant_runs_through_the_session(tiny_model, blob_image, changes):
    settings = dataclasses.replace(FAST, drag=dataclasses.replace(FAST.drag, **changes))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.set_points([(16, 16, 40, 16)])
    edit = session.run()
    record = edit.to_record()
    assert record["settings"]["drag"] | changes == record["settings"]["drag"] and edit.image.shape == blob_image.shape
    assert (edit.drag.text is not None) == bool(changes.get("optimize_text"))
    assert session.run().drag is edit.drag  # and it is cached like any other drag


def test_the_views_make_sense_for_each_variant(tiny_model, blob_image):
    from dragnb.ui import plots

    def edit(**changes):
        settings = dataclasses.replace(FAST, drag=dataclasses.replace(FAST.drag, **changes))
        session = DragSession(tiny_model, blob_image, "a red disc", settings)
        session.set_points([(16, 16, 40, 16)])
        return session.run(keep_features=True)

    alternating = edit(schedule="alternating", steps_per_timestep=3)
    ts = sorted({s.t for s in alternating.drag.history}, reverse=True)
    fig = plots.tracking_heatmaps(alternating, steps=(1, 4))  # step 4 is at the second timestep
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert f"t={ts[0]}" in titles[0] and f"t={ts[1]}" in titles[1]
    with pytest.raises(ValueError, match="line search"):
        plots.tracking_heatmaps(edit(tracking="line_search"))
    assert plots.trajectories(edit(tracking="line_search")).axes and plots.loss_curves(alternating).axes
