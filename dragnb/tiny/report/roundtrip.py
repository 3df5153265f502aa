"""Inversion round trips: how much of an image survives DDIM inversion to the drag's step and back.

:func:`inversion_quality` inverts each image with its prompt, denoises and decodes, and compares the round trip
with the VAE's own reconstruction (so the inversion's error is apart from the VAE's, reported beside it), as
``scripts/eval_inversion.py`` does; each image is a :class:`RoundTrip`. :func:`round_trip_summary` gives the
median and worst PSNR; :func:`inversion_figure` shows source, reconstruction, round trip and their difference.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dragnb.images import psnr
from dragnb.tiny.report._plot import _axes_off
from dragnb.ui.plots import Figure


@dataclass(frozen=True)
class RoundTrip:
    """DDIM inversion of one image to the drag's step and back, against the VAE reconstruction."""

    prompt: str
    source: np.ndarray  # (H, W, 3) uint8 at the model size
    reconstruction: np.ndarray  # decode(encode(source)): the best any latent edit can give back
    round_trip: np.ndarray  # decode(DDIM(invert(encode(source))))
    t: int  # the inverted timestep
    steps: int  # DDIM steps inverted (and denoised)
    psnr: float  # round trip vs reconstruction (dB): the inversion's own error
    vae_psnr: float  # reconstruction vs source (dB): the VAE's error


def inversion_quality(model, images: Sequence[np.ndarray], prompts: Sequence[str] | str = "",
                      settings=None) -> list[RoundTrip]:
    """Invert each image (with its prompt) by ``settings`` (default: the model's), denoise, decode; PSNRs.

    The measure of ``scripts/eval_inversion.py``: the round trip is compared with the VAE reconstruction, not
    with the source, so it isolates the inversion's error from the VAE's (reported separately).
    """
    from dragnb.images import from_model_tensor, model_size, resize_array, to_model_tensor
    from dragnb.inversion import decode_latent, denoise_latent, encode_image, invert
    from dragnb.models import encode_prompt

    settings = settings or model.settings.inversion
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    out = []
    for image, prompt in zip(images, prompts):
        size = model_size(image.shape[:2], model.resolution, model.size_multiple)
        source = resize_array(np.asarray(image, dtype=np.uint8), size)
        z0 = encode_image(model, to_model_tensor(source, size))
        text = encode_prompt(model, prompt, settings.guidance_scale)  # [uncond, cond] when inverting with guidance
        reconstruction = from_model_tensor(decode_latent(model, z0))
        inverted = invert(model, z0, text, settings)
        back_z = denoise_latent(model, inverted.zt, text, settings, settings.guidance_scale)
        back = from_model_tensor(decode_latent(model, back_z))
        out.append(RoundTrip(prompt, source, reconstruction, back, inverted.t, settings.inverted_steps,
                             psnr(back, reconstruction), psnr(reconstruction, source)))
    return out


def round_trip_summary(records: Sequence[RoundTrip]) -> dict[str, float]:
    """Median and worst PSNR of the round trips, and the median VAE PSNR, in dB."""
    trips, vae = [r.psnr for r in records], [r.vae_psnr for r in records]
    return {"images": len(records), "round_trip_median_db": float(np.median(trips)) if trips else float("nan"),
            "round_trip_min_db": min(trips, default=float("nan")),
            "vae_median_db": float(np.median(vae)) if vae else float("nan")}


def inversion_figure(records: Sequence[RoundTrip], amplify: float = 4.0) -> Figure:
    """One row per image: source, VAE reconstruction, round trip, and |round trip − reconstruction| × ``amplify``."""
    fig = Figure(figsize=(8.4, 2.3 * max(1, len(records))), layout="constrained")
    axes = fig.subplots(max(1, len(records)), 4, squeeze=False)
    for row, r in zip(axes, records):
        row[0].imshow(r.source, interpolation="nearest")
        _axes_off(row[0], textwrap.fill(r.prompt, 30), fontsize=6.5)
        row[1].imshow(r.reconstruction, interpolation="nearest")
        _axes_off(row[1], f"VAE reconstruction\n{r.vae_psnr:.1f} dB vs source")
        row[2].imshow(r.round_trip, interpolation="nearest")
        _axes_off(row[2], f"invert {r.steps} steps to t={r.t}, denoise\n{r.psnr:.1f} dB vs reconstruction")
        diff = np.abs(r.round_trip.astype(float) - r.reconstruction.astype(float)) * amplify
        row[3].imshow(np.clip(diff, 0, 255).astype(np.uint8), interpolation="nearest")
        _axes_off(row[3], f"|round trip − reconstruction| × {amplify:g}")
    return fig
