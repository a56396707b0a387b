"""Mask appearance: colours, procedural textures, face-matched shading, soft edges, compositing.

All functions work on a region of interest (the mask's bounding box), never the whole frame.
Textures are periodic tiles generated from a seed (cached), laid onto the mask in the face's
own frame so they follow head roll.

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
    y = (np.arange(TILE, dtype=np.float32) + 0.5) / TILE * 3  # three pleats per tile
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
def _padded_tile(kind: str, seed: int, shade_only: bool) -> np.ndarray:
    """The tile (or its shade channel) with one wrapped texel appended on the right and at the
    bottom, so bilinear sampling at any in-tile position reads only real texels."""
    tile = texture_tile(kind, seed)
    tile = tile[..., 1] if shade_only else tile
    pad = ((0, 1), (0, 1)) + ((0, 0),) * (tile.ndim - 2)
    padded = np.pad(tile, pad, mode="wrap")
    padded.setflags(write=False)
    return padded


def _pixel_grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row index planes (h, w) float32 (read-only; cached up to 256×256)."""
    return _cached_pixel_grid(w, h) if w * h <= 1 << 16 else _make_pixel_grid(w, h)


@lru_cache(maxsize=512)
def _cached_pixel_grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return _make_pixel_grid(w, h)


def _make_pixel_grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.ascontiguousarray(np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)))
    ys = np.ascontiguousarray(np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)))
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def warp_periodic(
    padded: np.ndarray, M: np.ndarray | list[list[float]], size: tuple[int, int]
) -> np.ndarray:
    """Bilinear inverse warp of a periodic TILE×TILE tile (given padded by
    :func:`_padded_tile`) onto ``size`` = (w, h): output pixel (x, y) samples the tile at
    ``M @ (x, y, 1)`` modulo TILE.

    Same result as ``cv2.warpAffine(tile, M, size, WARP_INVERSE_MAP, BORDER_WRAP)`` up to
    OpenCV's 1/32-texel position rounding, and 2–3× faster: wrapping is exact and cheap on
    the integer part of OpenCV's fixed-point coordinates (TILE is a power of two), whereas
    warpAffine's wrapped border takes a slow path for every pixel outside the tile.
    """
    w, h = size
    (a, b, c), (d, e, f) = np.asarray(M, np.float64).tolist()
    c, f = c % TILE, f % TILE  # the tile is periodic: keep coordinates small for 16-bit maps
    if max(abs(a) * w + abs(b) * h, abs(d) * w + abs(e) * h) + TILE + 2 >= 32000:
        tile = padded[:TILE, :TILE]  # beyond OpenCV's 16-bit fixed-point maps
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(tile, np.array([[a, b, c], [d, e, f]]), size, flags=flags,
                              borderMode=cv2.BORDER_WRAP)  # fmt: skip
    xs, ys = _pixel_grid(w, h)
    u = cv2.addWeighted(xs, a, ys, b, c)
    v = cv2.addWeighted(xs, d, ys, e, f)
    whole, frac = cv2.convertMaps(u, v, cv2.CV_16SC2)
    np.bitwise_and(whole, TILE - 1, out=whole)  # two's complement: a true modulo
    return cv2.remap(padded, whole, frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def texture_field(
    kind: str,
    seed: int,
    origin: np.ndarray,
    ax: np.ndarray,
    period_px: float,
    angle_deg: float,
    bbox: tuple[int, int, int, int],
    *,
    shade_only: bool = False,
) -> np.ndarray:
    """Lay a texture tile over ``bbox`` = (x0, y0, x1, y1), one tile every ``period_px`` pixels,
    aligned with the face axis ``ax`` (plus ``angle_deg``) and anchored at ``origin``.

    Returns an (h, w, 2) float32 field (mix, shade), or only the (h, w) shade when
    ``shade_only`` (single-tone textures: half the warping work).
    """
    x0, y0, x1, y1 = bbox
    theta = math.atan2(float(ax[1]), float(ax[0])) + math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    k = TILE / max(period_px, 1e-3)
    # Inverse map: output pixel (x, y) in the bbox → tile coordinate.
    ox, oy = float(origin[0]) - x0, float(origin[1]) - y0
    M = [[c * k, s * k, -(c * ox + s * oy) * k], [-s * k, c * k, (s * ox - c * oy) * k]]
    w, h = x1 - x0, y1 - y0
    padded = _padded_tile(kind, seed, shade_only)
    r = 2.0 * k  # small-grid pixels per output pixel at 2 small pixels per texel
    if r >= 1.0 or min(w, h) * r < 8:
        return warp_periodic(padded, M, (w, h))
    # Magnified texture (large faces): warp onto a coarser grid, then upsample linearly.
    # Cheaper than warping every output pixel and visually identical, since each texel
    # already spans several pixels.
    sw, sh = max(2, math.ceil(w * r)), max(2, math.ceil(h * r))
    fx, fy = w / sw, h / sh  # output pixels per small-grid pixel, as cv2.resize uses them
    to_full = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    small = warp_periodic(padded, np.asarray(M) @ to_full, (sw, sh))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- shading


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def lighting_grid(alpha: np.ndarray) -> tuple[int, int]:
    """(width, height) of the coarse grid :func:`face_lighting` measures luminance on."""
    h, w = alpha.shape
    return max(2, min(6, w // 6)), max(2, min(6, h // 6))


def grid_average(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Area-average ``image`` onto ``grid`` = (width, height) cells of whole pixels.

    The centred part of the image that whole cells cover is averaged (at most ``grid - 1``
    pixels are left out per axis): OpenCV's area resize is several times faster at integer
    factors than at fractional ones, and shading does not care about a border pixel.
    """
    gw, gh = grid
    h, w = image.shape[:2]
    cw, ch = w // gw, h // gh
    if cw < 1 or ch < 1:
        return cv2.resize(image, grid, interpolation=cv2.INTER_AREA)
    ox, oy = (w - cw * gw) // 2, (h - ch * gh) // 2
    cells = image[oy : oy + ch * gh, ox : ox + cw * gw]
    return cv2.resize(cells, grid, interpolation=cv2.INTER_AREA)


def face_lighting(
    roi: np.ndarray,
    alpha: np.ndarray,
    strength: float,
    small_alpha: np.ndarray | None = None,
) -> np.ndarray:
    """Low-frequency luminance of the face under the mask, relative to its mean under the mask.

    ``roi`` is the RGB region (any dtype), ``alpha`` its coverage in [0, 1] (``small_alpha``:
    the same already averaged by :func:`grid_average` onto :func:`lighting_grid`, if the
    caller has it). Returns
    an (h, w) float32 factor around 1, clipped to [0.5, 1.45] and raised to ``strength``.
    """
    h, w = alpha.shape
    gw, gh = lighting_grid(alpha)
    # Area-average the colour first: luminance of the tiny grid costs nothing.
    small_rgb = grid_average(roi, (gw, gh)).astype(np.float32)
    small = small_rgb @ _LUMA
    if small_alpha is None:
        small_alpha = grid_average(alpha, (gw, gh))
    weight = float(small_alpha.sum())
    mean = float((small * small_alpha).sum()) / max(weight, 1e-6)
    if mean <= 1e-6:
        return np.ones((h, w), np.float32)
    ratio = np.clip(small * np.float32(1 / mean), 0.5, 1.45)
    if strength != 1.0:
        ratio **= np.float32(strength)  # on the small grid: cheap
    return cv2.resize(ratio, (w, h), interpolation=cv2.INTER_LINEAR)


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


def draw_valve(
    canvas: np.ndarray,
    valve: tuple[float, float, float],
    offset: tuple[int, int],
    fill: tuple[float, ...],
    rim: tuple[float, ...],
) -> None:
    """An exhalation valve: a filled disc with a darker rim, drawn in place."""
    cx, cy, r = valve
    centre = tuple(int(v) for v in to_fixed_point(np.array([[cx, cy]], np.float32), offset)[0])
    radius = int(r * (1 << _SUBPIXEL_BITS))
    cv2.circle(canvas, centre, radius, fill, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    cv2.circle(canvas, centre, radius, rim, max(1, round(r * 0.15)), cv2.LINE_AA, _SUBPIXEL_BITS)


def soften(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a coverage map to soften its edges (no-op for tiny sigma)."""
    if sigma < 0.3:
        return alpha
    return cv2.GaussianBlur(alpha, (0, 0), sigma)


def flat_layer(shape: tuple[int, int], values: list[float], dtype: np.dtype) -> np.ndarray:
    """An (h, w, channels) image of one colour. Built plane by plane: NumPy broadcasting a
    colour over a trailing axis of 3 is an order of magnitude slower."""
    return cv2.merge([np.full(shape, v, dtype) for v in values])


def composite(
    roi: np.ndarray, alpha: np.ndarray, colour: np.ndarray, max_value: float
) -> np.ndarray:
    """Blend ``colour`` (h×w×3 or 3, in [0, max_value]) over ``roi`` with ``alpha`` (h×w).

    Returns an array of ``roi``'s dtype (rounded and clipped for integer types). ``uint8``
    and ``float32`` go through OpenCV's ``blendLinear`` (one pass, no temporaries).
    """
    colour = np.asarray(colour, np.float32)
    if roi.dtype in (np.uint8, np.float32) and roi.flags.c_contiguous:
        if colour.ndim == 1:
            values = colour.tolist()
            if roi.dtype == np.uint8:  # round half to even and saturate, as np.rint would
                values = [min(max(round(v), 0), 255) for v in values]
            layer = flat_layer(roi.shape[:2], values, roi.dtype)
        elif roi.dtype == np.uint8:
            layer = cv2.convertScaleAbs(colour)  # rounds and saturates to 0..255
        else:
            layer = colour
        return cv2.blendLinear(roi, layer, 1.0 - alpha, alpha)
    base = roi.astype(np.float32)
    out = base + alpha[..., None] * (colour - base)
    if np.issubdtype(roi.dtype, np.integer):
        np.clip(out, 0, max_value, out=out)
        np.rint(out, out=out)
    return out.astype(roi.dtype)
