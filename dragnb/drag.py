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
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .callbacks import Callback, StepRecord, notify
from .compute import autocast, checkpointing, require_supported
from .compute import grad_scaler as scaler_for
from .config import ComputeSettings, DragSettings, InversionSettings
from .features import unet_with_features
from .images import from_model_tensor
from .inversion import decode_latent
from .models import Model, classifier_free_guidance, encode_prompt, held_dtype, run_unet
from .motion import anchor_patches, arrived, bilinear_patch, mask_loss, motion_loss
from .points import feature_grid
from .tracking import (LINE_SEARCH_ROUND, end_round, line_search, point_features, template_distance,
                       track_points)


@dataclass(kw_only=True)
class DragStep(StepRecord):
    """What one optimisation iteration computed; handles are those the loss used at this step."""

    stage: str = "drag"
    step: int  # k, 0-based
    t: int  # the timestep of the latent this iteration optimised (changes under schedule="alternating")
    handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^k after tracking (the line-search point p_i)
    targets: torch.Tensor  # (N, 2) (row, col) feature pixels, g_i
    motion_loss: float
    mask_loss: float
    loss: float  # motion + mask (+ the text regulariser under optimize_text)
    distances: list[float]  # ||g_i - h_i^k|| per pair, feature pixels
    seconds: float  # wall time of this iteration
    text_distance: float = 0.0  # max |c' - c| of the optimised text embedding (optimize_text), else 0
    latent: torch.Tensor | None = None  # ẑ_t^k before this step's update, when asked for (keep_latents)
    features: torch.Tensor | None = None  # F(ẑ_t^k), when asked for (keep_features)
    templates: torch.Tensor | None = None  # (N, C, P, P) line search's templates T_i, when asked for (keep_features)


@dataclass
class DragResult:
    """The edited latent and the whole optimisation history."""

    latent: torch.Tensor  # edited ẑ (1, 4, h, w) at timestep ``t``, the last good state
    initial_handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^0
    handles: torch.Tensor  # (N, 2) final tracked handles
    targets: torch.Tensor  # (N, 2)
    feature_size: tuple[int, int]  # (rows, cols) of the supervision grid
    stop_reason: str  # "reached" | "max_steps" | "callback" | "non-finite" | "interrupted"
    mask_used: bool  # False: no mask drawn, whole image editable, no mask term
    history: list[DragStep] = field(default_factory=list)
    initial_features: torch.Tensor | None = None  # F_0 (1, C, *feature_size), for tracking views
    reference_features: dict[int, torch.Tensor] = field(default_factory=dict)  # F_0 at each timestep dragged at
    t: int = 0  # timestep of ``latent``: the inverted t, or later after alternating drag and denoising
    denoised_steps: int = 0  # DDIM steps the drag already took (alternating schedule); the denoising skips them
    original_latent: torch.Tensor | None = None  # the unedited branch at ``t`` when denoised_steps > 0
    text: torch.Tensor | None = None  # the optimised text embedding c' (optimize_text), for the edited branch
    seconds: float = 0.0
    key: str = ""

    @property
    def trajectory(self) -> torch.Tensor:
        """(K + 1, N, 2) handle positions: each step's, then the final ones."""
        return torch.stack([s.handles for s in self.history] + [self.handles])


def guided_features(feat: torch.Tensor, guidance_scale: float, weighted: bool) -> torch.Tensor:
    """(2, C, H, W) [uncond, cond] features -> (1, 2C, H, W); ``weighted``: scaled by (1 - c) and c with
    c = s / (2s - 1), as the reference's generated-image loop does (docs/method.md §7)."""
    uncond, cond = feat.chunk(2)
    if weighted:
        c = guidance_scale / (2 * guidance_scale - 1)
        uncond, cond = (1 - c) * uncond, c * cond
    return torch.cat([uncond, cond], dim=1)


def drag(model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
         mask: torch.Tensor | None = None, settings: DragSettings = DragSettings(),
         callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
         keep_features: bool = False, progress: bool = False,
         schedule_steps: int = InversionSettings().num_steps, text_mask: torch.Tensor | None = None,
         compute: ComputeSettings = ComputeSettings()) -> DragResult:
    """Optimise ``zt`` (1, 4, h, w) at timestep ``t`` to move ``handles`` to ``targets`` ((N, 2) (row, col)).

    ``text``: (1, 77, D), or [uncond, cond] (2, 77, D) for a generated image with guidance (features of both
    halves are concatenated along channels, as the reference). ``mask``: (1, 1, h, w) on the latent grid,
    1 = editable, or None. ``schedule_steps``: the length of the DDIM schedule t belongs to (the inversion's
    ``num_steps``), which fixes the step to x̂_{t-1} of the mask term; drag sets it on the scheduler itself.
    ``text_mask``: (77,) bool, the prompt's tokens the text regulariser of ``optimize_text`` covers (DragText
    covers the tokens before the padding; None = all). ``compute``: autocast and gradient checkpointing of the
    UNet (:mod:`dragnb.compute`). Inputs are not modified.
    The variants of :class:`~dragnb.config.DragSettings` (``supervision``, ``schedule``, ``tracking``,
    ``optimize_text``) change the loop as docs/method.md §6 says; all off, it is the reference's loop.
    """
    unet, scheduler = model.pipe.unet, model.pipe.scheduler
    scheduler.set_timesteps(schedule_steps)  # x̂_{t-1} = one DDIM step of this schedule
    schedule_ts = [int(x) for x in scheduler.timesteps]
    device = zt.device
    size = feature_grid((zt.shape[-2] * model.vae_scale, zt.shape[-1] * model.vae_scale), settings.feature_scale)
    handles = handles.to(device, torch.float32).clone()
    targets = targets.to(device, torch.float32).clone()
    if settings.round_points:  # the reference rounds the points on the supervision grid before the loop
        handles, targets = handles.round(), targets.round()
    guided = len(text) == 2
    require_supported(compute, device)
    grad_scaler = scaler_for(compute, device, held_dtype(unet))
    alternating = settings.schedule == "alternating"
    anchored, holding = settings.supervision == "anchored", settings.hold_steps > 0
    line = settings.tracking == "line_search"
    if alternating and int(t) not in schedule_ts:
        raise ValueError(f"t={t} is not on the {schedule_steps}-step DDIM schedule the alternating drag walks")

    def forward(z: torch.Tensor, t_now: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ε, F and the one-step DDIM prediction x̂_{t-1} for latent z at t_now under text c."""
        with autocast(compute, device):
            zz = torch.cat([z, z]) if guided else z
            eps, feat = unet_with_features(unet, zz, t_now, c, settings.feature_blocks, size)
        if guided:
            eps = classifier_free_guidance(eps, guidance_scale)
            feat = guided_features(feat, guidance_scale, settings.weight_guided_features)  # (1, 2C, H, W)
        x_prev = scheduler.step(eps, t_now, z).prev_sample
        return eps, feat, x_prev

    start = time.perf_counter()
    t_now = int(t)
    z_original = zt.detach().clone()  # the unedited branch, walked down the schedule by the alternating drag

    def reference_at(t_now: int):
        """F_0, x_{t-1}^0, the tracking references and the original handle patches F_0(Ω(h_i^0)) (the anchors of
        ``anchored`` and of ``hold_steps``; None when neither is on) at ``t_now`` from the unedited branch."""
        with torch.no_grad():
            _, feat0, x_prev0 = forward(z_original, t_now, text)
        originals = anchor_patches(feat0, initial, settings.r1) if anchored or holding else None  # F_0(Ω(h_i^0))
        return feat0, x_prev0, point_features(feat0, initial), originals

    initial = handles.clone()
    feat0, x_prev0, references, originals = reference_at(t_now)
    z = zt.detach().clone().requires_grad_(True)
    last_good = zt.detach().clone()
    variables = [z]
    if settings.optimize_text:  # DragText: c' starts at c and is optimised with the latent
        cond = text[-1:].detach().clone().requires_grad_(True)
        text_now = torch.cat([text[:1].detach(), cond]) if guided else cond
        text_optimizer = torch.optim.Adam([cond], lr=settings.text_lr)
        keep = torch.ones(text.shape[1], dtype=torch.bool, device=device) if text_mask is None else text_mask.to(device)
    else:
        text_now = text

    def new_optimizer():
        return {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[settings.optimizer](variables, lr=settings.lr)

    optimizer = new_optimizer()
    result = DragResult(latent=last_good, initial_handles=handles.clone(), handles=handles, targets=targets,
                        feature_size=size, stop_reason="max_steps", mask_used=mask is not None,
                        initial_features=feat0.detach(), t=t_now)
    result.reference_features[t_now] = result.initial_features  # the same tensor, not a copy
    mask = None if mask is None else mask.to(device, torch.float32)
    if line:  # FreeDrag's state: one template per pair, the start and end losses of the last round
        templates = [bilinear_patch(feat0, h, settings.r1)[0].detach() for h in handles]
        loss_start = [0.0] * len(handles)
        loss_end = [0.0] * len(handles)
        done_pairs = [False] * len(handles)
        round_step = 0
    held = 0  # iterations run since every handle arrived (hold_steps)
    bar = tqdm(total=settings.max_steps, desc="drag", disable=not progress, leave=False)
    with checkpointing(unet, compute.gradient_checkpointing):  # less memory, the same gradients
        try:
            for step in range(settings.max_steps):
                if alternating and step > 0 and step % settings.steps_per_timestep == 0:  # AlDD: one DDIM step down
                    index = schedule_ts.index(t_now)
                    if index + 1 >= len(schedule_ts):
                        break
                    with torch.no_grad():
                        z_next = forward(z.detach(), t_now, text_now.detach())[2]  # the edited latent, one step down
                    z_original = x_prev0  # the unedited branch's step at t_now, which reference_at already took
                    t_now = schedule_ts[index + 1]
                    result.denoised_steps += 1
                    z = z_next.detach().clone().requires_grad_(True)
                    variables[0] = z
                    last_good = z.detach().clone()
                    optimizer = new_optimizer()  # GoodDrag starts a fresh optimiser at each timestep
                    feat0, x_prev0, references, originals = reference_at(t_now)
                    result.reference_features[t_now] = feat0.detach()
                tick = time.perf_counter()
                _, feat, x_prev = forward(z, t_now, text_now)
                if line:
                    if step == 0 or round_step == LINE_SEARCH_ROUND:  # a round ends: judge it, search anew
                        if step > 0:
                            loss_end, done_pairs, templates = end_round(feat, handles, targets, templates, settings.r1,
                                                                     settings.stop_distance, settings.line_search_loss)
                        if all(done_pairs):
                            result.stop_reason = "reached"
                            break
                        handles = torch.stack([handles[i] if done_pairs[i] else line_search(
                            feat.detach(), handles[i], targets[i], templates[i], settings.r1,
                            settings.line_search_distance, settings.line_search_loss, loss_start[i], loss_end[i])
                            for i in range(len(handles))])
                        round_step = 0
                    distances = torch.linalg.norm(targets - handles, dim=1)
                    terms = [template_distance(feat, h, tpl, settings.r1) for h, tpl in zip(handles, templates)]
                    per_pair = [term for term, done in zip(terms, done_pairs) if not done]
                    motion = torch.stack(per_pair).sum() if per_pair else feat.new_zeros(())
                    if round_step == 0:
                        loss_start = [float(term.detach()) for term in terms]
                    round_step += 1
                    if per_pair and max(float(x.detach()) for x in per_pair) < 0.5 * settings.line_search_loss:
                        round_step = LINE_SEARCH_ROUND  # FreeDrag ends a round early once every patch matches
                else:
                    if step > 0:
                        handles = track_points(feat.detach(), references, handles, settings.r2)
                        if settings.track_from == "previous":  # this project's variant: follow the latest appearance
                            references = point_features(feat.detach(), handles)
                    distances = torch.linalg.norm(targets - handles, dim=1)
                    if bool(arrived(distances, settings.stop_distance).all()):
                        if held >= settings.hold_steps:
                            result.stop_reason = "reached"
                            break
                        held += 1  # every handle has arrived: hold them there a few iterations more
                    motion = motion_loss(feat, handles, targets, settings.r1, settings.stop_distance,
                                         settings.loss_reduction,
                                         originals if anchored else None, hold=originals if holding else None)
                masked = mask_loss(x_prev, x_prev0, mask, settings.lam)
                loss = motion + masked
                if settings.optimize_text:
                    loss = loss + settings.text_lam * ((cond - text[-1:]) * keep[None, :, None]).abs().sum()
                if not torch.isfinite(loss):
                    result.stop_reason = "non-finite"
                    break
                optimizer.zero_grad(set_to_none=True)
                if settings.optimize_text:
                    text_optimizer.zero_grad(set_to_none=True)
                if grad_scaler is not None:
                    grad_scaler.scale(loss).backward()
                    grad_scaler.step(optimizer)
                    if settings.optimize_text:
                        grad_scaler.step(text_optimizer)
                    grad_scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                    if settings.optimize_text:
                        text_optimizer.step()
                if not torch.isfinite(z).all():
                    result.stop_reason = "non-finite"
                    break
                record = DragStep(step=step, total=settings.max_steps, t=t_now, handles=handles.detach().cpu().clone(),
                                  targets=targets.detach().cpu(), motion_loss=float(motion.detach()),
                                  mask_loss=float(masked.detach()), loss=float(loss.detach()),
                                  distances=distances.detach().cpu().tolist(), seconds=time.perf_counter() - tick,
                                  text_distance=(float((cond.detach() - text[-1:]).abs().max())
                                                 if settings.optimize_text else 0.0),
                                  latent=last_good.cpu() if keep_latents else None,
                                  features=feat.detach().cpu() if keep_features else None,
                                  templates=torch.stack(templates).cpu() if keep_features and line else None)
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
    result.t = t_now
    if result.denoised_steps:
        result.original_latent = z_original.detach()
    if settings.optimize_text:
        result.text = text_now.detach()
    result.handles = handles.detach().cpu()
    result.initial_handles = result.initial_handles.cpu()
    result.targets = targets.cpu()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predicted_frames(model: Model, dragged: DragResult, prompt: str, every: int = 1) -> list[tuple[int, np.ndarray]]:
    """x̂_0 predicted from each kept drag latent ẑ_t^k (one UNet pass + decode), as (k, (H, W, 3) uint8).

    ``dragged``: the ``.drag`` of ``session.run(keep_latents=True)``. Each latent is read at its own timestep
    (``DragStep.t``: under ``schedule="alternating"`` the drag walks down the schedule), the final one at
    ``dragged.t``; the text is the drag's own (``dragged.text`` under ``optimize_text``, else ``prompt``'s), its
    conditional half for a guided generated image (x̂_0 without guidance). x̂_0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t
    (docs/method.md §1; from v, or x_0 itself, for models that predict those), so no DDIM schedule needs to be set.
    Uses the model as it is (the session leaves its LoRA active).
    """
    if not dragged.history or dragged.history[0].latent is None:
        raise ValueError("predicted_frames needs the drag's latents: run with keep_latents=True")
    scheduler = model.pipe.scheduler
    alphas, kind = scheduler.alphas_cumprod, scheduler.config.prediction_type
    text = dragged.text[-1:] if dragged.text is not None else encode_prompt(model, prompt)
    history = dragged.history
    latents = [(s.step, s.t, s.latent) for s in history[::every]] + [(len(history), dragged.t, dragged.latent)]
    frames = []
    for k, t, z in latents:
        z = z.to(model.device)
        out = run_unet(model.pipe.unet, z, t, text.to(model.device))
        a = alphas[int(t)].to(z.device, z.dtype)
        x0 = {"epsilon": lambda: (z - (1 - a).sqrt() * out) / a.sqrt(),  # the model predicts ε
              "v_prediction": lambda: a.sqrt() * z - (1 - a).sqrt() * out,  # v = √ᾱ ε − √(1−ᾱ) x_0
              "sample": lambda: out}[kind]()
        frames.append((k, from_model_tensor(decode_latent(model, x0))))
    return frames
