"""The method variants as switches of the one loop (issue 9): each off reproduces the reference loop exactly, each
on shows its defining property on a small case."""

import dataclasses

import numpy as np
import pytest
import torch

from dragnb.config import DragSettings, InversionSettings, LoraSettings, Settings, reference_loop
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
                  round_points=True, weight_guided_features=True, hold_steps=0, track_from="initial",
                  start="latent")
    assert torch.equal(plain.latent, named.latent) and [s.loss for s in plain.history] == [s.loss for s in named.history]
    switched = DragSettings(supervision="anchored", schedule="alternating", tracking="line_search", optimize_text=True,
                            hold_steps=3, track_from="previous", start="copy", lr=0.5, r1=4)
    assert reference_loop(switched) == DragSettings(lr=0.5, r1=4)  # every switch off, the rest kept


def _reference_loop(model, zt, t, text, handles, targets, mask, s: DragSettings, steps: int):
    """The authors' drag loop (drag_utils.drag_diffusion_update) written out as they write it: integer slices for
    the source patch and the tracking window, their four-corner interpolation for the shifted patch, the 2-pixel
    checks, the rounded points, one Adam on the latent. Only the UNet and its feature tap are dragnb's."""
    from dragnb.features import unet_with_features

    scheduler = model.pipe.scheduler
    size = (zt.shape[-2] * model.vae_scale // 2, zt.shape[-1] * model.vae_scale // 2)  # feature_scale 0.5

    def features(z):
        eps, feat = unet_with_features(model.pipe.unet, z, t, text, s.feature_blocks, size)
        return feat, scheduler.step(eps, t, z).prev_sample

    def shifted_patch(feat, y, x, r):  # interpolate_feature_patch: the (2r+1)^2 patch at the fractional (y, x)
        y1, x1 = y - r, x - r
        y0f, x0f = torch.floor(y1).long(), torch.floor(x1).long()
        y1c, x1c = y0f + 1, x0f + 1
        n = 2 * r + 1
        wa, wb = (x1c.float() - x1) * (y1c.float() - y1), (x1c.float() - x1) * (y1 - y0f.float())
        wc, wd = (x1 - x0f.float()) * (y1c.float() - y1), (x1 - x0f.float()) * (y1 - y0f.float())
        ia, ib = feat[:, :, y0f:y0f + n, x0f:x0f + n], feat[:, :, y1c:y1c + n, x0f:x0f + n]
        ic, id_ = feat[:, :, y0f:y0f + n, x1c:x1c + n], feat[:, :, y1c:y1c + n, x1c:x1c + n]
        return ia * wa + ib * wb + ic * wc + id_ * wd

    with torch.no_grad():
        feat0, x_prev0 = features(zt)
    handles, targets = handles.round().clone(), targets.round()
    init = handles.clone()
    z = zt.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=s.lr)
    trajectory = []
    for step in range(steps):
        feat, x_prev = features(z)
        if step != 0:  # point_tracking
            with torch.no_grad():
                for i in range(len(handles)):
                    f0 = feat0[:, :, int(init[i][0]), int(init[i][1])]
                    r1_, r2_ = max(0, int(handles[i][0]) - s.r2), min(size[0], int(handles[i][0]) + s.r2 + 1)
                    c1_, c2_ = max(0, int(handles[i][1]) - s.r2), min(size[1], int(handles[i][1]) + s.r2 + 1)
                    dist = (f0[..., None, None] - feat[:, :, r1_:r2_, c1_:c2_]).abs().sum(dim=1)[0]
                    row, col = divmod(dist.argmin().item(), dist.shape[-1])
                    handles[i][0], handles[i][1] = r1_ + row, c1_ + col
        if all(float((h - g).norm()) < s.stop_distance for h, g in zip(handles, targets)):  # check_handle_reach_target
            break
        trajectory.append(handles.clone())
        loss = 0.0
        for h, g in zip(handles, targets):
            if (g - h).norm() < s.stop_distance:
                continue
            d = (g - h) / (g - h).norm()
            source = feat[:, :, int(h[0]) - s.r1:int(h[0]) + s.r1 + 1, int(h[1]) - s.r1:int(h[1]) + s.r1 + 1].detach()
            loss += ((2 * s.r1 + 1) ** 2) * torch.nn.functional.l1_loss(source, shifted_patch(feat, h[0] + d[0],
                                                                                              h[1] + d[1], s.r1))
        loss += s.lam * ((x_prev - x_prev0) * (1.0 - mask)).abs().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return z.detach(), trajectory


def test_the_defaults_are_the_authors_loop_written_out(tiny_model):
    """All switches off, drag() is the reference's loop: the same handles at every step, the same edited latent
    (up to float rounding: the shifted patch's four-corner weights are summed in another order)."""
    zt, t, text = _inputs(tiny_model)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2:14, 4:16] = 1.0
    settings = DragSettings(max_steps=8, lr=0.05)
    handles, targets = torch.tensor([[10.4, 9.6], [20.2, 12.0]]), torch.tensor([[10.0, 22.3], [21.0, 24.0]])
    ours = drag(tiny_model, zt, t, text, handles, targets, mask, settings, schedule_steps=20)
    theirs, trajectory = _reference_loop(tiny_model, zt, t, text, handles, targets, mask, settings, steps=8)
    assert len(ours.history) == len(trajectory) > 3
    assert [s.handles.tolist() for s in ours.history] == [h.tolist() for h in trajectory]
    torch.testing.assert_close(ours.latent, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours.latent, zt, atol=1e-3)  # and the latent did move


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


def test_anchored_source_term_is_constant_over_the_loop(tiny_model, monkeypatch):
    """In the loop itself: every iteration's motion term gets the same source patches, F_0(Ω(h_i^0)), while the
    reference's source patches, read from the current features, change as the latent does."""
    import dragnb.drag.supervision
    from dragnb.motion import bilinear_patch

    seen = []

    def spy(feature, handles, targets, r1, *args, **kwargs):
        anchors = args[2] if len(args) > 2 else kwargs.get("anchors")
        seen.append(anchors if anchors is not None else
                    torch.cat([bilinear_patch(feature, h.floor(), r1) for h in handles]).detach())
        return real(feature, handles, targets, r1, *args, **kwargs)

    real = dragnb.drag.supervision.motion_loss
    monkeypatch.setattr(dragnb.drag.supervision, "motion_loss", spy)
    _drag(tiny_model, supervision="anchored", max_steps=5)
    anchored, seen[:] = list(seen), []
    _drag(tiny_model, max_steps=5)
    assert len(anchored) == len(seen) == 5
    assert all(torch.equal(a, anchored[0]) for a in anchored)  # one source for every iteration
    assert not all(torch.allclose(r, seen[0]) for r in seen[1:])  # the reference's follows the latent
    torch.testing.assert_close(anchored[0], seen[0])  # both start from F_0 at h^0


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
    assert result.timesteps == sorted(set(ts), reverse=True) and result.t == ts[-1]
    zt, t, text = _inputs(tiny_model)
    assert result.original_latent.shape == zt.shape and not torch.equal(result.original_latent, zt)  # walked down
    session = DragSession(tiny_model, blob_image, "a red disc", dataclasses.replace(
        FAST, drag=dataclasses.replace(FAST.drag, schedule="alternating", steps_per_timestep=4)))
    session.set_points([(16, 16, 40, 16)])
    edit = session.run()
    assert edit.to_record()["drag_denoised_steps"] >= 1 and edit.image.shape == blob_image.shape
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
    assert all(0 < s.extras["text_distance"] <= 0.01 * (s.step + 1) * 1.01 for s in result.history)
    # the regulariser is what keeps c' near c: a strong one leaves it closer than none
    free, tied = (_drag(tiny_model, optimize_text=True, text_lr=0.01, text_lam=lam) for lam in (0.0, 1000.0))
    assert float((tied.text - text).abs().mean()) < 0.5 * float((free.text - text).abs().mean())


def test_generated_features_are_weighted_as_the_reference():
    feat = torch.ones(2, 3, 4, 4)
    weighted = guided_features(feat, 7.5, True)
    c = 7.5 / 14.0
    assert torch.allclose(weighted[:, :3], torch.full((1, 3, 4, 4), 1 - c))
    assert torch.allclose(weighted[:, 3:], torch.full((1, 3, 4, 4), c))
    assert torch.equal(guided_features(feat, 7.5, False), torch.ones(1, 6, 4, 4))


@pytest.mark.parametrize("changes", [{"tracking": "line_search"}, {"optimize_text": True},
                                     {"supervision": "anchored", "schedule": "alternating", "steps_per_timestep": 3},
                                     {"start": "copy"}])
def test_every_variant_runs_through_the_session(tiny_model, blob_image, changes):
    settings = dataclasses.replace(FAST, drag=dataclasses.replace(FAST.drag, **changes))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.set_points([(16, 16, 40, 16)])
    edit = session.run()
    record = edit.to_record()
    assert record["settings"]["drag"] | changes == record["settings"]["drag"] and edit.image.shape == blob_image.shape
    prompt_text = encode_prompt(tiny_model, "a red disc")
    assert torch.equal(edit.drag.text, prompt_text) != bool(changes.get("optimize_text"))  # c' only under DragText
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
    session = DragSession(tiny_model, blob_image, "a red disc", FAST)
    session.set_points([(16, 16, 40, 16)])
    session.run()
    assert session.run(keep_features=True).drag.history[1].features is not None  # cached without: run again
    searched = edit(tracking="line_search")
    fig = plots.tracking_heatmaps(searched, steps=(1, 2))  # the template distance around the point, the line
    assert len([ax for ax in fig.axes if ax.images]) == 2 and "T|" in fig.axes[0].get_title()
    from dragnb.tracking import template_distance

    step = searched.drag.history[1]
    row, col = (int(v) for v in searched.drag.history[0].handles[0])
    shown = fig.axes[0].images[0].get_array()
    reach = max(searched.settings.drag.r2, 5)  # the window reaches as far as one search: line_search_distance 5
    assert float(shown[min(row, reach), min(col, reach)]) == pytest.approx(float(template_distance(
        step.features, torch.tensor([float(row), float(col)]), step.extras["templates"][0], searched.settings.drag.r1)))
    assert plots.trajectories(edit(tracking="line_search")).axes
    curves = plots.loss_curves(alternating)  # a line and a label at each step down the schedule
    labels = [t.get_text() for t in curves.axes[0].texts]
    assert labels == [f"t={t}" for t in ts[1:]] and len(curves.axes[1].lines) > len(alternating.points.handles) + 1
    texted = plots.loss_curves(edit(optimize_text=True))
    assert len(texted.axes) == 3  # the text embedding's distance on its own axis


def test_predicted_frames_read_each_latent_at_its_own_timestep_and_text(tiny_model, blob_image):
    """The drag animation's x̂_0: each kept latent at the timestep it was optimised at (alternating walks down the
    schedule) and under the drag's own text (optimize_text), as the DDIM scheduler predicts x̂_0."""
    from dragnb.drag import predicted_frames
    from dragnb.images import from_model_tensor
    from dragnb.inversion import decode_latent

    settings = dataclasses.replace(FAST, drag=dataclasses.replace(
        FAST.drag, schedule="alternating", steps_per_timestep=3, max_steps=7, optimize_text=True, text_lr=0.1))
    session = DragSession(tiny_model, blob_image, "a red disc", settings)
    session.set_points([(16, 16, 40, 16)])
    edit = session.run(keep_latents=True)
    history = edit.drag.history
    assert len({s.t for s in history}) > 1
    frames = predicted_frames(tiny_model, edit.drag, edit.prompt, every=3)
    scheduler = tiny_model.pipe.scheduler
    scheduler.set_timesteps(settings.inversion.num_steps)
    with torch.no_grad():
        kept = [(s.t, s.latent) for s in history[::3]] + [(edit.drag.t, edit.drag.latent)]
        for (k, frame), (t, z) in zip(frames, kept):
            eps = tiny_model.pipe.unet(z, t, edit.drag.text).sample
            expected = from_model_tensor(decode_latent(tiny_model, scheduler.step(eps, t, z).pred_original_sample))
            assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1, k  # the same up to rounding
        plain_eps = tiny_model.pipe.unet(z, t, encode_prompt(tiny_model, edit.prompt)).sample
        plain = from_model_tensor(decode_latent(tiny_model, scheduler.step(plain_eps, t, z).pred_original_sample))
        assert np.abs(frame.astype(int) - plain.astype(int)).max() > 1  # the drag's own text c' made a difference
