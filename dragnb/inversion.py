"""Stage 2: DDIM inversion of the image latent z_0 to the optimised step z_t (docs/method.md §2.2).

Notation (as diffusers' scheduling_ddim.py): ``t`` timestep, ``ᾱ_t`` = ``alphas_cumprod[t]``,
ε = UNet noise prediction. One inverse step from t_prev to t (deterministic DDIM, η = 0):
    x̂_0 = (x_{t_prev} - sqrt(1 - ᾱ_{t_prev}) ε(x_{t_prev}, t)) / sqrt(ᾱ_{t_prev})
    x_t = sqrt(ᾱ_t) x̂_0 + sqrt(1 - ᾱ_t) ε
with ᾱ before the first step = ``alphas_cumprod[0]`` (``set_alpha_to_one=False``), exactly diffusers'
``DDIMInverseScheduler.step`` and the reference code's ``inv_step``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from tqdm.auto import tqdm

from .callbacks import Callback, InversionStep, notify
from .config import InversionSettings
from .images import from_model_tensor, model_size, psnr, to_model_tensor, to_rgb_array
from .models import Model, classifier_free_guidance, encode_prompt, run_unet


@dataclass
class InversionResult:
    """Every latent of the inversion, z_0 first."""

    latents: list[torch.Tensor]  # [z_0, z_{t_1}, ..., z_t], each (1, 4, h, w)
    timesteps: list[int]  # timestep of each latent after z_0 (z_0 itself is "before the first step")
    seconds: float = 0.0
    interrupted: bool = False
    key: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def z0(self) -> torch.Tensor:
        return self.latents[0]

    @property
    def zt(self) -> torch.Tensor:
        """The inverted latent z_t that the drag optimises."""
        return self.latents[-1]

    @property
    def t(self) -> int:
        """Timestep of z_t (681 for SD 1.5 at strength 0.7)."""
        return self.timesteps[-1]


@torch.no_grad()
def encode_image(model: Model, image: torch.Tensor) -> torch.Tensor:
    """z_0 = mean of the VAE posterior x scaling factor. image: (1, 3, H, W) in [-1, 1] -> (1, 4, H/f, W/f), fp32."""
    vae = model.pipe.vae
    return vae.encode(image.to(model.device, vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latent(model: Model, z: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) latent -> (B, 3, H, W) image in [-1, 1], fp32."""
    vae = model.pipe.vae
    return vae.decode(z.to(vae.dtype) / vae.config.scaling_factor).sample.float().clamp(-1, 1)


def schedule(scheduler: DDIMScheduler, settings: InversionSettings) -> torch.Tensor:
    """Set the DDIM schedule and return the timesteps still to denoise from z_t (first = t)."""
    scheduler.set_timesteps(settings.num_steps)
    return scheduler.timesteps[settings.num_steps - settings.inverted_steps:]


def inverse_scheduler(scheduler: DDIMScheduler, num_steps: int) -> DDIMInverseScheduler:
    """diffusers' inverse DDIM with the forward scheduler's betas and ᾱ before the first step = ᾱ_0."""
    inverse = DDIMInverseScheduler.from_config(scheduler.config, set_alpha_to_one=False)
    inverse.set_timesteps(num_steps)
    return inverse


def guided_noise(model: Model, z: torch.Tensor, t, text: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """ε with classifier-free guidance when ``text`` holds [uncond, cond]. z: (1, 4, h, w)."""
    if len(text) == 1:
        return run_unet(model.pipe.unet, z, t, text)
    return classifier_free_guidance(run_unet(model.pipe.unet, torch.cat([z, z]), t, text), guidance_scale)


@torch.no_grad()
def invert(model: Model, z0: torch.Tensor, text: torch.Tensor, settings: InversionSettings = InversionSettings(),
           progress: bool = False, callbacks: Sequence[Callback] = ()) -> InversionResult:
    """DDIM-invert z_0 for ``settings.inverted_steps`` steps; ``text`` from :func:`dragnb.models.encode_prompt`.

    ``callbacks`` get an :class:`~dragnb.callbacks.InversionStep` after every step; one returning True stops the
    inversion there (the result is marked ``interrupted``, as after Ctrl-C).
    """
    if settings.guidance_scale > 1 and len(text) != 2:
        raise ValueError(f"inversion.guidance_scale {settings.guidance_scale} inverts with guidance, which needs "
                         "[uncond, cond] text: encode_prompt(model, prompt, settings.guidance_scale)")
    start = time.perf_counter()
    forward = model.pipe.scheduler
    remaining = schedule(forward, settings)
    inverse = inverse_scheduler(forward, settings.num_steps)
    # The inverse walks the forward schedule backwards: 1, 21, ..., t for SD 1.5 (leading spacing, offset 1).
    steps = list(reversed(remaining.tolist()))
    result = InversionResult(latents=[z0], timesteps=[])
    z = z0
    try:
        for t in tqdm(steps, desc="DDIM inversion", disable=not progress, leave=False):
            eps = guided_noise(model, z, t, text, settings.guidance_scale)
            z = inverse.step(eps, t, z).prev_sample  # (1, 4, h, w), at timestep t
            result.latents.append(z)
            result.timesteps.append(int(t))
            if notify(callbacks, InversionStep(step=len(result.timesteps) - 1, total=len(steps), t=int(t))):
                result.interrupted = True
                break
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def denoise_latent(model: Model, zt: torch.Tensor, text: torch.Tensor, settings: InversionSettings,
                   guidance_scale: float = 1.0) -> torch.Tensor:
    """Plain DDIM from z_t back to z_0 (no control); the inverse of :func:`invert`, for checking it."""
    z = zt
    for t in schedule(model.pipe.scheduler, settings):
        z = model.pipe.scheduler.step(guided_noise(model, z, t, text, guidance_scale), t, z).prev_sample
    return z


def round_trip_errors(model: Model, image, prompt: str = "", strengths: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
                         settings: InversionSettings | None = None) -> list[dict]:
    """Invert the image to each strength, DDIM back, decode: relative latent error and image PSNR per t.

    Uses the model as it is (with whatever LoRA is active). Returns one dict per strength with keys
    ``strength, t, steps, latent_error, psnr, image`` (the reconstruction, (H, W, 3) uint8).
    """
    base = settings or model.settings.inversion
    source = to_rgb_array(image)
    x = to_model_tensor(source, model_size(source.shape[:2], model.resolution, model.size_multiple))
    z0 = encode_image(model, x)
    text = encode_prompt(model, prompt, base.guidance_scale)  # [uncond, cond] when inverting with guidance
    reference = from_model_tensor(decode_latent(model, z0))  # the VAE's own reconstruction: the ceiling
    records = []
    for strength in strengths:
        s = InversionSettings(num_steps=base.num_steps, strength=float(strength), guidance_scale=base.guidance_scale)
        inverted = invert(model, z0, text, s)
        back = denoise_latent(model, inverted.zt, text, s, base.guidance_scale)
        decoded = from_model_tensor(decode_latent(model, back))
        records.append({"strength": float(strength), "t": inverted.t, "steps": s.inverted_steps,
                        "latent_error": float((back - z0).pow(2).mean() / z0.pow(2).mean()),
                        "psnr": psnr(decoded, reference), "image": decoded})
    return records
