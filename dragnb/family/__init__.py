"""Stage 3 by the drag family's other methods (docs/method.md §11), chosen by ``drag.method``.

Each takes what the paper's drag takes (z_t at t, the text, handles and targets on the supervision grid, the latent
mask) and returns a :class:`~dragnb.drag.DragResult`, so the session, its caches, the records, rounds and replay,
the views and the benchmark treat it as any drag. What a method asks of the denoising it says in the result's
``guide`` (:class:`dragnb.denoise.Guide`). A researcher's own parts (``session.parts``) belong to the optimisation.

* ``fastdrag.py`` (Zhao et al., NeurIPS 2024): z_t moved in one step along a warp field; no optimiser.
* ``regiondrag.py`` (Lu et al., ECCV 2024): the source region's inverted latents copied onto the target region
  while denoising; no optimiser.
* ``dragnoise.py`` (Liu et al., CVPR 2024): the paper's loop with the UNet's bottleneck as the optimised variable
  (a :class:`~dragnb.drag.Optimised` part), which then replaces the bottleneck while denoising.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..callbacks import Callback
from ..config import Settings
from ..drag import DragResult
from ..models import Model
from .dragnoise import dragnoise
from .fastdrag import fastdrag
from .regiondrag import regiondrag

METHODS = {"fastdrag": fastdrag, "regiondrag": regiondrag, "dragnoise": dragnoise}


def run(settings: Settings, model: Model, zt: torch.Tensor, t: int, text: torch.Tensor, handles: torch.Tensor,
        targets: torch.Tensor, mask: torch.Tensor | None, *, inverted: Sequence[torch.Tensor] | None = None,
        callbacks: Sequence[Callback] = (), guidance_scale: float = 1.0, keep_latents: bool = False,
        keep_features: bool = False, progress: bool = False) -> DragResult:
    """Stage 3 by ``settings.drag.method`` (not ``optimise``, which is :func:`dragnb.drag.drag`)."""
    return METHODS[settings.drag.method](settings, model, zt, t, text, handles, targets, mask, inverted=inverted,
                                         callbacks=callbacks, guidance_scale=guidance_scale,
                                         keep_latents=keep_latents, keep_features=keep_features, progress=progress)


__all__ = ["METHODS", "dragnoise", "fastdrag", "regiondrag", "run"]
