"""UNet decoder features F(z) read through forward hooks (no copied UNet ``forward``; docs/method.md §3.1).

``unet.up_blocks[i]`` outputs are captured while the UNet runs, bilinearly resized to the supervision
grid and concatenated along channels. Block indices may be negative: -2 is the second-to-last up block,
``up_blocks[2]`` of SD 1.5 (640 channels at 1/8 of the image), the reference code's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from .images import model_size, to_model_tensor, to_rgb_array
from .inversion import encode_image
from .models import Model, encode_prompt, run_unet
from .points import feature_grid, grid_to_image, image_to_grid
from .tracking import point_features


class _EnoughFeatures(Exception):
    """Raised from the last hook to skip the rest of the UNet when only features are wanted."""


def resolve_blocks(unet: UNet2DConditionModel, blocks: Sequence[int]) -> list[int]:
    """Turn possibly negative up-block indices into positive ones, checking they exist."""
    n = len(unet.up_blocks)
    out = []
    for b in blocks:
        if not -n <= b < n:
            raise ValueError(f"feature_blocks: up block {b} does not exist; this UNet has up blocks 0..{n - 1}")
        out.append(b % n)
    return out


@contextmanager
def tap_up_blocks(unet: UNet2DConditionModel, blocks: Sequence[int], stop_after: bool = False):
    """Capture the outputs of ``unet.up_blocks[b]`` for b in ``blocks`` into the yielded dict {b: tensor}.

    With ``stop_after`` the UNet stops right after the last tapped block (call it through
    :func:`features_only`). The hooks are removed on exit, even after an error.
    """
    blocks = resolve_blocks(unet, blocks)
    captured: dict[int, torch.Tensor] = {}
    last = max(blocks)

    def hook_for(index: int):
        def hook(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
            if stop_after and index == last:
                raise _EnoughFeatures
        return hook

    handles = [unet.up_blocks[b].register_forward_hook(hook_for(b)) for b in blocks]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def gather(captured: dict[int, torch.Tensor], blocks: Sequence[int], unet: UNet2DConditionModel,
           size: tuple[int, int]) -> torch.Tensor:
    """Resize each captured map to ``size`` (bilinear) and concatenate: (B, ΣC, h, w)."""
    maps = [F.interpolate(captured[b].float(), size=size, mode="bilinear", align_corners=False)
            for b in resolve_blocks(unet, blocks)]
    return torch.cat(maps, dim=1)


def unet_with_features(unet: UNet2DConditionModel, z: torch.Tensor, t, text: torch.Tensor,
                       blocks: Sequence[int], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One UNet call returning (ε, F): ε (B, 4, h, w) and features F (B, ΣC, *size)."""
    with tap_up_blocks(unet, blocks) as captured:
        eps = run_unet(unet, z, t, text)
    return eps, gather(captured, blocks, unet, size)


def block_outputs(unet: UNet2DConditionModel, z: torch.Tensor, t, text: torch.Tensor,
                  blocks: Sequence[int]) -> dict[int, torch.Tensor]:
    """The raw outputs {b: (B, C_b, h_b, w_b)} of the tapped up blocks, without running the UNet past the last."""
    with tap_up_blocks(unet, blocks, stop_after=True) as captured:
        try:
            run_unet(unet, z, t, text)
        except _EnoughFeatures:
            pass
    return {b: x.float() for b, x in captured.items()}  # fp32 whatever the weights' dtype (a no-op for fp32)


def features_only(unet: UNet2DConditionModel, z: torch.Tensor, t, text: torch.Tensor,
                  blocks: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """F without running the UNet past the last tapped block (faster for tracking and correspondence)."""
    return gather(block_outputs(unet, z, t, text, blocks), blocks, unet, size)


def cosine_similarity(queries: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """(N, C) query features against every pixel of ``feature`` (1, C, h, w): (N, h*w) cosine similarities,
    the matcher of DIFT correspondence and of Mean Distance."""
    keys = F.normalize(feature[0].flatten(1).float(), dim=0)  # (C, h*w)
    return torch.stack([F.normalize(q.float(), dim=0) @ keys for q in queries])


# ---- for the views: what notebook 03 and the correspondence widget show -------------------------------
def pca_rgb(feature: torch.Tensor) -> np.ndarray:
    """(1, C, h, w) or (C, h, w) features -> (h, w, 3) float in [0, 1]: the first three principal components."""
    f = feature.detach().float().cpu()
    f = f[0] if f.ndim == 4 else f
    c, h, w = f.shape
    x = f.reshape(c, h * w).T  # (hw, C)
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)  # rows of v: principal directions
    proj = (x @ v[:3].T).numpy()  # (hw, k), k <= 3
    if proj.shape[1] < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    return np.clip((proj - lo) / np.maximum(hi - lo, 1e-8), 0, 1).reshape(h, w, 3)


@torch.no_grad()
def feature_maps(model: Model, image, prompt: str = "", blocks: Sequence[int] = (-2,),
                 timesteps: Sequence[int] = (261, 681), feature_scale: float = 0.5, seed: int = 0) -> dict:
    """Features F of ``image`` for each (block, t): z_0 noised to t with a fixed ε, one UNet pass per block.

    Returns {(block, t): (1, C, h, w)} on the supervision grid (``feature_scale`` of the model image).
    """
    source = to_rgb_array(image)
    size = model_size(source.shape[:2], model.resolution, model.size_multiple)
    z0 = encode_image(model, to_model_tensor(source, size))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(z0.device, z0.dtype)
    text = encode_prompt(model, prompt)
    grid = feature_grid(size, feature_scale)
    out = {}
    for t in timesteps:
        zt = model.pipe.scheduler.add_noise(z0, noise, torch.tensor([int(t)]))
        for block in blocks:
            out[(block, int(t))] = features_only(model.pipe.unet, zt, int(t), text, [block], grid).cpu()
    return out


def correspond(feature_a: torch.Tensor, feature_b: torch.Tensor, points_xy, size_a: tuple[int, int],
               size_b: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each point of image A (x, y), the best cosine match in image B's features (DIFT-style).

    ``feature_*``: (1, C, h, w); ``size_*``: (H, W) of the images. Returns (N, 2) matched (x, y) in B's image
    pixels and (N, h_b, w_b) cosine similarity maps.
    """
    grid_a, grid_b = tuple(feature_a.shape[-2:]), tuple(feature_b.shape[-2:])
    rc = image_to_grid(np.asarray(points_xy, dtype=float).reshape(-1, 2), size_a, grid_a)
    rc = rc.round().long().clamp(min=torch.zeros(2, dtype=torch.long), max=torch.tensor(grid_a) - 1)
    sims = cosine_similarity(point_features(feature_a, rc), feature_b).reshape(-1, *grid_b)  # (N, h, w)
    best = sims.flatten(1).argmax(dim=1)
    best_rc = torch.stack([best // grid_b[1], best % grid_b[1]], dim=1).float()
    return grid_to_image(best_rc, size_b, grid_b), sims.numpy()
