"""Precision and memory options (issue 13), checked on the CPU: checkpointing gives the same gradients, bf16 runs,
fp16 autocast is refused off CUDA with one line, the VAE options are switched for a stage and restored, the record
says; a fused LoRA is the adapter's function in plain layers, and the adapter is put back unchanged; bf16 and fp16
weights run a whole edit with fp32 latents around the UNet, and a model in another dtype than the settings name is
refused."""

import dataclasses

import numpy as np
import pytest
import torch

from dragnb.compute import checkpointing, grad_scaler, vae_memory
from dragnb.config import ComputeSettings, DragSettings, InversionSettings, LoraSettings, Settings
from dragnb.drag import drag
from dragnb.errors import InputError, SettingError
from dragnb.images import psnr, to_model_tensor
from dragnb.lora import fused_lora, remove_lora, train_lora
from dragnb.models import encode_prompt, load_model
from dragnb.session import DragSession

FAST = Settings(lora=LoraSettings(steps=2), inversion=InversionSettings(num_steps=10),
                drag=DragSettings(max_steps=3, lr=0.05))


def _drag(tiny_model, compute):
    remove_lora(tiny_model.pipe)
    torch.manual_seed(0)
    zt = torch.randn(1, 4, 16, 16)
    tiny_model.pipe.scheduler.set_timesteps(50)
    t = int(tiny_model.pipe.scheduler.timesteps[15])
    return drag(tiny_model, zt, t, encode_prompt(tiny_model, "x"), torch.tensor([[10.0, 10.0]]),
                torch.tensor([[10.0, 20.0]]), None, DragSettings(max_steps=3, lr=0.05), compute=compute)


def test_gradient_checkpointing_gives_the_same_drag(tiny_model):
    plain = _drag(tiny_model, ComputeSettings())
    checkpointed = _drag(tiny_model, ComputeSettings(gradient_checkpointing=True))
    torch.testing.assert_close(checkpointed.latent, plain.latent, atol=1e-6, rtol=1e-5)
    assert [s.handles.tolist() for s in checkpointed.history] == [s.handles.tolist() for s in plain.history]
    assert not tiny_model.pipe.unet.is_gradient_checkpointing  # restored after the stage


def test_bf16_autocast_runs_on_the_cpu(tiny_model, blob_image):
    bf16 = _drag(tiny_model, ComputeSettings(autocast="bf16"))
    fp32 = _drag(tiny_model, ComputeSettings())
    assert torch.isfinite(bf16.latent).all() and len(bf16.history) == 3
    assert not torch.equal(bf16.latent, fp32.latent)  # it did compute in bf16
    lora = train_lora(tiny_model, to_model_tensor(blob_image, (64, 64)), "", LoraSettings(steps=2),
                      compute=ComputeSettings(autocast="bf16", gradient_checkpointing=True))
    assert len(lora.losses) == 2 and all(torch.isfinite(torch.tensor(lora.losses)))
    remove_lora(tiny_model.pipe)


def test_fp16_needs_cuda_and_says_so(tiny_model, blob_image):
    bad = dataclasses.replace(FAST, compute=ComputeSettings(autocast="fp16"))
    if tiny_model.device.type != "cuda":
        with pytest.raises(SettingError, match="compute.autocast: got 'fp16'; needs CUDA"):
            DragSession(tiny_model, blob_image, "", bad)


def test_vae_options_hold_for_a_stage_and_are_restored(tiny_model, blob_image):
    vae = tiny_model.pipe.vae
    with vae_memory(vae, ComputeSettings(vae_slicing=True, vae_tiling=True)):
        assert vae.use_slicing and vae.use_tiling
    assert not vae.use_slicing and not vae.use_tiling
    with checkpointing(tiny_model.pipe.unet, True):
        assert tiny_model.pipe.unet.is_gradient_checkpointing
    assert not tiny_model.pipe.unet.is_gradient_checkpointing
    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(
        FAST, compute=ComputeSettings(vae_slicing=True, gradient_checkpointing=True)))
    session.set_points([(16, 16, 40, 16)])
    edit = session.run()
    assert edit.to_record()["settings"]["compute"] == {"autocast": "off", "gradient_checkpointing": True,
                                                       "vae_slicing": True, "vae_tiling": False, "fuse_lora": False,
                                                       "weights": "fp32"}
    other = DragSession(tiny_model, blob_image, "", FAST)
    assert other._keys()["lora"] != session._keys()["lora"]  # compute options are part of every cache key


def test_fused_lora_is_the_adapter_folded_in_and_is_put_back(tiny_model, blob_image):
    unet = tiny_model.pipe.unet
    train_lora(tiny_model, to_model_tensor(blob_image, (64, 64)), "", LoraSettings(steps=3, lr=1e-2))
    torch.manual_seed(0)
    z, text = torch.randn(1, 4, 16, 16), encode_prompt(tiny_model, "x")
    with torch.no_grad():
        adapter = unet(z, 500, text).sample
        remove_lora(tiny_model.pipe)
        base = unet(z, 500, text).sample
    train_lora(tiny_model, to_model_tensor(blob_image, (64, 64)), "", LoraSettings(steps=3, lr=1e-2))  # the same again
    before = {name: id(m) for name, m in unet.named_modules()}
    with torch.no_grad(), fused_lora(unet) as n:
        assert n > 0 and not any("lora_" in name for name, _ in unet.named_modules())
        fused = unet(z, 500, text).sample
    torch.testing.assert_close(fused, adapter, atol=1e-5, rtol=1e-4)  # the same function ...
    assert (fused - base).abs().max() > 1e-3  # ... which is not the base model's
    assert {name: id(m) for name, m in unet.named_modules()} == before  # every adapted layer back, unchanged
    with torch.no_grad():
        torch.testing.assert_close(unet(z, 500, text).sample, adapter, atol=0, rtol=0)
    remove_lora(tiny_model.pipe)


def test_fuse_lora_in_a_session_gives_the_unfused_edit_up_to_rounding(tiny_model, blob_image):
    edits = {}
    for fuse in (False, True):
        session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, compute=ComputeSettings(fuse_lora=fuse)))
        session.set_points([(16, 16, 40, 16)])
        edits[fuse] = session.run()
    plain, fused = edits[False], edits[True]
    torch.testing.assert_close(fused.inversion.zt, plain.inversion.zt, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fused.drag.latent, plain.drag.latent, atol=1e-3, rtol=1e-3)
    assert abs(fused.image.astype(int) - plain.image.astype(int)).max() <= 2
    assert fused.to_record()["settings"]["compute"]["fuse_lora"] is True
    assert any("lora_" in n for n, _ in tiny_model.pipe.unet.named_modules())  # the adapter itself stays on


@pytest.mark.parametrize("weights", ["bf16", "fp16"])
def test_weights_in_half_precision_run_a_whole_edit(tiny_dir, tiny_model, blob_image, tmp_path, weights):
    """compute.weights: the model loads in that dtype, its settings say so, every stage runs with fp32 latents,
    losses and adapters around the UNet (fp16 with loss scaling), the record and the cache keys carry it."""
    half = load_model(tiny_dir, device="cpu", dtype=weights)
    assert half.pipe.unet.dtype == half.pipe.vae.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[weights]
    assert half.settings.compute.weights == weights
    assert grad_scaler(ComputeSettings(), half.device, half.pipe.unet.dtype).is_enabled() == (weights == "fp16")
    edits = {}
    for name, model in (("fp32", tiny_model), (weights, half)):
        remove_lora(model.pipe)
        session = DragSession(model, blob_image, "", dataclasses.replace(FAST, compute=model.settings.compute),
                              cache_dir=tmp_path)
        session.set_points([(16, 16, 40, 16)])
        edits[name] = session.run()
    edit, plain = edits[weights], edits["fp32"]
    assert edit.origin["lora"] == "computed"  # the fp32 run's cached LoRA is not taken for this one
    assert edit.to_record()["settings"]["compute"]["weights"] == weights
    assert all(v.dtype == torch.float32 for v in edit.lora.state_dict.values())
    assert edit.inversion.zt.dtype == edit.drag.latent.dtype == torch.float32
    assert all(np.isfinite(s.loss) for s in edit.drag.history) and len(edit.drag.history) == 3
    assert not np.array_equal(edit.image, plain.image)  # it did compute in half precision ...
    # ... the same edit in other digits: z_t within a few %, the image far nearer the fp32 edit than to its source
    # (on this random model bf16 gives 3 % and 20.7 dB, fp16 0.4 % and 30 dB, against 13.7 dB from the source)
    assert float((edit.inversion.zt - plain.inversion.zt).norm() / plain.inversion.zt.norm()) < 0.1
    assert psnr(edit.image, plain.image) > psnr(plain.image, blob_image) + 5
    again = DragSession(half, blob_image, "", dataclasses.replace(FAST, compute=half.settings.compute),
                        cache_dir=tmp_path)
    again.set_points([(16, 16, 40, 16)])
    remove_lora(half.pipe)
    restored = again.run()  # the LoRA and the inversion from the disk cache: the adapter back in fp32
    assert restored.origin["lora"] == "disk"
    assert all(p.dtype == torch.float32 for n, p in half.pipe.unet.named_parameters() if "lora_" in n)
    assert np.array_equal(restored.image, edit.image)
    remove_lora(half.pipe)


def test_weights_other_than_the_models_are_refused(tiny_model, tiny_dir, blob_image):
    bad = dataclasses.replace(FAST, compute=ComputeSettings(weights="bf16"))
    with pytest.raises(SettingError, match=r"compute.weights: got 'bf16'; this model's weights are fp32: set "
                                           r"compute.weights=fp32, or load the model in that dtype"):
        DragSession(tiny_model, blob_image, "", bad)
    with pytest.raises(InputError, match=r"dtype: 'fp8' is not a weights dtype; use one of fp32, fp16, bf16"):
        load_model(tiny_dir, device="cpu", dtype="fp8")
    wide = load_model(tiny_dir, device="cpu")
    wide.pipe.to(torch.float64)
    with pytest.raises(InputError, match=r"model: its weights are torch.float64; dragnb runs fp32, fp16 or bf16"):
        DragSession(wide, blob_image, "", FAST)
