"""Generated-image mode: make an image from a prompt, keeping every latent, so a drag can start from the
kept z_t directly (no LoRA, no inversion), as the reference's second mode does (docs/method.md §7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import InversionSettings
from .inversion import decode_latent, guided_noise
from .lora import apply_lora
from .models import Model, encode_prompt


@dataclass
class GeneratedImage:
    """A generated image and the DDIM latents that made it."""

    image: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    latents: list[torch.Tensor]  # [z_T, ..., z_0], each (1, 4, h, w); latents[i] is the input of step i
    timesteps: list[int]  # timesteps[i] = timestep of latents[i]
    prompt: str
    guidance_scale: float
    seed: int
    seconds: float = 0.0

    def latent_at(self, settings: InversionSettings) -> tuple[torch.Tensor, int]:
        """The kept latent at the step a drag with ``settings`` optimises, and its timestep."""
        index = settings.num_steps - settings.inverted_steps
        return self.latents[index], self.timesteps[index]


@torch.no_grad()
def generate(model: Model, prompt: str, size: tuple[int, int] | None = None, guidance_scale: float = 7.5,
             seed: int = 0, num_steps: int = 50, progress: bool = False) -> GeneratedImage:
    """DDIM sampling with classifier-free guidance; ``size`` (H, W) in image pixels (default: the model's).

    Always from the base model: a LoRA an earlier session left on the UNet is taken off first, so the image
    depends on the arguments alone (and a saved history's generated first round can be made again).
    """
    start = time.perf_counter()
    apply_lora(model, None)
    h, w = size or (model.resolution, model.resolution)
    shape = (1, model.pipe.unet.config.in_channels, h // model.vae_scale, w // model.vae_scale)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(model.device)
    text = encode_prompt(model, prompt, guidance_scale)
    scheduler = model.pipe.scheduler
    scheduler.set_timesteps(num_steps)
    latents, timesteps = [], []
    for t in tqdm(scheduler.timesteps, desc="generate", disable=not progress, leave=False):
        latents.append(z)
        timesteps.append(int(t))
        z = scheduler.step(guided_noise(model, z, t, text, guidance_scale), t, z).prev_sample
    latents.append(z)
    timesteps.append(0)
    return GeneratedImage(image=decode_latent(model, z).float().cpu(), latents=latents, timesteps=timesteps,
                          prompt=prompt, guidance_scale=guidance_scale, seed=seed,
                          seconds=time.perf_counter() - start)
