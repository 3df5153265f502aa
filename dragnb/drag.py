"""Stage 3: optimise the single latent z_t by motion supervision and point tracking (docs/method.md §3).

One iteration k:
  1. ε, F = UNet(ẑ_t^k, t, c) with F the tapped decoder features on the supervision grid;
     x̂_{t-1} = DDIM step of ẑ_t^k (used by the mask term).
  2. from k = 1 on, track: h_i ← argmin_{q ∈ Ω(h_i, r2)} ||F(q) - F_0(h_i^0)||_1.
  3. stop when every handle is within ``stop_distance`` of its target.
  4. L = Σ_i motion term + λ Σ |(x̂_{t-1} - x_{t-1}^0) ⊙ (1 - M)|; one Adam step on ẑ_t.
     (``supervision="anchored"``: the motion term's target is F_0(Ω(h_i^0)) instead of sg(F(Ω(h_i^k))).)
Each iteration is reported to callbacks as a :class:`DragStep`; a callback returning True stops the loop.
A non-finite loss or latent stops it too, returning the last good latent, and so does Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .callbacks import Callback, StepRecord, notify
from .config import DragSettings, InversionSettings
from .features import unet_with_features
from .images import from_model_tensor
from .inversion import decode_latent
from .models import Model, classifier_free_guidance, encode_prompt
from .motion import anchor_patches, mask_loss, motion_loss
from .points import feature_grid
from .tracking import point_features, track_points


@dataclass(kw_only=True)
class DragStep(StepRecord):
    """What one optimisation iteration computed; handles are those the loss used at this step."""

    stage: str = "drag"
    step: int  # k, 0-based
    handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^k after tracking
    targets: torch.Tensor  # (N, 2) (row, col) feature pixels, g_i
    motion_loss: float
    mask_loss: float
    loss: float  # motion + mask
    distances: list[float]  # ||g_i - h_i^k|| per pair, feature pixels
    seconds: float  # wall time of this iteration
    latent: torch.Tensor | None = None  # ẑ_t^k before this step's update, when asked for (keep_latents)
    features: torch.Tensor | None = None  # F(ẑ_t^k), when asked for (keep_features)


@dataclass
class DragResult:
    """The edited latent and the whole optimisation history."""

    latent: torch.Tensor  # edited ẑ_t (1, 4, h, w), the last good state
    initial_handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^0
    handles: torch.Tensor  # (N, 2) final tracked handles
    targets: torch.Tensor  # (N, 2)
    feature_size: tuple[int, int]  # (rows, cols) of the supervision grid
    stop_reason: str  # "reached" | "max_steps" | "callback" | "non-finite" | "interrupted"
    mask_used: bool  # False: no mask drawn, whole image editable, no mask term
    history: list[DragStep] = field(default_factory=list)
    initial_features: torch.Tensor | None = None  # F_0 (1, C, *feature_size), for tracking views
    seconds: float = 0.0
    key: str = ""

    @property
    def trajectory(self) -> torch.Tensor:
        """(K + 1, N, 2) handle positions: each step's, then the final ones."""
        return torch.stack([s.handles for s in self.history] + [self.handles])


def drag(model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
         mask: torch.Tensor | None = None, settings: DragSettings = DragSettings(),
         callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
         keep_features: bool = False, progress: bool = False,
         schedule_steps: int = InversionSettings().num_steps) -> DragResult:
    """Optimise ``zt`` (1, 4, h, w) at timestep ``t`` to move ``handles`` to ``targets`` ((N, 2) (row, col)).

    ``text``: (1, 77, D), or [uncond, cond] (2, 77, D) for a generated image with guidance (features of both
    halves are concatenated along channels, as the reference). ``mask``: (1, 1, h, w) on the latent grid,
    1 = editable, or None. ``schedule_steps``: the length of the DDIM schedule t belongs to (the inversion's
    ``num_steps``), which fixes the step to x̂_{t-1} of the mask term; drag sets it on the scheduler itself.
    Inputs are not modified.
    """
    unet, scheduler = model.pipe.unet, model.pipe.scheduler
    scheduler.set_timesteps(schedule_steps)  # x̂_{t-1} = one DDIM step of this schedule
    device = zt.device
    size = feature_grid((zt.shape[-2] * model.vae_scale, zt.shape[-1] * model.vae_scale), settings.feature_scale)
    handles = handles.to(device, torch.float32).clone()
    targets = targets.to(device, torch.float32).clone()
    guided = len(text) == 2
    amp = settings.autocast and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
    grad_scaler = torch.amp.GradScaler("cuda") if amp else None

    def forward(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ε, F and the one-step DDIM prediction x̂_{t-1} for latent z."""
        with autocast:
            zz = torch.cat([z, z]) if guided else z
            eps, feat = unet_with_features(unet, zz, t, text, settings.feature_blocks, size)
        eps = eps.float()
        if guided:
            eps = classifier_free_guidance(eps, guidance_scale)
            feat = torch.cat(feat.chunk(2), dim=1)  # (1, 2C, H, W): [uncond | cond]
        x_prev = scheduler.step(eps, t, z).prev_sample
        return eps, feat, x_prev

    start = time.perf_counter()
    with torch.no_grad():
        _, feat0, x_prev0 = forward(zt)
    references = point_features(feat0, handles)  # F_0(h_i^0), (N, C)
    anchors = anchor_patches(feat0, handles, settings.r1) if settings.supervision == "anchored" else None
    z = zt.detach().clone().requires_grad_(True)
    last_good = zt.detach().clone()
    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[settings.optimizer]([z], lr=settings.lr)
    result = DragResult(latent=last_good, initial_handles=handles.clone(), handles=handles, targets=targets,
                        feature_size=size, stop_reason="max_steps", mask_used=mask is not None,
                        initial_features=feat0.detach())
    mask = None if mask is None else mask.to(device, torch.float32)
    bar = tqdm(total=settings.max_steps, desc="drag", disable=not progress, leave=False)
    try:
        for step in range(settings.max_steps):
            tick = time.perf_counter()
            _, feat, x_prev = forward(z)
            if step > 0:
                handles = track_points(feat.detach(), references, handles, settings.r2)
                if settings.track_from == "previous":  # this project's variant: follow the latest appearance
                    references = point_features(feat.detach(), handles)
            distances = torch.linalg.norm(targets - handles, dim=1)
            if bool(((distances < settings.stop_distance) | (distances == 0)).all()):  # on the target: arrived
                result.stop_reason = "reached"
                break
            motion = motion_loss(feat, handles, targets, settings.r1, settings.stop_distance, settings.loss_reduction,
                                 anchors)
            masked = mask_loss(x_prev, x_prev0, mask, settings.lam)
            loss = motion + masked
            if not torch.isfinite(loss):
                result.stop_reason = "non-finite"
                break
            optimizer.zero_grad(set_to_none=True)
            if grad_scaler is not None:
                grad_scaler.scale(loss).backward()
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if not torch.isfinite(z).all():
                result.stop_reason = "non-finite"
                break
            record = DragStep(step=step, total=settings.max_steps, handles=handles.detach().cpu().clone(), targets=targets.detach().cpu(),
                              motion_loss=float(motion.detach()), mask_loss=float(masked.detach()),
                              loss=float(loss.detach()), distances=distances.detach().cpu().tolist(),
                              seconds=time.perf_counter() - tick,
                              latent=last_good.cpu() if keep_latents else None,
                              features=feat.detach().cpu() if keep_features else None)
            last_good = z.detach().clone()
            result.history.append(record)
            bar.update(1)
            if notify(callbacks, record):
                result.stop_reason = "callback"
                break
    except KeyboardInterrupt:
        result.stop_reason = "interrupted"
    finally:
        bar.close()
    result.latent = last_good
    result.handles = handles.detach().cpu()
    result.initial_handles = result.initial_handles.cpu()
    result.targets = targets.cpu()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predicted_frames(model: Model, dragged: DragResult, t: int, prompt: str, every: int = 1
                     ) -> list[tuple[int, np.ndarray]]:
    """x̂_0 predicted from each kept drag latent ẑ_t^k (one UNet pass + decode), as (k, (H, W, 3) uint8).

    ``dragged``: the ``.drag`` of ``session.run(keep_latents=True)``; ``t``: its timestep
    (``result.inversion.t``). Uses the model as it is (the session leaves its LoRA active).
    """
    if not dragged.history or dragged.history[0].latent is None:
        raise ValueError("predicted_frames needs the drag's latents: run with keep_latents=True")
    scheduler = model.pipe.scheduler
    text = encode_prompt(model, prompt)
    history = dragged.history
    latents = [(s.step, s.latent) for s in history[::every]] + [(len(history), dragged.latent)]  # + the final one
    frames = []
    for k, z in latents:
        z = z.to(model.device)
        eps = model.pipe.unet(z, t, text).sample
        x0 = scheduler.step(eps, t, z).pred_original_sample  # x̂_0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t
        frames.append((k, from_model_tensor(decode_latent(model, x0))))
    return frames
