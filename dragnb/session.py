"""A drag session: runs LoRA → inversion → drag → denoise in order, caching each stage's result.

Change the points, the mask or a stage's settings and call :meth:`DragSession.run` again: only the stages
whose inputs changed run. Cache keys hash everything a stage depends on (image, prompt, model, the
settings of this stage and those before it), so a second drag on the same image reuses the LoRA and the
inversion. With ``cache_dir`` the LoRA and inversion also persist on disk (:mod:`dragnb.cache`: written
atomically, a broken entry is discarded and recomputed). Settings are checked against the model whenever they
are set, so a bad value fails before any stage runs.

Edits go in rounds (:mod:`dragnb.rounds`, docs/method.md §10): :meth:`DragSession.new_round` makes the last result
the source of the next drag, :meth:`~DragSession.undo`, :meth:`~DragSession.redo` and :meth:`~DragSession.goto`
move through them, :meth:`~DragSession.save_history` writes them for ``python -m dragnb replay``. Each stage's
memory cache holds its last :data:`CACHE_ENTRIES` results, so moving back to a round and running it again comes
from the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

from .callbacks import Callback, StepRecord
from .cache import load_inversion_entry, load_lora_entry, open_cache, save_inversion_entry, save_lora_entry
from .compute import WEIGHTS, unsupported, vae_memory, weights_name
from .config import Settings, check_for_model
from .denoise import DenoiseResult, denoise
from . import family
from .drag import COMPLETE, DragParts, DragResult, drag
from .drag.copy import MovedStart, copy_in_image, vacated
from .drag.repaint import repaint
from .edit import EditResult
from .errors import InputError, Interrupted, SessionBusy, SettingError
from .footprint import FOOTPRINTS, LATENT_COVER, lies_inside, moved_region
from .generate import GeneratedImage
from .keys import KeptLora, denoise_fields, digest, stage_keys
from .images import (from_model_tensor, load_mask, mask_to_latent, model_size, paste_outside, resize_array,
                     to_model_tensor, to_rgb_array)
from .inversion import InversionResult, decode_latent, encode_image, invert
from .lora import LoraResult, adaptable_modules, apply_lora, fused_lora, train_lora, without_lora
from .models import Model, encode_prompt, held_dtype
from .points import DragPoints, feature_grid, held_on_grid, image_to_grid, make_points
from .rounds import History, Round

STAGES = ("lora", "inversion", "drag", "denoise")
CACHE_ENTRIES = 8  # results each stage keeps in memory (the latest used), e.g. one per round moved between


T = TypeVar("T")


@dataclass(frozen=True)
class Produced(Generic[T]):
    """What a stage runner returns: the stage's result and where it came from."""

    result: T
    origin: str  # "computed" | "memory" | "disk" | "skipped"


class DragSession:
    """Holds one image, its prompt, points, mask and settings, each stage's cached results, and the rounds."""

    def __init__(self, model: Model, image, prompt: str = "", settings: Settings | None = None,
                 cache_dir: str | Path | None = None, progress: bool = False):
        self.model = model
        source = to_rgb_array(image, "image")  # (H, W, 3) uint8
        self.image_size: tuple[int, int] = source.shape[:2]
        self.model_size = model_size(self.image_size, model.resolution, model.size_multiple)
        self.prompt = prompt or ""
        self.settings = settings or model.settings
        self.cache_dir = open_cache(cache_dir) if cache_dir else None
        self.progress = progress
        self.points: DragPoints | None = None
        self._mask: np.ndarray | None = None
        self._cache: dict[str, dict[str, object]] = {stage: {} for stage in STAGES}  # key -> result, oldest first
        self._stop = False
        self._running = threading.RLock()  # one run at a time; the thread running may call stage runners within
        self.parts: DragParts | None = None  # a researcher's own parts of the drag (dragnb.drag.parts), None = the settings'
        self._kept_lora: KeptLora | None = None  # the round uses the first round's LoRA
        self._set_source(source)
        self.history = History(rounds=[Round(index=0, parent=None, source=source, prompt=self.prompt,
                                             settings=self.settings)], model=model.name,
                               model_settings=model.settings)

    @classmethod
    def from_generated(cls, model: Model, generated: GeneratedImage, settings: Settings | None = None,
                       **kwargs) -> DragSession:
        """Drag a generated image from its kept latent: no LoRA, no inversion, the generation's guidance."""
        session = cls(model, from_model_tensor(generated.image), generated.prompt, settings, **kwargs)
        session.history = History(rounds=[], model=model.name, model_settings=model.settings)
        session._enter(session.history.add(None, session.source, session.prompt, session.settings,
                                           generated=generated))
        return session

    def _set_source(self, image: np.ndarray, generated: GeneratedImage | None = None) -> None:
        """Make ``image`` (H, W, 3) uint8 the image the stages work on: its model tensor and digest go with it."""
        self.source = image
        self.image_tensor = to_model_tensor(image, self.model_size)  # (1, 3, h, w) in [-1, 1]
        self._image_digest = digest(image.tobytes(), list(image.shape))
        self.generated: GeneratedImage | None = generated
        self.guidance_scale = 1.0 if generated is None else generated.guidance_scale

    # ---- inputs -------------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Every assignment is checked against the model, so no stage starts with settings it cannot use."""
        if not isinstance(settings, Settings):
            raise InputError("settings", f"expected a dragnb.config.Settings, got {type(settings).__name__}")
        unet = self.model.pipe.unet
        check_for_model(settings, len(unet.up_blocks), self.model.pipe.scheduler.config.num_train_timesteps,
                        adaptable_modules(unet))
        reason = unsupported(settings.compute, self.model.device)
        if reason is not None:
            raise SettingError("compute.autocast", settings.compute.autocast, reason)
        dtype = held_dtype(unet)
        if dtype not in WEIGHTS.values():
            raise InputError("model", f"its weights are {dtype}; dragnb runs fp32, fp16 or bf16 weights: load it with "
                             "load_model(..., dtype=\"fp32\") or cast it with model.pipe.to(torch.float32)")
        held = weights_name(dtype)
        if settings.compute.weights != held:
            raise SettingError("compute.weights", settings.compute.weights,
                               f"this model's weights are {held}: set compute.weights={held}, or load the model "
                               f"in that dtype (load_model(..., dtype=\"{settings.compute.weights}\"))")
        rows, cols = feature_grid(self.model_size, settings.drag.feature_scale)
        if rows < 1 or cols < 1:
            raise SettingError("drag.feature_scale", settings.drag.feature_scale,
                               f"makes a {rows}x{cols} supervision grid from the {self.model_size[1]}x"
                               f"{self.model_size[0]} model image; raise it")
        self._settings = settings

    @property
    def mask(self) -> np.ndarray | None:
        """The editable region (H, W) bool, None = the whole image; assigning goes through :meth:`set_mask`."""
        return self._mask

    @mask.setter
    def mask(self, mask) -> None:
        self.set_mask(mask)

    def set_points(self, pairs) -> DragPoints:
        """Handle/target pairs in image pixels: [(hx, hy, tx, ty), ...] or alternating [[x, y], ...]."""
        self.points = pairs if isinstance(pairs, DragPoints) else make_points(pairs, self.image_size)
        return self.points

    def set_mask(self, mask) -> None:
        """The editable region (H, W), nonzero = editable; None or all zero = the whole image."""
        self._mask = load_mask(mask, self.image_size)

    def _stop_requested(self, record: StepRecord) -> bool:
        """The session's own callback: Stop ends LoRA (not cached) and the drag (its partial edit is denoised)."""
        return self._stop and record.stage in ("lora", "drag")

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(rows, cols) of the supervision grid the drag's points live on."""
        return feature_grid(self.model_size, self.settings.drag.feature_scale)

    def request_stop(self) -> None:
        """Ask the running :meth:`run` (or, when none runs, the next one) to stop, e.g. from a Stop button: LoRA
        after its current step (raising :class:`Interrupted` with ``stopped``), the drag after its current iteration
        (the edit is made from that state). The request holds until that run ends."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        """Whether a stop is asked for (the session's one stop flag; cleared when a run ends)."""
        return self._stop

    # ---- keys ---------------------------------------------------------------------------------------
    def _keys(self) -> dict[str, str]:
        generation = None if self.generated is None else [self.generated.seed, self.generated.guidance_scale]
        return stage_keys(self.settings, self._image_digest, self.prompt, self.model.name, generation,
                          self._kept_lora, self.points, self.mask, self.parts)

    def is_cached(self, stage: str) -> bool:
        """Whether ``stage`` would come from the cache if run now."""
        keys = self._keys()
        if stage == "denoise":
            dragged = self._cache["drag"].get(keys["drag"])
            return dragged is not None and self._denoise_key(dragged) in self._cache["denoise"]
        return keys[stage] in self._cache[stage]

    def _text(self) -> torch.Tensor:
        return encode_prompt(self.model, self.prompt, self.guidance_scale)

    def _remember(self, stage: str, key: str, result) -> None:
        """Keep ``result`` as the newest of ``stage``'s memory cache, dropping the oldest beyond CACHE_ENTRIES."""
        entries = self._cache[stage]
        entries.pop(key, None)
        entries[key] = result
        while len(entries) > CACHE_ENTRIES:
            entries.pop(next(iter(entries)))

    # ---- stages: each runner returns its result and where it came from -------------------------------
    @contextmanager
    def _one_run(self):
        """Refuse a run while another thread's run is going (the run panel runs on a worker thread)."""
        if not self._running.acquire(blocking=False):
            raise SessionBusy("session: a run is already going on this session (another thread, e.g. the run "
                              "panel's); wait for it to end or stop it (request_stop), then run again")
        try:
            yield
        finally:
            self._running.release()

    def run_lora(self, callbacks: Sequence[Callback] = ()) -> LoraResult | None:
        """Stage 1 (skipped for generated images and when ``lora.steps`` is 0)."""
        with self._one_run():
            return self._lora(callbacks).result

    def _lora(self, callbacks: Sequence[Callback] = ()) -> Produced[LoraResult | None]:
        key = self._keys()["lora"]
        if self.generated is not None or self.settings.lora.steps == 0:
            apply_lora(self.model, None)
            return Produced(None, "skipped")
        result, origin = self._cache["lora"].get(key), "memory"
        disk = self.cache_dir / "lora" / key if self.cache_dir else None
        if result is None and disk is not None:
            result, origin = load_lora_entry(disk, key), "disk"
        if result is None:
            origin = "computed"
            kept = self._kept_lora
            image, prompt = (self.image_tensor, self.prompt) if kept is None else (kept.image, kept.prompt)
            with vae_memory(self.model.pipe.vae, self.settings.compute):
                result = train_lora(self.model, image, prompt, self.settings.lora, progress=self.progress,
                                    callbacks=[*callbacks, self._stop_requested], key=key,
                                    compute=self.settings.compute)
            if result.interrupted:  # a half-trained adapter is returned, never cached nor left on the model
                return Produced(result, origin)
            if disk is not None:
                save_lora_entry(disk, result)
        self._remember("lora", key, result)
        apply_lora(self.model, result)
        return Produced(result, origin)

    def run_inversion(self, callbacks: Sequence[Callback] = ()) -> InversionResult | None:
        """Stage 2 (for generated images: the kept latents stand in, nothing runs)."""
        with self._one_run():
            return self._inversion(callbacks).result

    def _inversion(self, callbacks: Sequence[Callback] = ()) -> Produced[InversionResult | None]:
        key = self._keys()["inversion"]
        if self.generated is not None:
            return Produced(None, "skipped")
        if key in self._cache["inversion"]:
            self._remember("inversion", key, self._cache["inversion"][key])
            return Produced(self._cache["inversion"][key], "memory")
        self.run_lora()
        disk = self.cache_dir / "inversion" / f"{key}.safetensors" if self.cache_dir else None
        result = None if disk is None else load_inversion_entry(
            disk, key, self.settings.inversion.inverted_steps, self._latent_shape, self.model.device)
        origin = "disk"
        if result is None:
            origin = "computed"
            with vae_memory(self.model.pipe.vae, self.settings.compute):
                z0 = encode_image(self.model, self.image_tensor)
            text = encode_prompt(self.model, self.prompt, self.settings.inversion.guidance_scale)  # [uncond, cond]
            # when inversion.guidance_scale > 1: inversion with classifier-free guidance (1 = none, the reference)
            with self._fused():
                result = invert(self.model, z0, text, self.settings.inversion, progress=self.progress,
                                callbacks=callbacks)
            result.key = key
            if disk is not None and not result.interrupted:
                save_inversion_entry(disk, result)
        if not result.interrupted:
            self._remember("inversion", key, result)
        return Produced(result, origin)

    def _fused(self):
        """``compute.fuse_lora``: the active LoRA folded into the UNet's weights for one stage (dragnb.lora.fused_lora)."""
        return fused_lora(self.model.pipe.unet, self.settings.compute.fuse_lora)

    @property
    def _latent_shape(self) -> tuple[int, int, int, int]:
        f = self.model.vae_scale
        return (1, int(self.model.pipe.unet.config.in_channels), self.model_size[0] // f, self.model_size[1] // f)

    def _start_latent(self) -> tuple[torch.Tensor, int]:
        if self.generated is not None:
            z, t = self.generated.latent_at(self.settings.inversion)
            return z.to(self.model.device), t
        inversion = self.run_inversion()
        if inversion.interrupted:
            raise Interrupted("inversion", {"inversion": inversion})
        return inversion.zt, inversion.t

    def run_drag(self, callbacks: Sequence[Callback] = (), keep_latents: bool = False,
                 keep_features: bool = False) -> DragResult:
        """Stage 3. Needs points (:meth:`set_points`)."""
        with self._one_run():
            try:
                return self._drag(callbacks, keep_latents, keep_features).result
            finally:
                self._stop = False  # a stop request ends with the run it stopped

    def _drag(self, callbacks: Sequence[Callback], keep_latents: bool, keep_features: bool) -> Produced[DragResult]:
        if self.points is None:
            raise InputError("points", "no handle/target points set; call set_points([(hx, hy, tx, ty), ...]) first")
        key = self._keys()["drag"]
        cached = self._cache["drag"].get(key)
        first = cached.history[0] if cached is not None and cached.history else None
        lacking = first is not None and ((keep_latents and first.latent is None)
                                         or (keep_features and first.features is None))  # asked for, not kept
        if cached is not None and not lacking:
            self._remember("drag", key, cached)
            return Produced(cached, "memory")
        self.run_lora()
        zt, t = self._start_latent()
        grid = self.feature_grid
        handles = held_on_grid(image_to_grid(self.points.handles, self.image_size, grid), grid)  # a point on the
        targets = held_on_grid(image_to_grid(self.points.targets, self.image_size, grid), grid)  # last pixels too
        latent_size = tuple(zt.shape[-2:])
        mask = None if self.mask is None else mask_to_latent(self.mask, latent_size)

        copying = self.settings.drag.method == "optimise" and self.settings.drag.start == "copy"
        in_image = self._in_image() if copying else None  # the pairs moved in the image (found once: a figure each)
        moved = self._moved_start(in_image) if copying and self.settings.drag.image_copy != "off" else None
        with self._fused():
            if self.settings.drag.method == "optimise":
                result = drag(self.model, zt, t, self._text(), handles, targets, mask, self.settings.drag,
                              prompt=self.prompt, compute=self.settings.compute, parts=self.parts,
                              callbacks=[*callbacks, self._stop_requested], guidance_scale=self.guidance_scale,
                              keep_latents=keep_latents, keep_features=keep_features, progress=self.progress,
                              schedule_steps=self.settings.inversion.num_steps,
                              footprints=self._footprints(latent_size, in_image) if copying else None,
                              moved=moved)
            else:  # one of the drag family (dragnb/family)
                inversion = None if self.generated is not None else self.run_inversion()
                result = family.run(self.settings, self.model, zt, t, self._text(), handles, targets, mask,
                                    inverted=None if inversion is None else inversion.latents,
                                    callbacks=[*callbacks, self._stop_requested], guidance_scale=self.guidance_scale,
                                    keep_latents=keep_latents, keep_features=keep_features, progress=self.progress)
        result.key = key
        if moved is not None:  # what drag.image_copy moved and inverted, for the views and for "keep"
            result.extras["moved_start"] = moved
        if result.stop_reason in COMPLETE:  # partial results are returned, not cached
            self._remember("drag", key, result)
        return Produced(result, "computed")

    def _footprints(self, latent_size: tuple[int, int], in_image: np.ndarray | None = None) -> np.ndarray:
        """(N, h, w) bool: for ``drag.start = "copy"``, the object under each handle dragging at least
        ``drag.copy_beyond`` of the shorter side (:func:`dragnb.footprint.colour_footprint`, inside the mask), on the
        latent grid where it covers ``LATENT_COVER`` of a cell or more; empty for the shorter drags, which the loop
        moves alone, and for those ``drag.image_copy`` moves in the image (``in_image``, None: :meth:`_in_image`;
        :meth:`_moved_start`)."""
        beyond = self.settings.drag.copy_beyond * min(self.image_size)
        in_image = self._in_image() if in_image is None else in_image
        out = np.zeros((len(self.points), *latent_size), bool)
        for i, (a, length) in enumerate(zip(self.points.handles, self.points.lengths())):
            if beyond <= length and not in_image[i]:
                found = self._object(a, "colour")  # a figure would take in a shape it touches and copy it along
                out[i] = mask_to_latent(found, latent_size, "area")[0, 0].numpy() >= LATENT_COVER
        return out

    def _in_image(self) -> np.ndarray:
        """(N,) bool: the pairs ``drag.image_copy`` moves in the image: those dragging at least ``drag.image_beyond``
        of the shorter side, and those dragging at least ``drag.image_whole_beyond`` whose object lies wholly inside
        the mask (:func:`dragnb.footprint.lies_inside`: a move of the whole object; one the mask cuts is a
        deformation, left to the loop). None of them with ``image_copy`` off."""
        drag_settings, side = self.settings.drag, min(self.image_size)
        lengths = self.points.lengths()
        if drag_settings.image_copy == "off":
            return np.zeros(len(lengths), bool)
        out = lengths >= drag_settings.image_beyond * side
        editable = None if self.mask is None else self.mask > 0
        for i, (a, length) in enumerate(zip(self.points.handles, lengths)):
            if not out[i] and length >= drag_settings.image_whole_beyond * side:
                out[i] = lies_inside(self.source, tuple(a), editable, drag_settings.copy_tolerance,
                                     FOOTPRINTS[drag_settings.footprint])
        return out

    def _moved_start(self, in_image: np.ndarray | None = None) -> MovedStart | None:
        """``drag.image_copy``: the source with the object under each handle of the pairs :meth:`_in_image` names
        (``in_image``, None: ask it) moved by its drag in whole pixels (:func:`dragnb.drag.copy.copy_in_image`),
        encoded and inverted as the source is (the session's LoRA, its inversion settings). None when it names none."""
        moves = self.points.pixel_moves()
        footprints = np.zeros((len(self.points), *self.image_size), bool)
        in_image = self._in_image() if in_image is None else in_image
        for i, a in enumerate(self.points.handles):
            if in_image[i] and moves[i].any():
                footprints[i] = self._object(a)
        moving = footprints.any(axis=(1, 2))
        if not moving.any():
            return None
        moves = moves * moving[:, None]
        editable = None if self.mask is None else self.mask > 0
        image = copy_in_image(self.source, footprints, moves, editable)
        if self.settings.drag.image_fill == "repaint":
            image = self._repainted(image, vacated(footprints, moves, editable))
        z0 = self._encoded(image)
        text = encode_prompt(self.model, self.prompt, self.settings.inversion.guidance_scale)
        with self._fused():
            inverted = invert(self.model, z0, text, self.settings.inversion, progress=self.progress)
        if inverted.interrupted:
            raise Interrupted("drag", {})
        return MovedStart(inverted.zt, z0, torch.from_numpy(moving), image)

    def _repainted(self, image: np.ndarray, region: np.ndarray) -> np.ndarray:
        """``drag.image_fill = "repaint"``: ``image`` (H, W, 3) uint8 with the pixels of ``region`` (H, W) bool
        painted anew by the model without the LoRA (:func:`dragnb.drag.repaint.repaint`, on every latent cell
        ``region`` touches), the rest its own pixels. A new array."""
        z0 = self._encoded(image)
        known = (mask_to_latent(region, tuple(z0.shape[-2:]), "area") <= 0).float()
        try:
            with without_lora(self.model.pipe.unet):
                z = repaint(self.model, z0, known, encode_prompt(self.model, self.prompt), self.settings.drag,
                            progress=self.progress)
        except KeyboardInterrupt:
            raise Interrupted("drag", {}) from None
        with vae_memory(self.model.pipe.vae, self.settings.compute):
            painted = resize_array(from_model_tensor(decode_latent(self.model, z)), self.image_size)
        out = image.copy()
        out[region] = painted[region]
        return out

    def _encoded(self, image: np.ndarray) -> torch.Tensor:
        """z_0 of ``image`` (H, W, 3) uint8, brought to the model's size (the VAE under ``compute``'s memory
        settings)."""
        with vae_memory(self.model.pipe.vae, self.settings.compute):
            return encode_image(self.model, to_model_tensor(image, self.model_size))

    def _object(self, handle, kind: str | None = None) -> np.ndarray:
        """(H, W) bool: the object under ``handle`` (x, y) in the source, inside the mask
        (:mod:`dragnb.footprint`: its colour region, ``drag.copy_tolerance``, or the whole figure), found as
        ``kind`` says ("colour" or "figure"; None: ``drag.footprint``)."""
        editable = None if self.mask is None else self.mask > 0
        find = FOOTPRINTS[kind or self.settings.drag.footprint]
        return find(self.source, tuple(handle), editable, self.settings.drag.copy_tolerance)

    def _edit_region(self, latent_size: tuple[int, int]) -> np.ndarray | None:
        """(H, W) bool, None = everywhere: what the denoising's blend and the paste let change. The mask, or with
        ``denoise.edit_region = "moved"``, when every drag is at least ``denoise.moved_beyond`` of the shorter side
        long, only the part of it within one latent cell (``latent_size`` (h, w)) of each dragged object where it is
        and where its drag takes it (:func:`dragnb.footprint.moved_region`)."""
        if (self.settings.denoise.edit_region == "mask"
                or self.points.lengths().min() < self.settings.denoise.moved_beyond * min(self.image_size)):
            return self.mask
        margin = int(np.ceil(max(n / m for n, m in zip(self.image_size, latent_size))))
        region = moved_region([self._object(a) for a in self.points.handles], self.points.pixel_moves(), margin)
        return region if self.mask is None else region & self.mask

    def run_denoise(self, dragged: DragResult | None = None, callbacks: Sequence[Callback] = ()) -> DenoiseResult:
        """Stage 4 from the latest drag (or ``dragged``); a denoising stopped by a callback is not cached."""
        with self._one_run():
            return self._denoise(dragged or self.run_drag(), callbacks).result

    def _denoise(self, dragged: DragResult, callbacks: Sequence[Callback]) -> Produced[DenoiseResult]:
        key = self._denoise_key(dragged)
        if key in self._cache["denoise"]:
            self._remember("denoise", key, self._cache["denoise"][key])
            return Produced(self._cache["denoise"][key], "memory")
        moved = dragged.extras.get("moved_start")
        if self.settings.drag.image_copy == "keep" and moved is not None and bool(moved.moved.all()):
            return Produced(self._kept(moved, key), "computed")  # [extension] the moved image is the edit (§3.6)
        self.run_lora()
        device = self.model.device
        original = dragged.original_latent.to(device)  # the unedited branch at the drag's timestep
        region = self._edit_region(tuple(original.shape[-2:]))
        mask = None if region is None else mask_to_latent(region, tuple(original.shape[-2:]),
                                                          self.settings.denoise.blend_mask)
        inversion = None if self.generated is not None else self.run_inversion()
        with vae_memory(self.model.pipe.vae, self.settings.compute), self._fused():
            result = denoise(self.model, dragged.latent.to(device), original, self._text(), self.settings.denoise,
                             self.settings.inversion, guidance_scale=self.guidance_scale, progress=self.progress,
                             callbacks=callbacks, mask=mask, t=dragged.t, edited_text=dragged.text.to(device),
                             inverted=None if inversion is None else inversion.latents, guide=dragged.guide)
        result.key, result.region = key, region
        if not result.interrupted:
            self._remember("denoise", key, result)
        return Produced(result, "computed")

    def _kept(self, moved: MovedStart, key: str) -> DenoiseResult:
        """``drag.image_copy = "keep"`` with every pair moved in the image: that image is the edit, nothing is
        denoised; its region is what the move changed."""
        result = DenoiseResult(image=to_model_tensor(moved.image, self.model_size), latent=moved.encoded.cpu(),
                               reference_image=None, controlled_layers=[], key=key,
                               region=np.any(moved.image != self.source, axis=-1), kept=moved.image)
        self._remember("denoise", key, result)
        return result

    def _denoise_key(self, dragged: DragResult) -> str:
        return digest(dragged.key, dragged.stop_reason, len(dragged.history), denoise_fields(self.settings.denoise))

    def run(self, callbacks: Sequence[Callback] = (), keep_latents: bool = False,
            keep_features: bool = False) -> EditResult:
        """All four stages, each skipped when its cached result still holds.

        ``callbacks`` see every step of every stage that runs (:mod:`dragnb.callbacks`: one record type per
        stage, ``record.stage`` says which); one returning True stops the stage it is called from.

        Ctrl-C during the drag returns an edit from the last good latent (``drag.stop_reason`` says so);
        during LoRA or inversion it raises :class:`dragnb.errors.Interrupted` naming the stage and holding the
        results of the stages before it; nothing of the interrupted stage is cached, in memory or on disk.

        The edit becomes the current round's result. A round whose result later rounds were made from keeps it:
        an edit with other inputs goes to a new round beside it (:meth:`branch`), so no later round loses its source.
        A second ``run`` from another thread while one is going is refused (:class:`dragnb.errors.SessionBusy`).
        """
        with self._one_run():
            try:
                return self._run(callbacks, keep_latents, keep_features)
            finally:
                self._stop = False  # a stop request ends with the run it stopped

    def _run(self, callbacks: Sequence[Callback], keep_latents: bool, keep_features: bool) -> EditResult:
        seconds, origin = {}, {}
        results = {}
        for stage, call in (("lora", lambda: self._lora(callbacks)),
                            ("inversion", lambda: self._inversion(callbacks)),
                            ("drag", lambda: self._drag(callbacks, keep_latents, keep_features)),
                            ("denoise", lambda: self._denoise(results["drag"], callbacks))):
            tick = time.perf_counter()
            try:
                produced = call()
            except Interrupted:
                raise
            except KeyboardInterrupt:  # Ctrl-C outside a stage's own loop (encoding, saving): the same answer
                raise Interrupted(stage, results) from None
            results[stage], origin[stage] = produced.result, produced.origin
            if stage != "denoise" and getattr(results[stage], "interrupted", False):  # Ctrl-C or Stop: hand back
                raise Interrupted(stage, results, stopped=self._stop)  # what is done, cache none of it
            seconds[stage] = 0.0 if origin[stage] == "memory" else time.perf_counter() - tick
        cached = {stage: origin[stage] in ("memory", "disk") for stage in STAGES}
        den = results["denoise"]
        image = resize_array(from_model_tensor(den.image), self.image_size)
        if den.kept is not None:  # drag.image_copy "keep": the moved image, the user's own pixels everywhere else
            image = den.kept
        elif self.settings.denoise.paste_outside and den.region is not None:  # the user's own pixels where nothing
            image = paste_outside(self.source, image, den.region, self.settings.denoise.paste_blur)  # may change
        result = EditResult(image=image, source=self.source, points=self.points, mask=self.mask, prompt=self.prompt,
                            model=self.model.name, settings=self.settings, lora=results["lora"],
                            inversion=results["inversion"], drag=results["drag"], denoise=den,
                            image_size=self.image_size, model_size=self.model_size, seconds=seconds, cached=cached,
                            origin=origin)
        self._keep(result)
        return result

    # ---- rounds (dragnb/rounds.py, docs/method.md §10) ----------------------------------------------------
    @property
    def rounds(self) -> list[Round]:
        """Every round so far, all branches, in the order made: source, points, mask, settings, record, result."""
        return list(self.history.rounds)

    @property
    def round(self) -> Round:
        """The round the session is at: its source is ``self.source``."""
        return self.history.round

    def _keep(self, result: EditResult) -> None:
        rnd = self.round
        if rnd.done and self.history.children(rnd.index) and not rnd.same_inputs(
                result.points, result.mask, result.prompt, result.settings):
            rnd = self.branch()
        rnd.keep(result)

    def _enter(self, rnd: Round) -> Round:
        """Work on round ``rnd``: its source, prompt, settings, points and mask, and the LoRA it uses."""
        self._set_source(rnd.source, rnd.generated)
        self.prompt, self.settings = rnd.prompt, rnd.settings
        self.points = rnd.points
        self.set_mask(rnd.mask)
        root = self.history.root(rnd.index)
        self._kept_lora = None if not rnd.keep_lora else KeptLora(
            digest(root.source.tobytes(), list(root.source.shape)), to_model_tensor(root.source, self.model_size),
            root.prompt)
        return rnd

    def new_round(self, keep_lora: bool = False, prompt: str | None = None) -> Round:
        """Make the current round's result the source of a new round and go to it (points and mask cleared).

        ``prompt``: the new round's (default: the session's prompt, unchanged). The LoRA fits one image
        (docs/method.md §2.1), so by default it is trained again on the new source; ``keep_lora=True`` uses the
        first round's LoRA instead (its cache key is that round's), which is faster and keeps what the model learnt
        of the original. A round made from a round that already has later rounds starts a new branch.
        """
        if not isinstance(keep_lora, bool):
            raise InputError("keep_lora", f"expected True or False, got {keep_lora!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError("prompt", f"expected a string, got {type(prompt).__name__}")
        current = self.round
        if not current.done:
            raise InputError("new_round", f"round {current.index} has no result yet; run() it first")
        if keep_lora and self.history.root(current.index).generated is not None:
            raise InputError("keep_lora", "the first round is a generated image, which trains no LoRA to keep; "
                             "use keep_lora=False")
        rnd = self.history.add(current.index, current.image, self.prompt if prompt is None else prompt,
                               self.settings, keep_lora)
        return self._enter(rnd)

    def branch(self) -> Round:
        """A new round beside the current one (its source, parent and LoRA choice), keeping the session's points,
        mask, prompt and settings: a different drag of the same image that leaves the current round as it is."""
        current = self.round
        rnd = self.history.add(current.parent, current.source, self.prompt, self.settings, current.keep_lora,
                               self.points, self.mask, current.generated)
        return self._enter(rnd)

    def undo(self) -> Round:
        """Go to the round before (the one whose result this round drags); the stages' caches stay."""
        return self._enter(self.history.undo())

    def redo(self) -> Round:
        """Go back to the round :meth:`undo` left (else the newest round made from this one)."""
        return self._enter(self.history.redo())

    def goto(self, index: int) -> Round:
        """Go to round ``index`` of any branch."""
        return self._enter(self.history.goto(index))

    def save_history(self, folder: str | Path) -> Path:
        """Write every round (images and ``history.json``) to ``folder`` for ``python -m dragnb replay``."""
        return self.history.save(folder)
