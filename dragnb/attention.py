"""Reference-latent control as attention processors (docs/method.md §4).

While denoising the batch [original z_t, edited z_t] (optionally once per guidance half), the self-attention
of the chosen decoder blocks lets every branch attend to the **original** branch's keys and values:
    Attention(Q_b, K_orig, V_orig)  for each branch b.
The original branch is unchanged by this; the edited one borrows the original's appearance (identity).
Installed with ``unet.set_attn_processor`` and restored on exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from .features import resolve_blocks


class ReferenceAttnProcessor:
    """Self-attention whose keys/values come from branch 0 of each group of ``branches`` batch items.

    ``active``: the caller switches control off (plain self-attention) or on between steps; ``layers``: the
    processor names it is installed on (set by :func:`reference_control`).
    """

    def __init__(self, branches: int = 2, active: bool = True):
        self.branches = branches
        self.active = active
        self.layers: list[str] = []

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        query = attn.to_q(hidden_states)  # (B, L, D)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if self.active and batch % self.branches == 0:
            groups = batch // self.branches
            key = key.view(groups, self.branches, length, -1)[:, :1].expand(-1, self.branches, -1, -1).reshape(batch, length, -1)
            value = value.view(groups, self.branches, length, -1)[:, :1].expand(-1, self.branches, -1, -1).reshape(batch, length, -1)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query, key, value = (x.view(batch, -1, heads, head_dim).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)  # (B, heads, L, head_dim)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def self_attention_names(unet: UNet2DConditionModel, blocks: Sequence[int]) -> list[str]:
    """Processor names of the self-attention (attn1) layers inside ``unet.up_blocks[b]``, b in ``blocks``."""
    prefixes = tuple(f"up_blocks.{b}." for b in resolve_blocks(unet, blocks))
    return [name for name in unet.attn_processors if name.startswith(prefixes) and ".attn1." in name]


@contextmanager
def reference_control(unet: UNet2DConditionModel, blocks: Sequence[int], branches: int = 2):
    """Install one :class:`ReferenceAttnProcessor` on the decoder self-attention of ``blocks`` and yield it (its
    ``active`` switches control, its ``layers`` names where it sits); restore the UNet's processors on exit."""
    original = dict(unet.attn_processors)
    controlled = set(self_attention_names(unet, blocks))
    processor = ReferenceAttnProcessor(branches)
    processor.layers = sorted(controlled)
    unet.set_attn_processor({name: (processor if name in controlled else proc) for name, proc in original.items()})
    try:
        yield processor
    finally:
        unet.set_attn_processor(dict(original))  # set_attn_processor empties the dict it is given
