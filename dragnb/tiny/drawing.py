"""How a scene is drawn: pixels, textures and the coverage masks of its shapes, from the records of :mod:`.scenes`.

:func:`render` draws a :class:`~dragnb.tiny.scenes.Scene` at any size (an int, or (width, height)) by 4x
supersampling and a box filter: the flat world's shapes with PIL exactly as the first embedded models saw them,
textured or stretched ones per pixel in the shape's own coordinates (one light, a highlight, stripes, dots or an
outline, with the numbers of the scene's :class:`~dragnb.tiny.scenes.Look`), on one background colour or two halves
lit by its :class:`~dragnb.tiny.scenes.Ground`;
:func:`scene_array` is the same as a uint8 array. :func:`shape_coverage` and :func:`shape_mask` give the visible
part of one shape on the same grid (colour-agnostic by construction), :func:`centroid` a mask's centre in image
pixels (x, y). numpy and PIL only: no torch here.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scenes import COLOURS, LOOKS, RIPPLE_CYCLES, SHAPES, SQUARE_HALF, TRIANGLE_RADIUS, Ground, Look, Scene, Shape, _stretch

SUPERSAMPLE = 4  # render at 4x and box-filter down: light antialiasing, so the VAE learns clean edges


def _inside(kind: str, size: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean: unstretched shape-local points (u, v) (units of the shorter side) inside the shape."""
    if kind == "circle":
        return u * u + v * v <= size * size
    if kind == "square":
        a = SQUARE_HALF * size
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if kind == "triangle":
        R = TRIANGLE_RADIUS * size
        # apex (0, -R), base at v = R/2 from -R sqrt(3)/2 to +R sqrt(3)/2; sides are |u| <= (v + R) / sqrt(3)
        return (v <= R / 2) & (np.abs(u) * math.sqrt(3) <= v + R)
    raise ValueError(f"unknown shape kind {kind!r}; known: {SHAPES}")


def _brightness(shape: Shape, u: np.ndarray, v: np.ndarray, inside: np.ndarray,
                look: Look) -> tuple[np.ndarray, np.ndarray]:
    """(brightness factor, highlight weight) per point for a textured shape; (u, v) in units of its size."""
    lx, ly = look.light
    lo, hi = look.shade_range
    if look.shading == "dome":  # Lambert on a hemisphere of the shape's size, light raised 45 degrees
        nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
        norm = math.hypot(lx, ly)
        lit = np.clip((-(u * lx + v * ly) / norm + nz) / math.sqrt(2), 0.0, 1.0)
    else:  # a plane tilted toward the light
        lit = np.clip(-(u * lx + v * ly) / 2 + 0.5, 0.0, 1.0)  # 1 on the lit side (toward the light), 0 away
    factor = lo + (hi - lo) * lit
    if shape.style == "striped":
        factor = np.where(np.mod((u + v) / look.stripe_period, 1.0) < 0.5, factor * look.pattern_dark, factor)
    elif shape.style == "dotted":
        du = np.mod(u / look.dot_period + 0.5, 1.0) - 0.5
        dv = np.mod(v / look.dot_period + 0.5, 1.0) - 0.5
        factor = np.where(du * du + dv * dv <= (look.dot_radius / look.dot_period) ** 2, factor * look.pattern_dark,
                          factor)
    elif shape.style == "outlined":
        edge = _inside(shape.kind, 1.0 - look.outline_width * (2.2 if shape.kind == "triangle" else 1.0), u, v)
        factor = np.where(inside & ~edge, factor * look.pattern_dark * 0.7, factor)
    hu, hv = look.highlight_at
    highlight = look.highlight_gain * np.exp(-((u - hu) ** 2 + (v - hv) ** 2) / (2 * look.highlight_sigma**2))
    if shape.style == "outlined":
        highlight = np.where(edge, highlight, 0.0)
    return factor, highlight


def _shape_layer(shape: Shape, W: int, H: int, unit: int,
                 look: Look = LOOKS["trained"]) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """Supersampled pixels of a shape: (box (r0, r1, c0, c1), coverage (h, w) bool, colour (h, w, 3) float)."""
    l, t, r, b = shape.extent()
    cx, cy = shape.cx * W, shape.cy * H
    c0, c1 = max(0, int(math.floor(cx + l * unit)) - 1), min(W, int(math.ceil(cx + r * unit)) + 2)
    r0, r1 = max(0, int(math.floor(cy + t * unit)) - 1), min(H, int(math.ceil(cy + b * unit)) + 2)
    if c1 <= c0 or r1 <= r0:
        return (0, 0, 0, 0), np.zeros((0, 0), bool), np.zeros((0, 0, 3))
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5  # pixel centres
    u, v = _stretch(shape, (xs - cx) / unit, (ys - cy) / unit, 1.0 / shape.stretch)  # unstretched local coords
    inside = _inside(shape.kind, shape.size, u, v)
    base = np.asarray(COLOURS[shape.colour], dtype=np.float64)
    if shape.style == "plain":
        colour = np.broadcast_to(base, inside.shape + (3,))
    else:
        factor, highlight = _brightness(shape, u / shape.size, v / shape.size, inside, look)
        shaded = np.clip(base[None, None] * factor[..., None], 0, 255)
        colour = shaded + highlight[..., None] * (255.0 - shaded)
    return (r0, r1, c0, c1), inside, colour


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as (width, height): an int means square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, w: int, h: int, fill) -> None:
    """Draw a flat ``shape`` on a canvas of w x h pixels (already supersampled) with PIL (the flat world's renderer)."""
    unit = min(w, h)
    cx, cy = shape.cx * w, shape.cy * h
    if shape.kind == "circle":
        r = shape.size * unit
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape.kind == "square":
        a = SQUARE_HALF * shape.size * unit
        draw.rectangle([cx - a, cy - a, cx + a, cy + a], fill=fill)
    elif shape.kind == "triangle":
        R = TRIANGLE_RADIUS * shape.size * unit
        pts = [(cx + R * math.cos(a), cy + R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; known: {SHAPES}")


def _draw_background(draw: ImageDraw.ImageDraw, background: tuple[str, ...], w: int, h: int) -> None:
    if len(background) == 1:
        draw.rectangle([0, 0, w, h], fill=COLOURS[background[0]])
    elif len(background) == 2:
        half = h // 2
        draw.rectangle([0, 0, w, half - 1], fill=COLOURS[background[0]])
        draw.rectangle([0, half, w, h], fill=COLOURS[background[1]])
    else:
        raise ValueError(f"background must have one or two colours, got {background!r}")


def ground_light(ground: Ground, w: int, h: int) -> np.ndarray:
    """(h, w) brightness factor :class:`~dragnb.tiny.scenes.Ground` puts on the background, at pixel centres."""
    x = (np.arange(w) + 0.5)[None, :] / w
    y = (np.arange(h) + 0.5)[:, None] / h
    a = ground.ripple_angle
    wave = np.sin(2 * math.pi * RIPPLE_CYCLES * (x * math.cos(a) + y * math.sin(a)) + ground.ripple_phase)
    return 1.0 + ground.tilt_x * (x - 0.5) + ground.tilt_y * (y - 0.5) + ground.ripple * wave


def render(scene: Scene, size: int | tuple[int, int] = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` (int, or (width, height)), antialiased by 4x supersampling,
    in the scene's :class:`~dragnb.tiny.scenes.Look`."""
    w, h = _size_hw(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    img = Image.new("RGB", (W, H))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, scene.background, W, H)
    if all(s.flat for s in scene.shapes) and scene.ground.flat:  # the flat world, drawn as the first models saw it
        for shape in scene.shapes:
            _draw_shape(draw, shape, W, H, COLOURS[shape.colour])
        return img.reduce(SUPERSAMPLE)
    canvas = np.asarray(img, dtype=np.float64).copy()  # (H*4, W*4, 3)
    if not scene.ground.flat:
        canvas = np.clip(canvas * ground_light(scene.ground, W, H)[..., None], 0, 255)
    look = LOOKS[scene.look]
    for shape in scene.shapes:
        if shape.flat:  # PIL's pixels, so a flat shape looks the same beside a textured one as alone
            canvas[_coverage_hi(shape, W, H)] = COLOURS[shape.colour]
            continue
        (r0, r1, c0, c1), inside, colour = _shape_layer(shape, W, H, min(W, H), look)
        region = canvas[r0:r1, c0:c1]
        region[inside] = colour[inside]
    small = canvas.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE, 3).mean(axis=(1, 3))  # (H, W, 3) box filter
    return Image.fromarray(np.clip(np.round(small), 0, 255).astype(np.uint8))


def scene_array(scene: Scene, size: int | tuple[int, int] = 64) -> np.ndarray:
    """:func:`render` as a uint8 array (H, W, 3)."""
    return np.asarray(render(scene, size), dtype=np.uint8)


def _coverage_hi(shape: Shape, W: int, H: int) -> np.ndarray:
    """Boolean (H, W) supersampled coverage of one shape (PIL for flat shapes, as :func:`render` draws them)."""
    if shape.flat:
        layer = Image.new("L", (W, H), 0)
        _draw_shape(ImageDraw.Draw(layer), shape, W, H, 255)
        return np.asarray(layer) > 127
    out = np.zeros((H, W), dtype=bool)
    (r0, r1, c0, c1), inside, _ = _shape_layer(shape, W, H, min(W, H))
    out[r0:r1, c0:c1] = inside
    return out


def shape_coverage(scene: Scene, index: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """Visible coverage in [0, 1] of shape ``index``, (H, W) float32: its area minus what later shapes hide.

    Purely geometric, hence colour-agnostic; computed on the 4x grid and box-averaged like :func:`render`.
    """
    w, h = _size_hw(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    if all(s.flat for s in scene.shapes[index:]):  # the flat world's exact computation
        layer = Image.new("L", (W, H), 0)
        draw = ImageDraw.Draw(layer)
        _draw_shape(draw, scene.shapes[index], W, H, 255)
        for later in scene.shapes[index + 1 :]:
            _draw_shape(draw, later, W, H, 0)  # occluders erase
        hi = np.asarray(layer, dtype=np.float32) / 255.0  # (H*4, W*4)
    else:
        cover = _coverage_hi(scene.shapes[index], W, H)
        for later in scene.shapes[index + 1 :]:
            cover &= ~_coverage_hi(later, W, H)  # occluders erase
        hi = cover.astype(np.float32)
    return hi.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))  # (H, W)


def shape_mask(scene: Scene, index: int, size: int | tuple[int, int] = 64) -> np.ndarray:
    """Boolean (H, W) mask of the visible pixels of shape ``index`` (coverage >= 1/2).

    Equal to "render the scene with and without that shape and compare" wherever the shape's colour differs
    from what lies under it, which :func:`sample_scene` guarantees; colour-agnostic by construction.
    """
    return shape_coverage(scene, index, size) >= 0.5


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid in image pixels of a boolean or weight mask (H, W); pixel centres at integer + 0.5."""
    m = np.asarray(mask, dtype=np.float64)
    total = m.sum()
    if total <= 0:
        return (float("nan"), float("nan"))
    rows, cols = np.indices(m.shape)
    return (float((m * (cols + 0.5)).sum() / total), float((m * (rows + 0.5)).sum() / total))
