"""Cache keys: what each stage's result depends on, hashed (docs/method.md §10 for rounds that keep a LoRA).

A stage's key covers its own settings and everything before it: the image, prompt, model and precision (every
stage), the LoRA's settings, the inversion's, the points, mask, drag settings (with a family method's own
section, docs/method.md §11) and a researcher's own drag parts, then the denoising's. A second drag of the same
image therefore reuses the LoRA and the inversion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from dataclasses import dataclass

import numpy as np
import torch

from .config import Settings
from .drag import DragParts
from .points import DragPoints


def digest(*parts) -> str:
    """16 hex digits of the SHA-256 of ``parts`` (bytes as they are, anything else as sorted JSON)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class KeptLora:
    """A later round that keeps the first round's LoRA (docs/method.md §10): that round's image and prompt."""

    digest: str  # of the first round's source, as its LoRA key has it
    image: torch.Tensor  # (1, 3, h, w) the first round's source at the model size, what the LoRA is trained on
    prompt: str


def parts_digest(parts: DragParts) -> str:
    """A researcher's parts in a cache key: each one's name and, where Python can read it, its source (so a part
    edited in a notebook cell and run again is not taken for the old one)."""
    sources = {}
    for job, maker in vars(parts).items():
        try:
            sources[job] = inspect.getsource(maker) if maker is not None else None
        except (OSError, TypeError):
            sources[job] = None
    return digest(parts.named(), sources)


def stage_keys(s: Settings, image_digest: str, prompt: str, model: str, generation: list | None,
               kept: KeptLora | None, points: DragPoints | None, mask: np.ndarray | None,
               parts: DragParts | None) -> dict[str, str]:
    """The key of each stage's result. ``generation``: [seed, guidance] of a generated image (no LoRA is trained);
    ``kept``: the first round's LoRA a later round uses, whose key is exactly that round's."""
    base = digest(image_digest, prompt, model, generation)
    base = digest(base, dataclasses.asdict(s.compute))  # precision changes digits: every stage depends on it
    if kept is None:
        lora = digest(base, dataclasses.asdict(s.lora)) if generation is None else base
        inversion = digest(lora, dataclasses.asdict(s.inversion))
    else:  # round 0's LoRA (its image and prompt: its very key), inverting this round's image with it
        root = digest(digest(kept.digest, kept.prompt, model, None), dataclasses.asdict(s.compute))
        lora = digest(root, dataclasses.asdict(s.lora))  # exactly round 0's LoRA key
        inversion = digest(lora, base, dataclasses.asdict(s.inversion))
    mask_key = None if mask is None else digest(np.packbits(mask).tobytes(), list(mask.shape))
    drag = digest(inversion, None if points is None else points.as_list(), mask_key, dataclasses.asdict(s.drag),
                  *([parts_digest(parts)] if parts is not None and parts.named() else []),
                  *([dataclasses.asdict(s.method)] if s.method is not None else []))  # a family method's section
    return {"lora": lora, "inversion": inversion, "drag": drag, "denoise": digest(drag, denoise_fields(s.denoise))}


AFTER_DENOISING = ("paste_outside", "paste_blur")  # denoise settings applied to its decoded image, not part of it


def denoise_fields(denoise) -> dict:
    """The denoise settings its result depends on: all but those applied to the decoded image afterwards."""
    return {k: v for k, v in dataclasses.asdict(denoise).items() if k not in AFTER_DENOISING}
