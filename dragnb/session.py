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

import dataclasses
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .callbacks import Callback, StepRecord
from .cache import load_inversion_entry, load_lora_entry, open_cache, save_inversion_entry, save_lora_entry
from .compute import WEIGHTS, unsupported, vae_memory, weights_name
from .config import Settings, check_for_model, rebase
from .denoise import DenoiseResult, denoise
from .drag import DragParts, DragResult, drag
from .errors import InputError, Interrupted, SettingError
from .generate import GeneratedImage, generate
from .images import from_model_tensor, load_mask, mask_to_latent, model_size, resize_array, to_model_tensor, to_rgb_array
from .inversion import InversionResult, encode_image, invert
from .lora import LoraResult, adaptable_modules, apply_lora, fused_lora, train_lora
from .models import Model, encode_prompt, held_dtype
from .points import DragPoints, feature_grid, grid_to_image, image_to_grid, make_points
from .rounds import History, Round

STAGES = ("lora", "inversion", "drag", "denoise")
CACHE_ENTRIES = 8  # results each stage keeps in memory (the latest used), e.g. one per round moved between


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class EditResult:
    """One finished edit: the image at the original size plus every stage's record."""

    image: np.ndarray  # (H, W, 3) uint8 at the original image size
    source: np.ndarray  # (H, W, 3) uint8, the input
    points: DragPoints  # image pixels
    mask: np.ndarray | None  # (H, W) bool, None = whole image editable
    prompt: str
    model: str
    settings: Settings
    lora: LoraResult | None
    inversion: InversionResult | None
    drag: DragResult
    denoise: DenoiseResult
    image_size: tuple[int, int]  # original (H, W)
    model_size: tuple[int, int]  # (H, W) the model saw
    seconds: dict[str, float] = field(default_factory=dict)  # per stage; 0 when cached in memory
    cached: dict[str, bool] = field(default_factory=dict)  # True: the stage came from memory or disk
    origin: dict[str, str] = field(default_factory=dict)  # per stage: "computed" | "memory" | "disk" | "skipped"

    def trajectory_xy(self) -> np.ndarray:
        """(K + 1, N, 2) handle positions in image pixels (x, y) of the original image."""
        traj = self.drag.trajectory
        return np.stack([grid_to_image(step, self.image_size, self.drag.feature_size) for step in traj])

    @property
    def final_handles_xy(self) -> np.ndarray:
        return grid_to_image(self.drag.handles, self.image_size, self.drag.feature_size)

    def to_record(self) -> dict:
        """Everything needed to reproduce and inspect the edit, JSON-serialisable."""
        return {
            "model": self.model, "prompt": self.prompt,
            "image_size": list(self.image_size), "model_size": list(self.model_size),
            "points": self.points.as_list(), "mask_used": self.mask is not None,
            "mask_note": None if self.mask is not None else "no mask drawn: whole image editable, mask term dropped",
            "settings": self.settings.to_dict(),
            "stop_reason": self.drag.stop_reason, "drag_steps": len(self.drag.history),
            "handle_trajectory_xy": self.trajectory_xy().round(2).tolist(),
            "final_handles_xy": self.final_handles_xy.round(2).tolist(),
            "loss_history": [{"step": s.step, "t": s.t, "motion": s.motion_loss, "mask": s.mask_loss, "total": s.loss,
                              "distances": s.distances, "seconds": s.seconds,
                              **{k: v for k, v in s.extras.items() if isinstance(v, float)}}  # e.g. text_distance
                             for s in self.drag.history],
            "drag_timestep": self.drag.t, "drag_denoised_steps": len(self.drag.timesteps) - 1,
            "lora_losses": self.lora.losses if self.lora else None,
            "inverted_timestep": self.inversion.t if self.inversion else None,
            "seconds": self.seconds, "cached": self.cached, "origin": self.origin,
            "interrupted": {"lora": bool(self.lora and self.lora.interrupted),
                            "inversion": bool(self.inversion and self.inversion.interrupted),
                            "drag": self.drag.stop_reason == "interrupted", "denoise": self.denoise.interrupted},
        }


def _parts_digest(parts: DragParts) -> str:
    """A researcher's parts in a cache key: each one's name and, where Python can read it, its source (so a part
    edited in a notebook cell and run again is not taken for the old one)."""
    sources = {}
    for job, maker in vars(parts).items():
        try:
            sources[job] = inspect.getsource(maker) if maker is not None else None
        except (OSError, TypeError):
            sources[job] = None
    return _digest(parts.named(), sources)


def _stopped_as_saved(record: dict | None) -> list[Callback]:
    """For a replay: a round whose drag was stopped early (the Stop button, a callback, Ctrl-C) stops after as many
    iterations again, so its result is the saved one; a finished drag needs nothing (nor can a drag stopped before
    its first iteration be replayed as stopped: it runs in full)."""
    if not record or record.get("stop_reason") not in ("callback", "interrupted") or not record.get("drag_steps"):
        return []
    steps = int(record["drag_steps"])
    return [lambda step: step.stage == "drag" and step.step + 1 >= steps]


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
        self._origin: dict[str, str] = {}  # where each stage's latest result came from
        self._cache: dict[str, dict[str, object]] = {stage: {} for stage in STAGES}  # key -> result, oldest first
        self._stop = False
        self.parts: DragParts | None = None  # a researcher's own parts of the drag (dragnb.drag.parts), None = the settings'
        self._kept_lora: tuple[str, torch.Tensor, str] | None = None  # (digest, tensor, prompt) of a kept LoRA's image
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
        self._image_digest = _digest(image.tobytes(), list(image.shape))
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
        """Ask a running :meth:`run` to stop (e.g. from a Stop button): LoRA after its current step (raising
        :class:`Interrupted`), the drag after its current iteration (the edit is made from that state)."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for since the latest :meth:`run` began (the one stop flag: a panel reads it)."""
        return self._stop

    # ---- keys ---------------------------------------------------------------------------------------
    def _keys(self) -> dict[str, str]:
        s = self.settings
        base = _digest(self._image_digest, self.prompt, self.model.name,
                       None if self.generated is None else [self.generated.seed, self.generated.guidance_scale])
        base = _digest(base, dataclasses.asdict(s.compute))  # precision changes digits: every stage depends on it
        if self._kept_lora is None:
            lora = _digest(base, dataclasses.asdict(s.lora)) if self.generated is None else base
            inversion = _digest(lora, dataclasses.asdict(s.inversion))
        else:  # round 0's LoRA (its image and prompt: its very key), inverting this round's image with it
            digest, _, prompt = self._kept_lora
            root = _digest(_digest(digest, prompt, self.model.name, None), dataclasses.asdict(s.compute))
            lora = _digest(root, dataclasses.asdict(s.lora))  # exactly round 0's LoRA key
            inversion = _digest(lora, base, dataclasses.asdict(s.inversion))
        points = None if self.points is None else self.points.as_list()
        mask = None if self.mask is None else _digest(np.packbits(self.mask).tobytes(), list(self.mask.shape))
        drag_key = _digest(inversion, points, mask, dataclasses.asdict(s.drag),
                           *([_parts_digest(self.parts)] if self.parts is not None and self.parts.named() else []))
        return {"lora": lora, "inversion": inversion, "drag": drag_key,
                "denoise": _digest(drag_key, dataclasses.asdict(s.denoise))}

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

    # ---- stages -------------------------------------------------------------------------------------
    def run_lora(self, callbacks: Sequence[Callback] = ()) -> LoraResult | None:
        """Stage 1 (skipped for generated images and when ``lora.steps`` is 0)."""
        key = self._keys()["lora"]
        if self.generated is not None or self.settings.lora.steps == 0:
            apply_lora(self.model, None)
            self._origin["lora"] = "skipped"
            return None
        if key in self._cache["lora"]:
            result = self._cache["lora"][key]
            self._origin["lora"] = "memory"
        else:
            disk = self.cache_dir / "lora" / key if self.cache_dir else None
            result = load_lora_entry(disk, key) if disk is not None else None
            self._origin["lora"] = "disk"
            if result is None:
                self._origin["lora"] = "computed"
                image, prompt = (self.image_tensor, self.prompt) if self._kept_lora is None else self._kept_lora[1:]
                with vae_memory(self.model.pipe.vae, self.settings.compute):
                    result = train_lora(self.model, image, prompt, self.settings.lora, progress=self.progress,
                                        callbacks=[*callbacks, self._stop_requested], key=key,
                                        compute=self.settings.compute)
                if disk is not None and not result.interrupted:
                    save_lora_entry(disk, result)
            if result.interrupted:  # a half-trained adapter is returned, never cached nor left on the model
                return result
        self._remember("lora", key, result)
        apply_lora(self.model, result)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    def run_inversion(self, callbacks: Sequence[Callback] = ()) -> InversionResult | None:
        """Stage 2 (for generated images: the kept latents stand in, nothing runs)."""
        key = self._keys()["inversion"]
        if self.generated is not None:
            self._origin["inversion"] = "skipped"
            return None
        if key in self._cache["inversion"]:
            self._origin["inversion"] = "memory"
            self._remember("inversion", key, self._cache["inversion"][key])
            return self._cache["inversion"][key]  # type: ignore[return-value]
        self.run_lora()
        disk = self.cache_dir / "inversion" / f"{key}.safetensors" if self.cache_dir else None
        result = None if disk is None else load_inversion_entry(
            disk, key, self.settings.inversion.inverted_steps, self._latent_shape, self.model.device)
        self._origin["inversion"] = "disk"
        if result is None:
            self._origin["inversion"] = "computed"
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
        return result

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
        self._stop = False
        return self._drag(callbacks, keep_latents, keep_features)

    def _drag(self, callbacks: Sequence[Callback], keep_latents: bool, keep_features: bool) -> DragResult:
        if self.points is None:
            raise InputError("points", "no handle/target points set; call set_points([(hx, hy, tx, ty), ...]) first")
        key = self._keys()["drag"]
        cached = self._cache["drag"].get(key)
        first = cached.history[0] if cached is not None and cached.history else None
        lacking = first is not None and ((keep_latents and first.latent is None)
                                         or (keep_features and first.features is None))  # asked for, not kept
        if cached is not None and not lacking:
            self._remember("drag", key, cached)
            return cached  # type: ignore[return-value]
        self.run_lora()
        zt, t = self._start_latent()
        grid = self.feature_grid
        handles = image_to_grid(self.points.handles, self.image_size, grid)
        targets = image_to_grid(self.points.targets, self.image_size, grid)
        latent_size = tuple(zt.shape[-2:])
        mask = None if self.mask is None else mask_to_latent(self.mask, latent_size)

        with self._fused():
            result = drag(self.model, zt, t, self._text(), handles, targets, mask, self.settings.drag,
                          prompt=self.prompt, compute=self.settings.compute, parts=self.parts,
                          callbacks=[*callbacks, self._stop_requested], guidance_scale=self.guidance_scale,
                          keep_latents=keep_latents, keep_features=keep_features, progress=self.progress,
                          schedule_steps=self.settings.inversion.num_steps)
        result.key = key
        if result.stop_reason in ("reached", "max_steps"):  # partial results are returned, not cached
            self._remember("drag", key, result)
        return result

    def run_denoise(self, dragged: DragResult | None = None, callbacks: Sequence[Callback] = ()) -> DenoiseResult:
        """Stage 4 from the latest drag (or ``dragged``); a denoising stopped by a callback is not cached."""
        dragged = dragged or self.run_drag()
        key = self._denoise_key(dragged)
        if key in self._cache["denoise"]:
            self._remember("denoise", key, self._cache["denoise"][key])
            return self._cache["denoise"][key]  # type: ignore[return-value]
        self.run_lora()
        device = self.model.device
        original = dragged.original_latent.to(device)  # the unedited branch at the drag's timestep
        mask = None if self.mask is None else mask_to_latent(self.mask, tuple(original.shape[-2:]),
                                                             self.settings.denoise.blend_mask)
        inversion = None if self.generated is not None else self.run_inversion()
        with vae_memory(self.model.pipe.vae, self.settings.compute), self._fused():
            result = denoise(self.model, dragged.latent.to(device), original, self._text(), self.settings.denoise,
                             self.settings.inversion, guidance_scale=self.guidance_scale, progress=self.progress,
                             callbacks=callbacks, mask=mask, t=dragged.t, edited_text=dragged.text.to(device),
                             inverted=None if inversion is None else inversion.latents)
        result.key = key
        if not result.interrupted:
            self._remember("denoise", key, result)
        return result

    def _denoise_key(self, dragged: DragResult) -> str:
        return _digest(dragged.key, dragged.stop_reason, len(dragged.history), dataclasses.asdict(self.settings.denoise))

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
        """
        seconds, origin = {}, {}
        results = {}
        self._stop = False
        for stage, call in (("lora", lambda: self.run_lora(callbacks)),
                            ("inversion", lambda: self.run_inversion(callbacks)),
                            ("drag", lambda: self._drag(callbacks, keep_latents, keep_features)),
                            ("denoise", lambda: self.run_denoise(results["drag"], callbacks))):
            in_memory = (self._denoise_key(results["drag"]) in self._cache["denoise"] if stage == "denoise"
                         else self.is_cached(stage))
            self._origin.pop(stage, None)
            tick = time.perf_counter()
            try:
                results[stage] = call()
            except Interrupted:
                raise
            except KeyboardInterrupt:  # Ctrl-C outside a stage's own loop (encoding, saving): the same answer
                raise Interrupted(stage, results) from None
            if stage != "denoise" and getattr(results[stage], "interrupted", False):
                raise Interrupted(stage, results)  # Ctrl-C: stop here, hand back what is done, cache none of it
            origin[stage] = "memory" if in_memory else self._origin.get(stage, "computed")
            seconds[stage] = 0.0 if origin[stage] == "memory" else time.perf_counter() - tick
        cached = {stage: origin[stage] in ("memory", "disk") for stage in STAGES}
        den = results["denoise"]
        image = resize_array(from_model_tensor(den.image), self.image_size)
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
        self._kept_lora = None if not rnd.keep_lora else (
            _digest(root.source.tobytes(), list(root.source.shape)), to_model_tensor(root.source, self.model_size),
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

    @classmethod
    def replay(cls, model: Model, history: History, cache_dir: str | Path | None = None, progress: bool = False,
               on_round: Callable[[Round, Round], object] | None = None, settings: str = "saved") -> DragSession:
        """Run a saved history (:meth:`History.load`) again, round by round, on ``model``: the first round from its
        saved source (a generated one generated again), every later one from the *replayed* result of its parent,
        with the saved prompt, points, mask, settings and LoRA choice. ``on_round(saved, replayed)`` is called
        after each round. On the same model and settings the results are the saved ones (bit for bit on the CPU).
        ``settings="model"``: each round's settings rebased on ``model``'s own defaults (:func:`config.rebase`:
        what the round changed from its model's defaults is kept, the rest is ``model``'s), for a history replayed
        on another model; the default ``"saved"`` uses them as saved.
        """
        if settings not in ("saved", "model"):
            raise InputError("settings", f"got {settings!r}; must be 'saved' or 'model'")
        old_base = history.rebase_from("settings") if settings == "model" else None

        def of(rnd: Round) -> Settings:
            return rnd.settings if old_base is None else rebase(rnd.settings, old_base, model.settings)

        first = history.rounds[0]
        if first.generation is not None:
            g = first.generation
            generated = generate(model, g["prompt"], tuple(g["size"]), g["guidance_scale"], g["seed"], g["num_steps"])
            session = cls.from_generated(model, generated, of(first), cache_dir=cache_dir, progress=progress)
        else:
            session = cls(model, first.source, first.prompt, of(first), cache_dir=cache_dir, progress=progress)
        if settings == "saved":  # the rounds still hold the first model's choices: say so for a later rebase
            session.history.model_settings = history.model_settings
        for saved in history.rounds:
            if saved.index > 0 and saved.parent is None:  # another first round: a branch beside round 0
                session.goto(0)
                session.branch()
            elif saved.index > 0:
                session.goto(saved.parent)
                session.new_round(keep_lora=saved.keep_lora, prompt=saved.prompt)
            session.prompt, session.settings = saved.prompt, of(saved)
            session.points, session.mask = saved.points, saved.mask
            if saved.done:
                session.run(callbacks=_stopped_as_saved(saved.record))
            if on_round is not None:
                on_round(saved, session.round)
        session.goto(history.current)
        return session
