"""Images and masks in and out: any PIL mode, any size, no silent cropping.

The model sees the image resized (never cropped) to a size it can take: the side lengths are scaled so
the longer side is the model's resolution, then rounded to the UNet's size multiple. The edit is
resized back to the original size at the end, so aspect ratio is kept up to that rounding.
"""

from __future__ import annotations

import math
import typing
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import LatentMaskMode
from .errors import InputError, Notice

if typing.TYPE_CHECKING:  # torch loads where a tensor is made: the image and mask checks run before it (issue 26)
    import torch


def open_image(path: str | Path, argument: str, what: str) -> Image.Image:
    """Read an image file fully, turning a missing or unreadable file into an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(argument, f"no file at {str(path)!r}; {what}")
    try:
        with Image.open(path) as im:
            im.load()
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{argument}: {str(path)!r} holds {frames} frames; the first is used", Notice,
                              stacklevel=3)
            return ImageOps.exif_transpose(im)  # as every viewer shows it (EXIF orientation applied); a copy
    except Image.DecompressionBombError:  # PIL's guard against files that unpack to gigabytes
        raise InputError(argument, f"{str(path)!r} unpacks to more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels "
                         "(PIL's limit against decompression bombs); downscale it first, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS in Python if you trust the file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(argument, f"{str(path)!r} is not a readable image ({exc}); re-export it as PNG") from None


def to_rgb_array(image, argument: str = "image") -> np.ndarray:
    """Any PIL image, path or array -> (H, W, 3) uint8 RGB.

    RGBA and LA are composited over white (what a viewer shows); grayscale is replicated; 16-bit and float
    images are rescaled to 8 bit by their type's range.
    """
    if isinstance(image, (str, Path)):
        image = open_image(image, argument, "give the path of a PNG or JPEG image")
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image, dtype=np.float64)
            scale = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
            image = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
        elif image.mode == "F":
            arr = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = _checked_values(np.asarray(image), argument)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(argument, f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[2] == 4:
        return to_rgb_array(Image.fromarray(arr.astype(np.uint8), "RGBA"), argument)
    return arr.astype(np.uint8)


def _checked_values(arr: np.ndarray, argument: str) -> np.ndarray:
    """An image array whose values mean what the caller thinks: bool taken as black/white (said in a line),
    integers outside 0-255 (other than uint16) and non-finite or out-of-range floats refused in one line."""
    if arr.dtype == bool:
        warnings.warn(f"{argument}: a bool array, taken as black (False) and white (True)", Notice, stacklevel=3)
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.uint16) and arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise InputError(argument, f"{arr.dtype} values from {low} to {high}; give uint8 values 0-255 (or uint16, "
                             "or floats in [0, 1]), e.g. np.clip(image, 0, 255).astype(np.uint8)")
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f" and arr.size:
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise InputError(argument, f"{bad} value(s) are NaN or infinite; give finite values in [0, 1] or "
                             "0-255 (np.nan_to_num)")
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > 255:
            raise InputError(argument, f"float values from {low:.3g} to {high:.3g}; give [0, 1] (or 0-255), e.g. "
                             "(x + 1) / 2 for an image in [-1, 1]")
    return arr


def model_size(image_size: tuple[int, int], resolution: int, multiple: int) -> tuple[int, int]:
    """(H, W) the model takes for an image of ``image_size``: longer side -> ``resolution``, sides -> ``multiple``."""
    h, w = image_size
    scale = resolution / max(h, w)
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (h, w))  # type: ignore[return-value]


def to_model_tensor(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) float in [-1, 1] at the model size (bicubic, antialiased)."""
    import torch

    pil = Image.fromarray(image)
    if pil.size != (size[1], size[0]):
        pil = pil.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 127.5 - 1.0)  # (h, w, 3)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, h, w)


def from_model_tensor(x: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) or (3, h, w) in [-1, 1] -> (h, w, 3) uint8."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(1, 2, 0).numpy()


def resize_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (h, w, 3) uint8 image to (H, W) = ``size`` (bicubic)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def load_mask(mask, image_size: tuple[int, int], argument: str = "mask") -> np.ndarray | None:
    """A user mask (path, PIL image or array; nonzero = editable) -> (H, W) bool, or None when empty.

    An absent or all-zero mask means the whole image is editable and the mask term is dropped
    (docs/method.md §3.3). The mask must have the image's size: resizing it silently could move the editable region.
    """
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        mask = open_image(mask, argument, "give a PNG whose nonzero pixels are editable")
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("RGBA") if mask.mode in ("P", "PA") else mask)
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., 3] if arr.shape[2] == 4 and arr[..., 3].min() < arr[..., 3].max() else arr[..., :3].max(axis=2)
    if arr.ndim != 2:
        raise InputError(argument, f"expected a 2-D mask, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(argument, f"expected a mask of numbers (nonzero = editable), got {arr.dtype} values")
    if arr.shape != tuple(image_size):
        raise InputError(argument, f"mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but the image is "
                         f"{image_size[1]}x{image_size[0]}; paint the mask on this image or resize it to match")
    out = arr > 0
    if not out.any():
        warnings.warn(f"{argument}: nothing in it is editable (all zero), so, as in the authors' code, the whole "
                      "image may change; paint the region that may change, or use an automatic mask (--mask auto)",
                      Notice, stacklevel=2)
        return None
    top = arr.max()
    between = int(((arr > 0) & (arr < top)).sum())
    if between:
        warnings.warn(f"{argument}: {between} pixel(s) lie between 0 and {top} (a lossy format such as JPEG?); every "
                      f"nonzero pixel is editable, {int(out.sum())} in all; save masks as PNG", Notice, stacklevel=2)
    return out


LATENT_MASK_MODES = typing.get_args(LatentMaskMode)  # the choices of DenoiseSettings.blend_mask


def mask_to_latent(mask: np.ndarray, latent_size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """(H, W) bool, 1 = editable -> (1, 1, h, w) float on the latent grid.

    ``mode``: ``nearest`` (the reference's: each latent cell takes the pixel at its top-left corner, so the
    mask shifts by half a cell up and left), ``centre`` (the pixel at the cell's centre), ``inside`` (1 only where
    every pixel of the cell is editable) or ``area`` (the editable fraction of the cell, a soft mask).
    """
    import torch
    import torch.nn.functional as F

    if mode not in LATENT_MASK_MODES:
        raise ValueError(f"mode must be one of {LATENT_MASK_MODES}, got {mode!r}")
    m = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, H, W)
    if mode == "nearest":
        return F.interpolate(m, size=latent_size, mode="nearest")
    if mode == "centre":
        return F.interpolate(m, size=latent_size, mode="nearest-exact")
    if mode == "inside":
        return 1.0 - F.adaptive_max_pool2d(1.0 - m, latent_size)
    return F.adaptive_avg_pool2d(m, latent_size)


def paste_outside(source: np.ndarray, edited: np.ndarray, mask: np.ndarray, blur: int) -> np.ndarray:
    """``edited`` (H, W, 3) uint8 with ``source``'s own pixels outside ``mask`` (H, W) bool, 1 = editable, the mask's
    edge softened by a Gaussian of ``blur`` pixels: diffusers' inpainting overlay (``VaeImageProcessor.blur`` and
    ``apply_overlay``)."""
    from diffusers.image_processor import VaeImageProcessor

    soft = Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255, "L")
    if blur > 0:
        soft = VaeImageProcessor.blur(soft, blur)
    out = VaeImageProcessor().apply_overlay(soft, Image.fromarray(source), Image.fromarray(edited))
    return np.asarray(out, dtype=np.uint8).copy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of equal shape (99 when identical): the project's one PSNR."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)
