"""The session's disk cache: LoRA adapters and inversion latents that survive between runs and heal when broken.

Layout under ``cache_dir``: ``lora/<key>/`` (``pytorch_lora_weights.safetensors`` + ``losses.json``) and
``inversion/<key>.safetensors`` (z_0 … z_t and their timesteps). Every entry is written under a temporary
name and renamed into place, so a crash or Ctrl-C never leaves a half-written entry under its real name;
leftover temporaries are removed when a session opens the cache. An entry that cannot be read, or that does
not hold what its stage needs, is reported in one line (logger ``dragnb``), deleted and recomputed: never
reused, never a traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import open_cache, remove, write_atomic
from .inversion import InversionResult
from .lora import LoraResult, load_lora, save_lora

log = logging.getLogger("dragnb")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_LOSSES = "losses.json"


class CorruptEntry(Exception):
    """A cache entry that exists but cannot be used; the message says why."""


def discard(path: Path, reason: str) -> None:
    """Report a broken entry in one line and delete it, so its stage is computed again."""
    log.warning("cache: %s is unusable (%s); discarded, computing it again", path, reason)
    remove(path)


def _finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


# ------------------------------------------------------------------------------------------------ LoRA
def save_lora_entry(folder: Path, lora: LoraResult) -> None:
    def write(tmp: Path) -> None:
        save_lora(lora, tmp)
        (tmp / LORA_LOSSES).write_text(json.dumps(lora.losses))

    write_atomic(folder, write)


def load_lora_entry(folder: Path, key: str) -> LoraResult | None:
    """The cached adapter, or None when there is none; a broken one is discarded (and None returned)."""
    if not folder.exists():
        return None
    try:
        if not (folder / LORA_WEIGHTS).is_file():
            raise CorruptEntry(f"no {LORA_WEIGHTS}")
        result = load_lora(folder, key=key)
        if not result.state_dict:
            raise CorruptEntry("it holds no tensors")
        if not _finite(result.state_dict):
            raise CorruptEntry("it holds NaN or infinite weights")
        losses = json.loads((folder / LORA_LOSSES).read_text())
        if not isinstance(losses, list) or not all(isinstance(v, (int, float)) for v in losses):
            raise CorruptEntry(f"{LORA_LOSSES} is not a list of numbers")
        result.losses = [float(v) for v in losses]
        return result
    except (CorruptEntry, OSError, ValueError, UnicodeDecodeError) as exc:  # ModelError is an OSError
        discard(folder, str(exc))
        return None


# ------------------------------------------------------------------------------------------------ inversion
def save_inversion_entry(path: Path, result: InversionResult) -> None:
    tensors = {f"z{i}": z.detach().cpu().contiguous() for i, z in enumerate(result.latents)}
    tensors["timesteps"] = torch.tensor(result.timesteps)
    write_atomic(path, lambda tmp: save_file(tensors, tmp))


def load_inversion_entry(path: Path, key: str, steps: int, latent_shape: tuple[int, ...],
                         device: torch.device) -> InversionResult | None:
    """The cached latents z_0 … z_t, checked to be ``steps`` + 1 finite latents of ``latent_shape``."""
    if not path.exists():
        return None
    try:
        try:
            tensors = load_file(path)
        except Exception as exc:  # safetensors raises several types for truncated or foreign files
            raise CorruptEntry(f"not a readable safetensors file: {str(exc)[:120]}") from None
        names = {f"z{i}" for i in range(steps + 1)} | {"timesteps"}
        if set(tensors) != names:
            raise CorruptEntry(f"expected {steps + 1} latents and their timesteps, found {len(tensors)} tensors")
        if tensors["timesteps"].shape != (steps,):
            raise CorruptEntry(f"expected {steps} timesteps, found shape {tuple(tensors['timesteps'].shape)}")
        shapes = {tuple(tensors[f"z{i}"].shape) for i in range(steps + 1)}
        if shapes != {tuple(latent_shape)}:
            raise CorruptEntry(f"latents of shape {sorted(shapes)}, expected {tuple(latent_shape)}")
        if not _finite(tensors):
            raise CorruptEntry("it holds NaN or infinite latents")
    except (CorruptEntry, OSError) as exc:
        discard(path, str(exc))
        return None
    return InversionResult(latents=[tensors[f"z{i}"].to(device) for i in range(steps + 1)],
                           timesteps=tensors["timesteps"].tolist(), key=key)
