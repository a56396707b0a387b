"""Mask appearance: colours, procedural texture tiles and their placement, rasterising.

All functions work on a region of interest (the mask's bounding box), never the whole frame.
Textures are periodic tiles generated from a seed (cached), laid onto the mask in the face's
own frame (:func:`tile_map`) so they follow head roll; :mod:`maskgen.paint` samples them,
shades them by the face's lighting and blends the mask into the image.

Example:
    >>> import numpy as np
    >>> tile = texture_tile("pleats", seed=0)
    >>> tile.shape, tile.dtype.name
    ((64, 64, 2), 'float32')
    >>> palette_colors("medical_blue")[0]
    (141, 191, 226)
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from maskgen._assets import asset_json

TEXTURES: tuple[str, ...] = ("none", "pleats", "grain", "stripes", "checks", "dots", "print")
#: Textures whose tile mixes in the secondary colour (the others only modulate shade).
TWO_TONE_TEXTURES: frozenset[str] = frozenset({"stripes", "checks", "dots", "print"})
#: Pleats across one texture tile.
PLEATS_PER_TILE = 3
#: Textures that are also surface relief on a posed surface (:mod:`maskgen.fabric`): the
#: tilt (tangent) their folds give the fabric's normal, one fold per pleat.
TEXTURE_RELIEF: dict[str, float] = {"pleats": 0.5}
TILE = 64  # a power of two: periodic sampling wraps coordinates with a bit mask
_SUBPIXEL_BITS = 4


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def palette_names() -> list[str]:
    """Names of the built-in palettes (``templates/palettes.json``)."""
    return sorted(asset_json("palettes.json")["palettes"])


def palette_colors(name: str) -> list[tuple[int, int, int]]:
    """RGB colours of palette ``name``."""
    palettes = asset_json("palettes.json")["palettes"]
    if name not in palettes:
        raise ValueError(f"unknown palette {name!r}; choose from {', '.join(sorted(palettes))}")
    return [_hex_to_rgb(c) for c in palettes[name]]


def accent_colors() -> list[tuple[int, int, int]]:
    """Accent colours for the second tone of stripes, checks, dots and prints."""
    return [_hex_to_rgb(c) for c in asset_json("palettes.json")["accents"]]


# ---------------------------------------------------------------------------- textures


def _wrap_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that keeps a tile periodic (blur a wrapped copy, crop the centre)."""
    pad = int(3 * sigma) + 1
    padded = np.pad(field, pad, mode="wrap")
    return cv2.GaussianBlur(padded, (0, 0), sigma)[pad:-pad, pad:-pad]


def _smooth_step(x: np.ndarray, edge: float = 0.06) -> np.ndarray:
    return np.clip((x + edge) / (2 * edge), 0.0, 1.0)


def _grain(rng: np.random.Generator, sigma: float = 0.8, amount: float = 0.05) -> np.ndarray:
    noise = _wrap_blur(rng.standard_normal((TILE, TILE)).astype(np.float32), sigma)
    return 1.0 + amount * noise / max(float(noise.std()), 1e-6)


def _pleats(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(TILE, dtype=np.float32) + 0.5) / TILE * PLEATS_PER_TILE
    frac = y - np.floor(y)
    profile = 0.88 + 0.2 * frac - 0.12 * np.exp(-(((frac - 0.03) / 0.035) ** 2))
    shade = np.repeat(profile[:, None], TILE, axis=1) * _grain(rng, 0.6, 0.02)
    return np.zeros((TILE, TILE), np.float32), shade


def _fabric(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(TILE, dtype=np.float32) * (2 * np.pi * 16 / TILE)
    weave = 0.03 * np.sin(x)[None, :] * np.sin(x)[:, None]
    return np.zeros((TILE, TILE), np.float32), _grain(rng, 0.9, 0.06) + weave


def _stripes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(3, 7))
    y = (np.arange(TILE, dtype=np.float32) + 0.5) / TILE * n
    band = _smooth_step(np.sin(2 * np.pi * y) - rng.uniform(-0.3, 0.5), 0.15)
    return np.repeat(band[:, None], TILE, axis=1), _grain(rng, 0.8, 0.025)


def _checks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(3, 6))
    t = (np.arange(TILE, dtype=np.float32) + 0.5) / TILE * n
    band = _smooth_step(np.sin(2 * np.pi * t), 0.15)
    return 0.5 * (band[:, None] + band[None, :]), _grain(rng, 0.8, 0.025)


def _dots(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(3, 6))
    radius = rng.uniform(0.16, 0.3)
    t = (np.arange(TILE, dtype=np.float32) + 0.5) / TILE * n
    fy, fx = t[:, None] - np.floor(t[:, None]), t[None, :] - np.floor(t[None, :])
    dist = np.hypot(fx - 0.5, fy - 0.5)
    return _smooth_step(radius - dist, 0.04), _grain(rng, 0.8, 0.025)


def _print(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Printed pattern: small flowers (petals round a disc) and leaves at random places."""
    canvas = np.zeros((3 * TILE, 3 * TILE), np.uint8)
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = rng.uniform(0, TILE, 2)
        size = rng.uniform(4, 9)
        petals = int(rng.integers(4, 7))
        turn = rng.uniform(0, np.pi)
        for ox in (0, TILE, 2 * TILE):
            for oy in (0, TILE, 2 * TILE):
                c = (cx + ox, cy + oy)
                for k in range(petals):
                    ang = turn + 2 * np.pi * k / petals
                    px = round((c[0] + np.cos(ang) * size * 0.7) * 16)
                    py = round((c[1] + np.sin(ang) * size * 0.7) * 16)
                    axes = (int(size * 0.55 * 16), int(size * 0.3 * 16))
                    cv2.ellipse(canvas, (px, py), axes, np.degrees(ang), 0, 360, 255, -1,
                                cv2.LINE_AA, 4)  # fmt: skip
                cv2.circle(canvas, (int(c[0] * 16), int(c[1] * 16)), int(size * 0.3 * 16), 128,
                           -1, cv2.LINE_AA, 4)  # fmt: skip
    mix = canvas[TILE : 2 * TILE, TILE : 2 * TILE].astype(np.float32) / 255.0
    return mix, _grain(rng, 0.8, 0.025)


_TEXTURE_MAKERS = {
    "pleats": _pleats,
    "grain": _fabric,
    "stripes": _stripes,
    "checks": _checks,
    "dots": _dots,
    "print": _print,
}


@lru_cache(maxsize=1024)
def texture_tile(kind: str, seed: int) -> np.ndarray:
    """Periodic TILE×TILE×2 tile: channel 0 = mix (0 primary → 1 secondary colour),
    channel 1 = multiplicative shade around 1. Cached per (kind, seed); read-only."""
    if kind not in _TEXTURE_MAKERS:
        raise ValueError(f"unknown texture {kind!r}; choose from {', '.join(TEXTURES)}")
    mix, shade = _TEXTURE_MAKERS[kind](np.random.default_rng([seed, TEXTURES.index(kind)]))
    tile = np.ascontiguousarray(np.stack([mix, shade], axis=-1), dtype=np.float32)
    tile.setflags(write=False)
    return tile


@lru_cache(maxsize=1024)
def padded_tile(kind: str, seed: int, shade_only: bool = False) -> np.ndarray:
    """The tile of :func:`texture_tile` with one wrapped texel appended on the right and at
    the bottom, as :func:`maskgen.paint.paint_mask` samples it: (TILE+1, TILE+1, C) float32,
    C = 2 (mix, shade), or C = 1 (shade) when ``shade_only``. Cached; read-only.

    Example:
        >>> padded_tile("grain", 0, shade_only=True).shape
        (65, 65, 1)
    """
    tile = texture_tile(kind, seed)
    tile = tile[..., 1:] if shade_only else tile
    padded = np.ascontiguousarray(np.pad(tile, ((0, 1), (0, 1), (0, 0)), mode="wrap"))
    padded.setflags(write=False)
    return padded


def tile_map(
    origin: np.ndarray,
    ax: np.ndarray,
    period_px: float,
    angle_deg: float,
    bbox: tuple[int, int, int, int],
) -> tuple[float, float, float, float, float, float]:
    """Where each pixel of ``bbox`` = (x0, y0, x1, y1) samples a texture tile laid one tile
    every ``period_px`` pixels, aligned with the face axis ``ax`` (plus ``angle_deg``) and
    anchored at ``origin``: (a, b, c, d, e, f) such that box pixel (x, y) samples tile texel
    (a·x + b·y + c, d·x + e·y + f), modulo TILE.

    Example:
        >>> import numpy as np
        >>> tile_map(np.array([10.0, 20.0]), np.array([1.0, 0.0]), 64.0, 0.0, (10, 20, 50, 60))
        (1.0, 0.0, 0.0, -0.0, 1.0, 0.0)
    """
    x0, y0 = bbox[0], bbox[1]
    theta = math.atan2(float(ax[1]), float(ax[0])) + math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    k = TILE / max(period_px, 1e-3)
    ox, oy = float(origin[0]) - x0, float(origin[1]) - y0
    # c and f are reduced modulo the tile: the tile is periodic, and small offsets keep the
    # sampler's float32 coordinates precise.
    return (c * k, s * k, (-(c * ox + s * oy) * k) % TILE,
            -s * k, c * k, ((s * ox - c * oy) * k) % TILE)  # fmt: skip


# ---------------------------------------------------------------------------- rasterising


def to_fixed_point(points: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates → OpenCV sub-pixel fixed point relative to ``offset``.

    OpenCV's pixel centres are at integer coordinates; ours (continuous image coordinates)
    are at +0.5, hence the half-pixel shift.
    """
    scale = 1 << _SUBPIXEL_BITS
    shifted = (points - np.array(offset, np.float32) - 0.5) * scale
    return np.round(shifted).astype(np.int32)


def fill_polygon(
    shape: tuple[int, int], polygon: np.ndarray, offset: tuple[int, int]
) -> np.ndarray:
    """Anti-aliased coverage (uint8 0–255) of ``polygon`` on an ``shape`` = (h, w) canvas."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [to_fixed_point(polygon, offset)], 255, cv2.LINE_AA, _SUBPIXEL_BITS)
    return canvas


def draw_polyline(
    canvas: np.ndarray,
    line: np.ndarray,
    offset: tuple[int, int],
    value: float | tuple[float, ...],
    thickness: int,
) -> None:
    """Anti-aliased polyline drawn in place."""
    pts = to_fixed_point(line, offset)
    cv2.polylines(canvas, [pts], False, value, max(1, thickness), cv2.LINE_AA, _SUBPIXEL_BITS)


def valve_layers(
    shape: tuple[int, int], valve: tuple[float, float, float], offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """An exhalation valve as two anti-aliased uint8 coverages on an ``shape`` = (h, w)
    canvas: the filled disc and its rim (painted over the disc in a darker tone)."""
    cx, cy, r = valve
    centre = tuple(int(v) for v in to_fixed_point(np.array([[cx, cy]], np.float32), offset)[0])
    radius = int(r * (1 << _SUBPIXEL_BITS))
    disc, rim = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.circle(disc, centre, radius, 255, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    cv2.circle(rim, centre, radius, 255, max(1, round(r * 0.15)), cv2.LINE_AA, _SUBPIXEL_BITS)
    return disc, rim


def soften(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a coverage map to soften its edges (no-op for tiny sigma)."""
    if sigma < 0.3:
        return alpha
    return cv2.GaussianBlur(alpha, (0, 0), sigma)
