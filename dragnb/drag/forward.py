"""Step 1 of every drag iteration: one UNet call gives ε and the features F; one DDIM step of ε gives x̂_{t-1}.

The same call on the unedited latent gives the :class:`~dragnb.drag.parts.Reference` (F_0 and x_{t-1}^0) of the
timestep dragged at (docs/method.md §3.1, §3.3).
"""

from __future__ import annotations

import torch

from ..compute import autocast
from ..config import ComputeSettings, DragSettings
from ..features import unet_with_features
from ..models import Model, classifier_free_guidance
from ..points import feature_grid
from .parts import Reference


def guided_features(feat: torch.Tensor, guidance_scale: float, weighted: bool) -> torch.Tensor:
    """(2, C, H, W) [uncond, cond] features -> (1, 2C, H, W); ``weighted``: scaled by (1 - c) and c with
    c = s / (2s - 1), as the reference's generated-image loop does (docs/method.md §7)."""
    uncond, cond = feat.chunk(2)
    if weighted:
        c = guidance_scale / (2 * guidance_scale - 1)
        uncond, cond = (1 - c) * uncond, c * cond
    return torch.cat([uncond, cond], dim=1)


class Forward:
    """F and x̂_{t-1} of a latent at a timestep under a text: ``forward(z, t, text) -> (F, x̂_{t-1})``.

    ``schedule_steps``: the DDIM schedule t belongs to (the inversion's ``num_steps``), which fixes the step to
    x̂_{t-1}; it is set on the model's scheduler here. A guided text (2, 77, D) runs [z, z] and combines ε with
    classifier-free guidance and F as :func:`guided_features` (generated images).
    """

    def __init__(self, model: Model, settings: DragSettings, compute: ComputeSettings, guidance_scale: float,
                 schedule_steps: int, latent_size: tuple[int, int]):
        self.unet, self.scheduler = model.pipe.unet, model.pipe.scheduler
        self.scheduler.set_timesteps(schedule_steps)  # x̂_{t-1} = one DDIM step of this schedule
        self.timesteps = [int(x) for x in self.scheduler.timesteps]  # the schedule, t_0 > t_1 > ...
        self.settings, self.compute, self.guidance_scale = settings, compute, guidance_scale
        self.size = feature_grid((latent_size[0] * model.vae_scale, latent_size[1] * model.vae_scale),
                                 settings.feature_scale)  # (rows, cols) of the supervision grid

    def __call__(self, z: torch.Tensor, t: int, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        guided = len(text) == 2
        with autocast(self.compute, z.device):
            zz = torch.cat([z, z]) if guided else z
            eps, feat = unet_with_features(self.unet, zz, t, text, self.settings.feature_blocks, self.size)
        if guided:
            eps = classifier_free_guidance(eps, self.guidance_scale)
            feat = guided_features(feat, self.guidance_scale, self.settings.weight_guided_features)  # (1, 2C, H, W)
        return feat, self.scheduler.step(eps, t, z).prev_sample

    @torch.no_grad()
    def reference(self, z: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor) -> Reference:
        """F_0 and x_{t-1}^0 of the unedited latent ``z`` at ``t``, with the initial handles h^0."""
        features, x_prev = self(z, t, text)
        return Reference(t=int(t), latent=z, features=features, x_prev=x_prev, handles=handles)
