"""Frozen settings, one dataclass per stage of DragDiffusion.

Defaults are the reference implementation's (Yujun-Shi/DragDiffusion); where the paper's seed text differs
the paper's value is noted in the comment and reachable with ``dataclasses.replace``. Symbols follow
``docs/method.md`` §1: r1, r2, λ, η, t; paper vs reference values in §5.

A model folder may carry its own defaults in ``dragnb_defaults.json`` (see :func:`settings_from_dict`),
for example the embedded tiny model, whose 16x16 latents need a larger λ and η than SD 1.5.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import InputError, ModelError, SettingError

EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "data" / "tiny-scenes"  # the model this project trained


class _Checked:
    """Mixin: a stage's settings check every field when made (also by ``dataclasses.replace``)."""

    STAGE: typing.ClassVar[str] = ""
    RULES: typing.ClassVar[dict[str, tuple[str, typing.Callable[[Any], bool]]]] = {}  # field -> (allowed, test)

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value, name = getattr(self, f.name), f"{self.STAGE}.{f.name}"
            allowed, ok = _type_rule(hints[f.name], f.default if f.default is not dataclasses.MISSING else None)
            if ok(value) and f.name in self.RULES:
                allowed, ok = self.RULES[f.name]
            if not ok(value):
                raise SettingError(name, value, f"{allowed} (the default is {_example(self, f)})")
        self._check_together()

    def _check_together(self) -> None:
        """Rules over several fields; none by default."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _example(obj, f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    text = ",".join(map(str, default)) if isinstance(default, tuple) else str(default).lower() \
        if isinstance(default, bool) else str(default)
    return f"{obj.STAGE}.{f.name}={text}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_rule(hint, default) -> tuple[str, typing.Callable[[Any], bool]]:
    """What the field's type alone requires: a choice, a whole number, a finite number, true/false, a tuple."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return f"must be one of {', '.join(map(str, choices))}", lambda v: v in choices
    if hint is bool:
        return "must be true or false", lambda v: isinstance(v, bool)
    if hint is int:
        return "must be a whole number", _is_int
    if hint is float:
        return "must be a finite number", _is_real
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        test = {int: _is_int, float: _is_real, str: lambda v: isinstance(v, str)}[item]
        return (f"must be a list of {item.__name__} values",
                lambda v: isinstance(v, tuple) and all(test(x) for x in v))
    return "", lambda v: True


def _at_least(low: float) -> tuple[str, typing.Callable[[Any], bool]]:
    return f"must be >= {low:g}", lambda v: v >= low


_POSITIVE = ("must be > 0", lambda v: v > 0)
_NON_EMPTY = ("needs at least one entry", lambda v: len(v) > 0)


@dataclass(frozen=True)
class LoraSettings(_Checked):
    """Stage 1: LoRA fine-tuning of the UNet on the single input image."""

    STAGE = "lora"
    RULES = {"rank": _at_least(1), "steps": _at_least(0), "lr": _POSITIVE, "weight_decay": _at_least(0),
             "batch_size": _at_least(1), "target_modules": _NON_EMPTY,
             "crop_scale": ("must be two area fractions 0 < low <= high <= 1",
                            lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1)}

    rank: int = 16  # LoRA rank r; alpha = rank so the adapter scale is 1
    steps: int = 80  # optimisation steps [paper: 200]
    lr: float = 5e-4  # AdamW learning rate [paper: 2e-4]
    weight_decay: float = 1e-2  # AdamW weight decay
    batch_size: int = 4  # images per step (random resize-crops of the one image)
    crop_scale: tuple[float, float] = (0.9, 1.0)  # area fraction range of the random resize-crop
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # [paper: q, k, v only]
    seed: int = 0  # the reference seeds LoRA with 0


@dataclass(frozen=True)
class InversionSettings(_Checked):
    """Stage 2: DDIM inversion of the image latent z_0 to z_t."""

    STAGE = "inversion"
    RULES = {"num_steps": _at_least(1), "strength": ("must be in (0, 1]", lambda v: 0 < v <= 1),
             "guidance_scale": _at_least(1)}

    num_steps: int = 50  # DDIM steps of the full schedule
    strength: float = 0.7  # fraction of the schedule inverted: 35 of 50, t = 681 for SD 1.5 [paper: 40/50]
    guidance_scale: float = 1.0  # classifier-free guidance during inversion (1 = none, as the reference)

    def _check_together(self) -> None:
        if self.inverted_steps < 1:
            raise SettingError("inversion.strength", self.strength, f"inverts round({self.num_steps} x "
                               f"{self.strength:g}) = 0 steps; raise it to at least {1 / self.num_steps:.3g}")

    @property
    def inverted_steps(self) -> int:
        """Number of DDIM steps inverted (and later denoised)."""
        return int(round(self.num_steps * self.strength))


@dataclass(frozen=True)
class DragSettings(_Checked):
    """Stage 3: latent optimisation by motion supervision and point tracking."""

    STAGE = "drag"
    RULES = {"feature_blocks": _NON_EMPTY, "feature_scale": _POSITIVE, "r1": _at_least(0), "r2": _at_least(0),
             "lam": _at_least(0), "lr": _POSITIVE, "max_steps": _at_least(0), "stop_distance": _at_least(0),
             "steps_per_timestep": _at_least(1), "hold_steps": _at_least(0), "line_search_distance": _POSITIVE,
             "line_search_loss": _POSITIVE, "text_lr": _POSITIVE, "text_lam": _at_least(0),
             "copy_beyond": _at_least(0), "image_beyond": _at_least(0), "image_whole_beyond": _at_least(0),
             "copy_tolerance": _at_least(0),
             "repaint_strength": ("must be in (0, 1]", lambda v: 0 < v <= 1), "repaint_steps": _at_least(1),
             "repaint_jump": _at_least(1), "repaint_resample": _at_least(1)}

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
    schedule: Literal["single", "alternating"] = "single"  # all max_steps drag steps at t (reference), or GoodDrag's
    # AlDD: steps_per_timestep drag steps at t, one DDIM step to the next timestep, more drag steps there, ...
    # until max_steps in all (docs/method.md §6)
    steps_per_timestep: int = 10  # B of the alternating schedule (GoodDrag drags 10 times per denoising step)
    tracking: Literal["nearest", "line_search"] = "nearest"  # nearest-neighbour point tracking (reference), or
    # FreeDrag's line search along h^0→g with an adaptive template feature (Ling et al. 2024, docs/method.md §6)
    line_search_distance: float = 5.0  # FreeDrag's d_max: how far along the line one search may move, feature px
    line_search_loss: float = 1.0  # FreeDrag's l_expected: the template distance a good next point should have
    optimize_text: bool = False  # DragText (Choi et al. 2024): optimise the text embedding with the latent
    text_lr: float = 0.004  # DragText's learning rate of the text embedding (Adam)
    text_lam: float = 0.1  # DragText's weight of the L1 regulariser keeping the embedding near the prompt's
    hold_steps: int = 0  # once every handle has arrived, this many iterations more pull the patch at each target
    # toward the original handle patch F_0(Ω(h_i^0)) (this project's variant; 0 = stop there, the reference)
    start: Literal["latent", "copy"] = "latent"  # what the optimisation starts from: z_t (the paper's), or "copy"
    # [extension, not in the paper]: z_t with the object of each drag at least copy_beyond long copied by whole
    # latent cells toward its target, the place it left filled from around it; the loop drags the rest (§3.6)
    copy_beyond: float = 0.2  # "copy" moves the pairs dragging at least this fraction of the image's shorter side
    image_copy: Literal["off", "denoise", "keep"] = "off"  # "copy": the pairs dragging at least image_beyond
    # are moved in the image instead, by whole pixels, the place they left filled from around them, and that image
    # is inverted; the loop starts there with each such handle at its target. When every pair was moved so, the
    # loop has nothing to drag, and "denoise" denoises the moved image's z_t (its own unedited branch), while
    # "keep" takes the moved image itself as the edit, denoising nothing (§3.6)
    image_beyond: float = 0.2  # image_copy: the shortest drag moved in the image (fraction of the shorter side)
    image_whole_beyond: float = 0.2  # image_copy: a shorter drag at least this long is moved in the image too when
    # its object lies wholly inside the mask (a move; an object the mask cuts is deformed by the loop; §3.6); at
    # image_beyond or more it changes nothing
    image_fill: Literal["bilateral", "repaint"] = "bilateral"  # image_copy: the place each object leaves is
    # filled from around it (FastDrag's bilateral fill, as the latent copy), or then "repaint": painted anew by the
    # model without the LoRA (RePaint, Lugmayr et al. 2022), which can complete a shape the object covered (§3.6)
    repaint_strength: float = 0.3  # "repaint": start from the image noised to this fraction of the schedule (1:
    # from noise, RePaint's own start)
    repaint_steps: int = 25  # "repaint": denoising steps over the whole schedule (those above the start are skipped)
    repaint_resample: int = 1  # "repaint": RePaint's resampling: each stretch of repaint_jump steps is denoised
    # this many times in all, noised back up in between (1: none)
    repaint_jump: int = 5  # "repaint": the length of those stretches, steps
    repaint_seed: int = 0  # "repaint": of its noise
    copy_tolerance: float = 150.0  # "copy": the object is the region around the handle within this RGB distance
    # (0-255) of its colour, inside the mask, holes filled, halved while it reaches the mask's edge (dragnb.footprint)
    footprint: Literal["colour", "figure"] = "colour"  # how the object is found for the copy in the image and for
    # denoise.edit_region "moved": its colour region, or "figure": that and every pixel connected to it unlike the
    # colours on the mask's edge (the ground), which takes in stripes, dots and outlines (dragnb.footprint); the
    # copy by latent cells keeps the colour region (a figure takes in a shape it touches and copies it along)
    round_points: bool = True  # round h and g to the supervision grid before the loop, as the reference does
    weight_guided_features: bool = True  # generated images with guidance: weigh [uncond | cond] features by
    # (1 - c) and c, c = s / (2s - 1), before concatenating them, as the reference's generated-image loop does
    method: Literal["optimise", "fastdrag", "regiondrag", "dragnoise"] = "optimise"  # what stage 3 does: the
    # paper's optimisation of z_t (with the variants above), or one of the drag family (docs/method.md §11,
    # dragnb/family): FastDrag's one-step warp of z_t, RegionDrag's region copy while denoising, DragNoise's
    # optimised bottleneck; each reads its own settings section (fastdrag, regiondrag, dragnoise)


VARIANT_SWITCHES = ("supervision", "schedule", "tracking", "optimize_text", "hold_steps", "track_from",
                    "start", "image_copy")  # the loop's variants (docs/method.md §6); each is off at its
# DragSettings default, the reference's loop


def reference_loop(drag: DragSettings) -> DragSettings:
    """``drag`` with every variant switch off (the reference's loop), its other values (lr, r1, steps, ...) kept."""
    return dataclasses.replace(drag, **{name: getattr(DragSettings(), name) for name in VARIANT_SWITCHES})


LatentMaskMode = Literal["nearest", "centre", "inside", "area"]  # dragnb.images.mask_to_latent's modes


@dataclass(frozen=True)
class FastDragSettings(_Checked):
    """``drag.method=fastdrag`` (Zhao et al., NeurIPS 2024): z_t moved in one step along a warp field, holes filled
    from their nearest moved neighbours; no optimiser (dragnb/family/fastdrag.py, docs/method.md §11.1)."""

    STAGE = "fastdrag"
    RULES = {"circle_scale": ("must be >= 1", lambda v: v >= 1)}

    circle_scale: float = 1.0  # the circle the warp fades out on: around the editable mask's bounding box, radius
    # half its diagonal times this (FastDrag's "elastic" circle); outside it, and outside the mask, nothing moves
    fill: Literal["bilateral", "none"] = "bilateral"  # holes the warp leaves: bilateral nearest-neighbour
    # interpolation (FastDrag's BNNI), or left as they were ("none", for the ablation)


@dataclass(frozen=True)
class RegionDragSettings(_Checked):
    """``drag.method=regiondrag`` (Lu et al., ECCV 2024): the inverted latents of a region around each handle copied
    onto the region around its target while denoising; no optimiser (dragnb/family/regiondrag.py, §11.2)."""

    STAGE = "regiondrag"
    RULES = {"region_size": ("must be in (0, 1]", lambda v: 0 < v <= 1),
             "noise_sigma": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
             "copy_until": ("must be in [0, 1]", lambda v: 0 <= v <= 1)}

    region_size: float = 0.35  # side of the square around each handle (and its target), a fraction of the image's
    # shorter side (RegionDrag takes regions a user draws; from points alone a square is this workbench's choice;
    # on the embedded model's textured cases 0-9, 0.35 landed 9, 0.25 5)
    noise_sigma: float = 1.0  # the vacated source region is blurred with noise at t: sqrt(1 - σ²) z + σ ε (the
    # authors' evaluation script 1.0, pure noise; their UI 0.6)
    copy_until: float = 0.2  # the copy repeats after every denoising step landing on a timestep >= this fraction
    # of t (the paper's end fraction 0.2); later steps only denoise
    seed: int = 0  # of the noise ε


@dataclass(frozen=True)
class DragNoiseSettings(_Checked):
    """``drag.method=dragnoise`` (Liu et al., CVPR 2024): motion supervision and tracking as the paper's loop, but
    the optimised variable is the UNet's bottleneck (the mid block's output) at t, which then replaces the
    bottleneck while denoising; z_t is left as it is (dragnb/family/dragnoise.py, §11.3)."""

    STAGE = "dragnoise"
    RULES = {"max_steps": _at_least(0), "lr": _POSITIVE, "lam": _at_least(0), "free_steps": _at_least(0)}

    max_steps: int = 60  # optimisation steps at most (the authors' UI: 60; their DragBench script 80)
    lr: float = 0.01  # Adam's learning rate on the bottleneck (UI 0.01; DragBench script 0.02)
    lam: float = 0.1  # λ of the mask term, added with or without a mask (UI 0.1; DragBench script 0.2)
    free_steps: int = 10  # the last this many steps of the full schedule compute their own bottleneck; every
    # denoising step before them takes the optimised one (the paper's t' = 10 of 50; the authors' code 0)


@dataclass(frozen=True)
class DenoiseSettings(_Checked):
    """Stage 4: DDIM denoising from the edited z_t with reference-latent control."""

    STAGE = "denoise"
    RULES = {"control_from_step": _at_least(0), "paste_blur": _at_least(0), "moved_beyond": _at_least(0)}

    reference_control: bool = True  # decoder self-attention attends to the unedited branch's keys/values
    control_blocks: tuple[int, ...] = (-2, -1)  # up blocks under control: up_blocks[2], [3] on SD 1.5
    control_from_step: int = 0  # first denoising step (0-based, of those run) with control on
    blend_outside_mask: bool = False  # [extension, not in the paper] after each step, copy the unedited branch's
    # latent outside the mask (Blended Latent Diffusion): what the mask protects cannot drift while denoising
    blend_from: Literal["branch", "inversion"] = "branch"  # what blend_outside_mask copies: the original branch's
    # latent, or the inversion's latent at the same timestep (its last is the encoded z_0: the outside is then
    # exactly the VAE's reconstruction of the source)
    blend_mask: LatentMaskMode = "nearest"  # how blend_outside_mask brings the
    # pixel mask to the latent grid (dragnb.images.mask_to_latent): the reference's nearest (a cell takes its
    # top-left pixel, as the mask term does), the cell's centre pixel, only cells wholly editable, or each cell's
    # editable fraction (a soft blend)
    paste_outside: bool = False  # [extension, not in the paper] the result at the input's size with the input's
    # own pixels outside the mask, softened at its edge (diffusers' VaeImageProcessor.apply_overlay, as inpainting
    # pipelines do): what may not change is the user's pixels, not the model's reconstruction of them
    paste_blur: int = 4  # the Gaussian blur (image pixels) that softens the mask's edge for paste_outside
    edit_region: Literal["mask", "moved"] = "mask"  # [extension, not in the paper] what blend_outside_mask and
    # paste_outside let change: the whole mask (the paper's editable region), or "moved": only the part of the mask
    # within one latent cell of each dragged object (its footprint, dragnb.footprint, drag.footprint)
    # where it is and where its drag takes it; the rest of the mask is kept as the outside is (what a drag passes
    # over or ends beside stays). Only when every drag is at least moved_beyond long; otherwise the whole mask
    moved_beyond: float = 0.2  # edit_region "moved": the shortest drag (fraction of the image's shorter side) it
    # confines; a shorter one leaves the whole mask editable (a short drag's object is found less surely)


@dataclass(frozen=True)
class ComputeSettings(_Checked):
    """How the UNet and the VAE compute (precision, memory); ``dragnb.compute``. The results' meaning does not
    change; their digits may (fp16, bf16)."""

    STAGE = "compute"
    autocast: Literal["off", "fp16", "bf16"] = "off"  # the drag's and the LoRA's UNet forward under autocast; the
    # reference: fp16 with a gradient scaler on CUDA (fp16 needs CUDA; bf16 runs anywhere)
    gradient_checkpointing: bool = False  # the UNet recomputes activations in backward: less memory, same gradients
    vae_slicing: bool = False  # encode/decode one image of a batch at a time
    vae_tiling: bool = False  # encode/decode in overlapping tiles (images beyond the model's resolution)
    fuse_lora: bool = False  # inversion, drag and denoising run with the LoRA folded into the weights (W + s·B·A):
    # the bare UNet's cost, the same function up to rounding; the reference keeps the adapter unfused
    weights: Literal["fp32", "fp16", "bf16"] = "fp32"  # the dtype the model's weights are held in, chosen when it
    # loads (dragnb.models.load_model(dtype=...); the command line loads it in this one); a session checks that its
    # model matches. Latents, losses and the optimisers stay fp32. The reference holds SD 1.5 in fp16 on CUDA


@dataclass(frozen=True)
class Settings:
    """All stages' settings together, as a session and the command line use them."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    inversion: InversionSettings = field(default_factory=InversionSettings)
    drag: DragSettings = field(default_factory=DragSettings)
    denoise: DenoiseSettings = field(default_factory=DenoiseSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    fastdrag: FastDragSettings = field(default_factory=FastDragSettings)  # read when drag.method names it
    regiondrag: RegionDragSettings = field(default_factory=RegionDragSettings)
    dragnoise: DragNoiseSettings = field(default_factory=DragNoiseSettings)

    @property
    def method(self):
        """The settings section of ``drag.method`` (None for the optimisation, which reads ``drag``)."""
        return None if self.drag.method == "optimise" else getattr(self, self.drag.method)

    def __post_init__(self) -> None:
        """Each stage must be its settings class (``Settings(drag={"lr": 1})`` is refused, not carried along)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, _STAGES[f.name]):
                raise InputError(f.name, f"expected a dragnb.config.{_STAGES[f.name].__name__}, got "
                                 f"{type(value).__name__}; build it with {_STAGES[f.name].__name__}(...) or use "
                                 "settings_from_dict")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_STAGES = {"lora": LoraSettings, "inversion": InversionSettings, "drag": DragSettings, "denoise": DenoiseSettings,
           "compute": ComputeSettings, "fastdrag": FastDragSettings, "regiondrag": RegionDragSettings,
           "dragnoise": DragNoiseSettings}


def _convert(value: Any, kind: type, field_name: str, allowed: str) -> Any:
    """One command-line string or JSON value as ``kind``; a whole number stays whole (2.5 is no int)."""
    try:
        if kind is bool:
            if isinstance(value, str):
                words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                         "off": False}
                return words[value.strip().lower()]
            if isinstance(value, bool) or (_is_int(value) and value in (0, 1)):
                return bool(value)
            raise ValueError
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not float(number).is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value).strip() if isinstance(value, str) else value
    except (ValueError, TypeError, KeyError, OverflowError):
        raise SettingError(field_name, value, allowed) from None


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn a JSON or command-line value into the type of field ``name`` of ``cls``; the ranges are checked
    when the settings are made (``_Checked``)."""
    hint = _hints(cls)[name]
    field_name = f"{cls.STAGE}.{name}"
    allowed, _ = _type_rule(hint, None)
    allowed += f" (the default is {_example(cls, next(f for f in dataclasses.fields(cls) if f.name == name))})"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SettingError(field_name, value, allowed)
        return tuple(_convert(v, item, field_name, allowed) for v in value)
    kind = hint if hint in (bool, int, float, str) else str
    return _convert(value, kind, field_name, allowed)


def settings_from_dict(data: dict[str, Any], base: Settings | None = None) -> Settings:
    """Overlay ``{"drag": {"lr": 0.03}, ...}`` on ``base``; unknown stages or fields are an error."""
    base = base or Settings()
    stages = {}
    for stage, cls in _STAGES.items():
        current = getattr(base, stage)
        given = data.get(stage, {})
        if not isinstance(given, dict):
            raise InputError(stage, f"must be an object of settings such as {{\"{stage}\": {{...}}}}, got {given!r}")
        overrides = dict(given)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"{stage}.{unknown[0]}", f"no such setting; the {stage} settings are "
                             f"{', '.join(sorted(names))}")
        stages[stage] = dataclasses.replace(current, **{k: _coerce(cls, k, v) for k, v in overrides.items()})
    unknown_stages = set(data) - set(_STAGES) - {"comment", "notes"}
    if unknown_stages:
        raise InputError(sorted(unknown_stages)[0], f"no such stage; the stages are {', '.join(_STAGES)}")
    return Settings(**stages)


def rebase(settings: Settings, old_base: Settings, new_base: Settings) -> Settings:
    """``settings`` moved from ``old_base`` onto ``new_base``: every field ``settings`` changed from ``old_base``
    keeps its value, every other field takes ``new_base``'s (a history replayed on another model keeps each
    round's own choices and takes that model's defaults for the rest)."""
    stages = {}
    for stage in _STAGES:
        mine, old, new = (getattr(x, stage) for x in (settings, old_base, new_base))
        changed = {f.name: getattr(mine, f.name) for f in dataclasses.fields(mine)
                   if getattr(mine, f.name) != getattr(old, f.name)}
        stages[stage] = dataclasses.replace(new, **changed)
    return Settings(**stages)


def apply_overrides(settings: Settings, assignments: list[str]) -> Settings:
    """Apply ``["drag.lr=0.03", "lora.steps=40"]`` (the command line's ``--set``)."""
    data: dict[str, dict[str, str]] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise InputError("--set", f"expects stage.field=value (e.g. drag.lr=0.03), got {item!r}")
        data.setdefault(stage, {})[name] = value.strip()
    return settings_from_dict(data, settings)


def requested_weights(assignments: list[str]) -> str | None:
    """The ``compute.weights`` that ``--set`` assignments name (the dtype the model is to load in), else None."""
    named = [value.strip() for key, _, value in (item.partition("=") for item in assignments)
             if key.strip() == "compute.weights"]
    return named[-1] if named else None


def named_overrides(text: str, argument: str) -> tuple[str, list[str]]:
    """``"NAME:drag.lr=0.02,lora.steps=20"`` -> ("NAME", ["drag.lr=0.02", "lora.steps=20"]): one labelled set of
    overrides, as the scripts' ``--variant`` and ``--option`` take them (checked by :func:`apply_overrides`)."""
    name, sep, assignments = text.partition(":")
    if not sep or not name.strip():
        raise InputError(argument, f"expects NAME:stage.field=value,... (e.g. fast:lora.steps=20), got {text!r}")
    return name.strip(), [a.strip() for a in assignments.split(",") if a.strip()]


DEFAULTS_FILE = "dragnb_defaults.json"


def model_defaults(model_dir: str | Path | None) -> Settings:
    """The settings a model folder asks for (its ``dragnb_defaults.json``), else the reference defaults."""
    if model_dir is not None:
        path = Path(model_dir) / DEFAULTS_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict):
                    raise ValueError("it must hold one JSON object, {\"drag\": {\"lr\": 0.03}, ...}")
                return settings_from_dict(data)
            except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and InputError are ValueErrors
                raise ModelError(f"model: {str(path)!r} is not usable ({exc}); fix it, or delete it to use the "
                                 "reference defaults") from None
    return Settings()


def check_for_model(settings: Settings, up_blocks: int, train_timesteps: int,
                    modules: Sequence[tuple[str, bool]] = ()) -> None:
    """What a loaded model bounds: block indices must exist among its ``up_blocks`` decoder blocks (negative
    ones count from the end), the DDIM schedule cannot have more steps than the model's training, and each of
    ``lora.target_modules`` must name UNet layers a LoRA can adapt. ``modules``: the UNet's (dotted name, whether
    peft can adapt it: a Linear, Conv2d or Embedding); a name matches as peft matches it (the module's dotted
    name is it or ends in ``.<it>``), and every module it matches must be adaptable, or peft would refuse."""
    for target in settings.lora.target_modules if modules else ():
        matched = [ok for name, ok in modules if name == target or name.endswith("." + target)]
        if not matched or not all(matched):
            why = "no module is called" if not matched else "it also names blocks that are not layers:"
            raise SettingError("lora.target_modules", settings.lora.target_modules,
                               f"every name must be a UNet layer (e.g. to_q, to_k, to_v, to_out.0); {why} {target!r}")
    for stage, name in (("drag", "feature_blocks"), ("denoise", "control_blocks")):
        blocks = getattr(getattr(settings, stage), name)
        bad = [b for b in blocks if not -up_blocks <= b < up_blocks]
        if bad:
            raise SettingError(f"{stage}.{name}", blocks, f"this UNet has up blocks 0..{up_blocks - 1} "
                               f"(or -{up_blocks}..-1 from the end); block {bad[0]} does not exist")
    if settings.inversion.num_steps > train_timesteps:
        raise SettingError("inversion.num_steps", settings.inversion.num_steps,
                           f"must be at most the model's {train_timesteps} training timesteps")
