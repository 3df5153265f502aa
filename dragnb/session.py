"""A drag session: runs LoRA → inversion → drag → denoise in order, caching each stage's result.

Change the points, the mask or a stage's settings and call :meth:`DragSession.run` again: only the stages
whose inputs changed run. Cache keys hash everything a stage depends on (image, prompt, model, the
settings of this stage and those before it), so a second drag on the same image reuses the LoRA and the
inversion. With ``cache_dir`` the LoRA and inversion also persist on disk (safetensors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import Settings
from .denoise import DenoiseResult, denoise
from .drag import DragCallback, DragResult, DragStep, drag
from .errors import InputError, Interrupted
from .generate import GeneratedImage
from .images import from_model_tensor, load_mask, mask_to_latent, model_size, resize_array, to_model_tensor, to_rgb_array
from .inversion import InversionResult, encode_image, invert
from .lora import LoraResult, apply_lora, load_lora, save_lora, train_lora
from .models import Model, encode_prompt
from .points import DragPoints, feature_grid, grid_to_image, image_to_grid, make_points

STAGES = ("lora", "inversion", "drag", "denoise")


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
    seconds: dict[str, float] = field(default_factory=dict)  # per stage; 0 when cached
    cached: dict[str, bool] = field(default_factory=dict)

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
            "loss_history": [{"step": s.step, "motion": s.motion_loss, "mask": s.mask_loss, "total": s.loss,
                              "distances": s.distances, "seconds": s.seconds} for s in self.drag.history],
            "lora_losses": self.lora.losses if self.lora else None,
            "inverted_timestep": self.inversion.t if self.inversion else None,
            "seconds": self.seconds, "cached": self.cached,
            "interrupted": {"lora": bool(self.lora and self.lora.interrupted),
                            "inversion": bool(self.inversion and self.inversion.interrupted),
                            "drag": self.drag.stop_reason == "interrupted", "denoise": self.denoise.interrupted},
        }


class DragSession:
    """Holds one image, its prompt, points, mask and settings, and each stage's cached result."""

    def __init__(self, model: Model, image, prompt: str = "", settings: Settings | None = None,
                 cache_dir: str | Path | None = None, progress: bool = False):
        self.model = model
        self.source = to_rgb_array(image, "image")  # (H, W, 3) uint8
        self.image_size: tuple[int, int] = self.source.shape[:2]
        self.model_size = model_size(self.image_size, model.resolution, model.size_multiple)
        self.image_tensor = to_model_tensor(self.source, self.model_size)  # (1, 3, h, w) in [-1, 1]
        self.prompt = prompt or ""
        self.settings = settings or model.settings
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress
        self.points: DragPoints | None = None
        self.mask: np.ndarray | None = None
        self.generated: GeneratedImage | None = None
        self.guidance_scale = 1.0
        self._cache: dict[str, dict[str, object]] = {stage: {} for stage in STAGES}
        self._stop = False
        self.progress_callback: Callable[[str, int, int], object] | None = None  # (stage, done, total)
        self._image_digest = _digest(self.source.tobytes(), list(self.source.shape))

    @classmethod
    def from_generated(cls, model: Model, generated: GeneratedImage, settings: Settings | None = None,
                       **kwargs) -> DragSession:
        """Drag a generated image from its kept latent: no LoRA, no inversion, the generation's guidance."""
        session = cls(model, from_model_tensor(generated.image), generated.prompt, settings, **kwargs)
        session.generated = generated
        session.guidance_scale = generated.guidance_scale
        return session

    # ---- inputs -------------------------------------------------------------------------------------
    def set_points(self, pairs) -> DragPoints:
        """Handle/target pairs in image pixels: [(hx, hy, tx, ty), ...] or alternating [[x, y], ...]."""
        self.points = pairs if isinstance(pairs, DragPoints) else make_points(pairs, self.image_size)
        return self.points

    def set_mask(self, mask) -> None:
        """The editable region (H, W), nonzero = editable; None or all zero = the whole image."""
        self.mask = load_mask(mask, self.image_size)

    def _report(self, stage: str):
        """A (done, total) callback forwarding to ``progress_callback`` as (stage, done, total)."""
        if self.progress_callback is None:
            return None
        return lambda done, total: self.progress_callback(stage, done, total)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(rows, cols) of the supervision grid the drag's points live on."""
        return feature_grid(self.model_size, self.settings.drag.feature_scale)

    def request_stop(self) -> None:
        """Ask a running :meth:`run` to stop (e.g. from a Stop button): LoRA after its current step (raising
        :class:`Interrupted`), the drag after its current iteration (the edit is made from that state)."""
        self._stop = True

    # ---- keys ---------------------------------------------------------------------------------------
    def _keys(self) -> dict[str, str]:
        s = self.settings
        base = _digest(self._image_digest, self.prompt, self.model.name,
                       None if self.generated is None else [self.generated.seed, self.generated.guidance_scale])
        lora = _digest(base, dataclasses.asdict(s.lora)) if self.generated is None else base
        inversion = _digest(lora, dataclasses.asdict(s.inversion))
        points = None if self.points is None else self.points.as_list()
        mask = None if self.mask is None else _digest(np.packbits(self.mask).tobytes(), list(self.mask.shape))
        drag_key = _digest(inversion, points, mask, dataclasses.asdict(s.drag))
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

    # ---- stages -------------------------------------------------------------------------------------
    def run_lora(self, callback: Callable[[int, float], bool | None] | None = None) -> LoraResult | None:
        """Stage 1 (skipped for generated images and when ``lora.steps`` is 0)."""
        key = self._keys()["lora"]
        if self.generated is not None or self.settings.lora.steps == 0:
            apply_lora(self.model, None)
            return None
        if key in self._cache["lora"]:
            result = self._cache["lora"][key]
        else:
            disk = self.cache_dir / "lora" / key if self.cache_dir else None
            if disk is not None and (disk / "pytorch_lora_weights.safetensors").is_file():
                result = load_lora(disk, key=key)
                meta = disk / "losses.json"
                result.losses = json.loads(meta.read_text()) if meta.is_file() else []
            else:
                report = self._report("lora")

                def on_step(step: int, loss: float) -> bool | None:
                    if report is not None:
                        report(step + 1, self.settings.lora.steps)
                    return callback(step, loss) if callback is not None else None

                result = train_lora(self.model, self.image_tensor, self.prompt, self.settings.lora,
                                    progress=self.progress, callback=on_step)
                result.key = key
                self.model.pipe.unet._dragnb_lora_key = key  # train_lora left this adapter active
                if disk is not None and not result.interrupted:
                    save_lora(result, disk)
                    (disk / "losses.json").write_text(json.dumps(result.losses))
            if not result.interrupted:  # a half-trained adapter is returned, never reused silently
                self._cache["lora"] = {key: result}
        apply_lora(self.model, result)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    def run_inversion(self) -> InversionResult | None:
        """Stage 2 (for generated images: the kept latents stand in, nothing runs)."""
        key = self._keys()["inversion"]
        if self.generated is not None:
            return None
        if key in self._cache["inversion"]:
            return self._cache["inversion"][key]  # type: ignore[return-value]
        self.run_lora()
        disk = self.cache_dir / "inversion" / f"{key}.safetensors" if self.cache_dir else None
        if disk is not None and disk.is_file():
            tensors = load_file(disk)
            n = len(tensors) - 1
            result = InversionResult(latents=[tensors[f"z{i}"].to(self.model.device) for i in range(n)],
                                     timesteps=tensors["timesteps"].tolist(), key=key)
        else:
            z0 = encode_image(self.model, self.image_tensor)
            result = invert(self.model, z0, self._text(), self.settings.inversion, progress=self.progress,
                            callback=self._report("inversion"))
            result.key = key
            if disk is not None and not result.interrupted:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tensors = {f"z{i}": z.detach().cpu().contiguous() for i, z in enumerate(result.latents)}
                tensors["timesteps"] = torch.tensor(result.timesteps)
                save_file(tensors, disk)
        if not result.interrupted:
            self._cache["inversion"] = {key: result}
        return result

    def _start_latent(self) -> tuple[torch.Tensor, int]:
        if self.generated is not None:
            z, t = self.generated.latent_at(self.settings.inversion)
            self.model.pipe.scheduler.set_timesteps(self.settings.inversion.num_steps)
            return z.to(self.model.device), t
        inversion = self.run_inversion()
        if inversion.interrupted:
            raise Interrupted("inversion", {"inversion": inversion})
        self.model.pipe.scheduler.set_timesteps(self.settings.inversion.num_steps)
        return inversion.zt, inversion.t

    def run_drag(self, callbacks: Sequence[DragCallback] = (), keep_latents: bool = False,
                 keep_features: bool = False) -> DragResult:
        """Stage 3. Needs points (:meth:`set_points`)."""
        self._stop = False
        return self._drag(callbacks, keep_latents, keep_features)

    def _drag(self, callbacks: Sequence[DragCallback], keep_latents: bool, keep_features: bool) -> DragResult:
        if self.points is None:
            raise InputError("points", "no handle/target points set; call set_points([(hx, hy, tx, ty), ...]) first")
        key = self._keys()["drag"]
        cached = self._cache["drag"].get(key)
        if cached is not None and not (keep_latents and cached.history and cached.history[0].latent is None):
            return cached  # type: ignore[return-value]
        self.run_lora()
        zt, t = self._start_latent()
        grid = self.feature_grid
        handles = image_to_grid(self.points.handles, self.image_size, grid)
        targets = image_to_grid(self.points.targets, self.image_size, grid)
        latent_size = tuple(zt.shape[-2:])
        mask = None if self.mask is None else mask_to_latent(self.mask, latent_size)

        report = self._report("drag")

        def stop_requested(step: DragStep) -> bool:
            if report is not None:
                report(step.step + 1, self.settings.drag.max_steps)
            return self._stop

        result = drag(self.model, zt, t, self._text(), handles, targets, mask, self.settings.drag,
                      callbacks=[*callbacks, stop_requested], guidance_scale=self.guidance_scale,
                      keep_latents=keep_latents, keep_features=keep_features, progress=self.progress)
        result.key = key
        if result.stop_reason in ("reached", "max_steps"):  # partial results are returned, not cached
            self._cache["drag"] = {key: result}
        return result

    def run_denoise(self, dragged: DragResult | None = None) -> DenoiseResult:
        """Stage 4 from the latest drag (or ``dragged``)."""
        dragged = dragged or self.run_drag()
        key = self._denoise_key(dragged)
        if key in self._cache["denoise"]:
            return self._cache["denoise"][key]  # type: ignore[return-value]
        self.run_lora()
        original, _ = self._start_latent()
        mask = None if self.mask is None else mask_to_latent(self.mask, tuple(original.shape[-2:]))
        result = denoise(self.model, dragged.latent.to(self.model.device), original, self._text(),
                         self.settings.denoise, self.settings.inversion, guidance_scale=self.guidance_scale,
                         progress=self.progress, callback=self._report("denoise"), mask=mask)
        result.key = key
        self._cache["denoise"] = {key: result}
        return result

    def _denoise_key(self, dragged: DragResult) -> str:
        return _digest(dragged.key, dragged.stop_reason, len(dragged.history), dataclasses.asdict(self.settings.denoise))

    def run(self, callbacks: Sequence[DragCallback] = (), keep_latents: bool = False,
            keep_features: bool = False, lora_callback=None) -> EditResult:
        """All four stages, each skipped when its cached result still holds.

        Ctrl-C during the drag returns an edit from the last good latent (``drag.stop_reason`` says so);
        during LoRA or inversion it raises :class:`dragnb.errors.Interrupted` holding the partial results.
        """
        seconds, cached = {}, {}
        results = {}
        self._stop = False

        def on_lora_step(step: int, loss: float) -> bool:
            return bool(lora_callback is not None and lora_callback(step, loss)) or self._stop

        for stage, call in (("lora", lambda: self.run_lora(on_lora_step)), ("inversion", self.run_inversion),
                            ("drag", lambda: self._drag(callbacks, keep_latents, keep_features))):
            cached[stage] = self.is_cached(stage)
            tick = time.perf_counter()
            results[stage] = call()
            if getattr(results[stage], "interrupted", False):  # Ctrl-C: stop here, hand back what is done
                raise Interrupted(stage, results)
            seconds[stage] = 0.0 if cached[stage] else time.perf_counter() - tick
        cached["denoise"] = self._denoise_key(results["drag"]) in self._cache["denoise"]
        tick = time.perf_counter()
        den = self.run_denoise(results["drag"])
        seconds["denoise"] = 0.0 if cached["denoise"] else time.perf_counter() - tick
        image = resize_array(from_model_tensor(den.image), self.image_size)
        return EditResult(image=image, source=self.source, points=self.points, mask=self.mask, prompt=self.prompt,
                          model=self.model.name, settings=self.settings, lora=results["lora"],
                          inversion=results["inversion"], drag=results["drag"], denoise=den,
                          image_size=self.image_size, model_size=self.model_size, seconds=seconds, cached=cached)
