"""How the UNet and the VAE compute: precision and memory (``Settings.compute``), never what they compute.

* ``autocast``: the UNet forward of the drag and of the LoRA under ``torch.autocast`` (fp16 with a gradient scaler
  on CUDA, the reference's choice; bf16 on any device); the latent, ε, the losses and the optimiser stay fp32.
* ``gradient_checkpointing``: the UNet recomputes its activations in the backward pass instead of keeping them
  (diffusers' own checkpointing): less memory for the same gradients.
* ``vae_slicing`` / ``vae_tiling``: diffusers' VAE slicing (one image of a batch at a time) and tiling
  (overlapping tiles, for images larger than the model's resolution).
* ``weights``: the dtype the model's weights are held in (fp32, fp16, bf16), fixed when the model loads
  (:func:`dragnb.models.load_model`); every UNet call casts its inputs to it and returns fp32 (:func:`dragnb.models.
  run_unet`), so the latents, the losses and the optimisers stay fp32. fp16 weights train and drag with loss scaling.
* ``fuse_lora``: inversion, drag and denoising run with the LoRA folded into the weights
  (:func:`dragnb.lora.fused_lora`): the bare UNet's cost, the same function up to rounding.

Each is a context manager that switches the option on for one stage and restores the model afterwards, so
no setting lingers on a shared model.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from .config import ComputeSettings

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHTS = {"fp32": torch.float32, **DTYPES}  # compute.weights -> the dtype the model's weights are held in


def weights_name(dtype: torch.dtype) -> str:
    """The ``compute.weights`` name of a weights dtype ("fp32", "fp16", "bf16")."""
    for name, known in WEIGHTS.items():
        if known == dtype:
            return name
    raise ValueError(f"weights dtype {dtype} is none of {', '.join(WEIGHTS)}")


def unsupported(compute: ComputeSettings, device: torch.device) -> str | None:
    """Why ``compute`` cannot run on ``device`` (None: it can). fp16 autocast is the reference's CUDA mixed precision."""
    if compute.autocast == "fp16" and device.type != "cuda":
        return f"needs CUDA (the model is on {device.type}); use bf16 or off"
    return None


def require_supported(compute: ComputeSettings, device: torch.device) -> None:
    """:func:`unsupported` as an error, for the stages called outside a session (which checks it up front)."""
    reason = unsupported(compute, device)
    if reason is not None:
        raise ValueError(f"compute.autocast={compute.autocast} {reason}")


def autocast(compute: ComputeSettings, device: torch.device):
    """The autocast context of ``compute.autocast`` on ``device`` (a no-op for "off")."""
    if compute.autocast == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[compute.autocast])


def grad_scaler(compute: ComputeSettings, device: torch.device,
                held: torch.dtype = torch.float32) -> torch.amp.GradScaler:
    """The one loss-scaling path: fp16 gradients need loss scaling (the reference's GradScaler), under fp16 autocast
    or when the weights are held in fp16 (``held``: the UNet's weights dtype, whatever the settings say); for bf16
    and fp32 the scaler is disabled, and its ``scale``, ``step`` and ``update`` are a plain backward and step."""
    return torch.amp.GradScaler(device.type, enabled=compute.autocast == "fp16" or held == torch.float16)


@contextmanager
def checkpointing(unet, on: bool):
    """UNet gradient checkpointing on for the block, restored after."""
    was = bool(getattr(unet, "is_gradient_checkpointing", False))
    if on and not was:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if on and not was:
            unet.disable_gradient_checkpointing()


@contextmanager
def vae_memory(vae, compute: ComputeSettings):
    """VAE slicing and tiling as ``compute`` asks, for the block, restored after."""
    before = (bool(getattr(vae, "use_slicing", False)), bool(getattr(vae, "use_tiling", False)))
    vae.enable_slicing() if compute.vae_slicing else vae.disable_slicing()
    vae.enable_tiling() if compute.vae_tiling else vae.disable_tiling()
    try:
        yield
    finally:
        vae.enable_slicing() if before[0] else vae.disable_slicing()
        vae.enable_tiling() if before[1] else vae.disable_tiling()
