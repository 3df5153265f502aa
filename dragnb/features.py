"""UNet decoder features F(z) read through forward hooks (no copied UNet ``forward``).

``unet.up_blocks[i]`` outputs are captured while the UNet runs, bilinearly resized to the supervision
grid and concatenated along channels. Block indices may be negative: -2 is the second-to-last up block,
``up_blocks[2]`` of SD 1.5 (640 channels at 1/8 of the image), the reference code's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel


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
        eps = unet(z, t, text).sample
    return eps, gather(captured, blocks, unet, size)


def features_only(unet: UNet2DConditionModel, z: torch.Tensor, t, text: torch.Tensor,
                  blocks: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """F without running the UNet past the last tapped block (faster for tracking and correspondence)."""
    with tap_up_blocks(unet, blocks, stop_after=True) as captured:
        try:
            unet(z, t, text)
        except _EnoughFeatures:
            pass
    return gather(captured, blocks, unet, size)
