"""Stage 4: DDIM denoising from the edited z_t back to an image, with reference-latent control (docs/method.md §4).

With control on, [original z_t, edited z_t] are denoised together as one batch and the edited branch's
decoder self-attention reads the original branch's keys and values (:mod:`dragnb.attention`).
With ``blend_outside_mask`` (an extension), the edited branch takes the original branch's latent outside the
editable mask after every step, so only the masked region is regenerated.

A drag method of the family (:mod:`dragnb.family`) may ask more of this stage through a :class:`Guide` that its
stage-3 result carries: RegionDrag copies inverted latents into the edited branch after each step, DragNoise
replaces the UNet's bottleneck for the edited branch. The paper's drag asks nothing (``guide=None``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .attention import reference_control
from .callbacks import Callback, DenoiseStep, notify
from .config import DenoiseSettings, InversionSettings
from .inversion import decode_latent, schedule
from .models import Model, classifier_free_guidance, run_unet


class Guide:
    """What a drag method asks of the denoising besides its start latent; this base asks nothing.

    ``unet_call(unet, step, edited_rows)``: a context around step ``step``'s UNet call (0-based, of the steps this
    denoising runs), where ``edited_rows`` are the batch rows of the edited branch (hooks on the UNet go here).
    ``after_step(step, edited, landed)``: the edited branch's latent (1, 4, h, w) after step ``step``, given the
    inversion's latent at the timestep it landed on (``landed``, None without an inversion).
    """

    def unet_call(self, unet, step: int, edited_rows: list[int]) -> AbstractContextManager:
        return nullcontext()

    def after_step(self, step: int, edited: torch.Tensor, landed: torch.Tensor | None) -> torch.Tensor:
        return edited


@dataclass
class DenoiseResult:
    """The edited image at the model's size, and its latent."""

    image: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    latent: torch.Tensor  # edited z_0 (1, 4, h, w)
    reference_image: torch.Tensor | None  # the original branch decoded, when control was on
    controlled_layers: list[str]  # attention layers under reference-latent control
    seconds: float = 0.0
    interrupted: bool = False
    key: str = ""
    region: np.ndarray | None = None  # set by the session: the image pixels (H, W) bool its blend let change, which
    # its paste uses too (the mask, or denoise.edit_region's moved region); None = everywhere
    kept: np.ndarray | None = None  # drag.image_copy "keep", every pair moved in the image: that image (H, W, 3)
    # uint8 at the input's size is the edit, and ``image`` its model-size copy (nothing was denoised)


@torch.no_grad()
def denoise(model: Model, zt_edited: torch.Tensor, zt_original: torch.Tensor | None, text: torch.Tensor,
            settings: DenoiseSettings = DenoiseSettings(), inversion: InversionSettings = InversionSettings(),
            guidance_scale: float = 1.0, progress: bool = False, callbacks: Sequence[Callback] = (),
            mask: torch.Tensor | None = None, t: int | None = None, edited_text: torch.Tensor | None = None,
            inverted: Sequence[torch.Tensor] | None = None, guide: Guide | None = None) -> DenoiseResult:
    """Run the remaining DDIM steps from ``zt_edited`` (1, 4, h, w); ``zt_original`` feeds the control.

    ``mask``: (1, 1, h, w) on the latent grid, 1 = editable (fractions in between blend in proportion:
    ``denoise.blend_mask``), used by ``settings.blend_outside_mask``.
    ``t``: the timestep both latents are at (default: the inversion's t); the schedule goes on from there (a drag
    that walked down the schedule took the first steps itself). ``edited_text``: the edited branch's own text
    embedding (the drag's ``text``), the original branch keeping ``text``. ``inverted``: the inversion's latents
    [z_0, ..., z_t] (``InversionResult.latents``), which ``blend_from="inversion"`` copies outside the mask after
    each step (ending at the encoded z_0) instead of the original branch's latent.
    ``guide``: what the drag method asks of this stage (:class:`Guide`; a family method's ``DragResult.guide``).
    ``callbacks`` get a :class:`~dragnb.callbacks.DenoiseStep` after every step; one returning True stops the
    denoising there (the image is decoded from that latent and marked ``interrupted``).
    """
    start = time.perf_counter()
    unet, scheduler = model.pipe.unet, model.pipe.scheduler
    control = settings.reference_control and zt_original is not None
    blend = settings.blend_outside_mask and zt_original is not None and mask is not None
    two_branches = control or blend
    keep = None if not blend else 1.0 - mask.to(zt_edited.device, zt_edited.dtype)  # (1, 1, h, w) 1 = protected
    z = torch.cat([zt_original, zt_edited]) if two_branches else zt_edited  # (B, 4, h, w), B = 2: [original, edited]
    guided = len(text) == 2
    if edited_text is None:
        text_b = text.repeat_interleave(len(z), dim=0)  # [uncond x B, cond x B] or [cond x B]
    else:  # per branch: [original, edited] within each half
        halves = zip(text.chunk(len(text)), edited_text.chunk(len(edited_text)))
        text_b = torch.cat([torch.cat([o, e] if two_branches else [e]) for o, e in halves])
    interrupted = False
    remaining = schedule(scheduler, inversion)  # from the inversion's t
    skip = 0 if t is None else _position(remaining, t)
    timesteps = remaining[skip:]
    from_inversion = settings.blend_from == "inversion" and inverted is not None
    edited_rows = [r for r in range(2 * len(z) if guided else len(z)) if r % len(z) == len(z) - 1]
    with (reference_control(unet, settings.control_blocks, branches=len(z)) if control else nullcontext()) as attn:
        try:
            for i, t_i in enumerate(tqdm(timesteps, desc="denoise", disable=not progress, leave=False)):
                if attn is not None:
                    attn.active = i + skip >= settings.control_from_step
                zz = torch.cat([z, z]) if guided else z
                with guide.unet_call(unet, i, edited_rows) if guide is not None else nullcontext():
                    eps = run_unet(unet, zz, t_i, text_b)
                if guided:
                    eps = classifier_free_guidance(eps, guidance_scale)
                z = scheduler.step(eps, t_i, z).prev_sample
                # the inversion's latent this step lands on: [z_0, ..., z_t] read backwards (only when read)
                wanted = inverted is not None and ((keep is not None and from_inversion) or guide is not None)
                landed = inverted[len(inverted) - 2 - skip - i].to(z.device, z.dtype) if wanted else None
                if keep is not None:
                    source = landed if from_inversion else z[:1]
                    z = torch.cat([z[:1], z[1:] * (1.0 - keep) + source * keep])
                if guide is not None:
                    z = torch.cat([z[:-1], guide.after_step(i, z[-1:], landed)])
                if notify(callbacks, DenoiseStep(step=i, total=len(timesteps), t=int(t_i))):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
    images = decode_latent(model, z)
    return DenoiseResult(image=images[-1:].float().cpu(), latent=z[-1:].cpu(),
                         reference_image=images[:1].float().cpu() if two_branches else None,
                         controlled_layers=[] if attn is None else list(attn.layers), seconds=time.perf_counter() - start,
                         interrupted=interrupted)


def _position(remaining: torch.Tensor, t: int) -> int:
    """Where timestep ``t`` is among the steps still to denoise from the inversion's t."""
    steps = [int(x) for x in remaining]
    if int(t) not in steps:
        raise ValueError(f"t={t} is not among the timesteps the denoising runs ({steps[0]} down to {steps[-1]})")
    return steps.index(int(t))
