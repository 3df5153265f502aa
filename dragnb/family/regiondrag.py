"""RegionDrag (Lu et al., ECCV 2024): the source region's inverted latents copied onto the target region while
denoising (docs/method.md §11.2).

No optimiser and no gradient. Each handle → target pair names two regions of the latent grid, a square of side
``regiondrag.region_size`` (a fraction of the image's shorter side) around the handle and the same square around
the target; each pixel of the target square takes the source square's pixel at the same offset. At t: the vacated
source region is blurred with noise, √(1 − σ²)·z + σ·ε, then the target region receives the source's z_t. While
denoising, after each step that lands on a timestep at or above ``copy_until`` · t, the target region receives the
inversion's latent of the source region at that timestep and what lies outside the mask the inversion's latent; the
later steps only denoise. The edited branch reads the unedited one's keys and values as for the paper's drag
(reference-latent control).

Where this differs from the authors' code (Visual-AI/RegionDrag): regions there are drawn by the user (or warped
from a mask by the points); here, from points, squares. Their inversion is SDE-Drag's stochastic one with the noise
kept, here the session's DDIM inversion; they condition on the source with an IP-Adapter, here the per-image LoRA.
With no mask the whole image is editable (as their UI).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import torch

from ..callbacks import Callback
from ..config import Settings
from ..denoise import Guide
from ..drag import DragResult
from ..inversion import schedule
from ..models import Model
from ..points import feature_grid


@dataclasses.dataclass(frozen=True)
class Regions:
    """Pixel pairs on the latent grid: ``target[k]`` (row, col) takes ``source[k]``; later pairs overwrite earlier."""

    source: np.ndarray  # (K, 2) int
    target: np.ndarray  # (K, 2) int
    pair: np.ndarray  # (K,) int, the handle/target pair each pixel belongs to


def square_regions(handles: np.ndarray, targets: np.ndarray, side: int, size: tuple[int, int]) -> Regions:
    """For each pair, the ``side`` × ``side`` square around the handle's latent pixel mapped onto the same square
    around the target's, offset by offset; pixels where either square leaves the grid are dropped."""
    h, w = size
    offsets = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2) - (side - 1) // 2
    sources, destinations, pairs = [], [], []
    for i, (a, b) in enumerate(zip(np.rint(handles).astype(int), np.rint(targets).astype(int))):
        src, dst = a + offsets, b + offsets
        ok = ((src >= 0) & (src < [h, w]) & (dst >= 0) & (dst < [h, w])).all(1)
        sources.append(src[ok])
        destinations.append(dst[ok])
        pairs.append(np.full(int(ok.sum()), i))
    return Regions(np.concatenate(sources).reshape(-1, 2), np.concatenate(destinations).reshape(-1, 2),
                   np.concatenate(pairs).astype(int))


def copy_regions(into: torch.Tensor, source: torch.Tensor, regions: Regions) -> torch.Tensor:
    """``into`` (1, C, h, w) with each target pixel set to ``source``'s pixel of its pair (a new tensor)."""
    out = into.clone()
    out[:, :, regions.target[:, 0], regions.target[:, 1]] = source[:, :, regions.source[:, 0], regions.source[:, 1]]
    return out


def blur_with_noise(z: torch.Tensor, where: np.ndarray, sigma: float, seed: int) -> torch.Tensor:
    """√(1 − σ²)·z + σ·ε on the pixels ``where`` (h, w) bool; ε standard normal from ``seed``."""
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(z.device, z.dtype)
    keep = torch.from_numpy(where).to(z.device)[None, None]
    return torch.where(keep, (1 - sigma ** 2) ** 0.5 * z + sigma * noise, z)


@dataclasses.dataclass
class RegionCopy(Guide):
    """After each of the first ``steps`` denoising steps: the target regions take the inversion's latent of their
    sources at the timestep landed on, and outside ``keep_outside`` (1, 1, h, w), 1 = editable, the inversion's
    latent itself. Without an inversion (a generated image) nothing is copied."""

    regions: Regions
    steps: int
    editable: torch.Tensor | None

    def after_step(self, step: int, edited: torch.Tensor, landed: torch.Tensor | None) -> torch.Tensor:
        if step >= self.steps or landed is None:
            return edited
        if self.editable is not None:
            m = self.editable.to(edited.device, edited.dtype)
            edited = edited * m + landed * (1 - m)
        return copy_regions(edited, landed, self.regions)


def copy_steps(timesteps: Sequence[int], t: int, until: float) -> int:
    """How many denoising steps from ``t`` land on a timestep ≥ ``until`` · t (the last lands on z_0, timestep 0)."""
    steps = [int(x) for x in timesteps]
    landed = steps[steps.index(int(t)) + 1:] + [0]
    return sum(1 for s in landed if s >= until * t and s > 0)


def regiondrag(settings: Settings, model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor,
               targets: torch.Tensor, mask: torch.Tensor | None, *, inverted: Sequence[torch.Tensor] | None = None,
               callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
               keep_features: bool = False, progress: bool = False) -> DragResult:
    """The region copy at t; the copies while denoising are the result's guide. ``handles``, ``targets``: (N, 2)
    (row, col) on the supervision grid; ``mask``: (1, 1, h, w) latent, 1 = editable, None = all."""
    start, s = time.perf_counter(), settings.regiondrag
    size = tuple(zt.shape[-2:])
    grid = feature_grid((size[0] * model.vae_scale, size[1] * model.vae_scale), settings.drag.feature_scale)
    to_latent = np.array([size[0] / grid[0], size[1] / grid[1]])
    side = max(1, int(round(s.region_size * min(size))))
    regions = square_regions(handles.cpu().numpy() * to_latent, targets.cpu().numpy() * to_latent, side, size)
    vacated = np.zeros(size, bool)
    vacated[regions.source[:, 0], regions.source[:, 1]] = True
    vacated[regions.target[:, 0], regions.target[:, 1]] = False
    z = copy_regions(blur_with_noise(zt.detach(), vacated, s.noise_sigma, s.seed), zt.detach(), regions)
    steps = copy_steps(schedule(model.pipe.scheduler, settings.inversion), t, s.copy_until)
    return DragResult(latent=z, initial_handles=handles.cpu().float().clone(), handles=targets.cpu().float().clone(),
                      targets=targets.cpu().float(), feature_size=grid, stop_reason="one step",
                      mask_used=mask is not None, t=int(t), original_latent=zt.detach().clone(), text=text,
                      timesteps=[int(t)], seconds=time.perf_counter() - start, method="regiondrag",
                      guide=RegionCopy(regions, steps, None if mask is None else mask.detach().cpu()),
                      extras={"regions": regions, "vacated": vacated, "copy_steps": steps})
