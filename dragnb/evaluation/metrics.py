"""The field's drag-editing metrics: Mean Distance (DIFT, whole image or inside the mask), Image Fidelity
(1 - LPIPS), Dragging Accuracy Index (GoodDrag's DAI), known-answer scores.

Protocols restated: MD and IF as the DragDiffusion repository's ``drag_bench_evaluation``
(``run_eval_point_matching.py`` and ``run_eval_similarity.py``), masked MD as DragLoRA's copy of that script,
DAI as GoodDrag's ``evaluation/compute_DAI.py``:

* **Mean Distance** (MD, image pixels, lower is better). The dragged image is resized to the source size
  (bilinear). Both images are featurized DIFT-style: image in [-1, 1] → VAE latent (a sample of the latent
  distribution) → forward-diffused to t = 261 with fresh noise → one UNet call with the sample's prompt →
  the output of ``unet.up_blocks[1]``; this is done for 8 noisy copies at once and averaged, then the map is
  bilinearly resized to the image size (H, W). For each handle h_i, the feature of the *source* at h_i is
  compared by cosine similarity with every pixel of the *dragged* features; the best match q_i is where the
  handle's content went. d_i = ||q_i - g_i||_2 in source-image pixels; MD is the mean of d_i over points.
  The reference uses SD 2.1 (``stabilityai/stable-diffusion-2-1``) for the features and seeds with 42.
* **Masked Mean Distance** (m-MD, image pixels, lower is better): Mean Distance with the best match q_i of
  each handle searched only among the pixels inside the editable mask, as DragLoRA reports it (github.com/
  Sylvie-X/DragLoRA, ``drag_bench_evaluation/run_eval_point_matching.py``: the candidates are the pixels
  where DragBench's ``mask`` is 1, in row-major order; here: nonzero, the same for DragBench's 0/1 masks).
  Features, rounding, distance and the mean over all pairs are those of MD above. That script has no answer
  for an empty mask (its argmax runs over no candidates); this project's rule is that no mask (None or all
  zero) means the whole image is editable (:func:`dragnb.images.load_mask`), so m-MD then equals MD, and a
  mask that is empty once resized (nearest) to the feature grid falls back the same way; the result says
  which (:attr:`MeanDistance.masked`).
* **Image Fidelity** (IF, higher is better): 1 - LPIPS(AlexNet) between the source and the dragged image,
  both in [-1, 1] and bilinearly resized to 224 x 224.
* **Dragging Accuracy Index** (DAI_γ, lower is better), GoodDrag (Zhang et al., 2024, "GoodDrag: Towards Good
  Practices for Drag Editing with Diffusion Models"): the squared L2 distance between the (1 + 2γ) x (1 + 2γ)
  patch of the source around each handle h_i and the patch of the result around its target g_i, divided by
  the patch's pixel count (1 + 2γ)² and averaged over the N pairs of the sample,
  DAI_γ = (1/N) Σ_i ||Ω(I_0, h_i, γ) - Ω(I*, g_i, γ)||²₂ / (1 + 2γ)², reported at γ ∈ :data:`DAI_GAMMAS`
  = (1, 5, 10, 20). As GoodDrag's ``evaluation/compute_DAI.py``: pixel values in [0, 1] (uint8 / 255), the
  squared differences summed over the 3 channels too, points used as (x, y) pixel indices, the benchmark
  figure the mean of the per-image values over images. The result is first resized to the source's size
  (bilinear, as for MD; GoodDrag's script assumes equal sizes). See :func:`dai_per_pair` for the details
  that script leaves open (borders, non-integer points) and for its extra division by N.
* **Known answers** (the scene benchmark, :mod:`dragnb.evaluation.scenebench`): placement error of the moved shape in
  image pixels and PSNR outside the editable mask (fidelity where nothing may change).

Two details the reference leaves to chance are fixed here. The reference seeds once per run (42) and draws
the noise of every image in turn, so a sample's MD depends on which samples ran before it; here the source
and the result of each sample are featurized with a generator freshly seeded with 42 (the same noise for
both), so MD does not depend on order or on how samples are split across processes, and an unedited image
matches its source exactly. Handle coordinates that are not integers are rounded to the nearest pixel to
read the source feature (DragBench's are integers; the reference indexes with them directly).

``lpips`` (and the ``torchvision`` it imports, plus AlexNet's ImageNet weights that torchvision downloads
once) is an **optional** dependency: ``pip install lpips torchvision`` with a torchvision matching your
torch. Without it :func:`lpips_alex` raises :class:`MetricUnavailable` saying what to install; no number is
ever made up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DragnbError
from ..features import block_outputs, cosine_similarity
from .dift_settings import SD21, DiftSettings, parse_dift_overrides  # noqa: F401 (their home is light: the bench checks them first)

LPIPS_SIZE = 224  # both images are resized to 224 x 224 before LPIPS, as the reference
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # what torchvision fetches into ~/.cache/torch/hub/checkpoints/

Featurizer = Callable[[np.ndarray, str, torch.Generator], torch.Tensor]
"""(image (H, W, 3) uint8, prompt, generator) -> features (1, C, H, W) at the image's size."""

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""LPIPS-like network: (a, b) each (1, 3, 224, 224) in [-1, 1] -> distance, a tensor of one element."""


class MetricUnavailable(DragnbError, RuntimeError):
    """A metric's optional dependency or weights are missing; the message says how to get them."""


# ------------------------------------------------------------------------------------------ Mean Distance
class DiftFeaturizer:
    """DIFT features of a loaded SD-family model (:class:`dragnb.models.Model`), read with a forward hook.

    ``__call__(image, prompt, generator)`` returns (1, C, H, W) at the image's own size. Images whose sides are
    not multiples of the UNet's down-sampling factor are resized to the nearest multiples first (DragBench's
    512 x 512 images are left alone); the map is resized back to (H, W) either way.
    """

    def __init__(self, model, settings: DiftSettings = DiftSettings()):
        from ..features import resolve_blocks

        self.model = model
        self.settings = settings
        try:
            self.block = resolve_blocks(model.pipe.unet, [settings.up_ft_index])[0]
        except ValueError as exc:
            raise ValueError(f"dift.up_ft_index: {exc}") from None

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str, generator: torch.Generator) -> torch.Tensor:
        from ..models import encode_prompt, held_dtype

        pipe, s = self.model.pipe, self.settings
        device, dtype = self.model.device, held_dtype(pipe.unet)
        h, w = image.shape[:2]
        m = self.model.size_multiple
        size = (max(m, round(h / m) * m), max(m, round(w / m) * m))
        x = torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, H, W)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.repeat(s.ensemble_size, 1, 1, 1).to(device, dtype)  # (E, 3, h', w')
        # 1. a sample of q(z_0 | x) per copy, then forward diffusion to t with fresh noise per copy
        dist = pipe.vae.encode(x).latent_dist
        eps = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(device, dtype)
        z0 = (dist.mean + dist.std * eps) * pipe.vae.config.scaling_factor  # (E, 4, h, w)
        noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(device, dtype)
        t = torch.tensor(s.t, dtype=torch.long, device=device)
        zt = pipe.scheduler.add_noise(z0, noise, t)
        # 2. one UNet call, stopping after the tapped block
        text = encode_prompt(self.model, prompt).repeat(s.ensemble_size, 1, 1)  # (E, 77, D)
        captured = block_outputs(pipe.unet, zt, t, text, [self.block])
        feat = captured[self.block].float().mean(0, keepdim=True)  # (1, C, h_b, w_b): ensemble average
        return F.interpolate(feat, size=(h, w), mode="bilinear", align_corners=False).cpu()  # (1, C, H, W)


def load_featurizer(settings: DiftSettings = DiftSettings(), device=None) -> DiftFeaturizer:
    """Load ``settings.model`` (its own copy: a LoRA on an editing model must not leak into the features)."""
    from ..models import load_model

    return DiftFeaturizer(load_model(settings.model, device=device), settings)


@dataclass(frozen=True)
class MeanDistance:
    """Per-point result of :func:`mean_distance`; coordinates in source-image pixels (x, y)."""

    distances: list[float]  # d_i = ||q_i - g_i||_2
    matched_xy: list[tuple[float, float]]  # q_i, the best cosine match of h_i's source feature in the result
    masked: bool = False  # True when the search was restricted to a (non-empty) mask: masked Mean Distance

    @property
    def mean(self) -> float:
        return float(np.mean(self.distances)) if self.distances else math.nan


def search_mask(mask, size: tuple[int, int]) -> torch.Tensor | None:
    """The pixels :func:`match_points` may pick: ``mask`` (2-D, nonzero = editable) on the (H, W) feature grid
    as a flat (H*W,) bool tensor, row-major; None (search everywhere) when ``mask`` is None or has no nonzero
    pixel, before or after resizing. A mask of another size is resized nearest (``F.interpolate``, as
    :func:`dragnb.images.mask_to_latent`); DragBench's masks already have the image's size."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) != 0)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(m.shape)}")
    if tuple(m.shape) != tuple(size):
        m = F.interpolate(m[None, None].float(), size=tuple(size), mode="nearest")[0, 0] > 0.5
    m = m.reshape(-1)
    return m if bool(m.any()) else None


def match_points(source_features: torch.Tensor, dragged_features: torch.Tensor,
                 handles_xy: np.ndarray, mask=None) -> np.ndarray:
    """For each handle (x, y), the (x, y) of the most cosine-similar pixel of ``dragged_features``.

    Features (1, C, H, W) on the same (H, W) grid; handles are rounded to the nearest pixel to index the
    source. Without ``mask`` the whole result is searched (no window); with one (2-D, nonzero = editable,
    see :func:`search_mask`) only the pixels inside it (masked Mean Distance); an empty mask searches the whole
    result. Ties go to the first candidate pixel in row-major order.
    """
    _, c, h, w = dragged_features.shape
    allowed = search_mask(mask, (h, w))  # (H*W,) bool or None
    out = []
    for x, y in np.asarray(handles_xy, dtype=np.float64):
        col, row = min(max(int(round(x)), 0), w - 1), min(max(int(round(y)), 0), h - 1)
        similarity = cosine_similarity(source_features[0, :, row, col][None], dragged_features)[0]  # (H*W,)
        if allowed is not None:
            similarity = similarity.masked_fill(~allowed, -math.inf)
        index = int(torch.argmax(similarity))
        out.append((float(index % w), float(index // w)))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def mean_distance(source: np.ndarray, dragged: np.ndarray, handles_xy, targets_xy, prompt: str,
                  featurizer: Featurizer | None, seed: int = 42,
                  source_features: torch.Tensor | None = None, mask=None,
                  dragged_features: torch.Tensor | None = None) -> MeanDistance:
    """Mean Distance of one sample (see the module docstring); with ``mask``, masked Mean Distance.

    ``source``, ``dragged``: (H, W, 3) uint8 (the result is resized to the source's size, bilinear);
    ``handles_xy``, ``targets_xy``: (N, 2) source-image pixels (x, y). ``featurizer(image, prompt, generator)``
    gives (1, C, H, W) features; the source and the result are each featurized with a generator seeded with
    ``seed`` (the same noise for both, so an unedited result matches its source exactly).
    ``source_features`` skips featurizing the source (pass the same tensor for every result of a sample);
    ``dragged_features`` skips featurizing the result (pass the same tensor to compute MD and masked MD of
    one result with one UNet pass). ``mask``: (H, W), nonzero = editable, in source-image pixels; the match of
    each handle is searched only inside it (:func:`match_points`). None or all zero = the whole image: the
    plain Mean Distance (``masked`` False in the result).
    """
    if source_features is None:
        source_features = featurizer(source, prompt, torch.Generator().manual_seed(seed))
    if dragged_features is None:
        dragged_features = featurizer(resize_like(dragged, source), prompt, torch.Generator().manual_seed(seed))
    matched = match_points(source_features, dragged_features, handles_xy, mask=mask)
    targets = np.asarray(targets_xy, dtype=np.float64).reshape(-1, 2)
    distances = np.linalg.norm(matched - targets, axis=1)
    masked = search_mask(mask, tuple(dragged_features.shape[-2:])) is not None
    return MeanDistance(distances=[float(d) for d in distances], matched_xy=[tuple(p) for p in matched.tolist()],
                        masked=masked)


def resize_like(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` (h, w, 3) uint8 resized (PIL bilinear) to ``reference``'s (H, W), as the reference scripts do."""
    h, w = reference.shape[:2]
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).convert("RGB").resize((w, h), Image.BILINEAR))


# ----------------------------------------------------------------------------------------- Image Fidelity
def lpips_input(image: np.ndarray, size: int = LPIPS_SIZE) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, size, size) float in [-1, 1], bilinear (``F.interpolate``, no antialias, as the
    reference's ``run_eval_similarity.py``)."""
    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, H, W)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def lpips_alex(device=None) -> Distance:
    """LPIPS with the AlexNet backbone (``lpips.LPIPS(net='alex')``), loaded lazily.

    Optional dependency: ``pip install lpips torchvision`` (a torchvision build matching your torch). The
    first use downloads AlexNet's ImageNet weights (``alexnet-owt-7be5be79.pth``) from download.pytorch.org
    into ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``); offline, put the file
    there. Raises :class:`MetricUnavailable` with these instructions when any piece is missing.
    """
    how = ("Image Fidelity is 1 - LPIPS(AlexNet) and needs the optional packages `lpips` and `torchvision` "
           "(pip install lpips torchvision, with a torchvision build matching your torch) plus AlexNet's "
           f"ImageNet weights ({ALEXNET_WEIGHTS}, downloaded once by torchvision from download.pytorch.org into "
           "$TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints; offline, copy the file there)")
    try:
        import lpips  # noqa: F401  (imports torchvision too)
    except Exception as exc:  # ImportError, or torchvision failing to load beside this torch build
        raise MetricUnavailable(f"image fidelity: cannot import lpips ({exc.__class__.__name__}: {exc}). {how}; "
                                "or pass --no-fidelity to run without it") from None
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="alex", verbose=False)
    except Exception as exc:  # network errors, missing or corrupt weights
        raise MetricUnavailable(f"image fidelity: LPIPS(AlexNet) could not load its weights "
                                f"({exc.__class__.__name__}: {str(exc)[:200]}). {how}; "
                                "or pass --no-fidelity to run without it") from None
    net = net.eval().to(device or "cpu")

    @torch.no_grad()
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dev = next(net.parameters()).device
        return net(a.to(dev), b.to(dev))

    return distance


def image_fidelity(source: np.ndarray, dragged: np.ndarray, distance: Distance) -> float:
    """IF = 1 - LPIPS(source, dragged): both (H, W, 3) uint8, the result first resized to the source's size
    (PIL bilinear), then both to 224 x 224 in [-1, 1]. ``distance`` is :func:`lpips_alex`'s network (tests
    inject a stand-in)."""
    dragged = resize_like(dragged, source)
    with torch.no_grad():
        d = distance(lpips_input(source), lpips_input(dragged))
    return 1.0 - float(torch.as_tensor(d).reshape(-1)[0])


# ------------------------------------------------------------------------------ Dragging Accuracy Index
DAI_GAMMAS = (1, 5, 10, 20)  # GoodDrag's patch radii γ (patches of 3, 11, 21 and 41 pixels a side)


def _unit_range(image: np.ndarray) -> np.ndarray:
    """uint8 → float64 in [0, 1] (GoodDrag's ``ToTensor``); float arrays are taken as already in [0, 1]."""
    arr = np.asarray(image)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W, C) or (H, W) image, got shape {arr.shape}")
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)


def dai_per_pair(source: np.ndarray, edited: np.ndarray, handles_xy, targets_xy, gamma: int) -> np.ndarray:
    """The DAI_γ term of each handle/target pair, (N,) floats (:func:`dai` is their mean).

    term_i = Σ_{patch, channels} (Ω(I_0, h_i, γ) - Ω(I*, g_i, γ))² / (number of patch pixels), with images
    in [0, 1] (uint8 / 255; float arrays are used as they are) and the result resized to the source's size
    first (PIL bilinear, :func:`resize_like`, uint8 only). Points are (x, y) source-image pixels.

    Choices where GoodDrag's ``evaluation/compute_DAI.py`` (github.com/zewei-Zhang/GoodDrag) is silent or
    breaks; away from the border and with integer points (DragBench's) they do not change its number:

    * Non-integer points are rounded to the nearest pixel (Python's ``round``, as :func:`match_points`) and
      points are clamped into the image; the script slices with the integers it is given.
    * Border: the script's slices go wrong when a patch crosses the image edge (a negative start wraps to an
      empty slice, an end past the edge is cut, so the two patches may differ in shape). Here the patch keeps
      only the offsets (dx, dy) ∈ [-γ, γ]² at which *both* h_i + (dx, dy) in the source and g_i + (dx, dy) in
      the result are inside the image, and the sum is divided by the number of those offsets instead of
      (1 + 2γ)²: the mean squared difference per pixel over the pixels that exist, equal to the paper's term
      for a patch fully inside. No pixel is invented (no padding); the centre always counts, so a term exists.
    * Normalisation: the paper's formula divides by N once; the public script divides its sum by
      ``len(points)`` twice (``dai /= len(points)`` and ``return dai / len(points)``). This follows the paper,
      so for a sample with N > 1 pairs the script's per-image value is this one divided by N.
    """
    gamma = int(gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be a non-negative integer, got {gamma}")
    if np.asarray(edited).shape[:2] != np.asarray(source).shape[:2]:
        if np.asarray(edited).dtype != np.uint8:
            raise ValueError("dai: a result of another size than the source must be uint8 to be resized, got "
                             f"{np.asarray(edited).dtype} {np.asarray(edited).shape} vs {np.asarray(source).shape}")
        edited = resize_like(np.asarray(edited), np.asarray(source))
    src, out = _unit_range(source), _unit_range(edited)
    if src.shape != out.shape:
        raise ValueError(f"dai: source {src.shape} and result {out.shape} differ in channels")
    h, w = src.shape[:2]
    handles = np.asarray(handles_xy, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets_xy, dtype=np.float64).reshape(-1, 2)
    if len(handles) != len(targets):
        raise ValueError(f"dai: {len(handles)} handles but {len(targets)} targets")

    def pixel(x: float, y: float) -> tuple[int, int]:
        return min(max(int(round(x)), 0), w - 1), min(max(int(round(y)), 0), h - 1)

    terms = []
    for (hx, hy), (gx, gy) in zip(handles, targets):
        (hx, hy), (gx, gy) = pixel(hx, hy), pixel(gx, gy)
        # offsets kept: inside the image around both points
        dx0, dx1 = max(-gamma, -hx, -gx), min(gamma, w - 1 - hx, w - 1 - gx)
        dy0, dy1 = max(-gamma, -hy, -gy), min(gamma, h - 1 - hy, h - 1 - gy)
        a = src[hy + dy0:hy + dy1 + 1, hx + dx0:hx + dx1 + 1]
        b = out[gy + dy0:gy + dy1 + 1, gx + dx0:gx + dx1 + 1]
        terms.append(float(np.sum((a - b) ** 2)) / ((dy1 - dy0 + 1) * (dx1 - dx0 + 1)))
    return np.asarray(terms, dtype=np.float64)


def dai(source: np.ndarray, edited: np.ndarray, handles_xy, targets_xy, gamma: int) -> float:
    """GoodDrag's Dragging Accuracy Index DAI_γ of one sample (lower is better; NaN with no pairs).

    DAI_γ = (1/N) Σ_i ||Ω(I_0, h_i, γ) - Ω(I*, g_i, γ)||²₂ / (1 + 2γ)²: how far the content around each
    handle in the source is from the content around its target in the result. ``source``, ``edited``:
    (H, W, 3) uint8 (or floats in [0, 1]); ``handles_xy``, ``targets_xy``: (N, 2) source-image pixels (x, y);
    ``gamma``: patch radius, reported at :data:`DAI_GAMMAS`. Details (value range, borders, rounding, the
    public script's double division by N) in :func:`dai_per_pair`.
    """
    terms = dai_per_pair(source, edited, handles_xy, targets_xy, gamma)
    return float(terms.mean()) if len(terms) else math.nan


# ------------------------------------------------------------------------------------------ Known answers
def known_answer_scores(folder, dragged: np.ndarray) -> dict | None:
    """Placement error and fidelity outside the mask for a scene-benchmark case (a folder with ``case.json``).

    Returns None for other samples, or when :mod:`dragnb.evaluation.scenebench` is not installed. Keys:
    ``placement_error_px`` (centre of the moved shape vs the known answer, image pixels; inf if it vanished),
    ``placement_error_fraction`` (of the shorter side), ``area_ratio``, ``psnr_outside_mask`` (dB), ``success``.
    """
    from pathlib import Path

    if not (Path(folder) / "case.json").is_file():
        return None
    try:
        from .scenebench import score_case
    except ImportError:
        return None
    score = score_case(folder, dragged)
    return {"placement_error_px": float(score.error_px), "placement_error_fraction": float(score.error_fraction),
            "area_ratio": float(score.area_ratio), "psnr_outside_mask": float(score.psnr_outside),
            "success": bool(score.success)}
