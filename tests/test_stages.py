"""Each stage on the tiny random model: LoRA, inversion, features, drag, attention control, denoising."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, UNet2DConditionModel

from dragnb.attention import reference_control, self_attention_names
from dragnb.config import DenoiseSettings, DragSettings, InversionSettings, LoraSettings, Settings
from dragnb.denoise import denoise
from dragnb.drag import drag
from dragnb.features import features_only, tap_up_blocks, unet_with_features
from dragnb.generate import generate
from dragnb.images import mask_to_latent, to_model_tensor
from dragnb.inversion import denoise_latent, encode_image, inverse_scheduler, invert, schedule
from dragnb.lora import apply_lora, load_lora, remove_lora, save_lora, train_lora
from dragnb.models import encode_prompt
from dragnb.session import DragSession
from dragnb.testing import SD15_UNET_CONFIG


def test_lora_trains_saves_and_loads_in_diffusers(tiny_model, blob_image, tmp_path):
    image = to_model_tensor(blob_image, (64, 64))
    z, text = torch.randn(1, 4, 16, 16), encode_prompt(tiny_model, "a red disc")
    remove_lora(tiny_model.pipe)
    base = tiny_model.pipe.unet(z, 500, text).sample
    result = train_lora(tiny_model, image, "a red disc", LoraSettings(steps=6, lr=1e-2))
    tuned = tiny_model.pipe.unet(z, 500, text).sample
    assert len(result.losses) == 6 and not result.interrupted
    assert not torch.allclose(base, tuned, atol=1e-4)  # the adapter changes the UNet
    assert all(k.startswith("unet.") and ("lora" in k) for k in result.state_dict)
    save_lora(result, tmp_path / "lora")
    # diffusers' own loader reads the file and reproduces the adapter exactly
    remove_lora(tiny_model.pipe)
    tiny_model.pipe.load_lora_weights(tmp_path / "lora")
    torch.testing.assert_close(tiny_model.pipe.unet(z, 500, text).sample, tuned)
    remove_lora(tiny_model.pipe)
    apply_lora(tiny_model, dataclasses.replace(load_lora(tmp_path / "lora"), key="x"))
    torch.testing.assert_close(tiny_model.pipe.unet(z, 500, text).sample, tuned)
    remove_lora(tiny_model.pipe)
    torch.testing.assert_close(tiny_model.pipe.unet(z, 500, text).sample, base)


def test_lora_callback_stops(tiny_model, blob_image):
    result = train_lora(tiny_model, to_model_tensor(blob_image, (64, 64)), "", LoraSettings(steps=10),
                        callbacks=[lambda record: record.step == 2])
    assert len(result.losses) == 3 and result.interrupted
    remove_lora(tiny_model.pipe)


def test_inverse_step_is_diffusers_and_closed_form(tiny_model):
    scheduler = tiny_model.pipe.scheduler
    schedule(scheduler, InversionSettings())
    inverse = inverse_scheduler(scheduler, 50)
    assert isinstance(inverse, DDIMInverseScheduler)
    x, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    a = scheduler.alphas_cumprod
    for t_prev, t in [(None, 1), (1, 21), (661, 681)]:
        a_prev = a[0] if t_prev is None else a[t_prev]  # set_alpha_to_one=False: ᾱ before step 1 is ᾱ_0
        x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        expected = a[t].sqrt() * x0 + (1 - a[t]).sqrt() * eps
        torch.testing.assert_close(inverse.step(eps, t, x).prev_sample, expected)


def test_inversion_then_denoising_reconstructs(tiny_model, blob_image):
    remove_lora(tiny_model.pipe)
    assert encode_image(tiny_model, to_model_tensor(blob_image, (64, 64))).shape == (1, 4, 16, 16)
    z0 = torch.randn(1, 4, 16, 16)  # unit scale, as a trained VAE's scaled latents are
    text = encode_prompt(tiny_model, "a red disc")
    settings = InversionSettings()
    result = invert(tiny_model, z0, text, settings)
    assert len(result.latents) == 36 and result.t == 681 and result.timesteps[0] == 1
    assert not torch.allclose(result.zt, z0)
    back = denoise_latent(tiny_model, result.zt, text, settings)
    error = (back - z0).pow(2).mean() / z0.pow(2).mean()
    assert error < 5e-3, f"relative reconstruction error {error:.2e}"  # random UNet: ~1e-3 (29 dB)
    short = InversionSettings(strength=0.3)
    back_short = denoise_latent(tiny_model, invert(tiny_model, z0, text, short).zt, text, short)
    assert (back_short - z0).pow(2).mean() / z0.pow(2).mean() < error  # fewer steps, smaller error


def test_features_through_hooks_on_tiny_unet(tiny_model):
    unet = tiny_model.pipe.unet
    z, text = torch.randn(1, 4, 16, 16), encode_prompt(tiny_model, "x")
    eps, feat = unet_with_features(unet, z, 681, text, (-2,), (32, 32))
    assert eps.shape == (1, 4, 16, 16) and feat.shape == (1, 64, 32, 32)  # up_blocks[0] of 2: 64 channels
    torch.testing.assert_close(eps, unet(z, 681, text).sample)  # hooks do not change the output
    torch.testing.assert_close(features_only(unet, z, 681, text, (-2,), (32, 32)), feat)
    both = features_only(unet, z, 681, text, (0, 1), (8, 8))
    assert both.shape == (1, 96, 8, 8)
    assert all(not m._forward_hooks for m in unet.up_blocks)  # hooks removed
    with pytest.raises(ValueError, match="up blocks 0..1"):
        features_only(unet, z, 681, text, (5,), (8, 8))


def test_sd15_unet_config_feature_block():
    """The real SD 1.5 UNet architecture (random weights) at a 16x16 latent: up_blocks[2] = 640 channels, 1/8."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
    z, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 768)
    with torch.no_grad(), tap_up_blocks(unet, (-2,)) as captured:
        unet(z, 681, text)
    assert captured[2].shape == (1, 640, 16, 16)  # -2 resolves to up_blocks[2]; latent size = image / 8
    with torch.no_grad():
        feat = features_only(unet, z, 681, text, (-2,), (64, 64))  # image 128 -> supervision grid 64
    assert feat.shape == (1, 640, 64, 64)
    assert len(self_attention_names(unet, (-2, -1))) == 6  # up_blocks[2], [3]: 3 transformers each


def _drag_inputs(tiny_model):
    torch.manual_seed(0)
    zt = torch.randn(1, 4, 16, 16)
    return zt, 681, encode_prompt(tiny_model, "x")


def test_drag_reports_each_step_and_does_not_mutate(tiny_model):
    remove_lora(tiny_model.pipe)
    zt, t, text = _drag_inputs(tiny_model)
    before = zt.clone()
    handles, targets = torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]])
    seen = []
    result = drag(tiny_model, zt, t, text, handles, targets, None, DragSettings(max_steps=4, lr=0.05),
                  callbacks=[seen.append], keep_latents=True)
    assert torch.equal(zt, before) and handles.tolist() == [[10.0, 10.0]]
    assert [s.step for s in seen] == [0, 1, 2, 3] and result.history == seen
    assert result.stop_reason == "max_steps" and not result.mask_used
    assert all(s.mask_loss == 0.0 and s.motion_loss > 0 for s in seen)
    assert torch.equal(seen[0].latent, zt) and not torch.equal(result.latent, zt)
    assert result.trajectory.shape == (5, 1, 2) and result.feature_size == (32, 32)


def test_drag_mask_term_and_callback_stop(tiny_model):
    zt, t, text = _drag_inputs(tiny_model)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2:8, 2:12] = 1
    result = drag(tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), mask,
                  DragSettings(max_steps=10, lr=0.05), callbacks=[lambda s: s.step == 2])
    assert result.stop_reason == "callback" and len(result.history) == 3 and result.mask_used
    assert result.history[0].mask_loss == 0.0 and result.history[2].mask_loss > 0


def test_drag_stops_when_reached(tiny_model):
    zt, t, text = _drag_inputs(tiny_model)
    result = drag(tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 11.0]]), None,
                  DragSettings(max_steps=10))
    assert result.stop_reason == "reached" and result.history == [] and torch.equal(result.latent, zt)


def test_drag_non_finite_returns_last_good_state(tiny_model):
    zt, t, text = _drag_inputs(tiny_model)
    unet = tiny_model.pipe.unet
    calls = {"n": 0}

    def poison(module, args, output):  # the 4th UNet call (3rd iteration) produces NaN features
        calls["n"] += 1
        if calls["n"] == 4:
            return output * float("nan")

    handle = unet.up_blocks[0].register_forward_hook(poison)
    try:
        seen = []
        result = drag(tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), None,
                      DragSettings(max_steps=10, lr=0.05), callbacks=[seen.append], keep_latents=True)
    finally:
        handle.remove()
    assert result.stop_reason == "non-finite" and len(result.history) == 2
    assert torch.isfinite(result.latent).all() and not torch.equal(result.latent, zt)


def test_drag_ctrl_c_returns_partial(tiny_model):
    zt, t, text = _drag_inputs(tiny_model)

    def interrupt(step):
        if step.step == 1:
            raise KeyboardInterrupt

    result = drag(tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), None,
                  DragSettings(max_steps=10, lr=0.05), callbacks=[interrupt])
    assert result.stop_reason == "interrupted" and len(result.history) == 2 and torch.isfinite(result.latent).all()


def test_generated_mode_with_guidance(tiny_model):
    gen = generate(tiny_model, "a red disc", guidance_scale=3.0, num_steps=10, seed=1)
    assert len(gen.latents) == 11 and gen.image.shape == (1, 3, 64, 64)
    settings = InversionSettings(num_steps=10, strength=0.6)
    zt, t = gen.latent_at(settings)
    assert t == gen.timesteps[4]
    text = encode_prompt(tiny_model, "a red disc", 3.0)
    result = drag(tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), None,
                  DragSettings(max_steps=2), guidance_scale=3.0, keep_features=True, schedule_steps=10)
    assert result.history[0].features.shape[1] == 128  # [uncond | cond] features concatenated


def test_reference_control_processors(tiny_model):
    unet = tiny_model.pipe.unet
    before = dict(unet.attn_processors)
    z, text = torch.randn(2, 4, 16, 16), encode_prompt(tiny_model, "x").repeat(2, 1, 1)
    with torch.no_grad():
        plain = unet(z, 500, text).sample
        with reference_control(unet, (-2, -1)) as control:
            controlled = unet(z, 500, text).sample
            same = unet(torch.cat([z[:1], z[:1]]), 500, text).sample
            control.active = False  # switched off through the processor: plain self-attention
            off = unet(z, 500, text).sample
    names = control.layers
    torch.testing.assert_close(off, plain, atol=1e-5, rtol=1e-4)
    assert names and all(".attn1." in n and n.startswith("up_blocks.") for n in names)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}
    torch.testing.assert_close(controlled[0], plain[0], atol=1e-5, rtol=1e-4)  # original branch untouched
    assert not torch.allclose(controlled[1], plain[1], atol=1e-5)  # edited branch reads the original's K/V
    torch.testing.assert_close(same[0], same[1], atol=1e-5, rtol=1e-4)


def test_denoise_with_and_without_control(tiny_model):
    zt_o = torch.randn(1, 4, 16, 16)
    zt_e = zt_o + 0.3 * torch.randn(1, 4, 16, 16)
    text = encode_prompt(tiny_model, "x")
    inv = InversionSettings(num_steps=10)
    on = denoise(tiny_model, zt_e, zt_o, text, DenoiseSettings(), inv)
    off = denoise(tiny_model, zt_e, zt_o, text, DenoiseSettings(reference_control=False), inv)
    assert on.image.shape == (1, 3, 64, 64) and on.reference_image is not None and off.reference_image is None
    assert on.controlled_layers and not off.controlled_layers
    assert not torch.allclose(on.latent, off.latent)
    torch.testing.assert_close(off.latent, denoise_latent(tiny_model, zt_e, text, inv))


def test_blending_outside_the_mask_keeps_the_unedited_branch_there(tiny_model):
    zt_o = torch.randn(1, 4, 16, 16)
    zt_e = zt_o + 0.5 * torch.randn(1, 4, 16, 16)
    text = encode_prompt(tiny_model, "x")
    inv = InversionSettings(num_steps=10)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:10, 6:12] = 1.0  # editable box
    settings = DenoiseSettings(reference_control=False, blend_outside_mask=True)
    blended = denoise(tiny_model, zt_e, zt_o, text, settings, inv, mask=mask)
    plain = denoise(tiny_model, zt_e, zt_o, text, DenoiseSettings(reference_control=False), inv)
    original = denoise_latent(tiny_model, zt_o, text, inv)
    outside, inside = mask[0, 0] == 0, mask[0, 0] == 1
    torch.testing.assert_close(blended.latent[..., outside], original[..., outside], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(blended.latent[..., inside], original[..., inside], atol=1e-2)  # the edit stays
    assert not torch.allclose(plain.latent[..., outside], original[..., outside], atol=1e-2)  # drift without it
    everywhere = denoise(tiny_model, zt_e, zt_o, text, settings, inv, mask=torch.ones(1, 1, 16, 16))
    torch.testing.assert_close(everywhere.latent, plain.latent, atol=1e-5, rtol=1e-4)  # all editable: no change


def _blended_session(model, image, mask) -> DragSession:
    """A short drag on ``image`` whose denoising blends the inversion's latents outside ``mask``."""
    settings = Settings(lora=LoraSettings(steps=0), inversion=InversionSettings(num_steps=10),
                        drag=DragSettings(max_steps=4, lr=0.05),
                        denoise=DenoiseSettings(blend_outside_mask=True, blend_from="inversion"))
    session = DragSession(model, image, "a red disc", settings)
    session.set_points([(20, 20, 36, 20)])
    session.set_mask(mask)
    return session


def test_blending_from_the_inversion_ends_outside_the_mask_on_the_encoded_latent(tiny_model, blob_image):
    """blend_from="inversion": outside the mask the edited latent follows the inversion's own latents, so after
    the last step it is the encoded z_0 there, bit for bit; inside, the edit stays."""
    mask = np.zeros(blob_image.shape[:2], bool)
    mask[8:40, 8:48] = True
    session = _blended_session(tiny_model, blob_image, mask)
    settings = session.settings
    edit = session.run()
    keep = mask_to_latent(mask, (16, 16))[0, 0] == 0
    z0 = edit.inversion.z0.cpu()
    assert torch.equal(edit.denoise.latent[..., keep], z0[..., keep])
    assert not torch.allclose(edit.denoise.latent[..., ~keep], z0[..., ~keep], atol=1e-3)
    session.settings = dataclasses.replace(settings, denoise=dataclasses.replace(settings.denoise, blend_from="branch"))
    branch = session.run()
    assert not torch.equal(branch.denoise.latent[..., keep], z0[..., keep])  # the branch drifts from z_0


def test_blend_mask_modes_bring_the_mask_to_the_latent_grid_as_they_say(tiny_model, blob_image):
    """denoise.blend_mask: cells the mask does not touch end on z_0 in every mode; "area" blends a cell the mask
    boundary crosses in proportion, so it differs from both the encoded z_0 and the nearest-mask result there."""
    mask = np.zeros(blob_image.shape[:2], bool)
    mask[9:39, 9:47] = True  # edges inside latent cells (4 px each)
    session = _blended_session(tiny_model, blob_image, mask)
    settings = session.settings
    results = {}
    for mode in ("nearest", "centre", "inside", "area"):
        session.settings = dataclasses.replace(settings, denoise=dataclasses.replace(settings.denoise, blend_mask=mode))
        results[mode] = session.run()
        assert results[mode].drag is results["nearest"].drag  # only the denoising reruns
    z0 = results["nearest"].inversion.z0.cpu()
    area = mask_to_latent(mask, (16, 16), "area")[0, 0]
    untouched, partial = area == 0, (area > 0) & (area < 1)
    for mode, edit in results.items():
        assert torch.equal(edit.denoise.latent[..., untouched], z0[..., untouched]), mode
    soft = results["area"].denoise.latent[..., partial]
    assert not torch.allclose(soft, z0[..., partial], atol=1e-4)
    assert not torch.allclose(soft, results["nearest"].denoise.latent[..., partial], atol=1e-4)
    assert results["area"].to_record()["settings"]["denoise"]["blend_mask"] == "area"


def test_paper_variants_run(tiny_model):
    """The seed paper's variants: plain gradient step, paper normalisation, tracking from the last handle."""
    zt, t, text = _drag_inputs(tiny_model)
    args = (tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), None)
    ref = drag(*args, DragSettings(max_steps=2, lr=0.05))
    paper = drag(*args, DragSettings(max_steps=2, lr=0.05, optimizer="sgd", loss_reduction="paper",
                                     track_from="previous"))
    assert len(paper.history) == 2
    assert paper.history[0].motion_loss == pytest.approx(ref.history[0].motion_loss * 64, rel=1e-4)  # x C
    assert not torch.allclose(paper.latent, ref.latent)


# ---- no hidden state --------------------------------------------------------------------------------------
def test_drag_sets_the_ddim_step_it_uses(tiny_model):
    """x̂_{t-1} comes from the schedule drag() is given, whatever the scheduler was left at by its caller."""
    remove_lora(tiny_model.pipe)
    zt, t, text = _drag_inputs(tiny_model)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :8] = 1  # the left half editable: the mask term weighs the right half
    args = (tiny_model, zt, t, text, torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 20.0]]), mask,
            DragSettings(max_steps=3, lr=0.05, lam=1.0))
    runs = []
    for left_at in (7, 50):
        tiny_model.pipe.scheduler.set_timesteps(left_at)
        runs.append(drag(*args, schedule_steps=50))
    assert torch.equal(runs[0].latent, runs[1].latent)
    other = drag(*args, schedule_steps=10)  # a different schedule: a different x̂_{t-1}, so a different mask term
    assert [s.mask_loss for s in other.history] != [s.mask_loss for s in runs[0].history]


def test_the_active_lora_is_the_unets_own_adapter(tiny_model, blob_image):
    from dragnb.lora import active_adapter, adapter_name

    image = to_model_tensor(blob_image, (64, 64))
    lora = train_lora(tiny_model, image, "", LoraSettings(steps=2), key="abc")
    assert active_adapter(tiny_model.pipe.unet) == adapter_name("abc") and lora.key == "abc"
    assert not hasattr(tiny_model.pipe.unet, "_dragnb_lora_key")
    apply_lora(tiny_model, None)
    assert active_adapter(tiny_model.pipe.unet) is None
    half = train_lora(tiny_model, image, "", LoraSettings(steps=5), callbacks=[lambda r: r.step == 1], key="abc")
    assert half.interrupted and half.key == "" and active_adapter(tiny_model.pipe.unet) is None  # not left on
    apply_lora(tiny_model, lora)
    assert active_adapter(tiny_model.pipe.unet) == adapter_name("abc")
    remove_lora(tiny_model.pipe)


def test_inversion_guidance_setting_takes_effect(tiny_model, blob_image):
    from dragnb.session import DragSession

    plain = DragSession(tiny_model, blob_image, "a red disc", dataclasses.replace(
        tiny_model.settings, lora=LoraSettings(steps=0), inversion=InversionSettings(num_steps=10)))
    guided = DragSession(tiny_model, blob_image, "a red disc", dataclasses.replace(
        plain.settings, inversion=InversionSettings(num_steps=10, guidance_scale=3.0)))
    assert not torch.equal(plain.run_inversion().zt, guided.run_inversion().zt)
