"""DragBench sample folders in and out: ``original_image.png`` + ``meta_data.pkl``.

``meta_data.pkl`` = {'prompt': str, 'points': [[x, y], ...] alternating handle/target in image pixels,
'mask': uint8 (H, W), 1 = editable}. The pickle comes from outside, so it is read with an unpickler that
admits only plain containers, strings, numbers and numpy arrays, never arbitrary classes.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_mask, to_rgb_array
from ..points import DragPoints, make_points

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "bytearray"), ("builtins", "complex"), ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: DragBench metadata holds only plain data")


def safe_load_pickle(path: str | Path):
    """Unpickle ``path`` admitting only containers, strings, numbers and numpy arrays."""
    data = Path(path).read_bytes()
    return _RestrictedUnpickler(io.BytesIO(data)).load()


@dataclass
class Sample:
    """One DragBench sample."""

    folder: Path
    image: np.ndarray  # (H, W, 3) uint8
    prompt: str
    points: DragPoints  # image pixels
    mask: np.ndarray | None  # (H, W) bool, None = whole image editable


def read_sample(folder: str | Path) -> Sample:
    """Read and validate a sample folder; errors name the file at fault."""
    folder = Path(folder)
    image_path, meta_path = folder / "original_image.png", folder / "meta_data.pkl"
    for p in (image_path, meta_path):
        if not p.is_file():
            raise InputError("--sample", f"{str(folder)!r} has no {p.name}; a DragBench sample folder holds "
                             "original_image.png and meta_data.pkl")
    image = to_rgb_array(image_path, str(image_path))
    try:
        meta = safe_load_pickle(meta_path)
    except Exception as exc:  # corrupt or foreign pickles raise many types
        raise InputError(str(meta_path), f"cannot read it ({exc})") from None
    if not isinstance(meta, dict) or "points" not in meta:
        raise InputError(str(meta_path), "expected a dict with 'prompt', 'points' and 'mask'")
    prompt = meta.get("prompt", "") or ""
    if not isinstance(prompt, str):
        raise InputError(str(meta_path), f"'prompt' must be a string, got {type(prompt).__name__}")
    raw = meta["points"]
    if not isinstance(raw, (list, tuple, np.ndarray)) or not all(isinstance(p, (list, tuple, np.ndarray)) for p in raw):
        raise InputError(f"{meta_path} 'points'", f"expected a list of [x, y] points, got {str(raw)[:80]}")
    points = make_points([list(p) for p in raw], image.shape[:2], f"{meta_path} 'points'")
    mask = load_mask(meta.get("mask"), image.shape[:2], f"{meta_path} 'mask'")
    return Sample(folder=folder, image=image, prompt=prompt, points=points, mask=mask)


def write_sample(folder: str | Path, image: np.ndarray, prompt: str, points: DragPoints,
                 mask: np.ndarray | None) -> Path:
    """Write a sample folder in the DragBench format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "original_image.png")
    h, w = image.shape[:2]
    meta = {"prompt": prompt, "points": points.as_list(),
            "mask": (np.zeros((h, w), np.uint8) if mask is None else mask.astype(np.uint8))}
    with open(folder / "meta_data.pkl", "wb") as f:
        pickle.dump(meta, f)
    return folder
