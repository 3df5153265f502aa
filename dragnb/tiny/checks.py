"""The held-out checks the trainer logs: VAE reconstruction quality and prompt adherence of an exported model.

:func:`holdout_scenes` draws scenes of the world that training never sees (seeds from
:data:`dragnb.tiny.model.HOLDOUT_SEED_BASE`); :func:`evaluate_vae` measures the VAE on them (held-out PSNR, and
how many shapes keep their colour); :func:`adherence` samples single-shape prompts from an exported model folder
and scores colour, shape and background by segmentation (:mod:`dragnb.tiny.adherence`). :mod:`dragnb.tiny.train`
logs both during training; :mod:`dragnb.tiny.report` draws its own held-out scenes further on in the same seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dragnb.images import psnr
from dragnb.tiny.model import HOLDOUT_SEED_BASE, to_tensor, to_uint8


def holdout_scenes(n: int, n_shapes: int | None = None, offset: int = 0, world: str = "flat"):
    from dragnb.tiny.scenes import sample_scene

    return [sample_scene(HOLDOUT_SEED_BASE + offset + i, n_shapes, world=world) for i in range(n)]


def evaluate_vae(vae, n: int = 128, world: str = "flat") -> dict:
    """Held-out PSNR, and hue: fraction of shapes whose mean colour stays within 20 (and 12) RGB units (max channel)."""
    import torch

    from dragnb.tiny.drawing import render, shape_mask

    size = int(vae.config.sample_size)
    device = next(vae.parameters()).device
    scenes = holdout_scenes(n, world=world)
    originals = np.stack([np.asarray(render(s, size)) for s in scenes])
    with torch.no_grad():
        recon = []
        for i in range(0, n, 32):
            x = to_tensor(originals[i : i + 32], device)
            recon.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample))
    recon = np.concatenate(recon)
    psnrs = [psnr(a, b) for a, b in zip(originals, recon)]
    shifts = []
    for scene, a, b in zip(scenes, originals, recon):
        for i in range(len(scene.shapes)):
            m = shape_mask(scene, i, size)
            shifts.append(float(np.abs(a[m].astype(float).mean(0) - b[m].astype(float).mean(0)).max()))
    return {
        "psnr_mean": float(np.mean(psnrs)),
        "psnr_min": float(np.min(psnrs)),
        "hue_ok": float(np.mean(np.array(shifts) <= 20)),
        "colour_ok_12": float(np.mean(np.array(shifts) <= 12)),  # issue 8's bar: 95 % of objects within 12 RGB
        "hue_shift_max": float(np.max(shifts)),
    }


def adherence(model_dir: Path, n: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0,
              world: str = "flat") -> dict:
    """Sample single-shape held-out prompts from the exported folder; score colour/shape/background by segmentation."""
    import torch
    from diffusers import StableDiffusionPipeline

    from dragnb.tiny.adherence import read_single_shape

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scenes = holdout_scenes(n, n_shapes=1, offset=100_000, world=world)
    gen = torch.Generator().manual_seed(seed)
    images = pipe([s.prompt for s in scenes], num_inference_steps=steps, guidance_scale=guidance,
                  generator=gen, output_type="np").images  # (n, 64, 64, 3) in [0, 1]
    colour = shape = background = 0
    for scene, img in zip(scenes, images):
        r = read_single_shape((img * 255).round().astype(np.uint8))
        colour += r.colour == scene.shapes[0].colour
        shape += r.kind == scene.shapes[0].kind
        background += r.background == scene.background
    return {"colour": colour / n, "shape": shape / n, "background": background / n, "n": n}
