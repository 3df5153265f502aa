"""Matplotlib views of an edit and its stages. Each returns a :class:`matplotlib.figure.Figure` (or an
animation) and never calls ``plt.show()``; figures are not registered with pyplot, so a notebook shows a
figure once, when it is the cell's value.

Views of a finished edit take an :class:`~dragnb.edit.EditResult`. What the other views show is computed
beside its stage and passed in: :func:`dragnb.inversion.round_trip_errors` for :func:`inversion_error`,
:func:`dragnb.features.feature_maps` for :func:`feature_pca`, :func:`dragnb.features.correspond` for
:func:`correspondence`, :func:`dragnb.drag.predicted_frames` for :func:`drag_animation`. Points are image pixels
(x, y) throughout (:mod:`dragnb.points`).
"""

from __future__ import annotations

from collections.abc import Sequence

import io

import matplotlib
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure as _Figure

from ..features import pca_rgb
from ..images import to_rgb_array
from ..lora import LoraResult
from ..rounds import Round
from ..edit import EditResult

HANDLE, TARGET, PATH = "#e02020", "#2050f0", "#ffd000"


class Figure(_Figure):
    """A matplotlib Figure that shows itself in Jupyter as a PNG whatever the backend (it is not pyplot's)."""

    png_dpi = 72  # what a notebook shows and stores (the classic inline dpi): an executed lesson stays under 500 KB

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=self.png_dpi)
        return buffer.getvalue()


def _axes_off(ax, title: str = "") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def _show(ax, image: np.ndarray) -> None:
    """Image pixels as data coordinates: pixel (x, y) is centred on (x, y), as points are drawn."""
    ax.imshow(image, interpolation="nearest")
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)


def _tint(ax, mask: np.ndarray | None) -> None:
    """The editable mask as the authors' UI shows it: what may not change darkened, the mask's edge outlined (a
    colour tint would change the colours of what lies under it)."""
    if mask is not None and mask.any():
        overlay = np.zeros((*mask.shape, 4))
        overlay[~mask] = (0.0, 0.0, 0.0, 0.45)
        ax.imshow(overlay, interpolation="nearest")
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)


def _arrows(ax, starts: np.ndarray, ends: np.ndarray) -> None:
    for (x0, y0), (x1, y1) in zip(starts, ends):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="->", color="white", lw=1.5, shrinkA=0, shrinkB=3))
    ax.scatter(starts[:, 0], starts[:, 1], c=HANDLE, s=30, edgecolors="white", linewidths=0.8, zorder=3)
    ax.scatter(ends[:, 0], ends[:, 1], c=TARGET, s=30, edgecolors="white", linewidths=0.8, zorder=3)


# ---- a finished edit --------------------------------------------------------------------------------
def compare(result: EditResult) -> Figure:
    """Source with mask, handles, targets and arrows beside the result with where the handles ended."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    draw_edit(a, b, result)
    _axes_off(a, "source: handles (red) → targets (blue)")
    _axes_off(b, f"result: tracked handles after {len(result.drag.history)} steps ({result.drag.stop_reason})")
    fig.suptitle(result.prompt or "(no prompt)", fontsize=10)
    return fig


def draw_edit(source_ax, result_ax, result: EditResult) -> None:
    """On two axes: the source with the mask overlay and handle → target arrows, and the result with arrows from
    where the handles ended to their targets (what :func:`compare` shows; a gallery calls it once per edit)."""
    _show(source_ax, result.source)
    _tint(source_ax, result.mask)
    _arrows(source_ax, result.points.handles, result.points.targets)
    _show(result_ax, result.image)
    _arrows(result_ax, result.final_handles_xy, result.points.targets)
    for ax in (source_ax, result_ax):
        _axes_off(ax)


def trajectories(result: EditResult, on: str = "result") -> Figure:
    """Each handle's tracked path over the iterations, on the result (``on="result"``) or the source."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    _show(ax, result.image if on == "result" else result.source)
    path = result.trajectory_xy()  # (K + 1, N, 2)
    for i in range(path.shape[1]):
        ax.plot(path[:, i, 0], path[:, i, 1], "-", color=PATH, lw=1.5)
        ax.scatter(path[:, i, 0], path[:, i, 1], c=np.arange(len(path)), cmap="viridis", s=10, zorder=3)
    _arrows(ax, path[0], result.points.targets)
    ax.scatter(path[-1, :, 0], path[-1, :, 1], marker="x", c="white", s=40, zorder=4)
    _axes_off(ax, f"handle trajectories ({len(path) - 1} steps; colour = step, × = final)")
    return fig


def compare_variants(results: dict[str, EditResult]) -> Figure:
    """The same edit under several settings: each result with its handles' paths (top), and per setting the mean
    handle-target distance and the motion term over the iterations (bottom), the variants' curves overlaid."""
    names = list(results)
    fig = Figure(figsize=(2.6 * max(len(names), 3), 5.6), layout="constrained")
    grid = fig.add_gridspec(2, max(len(names), 2))
    for i, name in enumerate(names):
        r = results[name]
        ax = fig.add_subplot(grid[0, i])
        _show(ax, r.image)
        path = r.trajectory_xy()
        for j in range(path.shape[1]):
            ax.plot(path[:, j, 0], path[:, j, 1], "-", color=PATH, lw=1.2)
        _arrows(ax, path[0], r.points.targets)
        steps = f"{len(r.drag.history)} steps, {r.drag.stop_reason}" if r.drag.history else f"{r.drag.method}: one step"
        _axes_off(ax, f"{name}\n{steps}")
    half = max(len(names), 2) // 2
    dist_ax, loss_ax = fig.add_subplot(grid[1, :half]), fig.add_subplot(grid[1, half:])
    for name in names:
        history = results[name].drag.history
        if not history:  # a one-step method of the drag family: no curve to draw
            continue
        steps = [s.step for s in history]
        dist_ax.plot(steps, [float(np.mean(s.distances)) for s in history], label=name)
        loss_ax.plot(steps, [s.motion_loss for s in history], label=name)
    dist_ax.set_xlabel("drag step k")
    dist_ax.set_ylabel("mean ‖g − h‖ (feature px)")
    loss_ax.set_xlabel("drag step k")
    loss_ax.set_ylabel("motion term")
    loss_ax.set_yscale("symlog")
    dist_ax.legend(fontsize=7)
    return fig


def loss_curves(result: EditResult) -> Figure:
    """Motion, mask and total loss per iteration, and each pair's handle-target distance (feature pixels).

    Under ``schedule="alternating"`` a thin line marks each step down the schedule (labelled with the new t); under
    ``optimize_text`` the text embedding's distance from the prompt's is drawn on the loss panel's right axis."""
    history = result.drag.history
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    a, b = fig.subplots(1, 2)
    steps = [s.step for s in history]
    for name, values in (("motion", [s.motion_loss for s in history]), ("mask", [s.mask_loss for s in history]),
                         ("total", [s.loss for s in history])):
        a.plot(steps, values, label=name, lw=1.5 if name != "total" else 1, ls="-" if name != "total" else "--")
    a.set_xlabel("drag step k")
    a.set_ylabel("loss")
    a.set_title("loss terms per iteration", fontsize=10)
    a.legend(fontsize=8)
    distances = np.array([s.distances for s in history])  # (K, N)
    for i in range(distances.shape[1] if distances.size else 0):
        b.plot(steps, distances[:, i], label=f"pair {i}")
    b.axhline(result.settings.drag.stop_distance, color="gray", ls=":", lw=1, label="stop distance")
    b.set_xlabel("drag step k")
    b.set_ylabel("‖g − h‖ (feature pixels)")
    b.set_title("distance to target", fontsize=10)
    b.legend(fontsize=8)
    for before, after in zip(history, history[1:]):
        if after.t != before.t:  # the alternating drag took a DDIM step here
            for ax in (a, b):
                ax.axvline(after.step - 0.5, color="0.75", lw=0.8, zorder=0)
            a.annotate(f"t={after.t}", (after.step - 0.5, 1), xycoords=("data", "axes fraction"), fontsize=6,
                       color="0.4", rotation=90, va="top", ha="right")
    if history and "text_distance" in history[0].extras:  # DragText's part records how far c' moved
        text = a.twinx()
        text.plot(steps, [s.extras["text_distance"] for s in history], color="purple", lw=1, ls=":")
        text.set_ylabel("max |c′ − c| (text)", color="purple", fontsize=8)
    return fig


def rounds(rounds: Sequence[Round], current: int | None = None) -> Figure:
    """Each round (:mod:`dragnb.rounds`) as a column: its source with mask, handles and targets above, its result
    below, titled with the round it was made from; ``current`` (a round index) is framed."""
    fig = Figure(figsize=(2.2 * max(1, len(rounds)), 4.6), layout="constrained")
    axes = np.asarray(fig.subplots(2, max(1, len(rounds)), squeeze=False))
    for column, rnd in zip(axes.T, rounds):
        top, bottom = column
        _show(top, rnd.source)
        _tint(top, rnd.mask)
        if rnd.points is not None:
            _arrows(top, rnd.points.handles, rnd.points.targets)
        origin = "first round" if rnd.parent is None else f"from {rnd.parent}"
        _axes_off(top, f"round {rnd.index} ({origin}{', LoRA kept' if rnd.keep_lora else ''})")
        if rnd.image is not None:
            _show(bottom, rnd.image)
            _axes_off(bottom, "its result")
        else:
            bottom.axis("off")
            bottom.set_title("not run", fontsize=10)
        if rnd.index == current:
            for ax in column:
                for spine in ax.spines.values():
                    spine.set_edgecolor(TARGET)
                    spine.set_linewidth(3)
    return fig


def lora_loss(lora: LoraResult, smooth: int = 5) -> Figure:
    """The LoRA denoising loss per step, raw and as a running mean of ``smooth`` steps."""
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    losses = np.asarray(lora.losses, dtype=float)
    ax.plot(losses, color="#bbbbbb", lw=1, label="per step")
    if len(losses) >= smooth > 1:
        ax.plot(np.arange(smooth - 1, len(losses)), np.convolve(losses, np.ones(smooth) / smooth, "valid"),
                color="#d04000", lw=2, label=f"mean of {smooth}")
    ax.set_xlabel("LoRA step")
    ax.set_ylabel("ε-prediction MSE")
    ax.set_title(f"LoRA fine-tuning ({len(losses)} steps, {lora.seconds:.1f} s)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ---- inversion ----------------------------------------------------------------------------------------
def inversion_error(records: list[dict]) -> Figure:
    """Round-trip error (invert → denoise) against the inverted timestep t, from :func:`dragnb.inversion.round_trip_errors`."""
    fig = Figure(figsize=(4 + 1.6 * len(records), 3.4), layout="constrained")
    grid = fig.add_gridspec(2, 2 + len(records))
    ax = fig.add_subplot(grid[:, :2])
    ts = [r["t"] for r in records]
    ax.plot(ts, [r["latent_error"] for r in records], "o-", color="#d04000", label="latent rel. MSE")
    ax.set_xlabel("inverted timestep t")
    ax.set_ylabel("‖DDIM(inv(z₀)) − z₀‖² / ‖z₀‖²")
    ax.set_yscale("log")
    twin = ax.twinx()
    twin.plot(ts, [r["psnr"] for r in records], "s--", color="#2050a0", label="image PSNR (dB)")
    twin.set_ylabel("PSNR vs VAE reconstruction (dB)")
    ax.set_title("DDIM inversion round trip", fontsize=10)
    for i, r in enumerate(records):
        sub = fig.add_subplot(grid[:, 2 + i])
        sub.imshow(r["image"], interpolation="nearest")
        _axes_off(sub, f"t={r['t']} ({r['steps']} steps)\n{r['psnr']:.1f} dB")
    return fig


# ---- features -----------------------------------------------------------------------------------------
def feature_pca(maps: dict, image=None) -> Figure:
    """PCA→RGB of each feature map from :func:`dragnb.features.feature_maps`: rows = blocks, columns = timesteps."""
    blocks = sorted({b for b, _ in maps})
    times = sorted({t for _, t in maps})
    extra = image is not None
    fig = Figure(figsize=(2.2 * (len(times) + extra), 2.3 * len(blocks)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(blocks), len(times) + extra, squeeze=False))
    for i, b in enumerate(blocks):
        if extra:
            axes[i, 0].imshow(to_rgb_array(image), interpolation="nearest")
            _axes_off(axes[i, 0], "image")
        for j, t in enumerate(times):
            f = maps[(b, t)]
            ax = axes[i, j + extra]
            ax.imshow(pca_rgb(f), interpolation="nearest")
            _axes_off(ax, f"up block {b}, t={t}\n{f.shape[1]} ch, {f.shape[2]}×{f.shape[3]}")
    return fig


def correspondence(image_a, image_b, points_xy, matches_xy, sims: np.ndarray) -> Figure:
    """Points on A, their matches on B, and each point's similarity map over B, on one colour bar."""
    a_img, b_img = to_rgb_array(image_a), to_rgb_array(image_b)
    points_xy, n = np.asarray(points_xy, float).reshape(-1, 2), len(sims)
    fig = Figure(figsize=(2.6 * (2 + n) + 0.8, 2.8), layout="constrained")
    axes = fig.subplots(1, 2 + n)
    colours = matplotlib.colormaps["tab10"](np.arange(n) % 10)
    _show(axes[0], a_img)
    axes[0].scatter(points_xy[:, 0], points_xy[:, 1], c=colours, s=50, edgecolors="white")
    _axes_off(axes[0], "A: query points")
    _show(axes[1], b_img)
    axes[1].scatter(matches_xy[:, 0], matches_xy[:, 1], c=colours, s=50, edgecolors="white", marker="D")
    _axes_off(axes[1], "B: best matches")
    low, high = float(np.min(sims)), float(np.max(sims))
    for i in range(n):
        shown = axes[2 + i].imshow(sims[i], cmap="magma", vmin=low, vmax=high)
        _axes_off(axes[2 + i], f"cosine similarity, point {i}")
    if n:
        fig.colorbar(shown, ax=list(axes[2:]), shrink=0.8, label="cosine similarity (high = match)")
    return fig


def supervision_gradient(image, gradient: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
                         grid: tuple[int, int], mask: np.ndarray | None, r1: int) -> Figure:
    """Where one motion-supervision step acts: the source with handles, targets and the mask (what may not change
    darkened) beside the gradient's size per latent pixel (its norm over the channels of ``gradient``, (1, C, h, w)
    or (C, h, w)), with each handle's patch Ω(h_i, r1) (solid) and the same patch shifted by d_i (dashed).
    ``handles``, ``targets``: (N, 2) (row, col) on the feature ``grid`` (H_f, W_f), as the drag holds them;
    ``mask``: (H, W) bool in image pixels."""
    from matplotlib.patches import Rectangle

    from ..points import grid_to_image

    image = to_rgb_array(image)
    (H, W), latent = image.shape[:2], tuple(gradient.shape[-2:])
    size = gradient.detach().reshape(-1, *latent).float().norm(dim=0).cpu().numpy()  # (h, w)
    handles, targets = torch.as_tensor(handles, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
    steps = (targets - handles) / torch.linalg.norm(targets - handles, dim=1, keepdim=True)  # d_i, unit length
    starts, ends = grid_to_image(handles, (H, W), grid), grid_to_image(targets, (H, W), grid)
    shifted = grid_to_image(handles + steps, (H, W), grid)
    fig = Figure(figsize=(8.4, 3.8), layout="constrained")
    a, b = fig.subplots(1, 2)
    _show(a, image)
    _tint(a, mask)
    shown = b.imshow(size, cmap="magma", extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
    fig.colorbar(shown, ax=b, shrink=0.85, label="‖∂L/∂ẑ_t‖ over the latent channels (per latent px)")
    _axes_off(a, "source: handles (red) → targets (blue)\nthe mask term holds what lies outside the outline")
    a.title.set_fontsize(9)
    _axes_off(b, f"gradient of L (one latent px = {H // latent[0]} image px)\n"
                 "squares: Ω(h_i, r1) solid, Ω(h_i, r1) + d_i dashed")
    b.title.set_fontsize(9)
    side = (2 * r1 + 1) * W / grid[1]
    if mask is not None and mask.any():
        b.contour(np.asarray(mask, float), levels=[0.5], colors="white", linewidths=0.8)
    for ax in (a, b):
        for (x0, y0), (sx, sy) in zip(starts, shifted):
            ax.add_patch(Rectangle((x0 - side / 2, y0 - side / 2), side, side, fill=False, ec="cyan", lw=1))
            ax.add_patch(Rectangle((sx - side / 2, sy - side / 2), side, side, fill=False, ec="cyan", lw=1, ls="--"))
        _arrows(ax, starts, ends)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
    return fig


def method_view(edit: EditResult) -> Figure:
    """What a one-step method of the drag family did (docs/method.md §11): FastDrag's warp field on the latent grid
    (each editable latent pixel's move, drawn in image pixels) with the holes it left; RegionDrag's squares (source
    dashed, target solid) with the pixels blurred with noise; beside each, the result."""
    drag = edit.drag
    if drag.method not in ("fastdrag", "regiondrag"):
        raise ValueError(f"method_view draws fastdrag's field or regiondrag's regions; this edit's drag.method is "
                         f"{drag.method!r} (its iterations: loss_curves, tracking_heatmaps, the Scrubber)")
    from matplotlib.patches import Rectangle

    (H, W), latent = edit.image_size, tuple(drag.latent.shape[-2:])
    cell = np.array([H / latent[0], W / latent[1]])  # image pixels per latent pixel (rows, cols)
    fig = Figure(figsize=(8.4, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    _show(a, edit.source)
    _tint(a, edit.mask)
    centre = lambda rc: ((rc[..., 1] + 0.5) * cell[1] - 0.5, (rc[..., 0] + 0.5) * cell[0] - 0.5)  # latent -> (x, y)
    if drag.method == "fastdrag":
        field, holes = drag.extras["field"], drag.extras["holes"]
        rows, cols = np.nonzero(np.abs(field).sum(-1) > 0.05)
        x, y = centre(np.stack([rows, cols], -1).astype(float))
        a.quiver(x, y, field[rows, cols, 1] * cell[1], field[rows, cols, 0] * cell[0], angles="xy", scale_units="xy",
                 scale=1, color="#ffd000", width=0.004)
        hx, hy = centre(np.argwhere(holes).astype(float))
        a.scatter(hx, hy, marker="s", s=12, facecolors="none", edgecolors="cyan", linewidths=0.8)
        title = (f"FastDrag's warp: each latent pixel's move (yellow),\n{int(holes.sum())} holes filled (cyan)")
    else:
        regions, vacated = drag.extras["regions"], drag.extras["vacated"]
        for pair in np.unique(regions.pair):
            for cells, style in ((regions.source[regions.pair == pair], "--"), (regions.target[regions.pair == pair], "-")):
                (r0, c0), (r1, c1) = cells.min(0), cells.max(0)
                a.add_patch(Rectangle((c0 * cell[1] - 0.5, r0 * cell[0] - 0.5), (c1 - c0 + 1) * cell[1],
                                      (r1 - r0 + 1) * cell[0], fill=False, ec="#ffd000", lw=1.2, ls=style))
        vx, vy = centre(np.argwhere(vacated).astype(float))
        a.scatter(vx, vy, marker="x", s=10, c="cyan", linewidths=0.8)
        title = (f"RegionDrag's squares: source (dashed) → target (solid),\nnoised where left (×), copied for "
                 f"{drag.extras['copy_steps']} steps")
    _arrows(a, edit.points.handles, edit.points.targets)
    _axes_off(a, title)
    a.title.set_fontsize(9)
    _show(b, edit.image)
    _arrows(b, edit.points.handles, edit.points.targets)
    _axes_off(b, f"result ({drag.method}, {drag.seconds * 1000:.0f} ms for stage 3)")
    b.title.set_fontsize(9)
    return fig


def differences(reference: np.ndarray, images: dict[str, np.ndarray], reference_title: str = "reference",
                mask: np.ndarray | None = None, answer: np.ndarray | None = None, arrows=None) -> Figure:
    """Several images of one scene beside a reference (top) and each one's per-pixel distance to it (bottom, max over
    RGB on one colour bar): what changed where. ``mask`` is outlined on every panel; ``answer`` (a known answer) is
    shown under the reference; ``arrows``: ((N, 2), (N, 2)) image (x, y) handles and targets drawn on the reference.
    Titles are the dict's keys (with whatever numbers the caller puts in them)."""
    names = list(images)
    fig = Figure(figsize=(2.3 * (len(names) + 1), 5.2), layout="constrained")
    axes = np.asarray(fig.subplots(2, len(names) + 1)).reshape(2, -1)
    _show(axes[0, 0], reference)
    if arrows is not None:
        _arrows(axes[0, 0], np.asarray(arrows[0], float), np.asarray(arrows[1], float))
    axes[0, 0].set_title(reference_title, fontsize=8)
    if answer is not None:
        _show(axes[1, 0], answer)
        axes[1, 0].set_title("known answer", fontsize=8)
    distances = {name: np.abs(image.astype(float) - reference.astype(float)).max(axis=-1)  # (H, W) each
                 for name, image in images.items()}
    vmax = max(1.0, max(float(d.max()) for d in distances.values()))  # one scale for all
    for i, name in enumerate(names, start=1):
        _show(axes[0, i], images[name])
        axes[0, i].set_title(name, fontsize=8)
        shown = axes[1, i].imshow(distances[name], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        axes[1, i].set_title("|this − " + reference_title.split("\n")[0] + "|", fontsize=8)
    for ax in axes.flat:
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
    if answer is None:
        axes[1, 0].set_visible(False)
    fig.colorbar(shown, ax=axes[1, 1:], shrink=0.9, label="|difference| of 255 (low = same)")
    return fig


# ---- point tracking -----------------------------------------------------------------------------------
def tracking_heatmaps(result: EditResult, steps: Sequence[int] = (1, 2), pair: int = 0) -> Figure:
    """What the tracker searched at chosen iterations k ≥ 1: the distance over its window, the point it chose (×).

    Needs the iterations' features: ``session.run(keep_features=True)``; each tracker records its windows
    (:class:`~dragnb.tracking.TrackingWindow`) in the step's ``extras["windows"]``, and this view draws them as they
    are. The paper's nearest neighbour shows ‖F_k(q) − F_0(h⁰)‖₁ over Ω(h^{k-1}, r2) (F_0 at the step's own
    timestep under the alternating schedule; F_{k-1}(h^{k-1}) under ``track_from="previous"``); FreeDrag's line
    search the template distance mean|F_k(Ω(q)) − T| around p^{k-1} as far as one search reaches, with the h⁰→g line
    it keeps to (a search runs every few steps, so between two the point stays); a researcher's own tracker whatever
    its windows hold. Low = match.
    """
    history = result.drag.history
    steps = [k for k in steps if 1 <= k < len(history)]
    if not steps or "windows" not in history[steps[0]].extras:
        raise ValueError("tracking_heatmaps needs the tracker's windows of steps >= 1: run with keep_features=True "
                         "and at least 2 drag steps")
    fig = Figure(figsize=(2.8 * len(steps) + 0.8, 3.1), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(steps)))
    for ax, k in zip(axes, steps):
        window = history[k].extras["windows"][pair]
        previous = history[k - 1].handles[pair]
        top, left = window.origin
        hh, ww = window.distances.shape
        shown = ax.imshow(window.distances.numpy(), cmap="viridis",
                          extent=(left - 0.5, left + ww - 0.5, top + hh - 0.5, top - 0.5))
        fig.colorbar(shown, ax=ax, shrink=0.8, label="distance (low = match)")
        if window.line is not None:
            (r0, c0), (r1, c1) = window.line
            ax.plot([c0, c1], [r0, r1], color=TARGET, lw=1, label="h⁰→g")
        else:
            target = result.drag.targets[pair]
            d = target - previous
            reach = min(max(hh, ww) / 2, float(torch.linalg.norm(d)))
            d = d / max(float(torch.linalg.norm(d)), 1e-6) * reach
            ax.annotate("", xy=(float(previous[1] + d[1]), float(previous[0] + d[0])),
                        xytext=(float(previous[1]), float(previous[0])),
                        arrowprops=dict(arrowstyle="->", color=TARGET))
        ax.scatter([window.best[1]], [window.best[0]], marker="x", c="red", s=60, label="chosen")
        ax.scatter([float(previous[1])], [float(previous[0])], marker="o", facecolors="none", edgecolors="white",
                   s=60, label="$h^{k-1}$")
        ax.set_xlim(left - 0.5, left + ww - 0.5)
        ax.set_ylim(top + hh - 0.5, top - 0.5)
        ax.set_title(f"step {k} (t={history[k].t})\n{window.quantity}", fontsize=9)
        ax.set_xlabel("col (feature px)")
        ax.set_ylabel("row")
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


# ---- animation ----------------------------------------------------------------------------------------
def drag_animation(frames: list[tuple[int, np.ndarray]], result: EditResult, interval: int = 150) -> FuncAnimation:
    """An animation of x̂_0 over the drag with the handles moving; ``.to_jshtml()`` or ``.save("x.gif")``."""
    fig = Figure(figsize=(4, 4.2), layout="constrained")
    ax = fig.subplots()
    path = result.trajectory_xy()  # (K + 1, N, 2) image pixels of the original image
    h, w = result.image_size
    first = frames[0][1]
    sy, sx = first.shape[0] / h, first.shape[1] / w  # frames are at the model size
    shown = ax.imshow(first, interpolation="nearest")
    ax.scatter(result.points.targets[:, 0] * sx, result.points.targets[:, 1] * sy, c=TARGET, s=40, edgecolors="white")
    handles = ax.scatter(path[0, :, 0] * sx, path[0, :, 1] * sy, c=HANDLE, s=40, edgecolors="white")
    title = ax.set_title("", fontsize=10)
    _axes_off(ax)

    def update(i: int):
        k, image = frames[i]
        shown.set_data(image)
        at = path[min(k, len(path) - 1)]  # (N, 2) handles at step k
        handles.set_offsets(np.stack([at[:, 0] * sx, at[:, 1] * sy], axis=1))
        title.set_text(f"predicted x̂₀ at drag step {k}")
        return shown, handles, title

    return FuncAnimation(fig, update, frames=len(frames), interval=interval, blit=False)


# ---- a summary for slides -----------------------------------------------------------------------------
def summary(edit: EditResult, frames: list[tuple[int, np.ndarray]], answer: np.ndarray | None = None) -> Figure:
    """One slide of an edit, left to right: the source with its pairs and the mask outlined | x̂_0 at the first, a
    middle and the last iteration, with the handles there | the result with the handles' paths | the known answer.

    ``frames``: :func:`dragnb.drag.predicted_frames` of the edit (``session.run(keep_latents=True)``); its last is
    the final latent's. ``answer``: (H, W, 3) uint8, the image the edit should give (a scene's known answer), or None.
    """
    if not frames:
        raise ValueError("summary needs the edit's predicted_frames: run with keep_latents=True")
    if answer is not None and (np.ndim(answer) != 3 or np.shape(answer)[2] != 3):
        raise ValueError(f"answer: an (H, W, 3) image, got shape {np.shape(answer)}")
    picks = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})]
    path = edit.trajectory_xy()  # (K + 1, N, 2) image pixels of the original image
    targets, h, w = edit.points.targets, *edit.image_size
    count = 1 + len(picks) + 1 + (answer is not None)
    fig = Figure(figsize=(2.6 * count, 2.6 * h / w + 1.0), layout="constrained")  # room for two-line titles
    axes = list(np.atleast_1d(fig.subplots(1, count)))

    source = axes.pop(0)
    _show(source, edit.source)
    if edit.mask is not None and edit.mask.any() and not edit.mask.all():
        source.contour(edit.mask.astype(float), levels=[0.5], colors=[PATH], linewidths=1.2)
    _arrows(source, edit.points.handles, targets)
    _axes_off(source, "source: move red → blue\n" + ("only inside the outline" if edit.mask is not None
                                                       else "no mask: all may change"))
    for ax, (k, image) in zip(axes, picks):
        sx, sy = image.shape[1] / w, image.shape[0] / h  # frames are at the model size
        at = path[min(k, len(path) - 1)]  # (N, 2) the handles at step k
        _show(ax, image)
        ax.scatter(targets[:, 0] * sx, targets[:, 1] * sy, c=TARGET, s=30, edgecolors="white", linewidths=0.8)
        ax.scatter(at[:, 0] * sx, at[:, 1] * sy, c=HANDLE, s=30, edgecolors="white", linewidths=0.8)
        when = ("before the drag (k=0):\nhandles where clicked" if k == 0 else
                f"after the drag (k={k}):\nhandles where tracked" if k == len(edit.drag.history) else
                f"midway (k={k}):\nhandles on their way to blue")
        _axes_off(ax, f"x̂₀ {when}")
    result = axes[len(picks)]
    _show(result, edit.image)
    for i in range(path.shape[1]):
        result.plot(path[:, i, 0], path[:, i, 1], "-", color=PATH, lw=1.5)
    result.scatter(targets[:, 0], targets[:, 1], c=TARGET, s=30, edgecolors="white", linewidths=0.8)
    result.scatter(path[-1, :, 0], path[-1, :, 1], marker="x", c="white", s=40, zorder=4)
    _axes_off(result, f"result: handles' paths end at ×\n({len(edit.drag.history)} steps, {edit.drag.stop_reason})")
    if answer is not None:
        known, answer = axes[-1], np.asarray(answer)
        sx, sy = answer.shape[1] / w, answer.shape[0] / h
        _show(known, answer)
        known.scatter(targets[:, 0] * sx, targets[:, 1] * sy, c=TARGET, s=30, edgecolors="white", linewidths=0.8)
        _axes_off(known, "known answer:\nthe result should look like this")
    fig.suptitle(edit.prompt or "(no prompt)", fontsize=10)
    return fig


def frame_rows(rows: dict[str, tuple[list[tuple[int, np.ndarray]], EditResult]],
               answer: np.ndarray | None = None) -> Figure:
    """x̂_0 over a drag, one row per setting: each row's frames (:func:`dragnb.drag.predicted_frames`, titled with
    the iteration k and the timestep t it was read at), then its result, then the known ``answer`` if given.

    ``rows``: {name: (frames, edit)}, the same image edited under each setting (``scripts/drag_frames.py``).
    """
    if not rows:
        raise ValueError("frame_rows needs at least one row of (frames, edit)")
    strips = []
    for name, (frames, edit) in rows.items():
        t_of = {s.step: s.t for s in edit.drag.history}
        tiles = [(f"k {k}, t {t_of.get(k, edit.drag.t)}", image) for k, image in frames]
        tiles.append((f"result ({edit.drag.stop_reason})", edit.image))
        if answer is not None:
            tiles.append(("answer", np.asarray(answer)))
        strips.append((name, tiles))
    cols = max(len(tiles) for _, tiles in strips)
    fig = Figure(figsize=(1.3 * cols, 1.45 * len(strips)), layout="constrained")
    axes = fig.subplots(len(strips), cols, squeeze=False)
    for r, (name, tiles) in enumerate(strips):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c < len(tiles):
                _show(ax, tiles[c][1])
                ax.set_title(tiles[c][0], fontsize=6)
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=7)
    return fig
