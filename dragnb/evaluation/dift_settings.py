"""The Mean Distance featurizer's settings (DIFT), in a module without torch: the bench checks them before it loads
anything heavy (:func:`dragnb.evaluation.bench.plan.check`); :mod:`dragnb.evaluation.metrics` uses them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SD21 = "stabilityai/stable-diffusion-2-1"


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
