"""Stage 3: optimise the latent z_t by motion supervision and point tracking (docs/method.md §3.5).

:func:`drag` is the paper's loop, step by step; each job a variant changes is a part (:mod:`dragnb.drag.parts`):
which timesteps it walks, what it optimises, how it tracks, where the motion term's source comes from. Each
iteration is reported to callbacks as a :class:`DragStep`; a callback returning True stops the loop. A non-finite
loss or latent stops it too, returning the last good latent, and so do a latent far out of the input's range
("diverged", said in one line) and Ctrl-C.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..callbacks import Callback, StepRecord, notify
from ..compute import checkpointing, grad_scaler, require_supported
from ..config import ComputeSettings, DragSettings, InversionSettings
from ..denoise import Guide
from ..errors import Notice
from ..images import from_model_tensor
from ..inversion import decode_latent
from ..models import Model, encode_prompt, held_dtype, run_unet
from ..motion import mask_loss
from .choice import make_parts
from .copy import MovedStart, cell_moves, copy_start
from .forward import Forward
from .parts import DragParts


@dataclass(kw_only=True)
class DragStep(StepRecord):
    """What one optimisation iteration computed; handles are those the loss used at this step."""

    stage: str = "drag"
    step: int  # k, 0-based
    t: int  # the timestep of the latent this iteration optimised
    handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^k after tracking
    targets: torch.Tensor  # (N, 2) (row, col) feature pixels, g_i
    motion_loss: float
    mask_loss: float
    loss: float  # motion + mask (+ what the optimised variables add, e.g. DragText's regulariser)
    distances: list[float]  # ||g_i - h_i^k|| per pair, feature pixels
    seconds: float  # wall time of this iteration
    latent: torch.Tensor | None = None  # ẑ_t^k before this step's update, when asked for (keep_latents)
    features: torch.Tensor | None = None  # F(ẑ_t^k), when asked for (keep_features)
    extras: dict[str, Any] = field(default_factory=dict)  # what the parts add: "text_distance" (DragText);
    # with keep_features "windows" (the trackers' searches, TrackingWindow per pair), "templates" (FreeDrag's T_i)


COMPLETE = ("reached", "max_steps", "one step")  # stop reasons of a drag that ran to its end (cached)
DIVERGED_RANGE = 5.0  # a latent beyond this many times the input latent's largest |value| has diverged (a normal
# drag moves it by about lr per step: 0.03 x 120 on the embedded model, beside |z_t| up to ~4)


@dataclass
class DragResult:
    """The edited latent, the unedited branch beside it, and the whole optimisation history."""

    latent: torch.Tensor  # edited ẑ (1, 4, h, w) at timestep ``t``, the last good state
    initial_handles: torch.Tensor  # (N, 2) (row, col) feature pixels, h_i^0
    handles: torch.Tensor  # (N, 2) final tracked handles
    targets: torch.Tensor  # (N, 2)
    feature_size: tuple[int, int]  # (rows, cols) of the supervision grid
    stop_reason: str  # "reached" | "max_steps" | "callback" | "non-finite" | "diverged" | "interrupted"; "one step"
    # (a family method without iterations)
    mask_used: bool  # False: no mask drawn, whole image editable, no mask term
    history: list[DragStep] = field(default_factory=list)
    initial_features: torch.Tensor | None = None  # F_0 (1, C, *feature_size) at the first timestep
    t: int = 0  # timestep of ``latent`` (and of ``original_latent``): where the denoising goes on from
    original_latent: torch.Tensor | None = None  # the unedited branch at ``t`` (the input z_t unless the drag walked)
    text: torch.Tensor | None = None  # the text embedding the edited branch reads (the prompt's unless optimised)
    timesteps: list[int] = field(default_factory=list)  # the timesteps dragged at, in order
    seconds: float = 0.0
    key: str = ""
    method: str = "optimise"  # drag.method that made it (dragnb.family for the others)
    extras: dict[str, Any] = field(default_factory=dict)  # what a family method computed once, for the views
    # (fastdrag: "field", "holes", "editable"; regiondrag: "regions"; drag.image_copy: "moved_start",
    # the MovedStart the loop started from)
    guide: Guide | None = None  # what the method asks of the denoising (None: nothing, as the paper's drag)

    @property
    def trajectory(self) -> torch.Tensor:
        """(K + 1, N, 2) handle positions: each step's, then the final ones (a method without iterations: the first
        handles, then where its one step put them)."""
        steps = [s.handles for s in self.history] or [self.initial_handles.to(self.handles.device)]
        return torch.stack(steps + [self.handles])


def drag(model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
         mask: torch.Tensor | None = None, settings: DragSettings = DragSettings(),
         callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
         keep_features: bool = False, progress: bool = False,
         schedule_steps: int = InversionSettings().num_steps, prompt: str | None = None,
         compute: ComputeSettings = ComputeSettings(), parts: DragParts | None = None,
         footprints: np.ndarray | None = None, moved: MovedStart | None = None) -> DragResult:
    """Optimise ``zt`` (1, 4, h, w) at timestep ``t`` to move ``handles`` to ``targets`` ((N, 2) (row, col)).

    ``text``: (1, 77, D), or [uncond, cond] (2, 77, D) for a generated image with guidance (features of both
    halves are concatenated along channels, as the reference). ``mask``: (1, 1, h, w) on the latent grid,
    1 = editable, or None. ``schedule_steps``: the DDIM schedule t belongs to (the inversion's ``num_steps``),
    which fixes the step to x̂_{t-1} of the mask term. ``prompt``: the words behind ``text``, for parts that need
    them (DragText's regulariser covers the prompt's tokens). ``compute``: autocast, gradient checkpointing and
    loss scaling (:mod:`dragnb.compute`). ``parts``: a researcher's own parts; the rest are those the settings
    name. ``footprints``: (N, h, w) bool on the latent grid, each pair's object, which ``settings.start == "copy"``
    moves before the loop (an empty one stays; :class:`~dragnb.session.DragSession` finds them in the image).
    ``moved``: the z_t and handles the loop starts from when ``settings.start == "copy"`` moves some pairs in the
    image (``settings.image_copy``; the session makes it), before the others' copy by latent cells.
    Inputs are not modified.
    """
    start, device = time.perf_counter(), zt.device
    require_supported(compute, device)
    look = Forward(model, settings, compute, guidance_scale, schedule_steps, tuple(zt.shape[-2:]))  # step 1
    handles = handles.to(device, torch.float32).clone()
    targets = targets.to(device, torch.float32).clone()
    if settings.round_points:  # the reference rounds the points on the supervision grid before the loop
        handles, targets = handles.round(), targets.round()
    made = make_parts(settings, parts, model.pipe.tokenizer, prompt)
    timesteps, optimised, tracker, supervision = made.timesteps, made.optimised, made.tracker, made.supervision
    start_latent, first_handles = zt, handles
    if settings.start == "copy":  # [extension] each drag's object moved first: the longest in the image, §3.6
        if moved is not None:  # (the session made that start), the others by whole latent cells
            start_latent, handles = image_start(moved, handles, targets)
        start_latent, handles = copied_start(start_latent, footprints, handles, targets, look.size)
    reference = timesteps.start(look, zt.detach().clone(), t, text, first_handles.clone())  # F_0, x_{t-1}^0, h^0
    z = optimised.start(start_latent, text)  # ẑ_t^0 = z_t, and the optimiser over it
    made.begin(reference)  # the tracker's f_i and the supervision's sources from F_0
    scaler = grad_scaler(compute, device, held_dtype(model.pipe.unet))  # a no-op unless fp16
    mask = None if mask is None else mask.to(device, torch.float32)
    last_good = start_latent.detach().clone()
    bound = DIVERGED_RANGE * float(zt.detach().abs().max())  # the range beyond which the drag has diverged
    result = DragResult(latent=last_good, initial_handles=first_handles.clone().cpu(), handles=handles,
                        targets=targets.cpu(), feature_size=look.size, stop_reason="max_steps",
                        mask_used=mask is not None, initial_features=reference.features.detach())
    steps, moved_all = settings.max_steps, moved is not None and bool(moved.moved.all())
    if moved_all:  # [extension] every object moved in the image (§3.6): nothing to drag
        steps, result.stop_reason = 0, "reached"
    bar = tqdm(total=steps, desc="drag", disable=not progress, leave=False)
    with checkpointing(model.pipe.unet, compute.gradient_checkpointing):  # less memory, the same gradients
        try:
            for k in range(steps):
                # 0. the timestep: t throughout, unless the timesteps part walks both branches one step down here
                if timesteps.finished(k):
                    break
                if (moved := timesteps.move(k, z, optimised.text)) is not None:
                    reference, z = moved[0], optimised.restart(moved[1])
                    last_good = z.detach().clone()
                    made.begin(reference)
                tick = time.perf_counter()
                # 1. features F and x̂_{t-1} of ẑ_t^k (one UNet call)
                feat, x_prev = look(z, reference.t, optimised.text)
                # 2. track the handles h_i^k (nothing to track at k = 0)
                handles = tracker.track(k, feat, handles, targets)
                distances = torch.linalg.norm(targets - handles, dim=1)
                # 3. stop once every handle has arrived
                if supervision.done(tracker.arrived(handles, targets)):
                    result.stop_reason = "reached"
                    break
                # 4. L = L_motion + λ L_mask (+ what the variables add)
                motion = supervision.loss(feat, handles, targets)
                masked = mask_loss(x_prev, reference.x_prev, mask, settings.lam)
                loss = motion + masked + optimised.penalty()
                if not torch.isfinite(loss):
                    result.stop_reason = "non-finite"
                    break
                # 5. one optimiser step on ẑ_t (loss scaling only for fp16)
                optimised.optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimised.optimizer)
                scaler.update()
                largest = float(z.detach().abs().max())  # one reduction for both checks (NaN and inf propagate)
                if not math.isfinite(largest):
                    result.stop_reason = "non-finite"
                    break
                if largest > bound:  # finite but far out of range: lr too large
                    result.stop_reason = "diverged"
                    warnings.warn(f"drag: diverged at iteration {k} (the latent left {DIVERGED_RANGE:g} x the range "
                                  f"of z_t, loss {float(loss.detach()):.3g}); the result is from the last good latent; "
                                  f"lower drag.lr (now {settings.lr:g})", Notice, stacklevel=2)
                    break
                # 6. record the iteration; a callback may stop the loop
                record = DragStep(step=k, total=settings.max_steps, t=reference.t, handles=handles.detach().cpu().clone(),
                                  targets=targets.detach().cpu(), motion_loss=float(motion.detach()),
                                  mask_loss=float(masked.detach()), loss=float(loss.detach()),
                                  distances=distances.detach().cpu().tolist(), seconds=time.perf_counter() - tick,
                                  latent=last_good.cpu() if keep_latents else None,
                                  features=feat.detach().cpu() if keep_features else None,
                                  extras=made.record(keep_features))
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
    unedited = moved.latent if moved_all else reference.latent  # the denoising reads the moved image as its
    result.latent, result.t, result.original_latent = last_good, reference.t, unedited.detach()  # unedited branch
    result.text, result.timesteps = optimised.text.detach(), list(timesteps.walked)
    result.handles = handles.detach().cpu()
    result.seconds = time.perf_counter() - start
    return result


def copied_start(zt: torch.Tensor, footprints: np.ndarray | None, handles: torch.Tensor, targets: torch.Tensor,
                 grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``drag.start = "copy"``: z_t with each pair's footprint moved by its drag in whole latent cells, and the
    handles where their content now is (docs/method.md §3.6)."""
    if footprints is None:
        raise ValueError("drag.start='copy' needs each pair's footprint on the latent grid (footprints=...); "
                         "DragSession finds them in the image")
    footprints = np.asarray(footprints, bool)
    if footprints.shape != (len(handles), *zt.shape[-2:]):
        raise ValueError(f"footprints must be (pairs, h, w) = {(len(handles), *zt.shape[-2:])}, "
                         f"got {footprints.shape}")
    scale = (zt.shape[-2] / grid[0], zt.shape[-1] / grid[1])  # latent cells per feature pixel
    moves = cell_moves(handles, targets, scale) * footprints.any(axis=(1, 2))[:, None]  # an empty footprint stays
    shifted = torch.as_tensor(moves / np.asarray(scale), dtype=handles.dtype, device=handles.device)
    return copy_start(zt.detach(), footprints, moves), handles + shifted


def image_start(moved: MovedStart, handles: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``drag.image_copy``: the inverted z_t of the image with the objects moved, and the handles where their
    content now is: a moved pair's target, the others' own handle (docs/method.md §3.6)."""
    if moved.moved.shape != (len(handles),):
        raise ValueError(f"moved.moved must be ({len(handles)},), one per pair, got {tuple(moved.moved.shape)}")
    pairs = moved.moved.to(handles.device)[:, None]
    return moved.latent.detach().to(handles.device), torch.where(pairs, targets, handles)


@torch.no_grad()
def predicted_frames(model: Model, dragged: DragResult, prompt: str, every: int = 1) -> list[tuple[int, np.ndarray]]:
    """x̂_0 predicted from each kept drag latent ẑ_t^k (one UNet pass + decode), as (k, (H, W, 3) uint8).

    ``dragged``: the ``.drag`` of ``session.run(keep_latents=True)``. Each latent is read at its own timestep
    (``DragStep.t``: under ``schedule="alternating"`` the drag walks down the schedule), the final one at
    ``dragged.t``; the text is the drag's own (``dragged.text``: c' under ``optimize_text``; ``prompt``'s for a result
    that carries none), its conditional half for a guided generated image (x̂_0 without guidance). x̂_0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t
    (docs/method.md §1; from v, or x_0 itself, for models that predict those), so no DDIM schedule needs to be set.
    Uses the model as it is (the session leaves its LoRA active).
    """
    if not dragged.history or dragged.history[0].latent is None:
        raise ValueError("predicted_frames needs the drag's latents: run with keep_latents=True")
    scheduler = model.pipe.scheduler
    alphas, kind = scheduler.alphas_cumprod, scheduler.config.prediction_type
    text = dragged.text[-1:] if dragged.text is not None else encode_prompt(model, prompt)  # the cond half
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
