"""Frozen settings, one dataclass per stage of DragDiffusion.

Defaults are the reference implementation's (Yujun-Shi/DragDiffusion); where the paper's seed text differs
the paper's value is noted in the comment and reachable with ``dataclasses.replace``. Symbols follow
``docs/method.md`` §1: r1, r2, λ, η, t; paper vs reference values in §5.

A model folder may carry its own defaults in ``dragnb_defaults.json`` (see :func:`settings_from_dict`),
for example the embedded tiny model, whose 16x16 latents need a larger λ and η than SD 1.5.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class LoraSettings:
    """Stage 1: LoRA fine-tuning of the UNet on the single input image."""

    rank: int = 16  # LoRA rank r; alpha = rank so the adapter scale is 1
    steps: int = 80  # optimisation steps [paper: 200]
    lr: float = 5e-4  # AdamW learning rate [paper: 2e-4]
    weight_decay: float = 1e-2  # AdamW weight decay
    batch_size: int = 4  # images per step (random resize-crops of the one image)
    crop_scale: tuple[float, float] = (0.9, 1.0)  # area fraction range of the random resize-crop
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # [paper: q, k, v only]
    seed: int = 0  # the reference seeds LoRA with 0


@dataclass(frozen=True)
class InversionSettings:
    """Stage 2: DDIM inversion of the image latent z_0 to z_t."""

    num_steps: int = 50  # DDIM steps of the full schedule
    strength: float = 0.7  # fraction of the schedule inverted: 35 of 50, t = 681 for SD 1.5 [paper: 40/50]
    guidance_scale: float = 1.0  # classifier-free guidance during inversion (1 = none, as the reference)

    @property
    def inverted_steps(self) -> int:
        """Number of DDIM steps inverted (and later denoised)."""
        return int(round(self.num_steps * self.strength))


@dataclass(frozen=True)
class DragSettings:
    """Stage 3: latent optimisation by motion supervision and point tracking."""

    feature_blocks: tuple[int, ...] = (-2,)  # UNet up-block indices whose outputs are F; -2 = up_blocks[2] on SD 1.5
    feature_scale: float = 0.5  # F is resized to this fraction of the model image: H/2 x W/2
    r1: int = 1  # motion-supervision patch half-size, feature pixels
    r2: int = 3  # point-tracking search window half-size, feature pixels
    lam: float = 0.1  # λ, weight of the mask term (a sum over latent elements)
    lr: float = 0.01  # η, latent learning rate
    max_steps: int = 80  # optimisation steps at most
    stop_distance: float = 2.0  # a handle within this many feature pixels of its target has arrived
    optimizer: Literal["adam", "sgd"] = "adam"  # [paper: plain gradient step]
    loss_reduction: Literal["reference", "paper"] = "reference"  # reference: (2r1+1)^2 * mean; paper: sum over patch/C
    track_from: Literal["initial", "previous"] = "initial"  # match F_0(h_i^0) (reference) or F at the last handle
    supervision: Literal["reference", "anchored"] = "reference"  # target of F(Ω(h_i^k) + d_i): sg(F(Ω(h_i^k)))
    # (reference), or the original patch F_0(Ω(h_i^0)) (GoodDrag's information-preserving motion supervision,
    # Zhang et al. 2024): the content pulled along keeps its first look instead of drifting step by step
    seed: int = 42  # the reference seeds the drag with 42
    autocast: bool = False  # fp16 autocast + grad scaler on CUDA, as the reference; fp32 elsewhere


@dataclass(frozen=True)
class DenoiseSettings:
    """Stage 4: DDIM denoising from the edited z_t with reference-latent control."""

    reference_control: bool = True  # decoder self-attention attends to the unedited branch's keys/values
    control_blocks: tuple[int, ...] = (-2, -1)  # up blocks under control: up_blocks[2], [3] on SD 1.5
    control_from_step: int = 0  # first denoising step (0-based, of those run) with control on
    blend_outside_mask: bool = False  # [extension, not in the paper] after each step, copy the unedited branch's
    # latent outside the mask (Blended Latent Diffusion): what the mask protects cannot drift while denoising


@dataclass(frozen=True)
class Settings:
    """All stages' settings together, as a session and the command line use them."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    inversion: InversionSettings = field(default_factory=InversionSettings)
    drag: DragSettings = field(default_factory=DragSettings)
    denoise: DenoiseSettings = field(default_factory=DenoiseSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_STAGES = {"lora": LoraSettings, "inversion": InversionSettings, "drag": DragSettings, "denoise": DenoiseSettings}


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn a JSON or command-line value into the type of field ``name`` of ``cls``; a choice must be one of its own."""
    default = getattr(cls(), name)
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"{cls.__name__}.{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        return tuple(type(default[0])(v) if default else v for v in value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{cls.__name__}.{name} must be true or false, got {value!r}")
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    return type(default)(value) if default is not None else value


def settings_from_dict(data: dict[str, Any], base: Settings | None = None) -> Settings:
    """Overlay ``{"drag": {"lr": 0.03}, ...}`` on ``base``; unknown stages or fields are an error."""
    base = base or Settings()
    stages = {}
    for stage, cls in _STAGES.items():
        current = getattr(base, stage)
        overrides = dict(data.get(stage, {}))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown {stage} setting(s) {sorted(unknown)}; known: {sorted(names)}")
        stages[stage] = dataclasses.replace(current, **{k: _coerce(cls, k, v) for k, v in overrides.items()})
    unknown_stages = set(data) - set(_STAGES) - {"comment", "notes"}
    if unknown_stages:
        raise ValueError(f"unknown stage(s) {sorted(unknown_stages)}; known: {sorted(_STAGES)}")
    return Settings(**stages)


def apply_overrides(settings: Settings, assignments: list[str]) -> Settings:
    """Apply ``["drag.lr=0.03", "lora.steps=40"]`` (the command line's ``--set``)."""
    data: dict[str, dict[str, str]] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"--set expects stage.field=value (e.g. drag.lr=0.03), got {item!r}")
        data.setdefault(stage, {})[name] = value.strip()
    return settings_from_dict(data, settings)


DEFAULTS_FILE = "dragnb_defaults.json"


def model_defaults(model_dir: str | Path | None) -> Settings:
    """The settings a model folder asks for (its ``dragnb_defaults.json``), else the reference defaults."""
    if model_dir is not None:
        path = Path(model_dir) / DEFAULTS_FILE
        if path.is_file():
            return settings_from_dict(json.loads(path.read_text()))
    return Settings()
