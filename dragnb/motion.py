"""Motion supervision (pure functions): drag the feature patch around each handle one step toward its target.

Notation (docs/method.md §1; the loss is §3.2): F feature map (1, C, H, W) on the supervision grid; h_i handle
and g_i target as (row, col) feature pixels; d_i = (g_i - h_i) / ||g_i - h_i||_2; Ω(h, r1) the (2 r1 + 1)^2
patch around h.
Per pair the loss is ``(2 r1 + 1)^2 * mean |F(Ω(h_i) + d_i) - sg(F(Ω(h_i)))|`` (the reference's
normalisation; the paper's sum over the patch of the channel L1 norm is that times C).
"""

from __future__ import annotations

import torch


def bilinear_patch(feature: torch.Tensor, center: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinearly sample the (2r+1)^2 patch of ``feature`` (1, C, H, W) centred at ``center`` (row, col).

    Positions beyond the border take the border's value (like ``F.grid_sample(..., padding_mode="border",
    align_corners=True)``). Returns (1, C, 2r+1, 2r+1); differentiable in ``feature`` and ``center``.
    """
    _, _, h, w = feature.shape
    offsets = torch.arange(-radius, radius + 1, device=feature.device, dtype=feature.dtype)
    rows = (center[0] + offsets).clamp(0, h - 1)  # (P,)
    cols = (center[1] + offsets).clamp(0, w - 1)  # (P,)
    r0 = rows.detach().floor().clamp(max=h - 2 if h > 1 else 0).long()
    c0 = cols.detach().floor().clamp(max=w - 2 if w > 1 else 0).long()
    r1, c1 = (r0 + 1).clamp(max=h - 1), (c0 + 1).clamp(max=w - 1)
    wr = (rows - r0.to(rows.dtype))[:, None]  # (P, 1) weight of the lower row
    wc = (cols - c0.to(cols.dtype))[None, :]  # (1, P) weight of the right column

    def take(r, c):  # (1, C, P, P)
        return feature[:, :, r][:, :, :, c]

    top = take(r0, c0) * (1 - wc) + take(r0, c1) * wc
    bottom = take(r1, c0) * (1 - wc) + take(r1, c1) * wc
    return top * (1 - wr) + bottom * wr


def arrived(distance: torch.Tensor, stop_distance: float) -> torch.Tensor:
    """Whether a pair at ``distance`` from its target is done: within ``stop_distance``, or exactly on it (where
    d_i has no direction). The loop's stop rule and the motion term's skip both ask this."""
    return (distance < stop_distance) | (distance == 0)


def motion_loss(feature: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, r1: int = 1,
                stop_distance: float = 2.0, reduction: str = "reference",
                anchors: torch.Tensor | None = None, hold: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i over pairs not yet arrived of the motion-supervision term. handles, targets: (N, 2) (row, col).

    The source patch is read at the handle truncated to integers, as the reference slices it; the shifted
    patch at h_i + d_i is bilinear. Pairs within ``stop_distance`` feature pixels, or exactly on their
    target (where d_i is undefined), are skipped.
    ``anchors`` (N, C, 2r1+1, 2r1+1), when given, replace sg(F(Ω(h_i))) as the targets of the shifted patches:
    GoodDrag's information-preserving supervision passes the original handle patches F_0(Ω(h_i^0))
    (:func:`anchor_patches`), so the dragged content keeps the look it started with.
    ``hold`` (N, C, 2r1+1, 2r1+1), when given (the original handle patches, ``DragSettings.hold_steps``): an
    arrived pair is not skipped but held, its term |F(Ω(g_i)) - hold_i| pulling the patch at the target toward
    the original handle patch.
    """
    loss = feature.new_zeros(())
    patch_area = (2 * r1 + 1) ** 2
    for i, (h, g) in enumerate(zip(handles, targets)):
        distance = torch.linalg.norm(g - h)
        if arrived(distance, stop_distance):
            if hold is None:
                continue
            shifted, source = bilinear_patch(feature, g, r1), hold[i : i + 1]  # F(Ω(g_i)) toward F_0(Ω(h_i^0))
        else:
            d = (g - h) / distance  # unit direction d_i
            # F_0(Ω(h_i^0)) (anchored), or sg(F(Ω(h_i))) (reference); (1, C, P, P)
            source = anchors[i : i + 1] if anchors is not None else bilinear_patch(feature, h.floor(), r1)
            shifted = bilinear_patch(feature, h + d, r1)  # F(Ω(h_i) + d_i)
        term = patch_area * (shifted - source.detach()).abs().mean()
        loss = loss + (term * feature.shape[1] if reduction == "paper" else term)
    return loss


def anchor_patches(feature: torch.Tensor, handles: torch.Tensor, r1: int) -> torch.Tensor:
    """(N, C, 2r1+1, 2r1+1) patches of ``feature`` (1, C, H, W) at the handles (N, 2), read as the loss reads them."""
    return torch.cat([bilinear_patch(feature, h.floor(), r1) for h in handles]).detach()


def mask_loss(x_prev: torch.Tensor, x_prev_original: torch.Tensor, mask: torch.Tensor | None,
              lam: float) -> torch.Tensor:
    """λ Σ |(x̂_{t-1} - x_{t-1}^0) ⊙ (1 - M)|: keep what lies outside the editable mask M (1 = editable).

    Tensors (1, 4, h, w); ``mask`` (1, 1, h, w) on the latent grid, or None (whole image editable: no term).
    """
    if mask is None:
        return x_prev.new_zeros(())
    return lam * ((x_prev - x_prev_original) * (1.0 - mask)).abs().sum()
