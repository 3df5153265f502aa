"""DragNoise (Liu et al., CVPR 2024): the paper's loop on another variable (docs/method.md §11.3).

Motion supervision and point tracking as DragDiffusion's loop, but what the optimiser changes is the UNet's
bottleneck s_t (the mid block's output) at t, not the latent: z_t is left as it is. The up blocks read s_t, so the
features F and x̂_{t-1} of the loss follow it. While denoising, the optimised s_t replaces the bottleneck of the
edited branch at every step but the last ``dragnoise.free_steps`` of the schedule (the authors' "diffusion semantic
propagation"); those compute their own. The mask term is added with or without a mask, as the authors' code does
(no mask: the whole x̂_{t-1} is held).

The loop is :func:`dragnb.drag.drag` itself with one part changed: :class:`Bottleneck`, the optimised variable.
DragNoise uses the paper's loop (every variant switch off) with its own steps, learning rate and λ
(``dragnoise.max_steps``, ``lr``, ``lam``); r1, r2, the features and the stop distance are the drag's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from ..callbacks import Callback
from ..config import DragSettings, Settings, reference_loop
from ..denoise import Guide
from ..drag import DragParts, DragResult, Optimised, drag
from ..inversion import schedule
from ..models import Model


class MidBlockOutput:
    """A hook on ``unet.mid_block``: records its output, or replaces the output's ``rows`` with ``value``."""

    def __init__(self):
        self.value: torch.Tensor | None = None  # what replaces the output (B', C, h, w), None: the output as it is
        self.rows: list[int] | None = None  # which batch rows ``value`` replaces (None: all)
        self.seen: torch.Tensor | None = None  # the last output as the block computed it

    def __call__(self, module, args, output):
        self.seen = output.detach()
        if self.value is None:
            return None
        if self.rows is None:
            return self.value.to(output.dtype)
        out = output.clone()
        out[self.rows] = self.value.to(output.dtype)
        return out

    @contextmanager
    def on(self, unet):
        handle = unet.mid_block.register_forward_hook(self)
        try:
            yield self
        finally:
            handle.remove()


class Bottleneck(Optimised):
    """The optimised variable s_t: the mid block's output at t, which the hook puts in place of the block's own.

    ``start`` takes s_t^0 from the reference call the loop made just before (the hook saw it) and returns the latent
    unchanged: the loop's ẑ_t stays z_t."""

    def __init__(self, settings: DragSettings, hook: MidBlockOutput):
        super().__init__(settings)
        self.hook = hook

    def start(self, latent: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.hook.seen is None:
            raise RuntimeError("DragNoise's bottleneck: the reference call did not run through the mid block")
        self.prompt_text = text
        self.s = self.hook.seen.detach().clone().float().requires_grad_(True)  # s_t^0 (B, C, h, w)
        self.initial = self.s.detach().clone()
        self.hook.value = self.s
        self.optimizer = torch.optim.Adam([self.s], lr=self.settings.lr)
        return latent.detach()

    @property
    def text(self) -> torch.Tensor:
        return self.prompt_text

    def restart(self, latent: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("DragNoise optimises the bottleneck at one timestep (drag.schedule single)")

    def penalty(self) -> torch.Tensor:
        return self.s.new_zeros(())

    def record(self, keep_features: bool) -> dict:
        return {"bottleneck_change": float((self.s.detach() - self.initial).abs().mean())}


@dataclasses.dataclass
class BottleneckGuide(Guide):
    """While denoising, the edited branch's bottleneck is ``value`` for the first ``steps`` steps."""

    value: torch.Tensor  # s_t, (1, C, h, w), or (2, C, h, w) [uncond, cond] with guidance
    steps: int

    def unet_call(self, unet, step: int, edited_rows: list[int]):
        if step >= self.steps:
            return super().unet_call(unet, step, edited_rows)
        hook = MidBlockOutput()
        hook.value, hook.rows = self.value.to(unet.device), edited_rows
        return hook.on(unet)


def dragnoise_settings(s: Settings) -> DragSettings:
    """The loop DragNoise runs: the paper's (every variant off) with DragNoise's steps, lr and λ."""
    d = s.dragnoise
    return reference_loop(dataclasses.replace(s.drag, max_steps=d.max_steps, lr=d.lr, lam=d.lam, optimizer="adam"))


def dragnoise(settings: Settings, model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor,
              targets: torch.Tensor, mask: torch.Tensor | None, *, inverted: Sequence[torch.Tensor] | None = None,
              callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
              keep_features: bool = False, progress: bool = False) -> DragResult:
    """Optimise the bottleneck at t to move ``handles`` to ``targets``; z_t is returned as it is, with the optimised
    bottleneck in the result's guide."""
    hook = MidBlockOutput()
    parts = DragParts(optimised=lambda drag_settings: Bottleneck(drag_settings, hook))
    held = torch.zeros_like(zt[:, :1]) if mask is None else mask  # no mask: all of x̂_{t-1} is held (the authors')
    with hook.on(model.pipe.unet):
        result = drag(model, zt, t, text, handles, targets, held, dragnoise_settings(settings), callbacks=callbacks,
                      guidance_scale=guidance_scale, keep_latents=keep_latents, keep_features=keep_features,
                      progress=progress, schedule_steps=settings.inversion.num_steps, compute=settings.compute,
                      parts=parts)
    result.method, result.mask_used = "dragnoise", mask is not None
    remaining = [int(x) for x in schedule(model.pipe.scheduler, settings.inversion)]  # from the inversion's t
    steps = len(remaining) - remaining.index(int(t)) - settings.dragnoise.free_steps  # denoising steps that take it
    result.guide = BottleneckGuide(hook.value.detach().clone(), max(0, steps))
    return result
