"""The field's drag-editing metrics: Mean Distance (DIFT), Image Fidelity (1 - LPIPS), known-answer scores.

Protocol of the DragDiffusion repository's ``drag_bench_evaluation`` (``run_eval_point_matching.py`` and
``run_eval_similarity.py``), restated:

* **Mean Distance** (MD, image pixels, lower is better). The dragged image is resized to the source size
  (bilinear). Both images are featurized DIFT-style: image in [-1, 1] → VAE latent (a sample of the latent
  distribution) → forward-diffused to t = 261 with fresh noise → one UNet call with the sample's prompt →
  the output of ``unet.up_blocks[1]``; this is done for 8 noisy copies at once and averaged, then the map is
  bilinearly resized to the image size (H, W). For each handle h_i, the feature of the *source* at h_i is
  compared by cosine similarity with every pixel of the *dragged* features; the best match q_i is where the
  handle's content went. d_i = ||q_i - g_i||_2 in source-image pixels; MD is the mean of d_i over points.
  The reference uses SD 2.1 (``stabilityai/stable-diffusion-2-1``) for the features and seeds with 42.
* **Image Fidelity** (IF, higher is better): 1 - LPIPS(AlexNet) between the source and the dragged image,
  both in [-1, 1] and bilinearly resized to 224 x 224.
* **Known answers** (the scene benchmark, :mod:`dragnb.scenebench`): placement error of the moved shape in
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

from .errors import DragnbError

SD21 = "stabilityai/stable-diffusion-2-1"
LPIPS_SIZE = 224  # both images are resized to 224 x 224 before LPIPS, as the reference
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # what torchvision fetches into ~/.cache/torch/hub/checkpoints/

Featurizer = Callable[[np.ndarray, str, torch.Generator], torch.Tensor]
"""(image (H, W, 3) uint8, prompt, generator) -> features (1, C, H, W) at the image's size."""

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""LPIPS-like network: (a, b) each (1, 3, 224, 224) in [-1, 1] -> distance, a tensor of one element."""


class MetricUnavailable(DragnbError, RuntimeError):
    """A metric's optional dependency or weights are missing; the message says how to get them."""


# ------------------------------------------------------------------------------------------ Mean Distance
@dataclass(frozen=True)
class DiftSettings:
    """Features for Mean Distance; the defaults are the published protocol's."""

    model: str = SD21  # diffusers model (hub id or folder) whose UNet gives the features
    t: int = 261  # diffusion timestep the latent is noised to
    up_ft_index: int = 1  # unet.up_blocks[index] output (1 = 1/16 of the image for SD 2.1, 1280 channels)
    ensemble_size: int = 8  # noisy copies whose features are averaged
    seed: int = 42  # generator seed, per sample (the reference seeds once per run with 42)


def parse_dift_overrides(settings: DiftSettings, assignments: list[str]) -> DiftSettings:
    """Apply ``["dift.t=261", "dift.ensemble_size=2"]``; raises ValueError on an unknown field."""
    fields = {f.name: f for f in dataclasses.fields(DiftSettings)}
    changes = {}
    for item in assignments:
        key, _, value = item.partition("=")
        name = key.strip().partition(".")[2]
        if name not in fields:
            raise ValueError(f"unknown dift setting {name!r}; known: {sorted(fields)}")
        kind = type(getattr(settings, name))
        changes[name] = kind(value.strip())
    return dataclasses.replace(settings, **changes)


class DiftFeaturizer:
    """DIFT features of a loaded SD-family model (:class:`dragnb.models.Model`), read with a forward hook.

    ``__call__(image, prompt, generator)`` returns (1, C, H, W) at the image's own size. Images whose sides are
    not multiples of the UNet's down-sampling factor are resized to the nearest multiples first (DragBench's
    512 x 512 images are left alone); the map is resized back to (H, W) either way.
    """

    def __init__(self, model, settings: DiftSettings = DiftSettings()):
        from .features import resolve_blocks

        self.model = model
        self.settings = settings
        try:
            self.block = resolve_blocks(model.pipe.unet, [settings.up_ft_index])[0]
        except ValueError as exc:
            raise ValueError(f"dift.up_ft_index: {exc}") from None

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str, generator: torch.Generator) -> torch.Tensor:
        from .features import tap_up_blocks
        from .models import encode_prompt

        pipe, s = self.model.pipe, self.settings
        device, dtype = self.model.device, pipe.unet.dtype
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
        with tap_up_blocks(pipe.unet, [self.block], stop_after=True) as captured:
            try:
                pipe.unet(zt, t, text)
            except Exception:
                if self.block not in captured:  # a real error, not the early stop after the tapped block
                    raise
        feat = captured[self.block].float().mean(0, keepdim=True)  # (1, C, h_b, w_b): ensemble average
        return F.interpolate(feat, size=(h, w), mode="bilinear", align_corners=False).cpu()  # (1, C, H, W)


def load_featurizer(settings: DiftSettings = DiftSettings(), device=None) -> DiftFeaturizer:
    """Load ``settings.model`` (its own copy: a LoRA on an editing model must not leak into the features)."""
    from .models import load_model

    return DiftFeaturizer(load_model(settings.model, device=device), settings)


@dataclass(frozen=True)
class MeanDistance:
    """Per-point result of :func:`mean_distance`; coordinates in source-image pixels (x, y)."""

    distances: list[float]  # d_i = ||q_i - g_i||_2
    matched_xy: list[tuple[float, float]]  # q_i, the best cosine match of h_i's source feature in the result

    @property
    def mean(self) -> float:
        return float(np.mean(self.distances)) if self.distances else math.nan


def match_points(source_features: torch.Tensor, dragged_features: torch.Tensor,
                 handles_xy: np.ndarray) -> np.ndarray:
    """For each handle (x, y), the (x, y) of the most cosine-similar pixel of ``dragged_features``.

    Features (1, C, H, W) on the same (H, W) grid; handles are rounded to the nearest pixel to index the
    source. The whole result is searched (no window), ties go to the first pixel in row-major order.
    """
    _, c, h, w = dragged_features.shape
    flat = F.normalize(dragged_features[0].reshape(c, h * w).float(), dim=0)  # (C, H*W)
    out = []
    for x, y in np.asarray(handles_xy, dtype=np.float64):
        col, row = min(max(int(round(x)), 0), w - 1), min(max(int(round(y)), 0), h - 1)
        ref = F.normalize(source_features[0, :, row, col].float(), dim=0)  # (C,)
        index = int(torch.argmax(ref @ flat))
        out.append((float(index % w), float(index // w)))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def mean_distance(source: np.ndarray, dragged: np.ndarray, handles_xy, targets_xy, prompt: str,
                  featurizer: Featurizer, seed: int = 42,
                  source_features: torch.Tensor | None = None) -> MeanDistance:
    """Mean Distance of one sample (see the module docstring).

    ``source``, ``dragged``: (H, W, 3) uint8 (the result is resized to the source's size, bilinear);
    ``handles_xy``, ``targets_xy``: (N, 2) source-image pixels (x, y). ``featurizer(image, prompt, generator)``
    gives (1, C, H, W) features; the source and the result are each featurized with a generator seeded with
    ``seed`` (the same noise for both, so an unedited result matches its source exactly).
    ``source_features`` skips featurizing the source (pass the same tensor for every result of a sample).
    """
    dragged = resize_like(dragged, source)
    f_src = featurizer(source, prompt, torch.Generator().manual_seed(seed)) if source_features is None \
        else source_features
    f_drag = featurizer(dragged, prompt, torch.Generator().manual_seed(seed))
    matched = match_points(f_src, f_drag, handles_xy)
    targets = np.asarray(targets_xy, dtype=np.float64).reshape(-1, 2)
    distances = np.linalg.norm(matched - targets, axis=1)
    return MeanDistance(distances=[float(d) for d in distances], matched_xy=[tuple(p) for p in matched.tolist()])


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


# ------------------------------------------------------------------------------------------ Known answers
def known_answer_scores(folder, dragged: np.ndarray) -> dict | None:
    """Placement error and fidelity outside the mask for a scene-benchmark case (a folder with ``case.json``).

    Returns None for other samples, or when :mod:`dragnb.scenebench` is not installed. Keys:
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
