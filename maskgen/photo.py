"""The photo's own look — its noise, blur and colour — measured around a face, so a mask drawn
into the photo can be given the same (:mod:`maskgen.render`: ``noise``, ``blur``,
``color_match``).

Everything is measured on at most :data:`SAMPLES` pixels of the face's region, so it costs a
few tens of microseconds per face:

- **noise**: Immerkær's estimator (the response of a 3×3 kernel that cancels smooth image
  content), with the median instead of the mean so that edges do not count as noise;
- **blur**: the Gaussian σ that explains how the strongest edges' gradients at spacings 1
  and 2 compare (a sharp edge's central difference halves from spacing 1 to 2; a blurred
  one's hardly changes), the noise's share taken out;
- **compression**: the JPEG grid and quantisation scale its pixels show
  (:func:`maskgen.jpeg.estimate_jpeg`, on a central crop of at most :data:`JPEG_PATCH`
  pixels a side), when asked for;
- **colour**: the photo's cast (the mean colour of its near-neutral pixels — a grey or white
  object's colour in it — over its mean) and how colourful the face region is (mean HSV
  saturation).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> flat = np.full((96, 96, 3), 120.0) + rng.normal(0, 6, (96, 96, 1))
    >>> look = photo_look(np.clip(flat, 0, 255).astype(np.uint8), (0, 0, 96, 96))
    >>> round(look.noise), look.saturation < 0.01
    (6, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from maskgen.jpeg import JpegGrid, estimate_jpeg

#: Pixels sampled (at most) for each statistic.
SAMPLES = 1024
#: The cast is limited to gains in this range.
GAIN_RANGE = (0.85, 1.18)
#: Pixels less saturated than this count as grey or white objects for the cast.
NEUTRAL_SATURATION = 0.3
#: The width (Gaussian σ, px) the strongest edges of a sharp photo have by themselves (hair,
#: eyelids and lips are no ideal steps), taken out of the measured width in quadrature:
#: measured on the real photos of the tests (sharp crops read 1.9–2.4 px, the same crops
#: blurred by σ 1.2 and 2.0 read 2.3–2.6 and 3.0–3.3 px).
EDGE_WIDTH = 1.8
#: Below this face saturation a photo counts as colourless: masks lose their colour with it.
COLOURLESS = 0.1
_LUMA = np.array([0.299, 0.587, 0.114])
_IMMERKAER = 6 * 0.6745  # median |response| of unit Gaussian noise under the 3×3 kernel
# Ratio of the root-mean-square central differences at spacings 2 and 4 across a Gaussian-
# blurred step edge, as a function of the blur σ (2 when sharp, → 1 as σ grows): a table.
# (Spacings 1 and 2 resolve sub-pixel blur but drown in the noise of real photos.)
_SIGMAS = np.linspace(0.05, 6.0, 240)
_RATIOS = np.array([2 * math.erf(2 / (s * math.sqrt(2))) / math.erf(4 / (s * math.sqrt(2)))
                    for s in _SIGMAS])  # fmt: skip
_RATIOS_UP, _SIGMAS_UP = _RATIOS[::-1].copy(), _SIGMAS[::-1].copy()


@dataclass(frozen=True)
class PhotoLook:
    """What a face region of a photo looks like.

    Attributes:
        noise: σ of its noise, in 0–255 luminance units.
        blur: σ of its blur, in pixels (0: as sharp as pixels allow).
        saturation: mean HSV saturation of the region (0 on a grey photo).
        gains: the photo's colour cast, per RGB channel (mean 1; ones when it has no
            near-neutral pixels to tell it).
        jpeg: its JPEG compression, the grid's phase in the whole image's pixels (``None``:
            none shows, or it was not measured).
    """

    noise: float
    blur: float
    saturation: float
    gains: tuple[float, float, float]
    jpeg: JpegGrid | None = None


@njit(cache=True, nogil=True, inline="always")
def _luma_at(rgb: np.ndarray, y: int, x: int) -> float:
    return 0.299 * rgb[y, x, 0] + 0.587 * rgb[y, x, 1] + 0.114 * rgb[y, x, 2]


@njit(cache=True, nogil=True)
def _measure(rgb: np.ndarray, scale: float, stride: int) -> tuple[float, float, float]:
    """Noise σ, blur σ and mean saturation of an RGB region, from every ``stride``-th pixel
    (luminance in 0–255 units: values times ``scale``)."""
    h, w = rgb.shape[:2]
    n = len(range(4, h - 4, stride)) * len(range(4, w - 4, stride))
    if n < 16:
        return 0.0, 0.0, 0.0
    response = np.empty(n)
    d1 = np.empty(n)
    d2 = np.empty(n)
    saturation = 0.0
    k = 0
    for y in range(4, h - 4, stride):
        for x in range(4, w - 4, stride):
            c = _luma_at(rgb, y, x)
            edges = _luma_at(rgb, y - 1, x) + _luma_at(rgb, y + 1, x)
            edges += _luma_at(rgb, y, x - 1) + _luma_at(rgb, y, x + 1)
            corners = _luma_at(rgb, y - 1, x - 1) + _luma_at(rgb, y - 1, x + 1)
            corners += _luma_at(rgb, y + 1, x - 1) + _luma_at(rgb, y + 1, x + 1)
            response[k] = abs(corners - 2 * edges + 4 * c) * scale
            gx1 = (_luma_at(rgb, y, x + 2) - _luma_at(rgb, y, x - 2)) * scale / 4
            gy1 = (_luma_at(rgb, y + 2, x) - _luma_at(rgb, y - 2, x)) * scale / 4
            gx2 = (_luma_at(rgb, y, x + 4) - _luma_at(rgb, y, x - 4)) * scale / 8
            gy2 = (_luma_at(rgb, y + 4, x) - _luma_at(rgb, y - 4, x)) * scale / 8
            d1[k] = gx1 * gx1 + gy1 * gy1
            d2[k] = gx2 * gx2 + gy2 * gy2
            top = max(rgb[y, x, 0], rgb[y, x, 1], rgb[y, x, 2]) * scale
            low = min(rgb[y, x, 0], rgb[y, x, 1], rgb[y, x, 2]) * scale
            saturation += (top - low) / max(top, 1.0)
            k += 1
    mid = n // 2
    noise = np.partition(response, mid)[mid] / _IMMERKAER  # the median (upper, for even n)
    saturation /= n
    top = min(n - 1, int(0.95 * n))
    threshold = np.partition(d2, top)[top]  # the 95th percentile
    e1 = 0.0
    e2 = 0.0
    m = 0
    for i in range(n):
        if d2[i] >= threshold:
            e1 += d1[i]
            e2 += d2[i]
            m += 1
    if m < 8:
        return noise, 0.0, saturation
    # Noise adds σ²/4 (spacing 2) and σ²/16 (spacing 4) to the squared differences; edges
    # that do not stand well clear of it cannot tell the blur.
    e1 = e1 / m - noise * noise / 4
    e2 = e2 / m - noise * noise / 16
    if e2 < max(1.0, noise * noise) or e1 <= 0:
        return noise, 0.0, saturation
    width = np.interp(math.sqrt(e1 / e2), _RATIOS_UP, _SIGMAS_UP)
    return noise, math.sqrt(max(width * width - EDGE_WIDTH * EDGE_WIDTH, 0.0)), saturation


@njit(cache=True, nogil=True)
def _neutral_rgb(rgb: np.ndarray, stride: int, white: float) -> np.ndarray:
    """Mean colour of the photo's near-neutral, lit pixels (saturation under
    :data:`NEUTRAL_SATURATION`, luminance above a fifth of white, not clipped): what a grey
    or white object looks like in it. Zeros when there are too few of them."""
    total = np.zeros(3)
    n = 0
    for y in range(0, rgb.shape[0], stride):
        for x in range(0, rgb.shape[1], stride):
            r, g, b = float(rgb[y, x, 0]), float(rgb[y, x, 1]), float(rgb[y, x, 2])
            top, low = max(r, g, b), min(r, g, b)
            if top <= 0.2 * white or top >= 0.98 * white or (top - low) > NEUTRAL_SATURATION * top:
                continue
            total[0] += r
            total[1] += g
            total[2] += b
            n += 1
    if n < 32:
        return np.zeros(3)
    return total / n


def _stride(h: int, w: int) -> int:
    return max(1, math.ceil(math.sqrt(h * w / SAMPLES)))


def photo_look(
    image: np.ndarray, box: tuple[int, int, int, int], max_value: float = 255.0,
    jpeg: bool = False,
) -> PhotoLook:  # fmt: skip
    """Measure the noise and blur of ``image`` inside ``box`` = (x0, y0, x1, y1), the
    colourfulness of that region and the cast of the whole image (RGB order, any dtype;
    ``max_value`` is its white); with ``jpeg``, its JPEG compression too."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    region = image[y0:y1, x0:x1, :3]
    noise, blur, saturation = _measure(region, 255.0 / max_value, _stride(y1 - y0, x1 - x0))
    neutral = _neutral_rgb(image[..., :3], _stride(h, w), float(max_value))
    gains = np.ones(3)
    if neutral.sum() > 0:
        gains = np.clip(neutral / float(neutral.mean()), *GAIN_RANGE)
    grid = _jpeg_grid(image, (x0, y0, x1, y1), max_value) if jpeg else None
    return PhotoLook(float(noise), float(blur), float(saturation),
                     (float(gains[0]), float(gains[1]), float(gains[2])), grid)  # fmt: skip


#: The side (pixels) of the central patch of a face's region the compression is read on.
JPEG_PATCH = 128


def _jpeg_grid(
    image: np.ndarray, box: tuple[int, int, int, int], max_value: float
) -> JpegGrid | None:
    """The compression a face's region shows (:func:`maskgen.jpeg.estimate_jpeg` on its
    central patch), its phase in the image's pixels."""
    x0, y0, x1, y1 = box
    cx, cy = max(x0, (x0 + x1 - JPEG_PATCH) // 2), max(y0, (y0 + y1 - JPEG_PATCH) // 2)
    patch = image[cy : min(y1, cy + JPEG_PATCH), cx : min(x1, cx + JPEG_PATCH)]
    found = estimate_jpeg(patch, max_value)
    if found is None:
        return None
    return JpegGrid(found.scale, ((found.phase[0] + cy) % 8, (found.phase[1] + cx) % 8))


def match_colours(rgb: np.ndarray, look: PhotoLook, strength: float) -> np.ndarray:
    """Colours ``(..., 3)`` (float, any white) given the photo's cast and, on a colourless
    photo, its colourlessness, at ``strength`` (0: unchanged, 1: fully): on a grey photo
    each colour keeps no more saturation than the photo's + 0.01."""
    if strength <= 0:
        return rgb
    out = np.asarray(rgb, np.float32) * (np.asarray(look.gains, np.float32) ** np.float32(strength))
    if look.saturation < COLOURLESS:
        luma = out @ _LUMA.astype(np.float32)
        top, low = out.max(-1), out.min(-1)
        saturation = (top - low) / np.maximum(top, 1e-6)
        keep = np.minimum(1.0, (look.saturation + 0.01) / np.maximum(saturation, 1e-6))
        keep = 1 - strength * (1 - keep)
        out = luma[..., None] + (out - luma[..., None]) * keep[..., None]
    return out.astype(np.float32)


#: Where a face's look is measured, in its frame (:class:`maskgen.shapes.FaceFrame` units):
#: across the face, from above the eye line to below the mouth.
REGION = ((-1.3, -0.6), (1.3, 1.6))
#: Blur and noise under these (pixels; 0–255 units) are not worth applying.
MIN_BLUR, MIN_NOISE = 0.3, 0.3
#: Coverage under which the photo's blur and noise leave a pixel alone (:func:`degrade_pixels`).
REACH_FLOOR = 1 / 255
#: The side of the standard-normal tile masks' noise is cut from (offsets vary per draw).
NOISE_TILE = 512
_NOISE: list[np.ndarray] = []


def face_region(
    origin: np.ndarray, ax: np.ndarray, unit: float, h: int, w: int
) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) :data:`REGION` spans for a face frame (eye midpoint
    ``origin``, eye-line direction ``ax``, ``unit`` pixels), clipped to an h×w image."""
    ox, oy = float(origin[0]), float(origin[1])
    cx, cy = float(ax[0]) * unit, float(ax[1]) * unit  # eye-line direction, scaled
    (u0, v0), (u1, v1) = REGION
    xs = [ox + u * cx - v * cy for u in (u0, u1) for v in (v0, v1)]
    ys = [oy + u * cy + v * cx for u in (u0, u1) for v in (v0, v1)]
    return (max(0, math.floor(min(xs))), max(0, math.floor(min(ys))),
            min(w, math.ceil(max(xs))), min(h, math.ceil(max(ys))))  # fmt: skip


def noise_tile() -> np.ndarray:
    """The fixed standard-normal field (float32, NOISE_TILE²) masks' noise is cut from."""
    return _noise_tiles()[0]


def _noise_tiles() -> tuple[np.ndarray, np.ndarray]:
    """The tile, and the tile repeated 2×2 (boxes up to NOISE_TILE cut from it as views)."""
    if not _NOISE:
        tile = np.random.default_rng(20261201).standard_normal((NOISE_TILE, NOISE_TILE))
        tile = tile.astype(np.float32)
        _NOISE.extend([tile, np.tile(tile, (2, 2))])
    return _NOISE[0], _NOISE[1]


def noise_offsets(texture_seed: int, h: int, w: int) -> tuple[int, int]:
    """Where in :func:`noise_tile` the noise of a draw's h×w box starts (rows, columns)."""
    seed = texture_seed + h * 31 + w
    return (seed * 7919) % NOISE_TILE, (seed * 104729 + 17) % NOISE_TILE


def noise_field(h: int, w: int, texture_seed: int) -> np.ndarray:
    """The noise (standard normal, h×w float32) of a draw over its box: rows and columns
    from :func:`noise_offsets` on, wrapping around the tile."""
    tile, doubled = _noise_tiles()
    oy, ox = noise_offsets(texture_seed, h, w)
    if h <= NOISE_TILE and w <= NOISE_TILE:
        return doubled[oy : oy + h, ox : ox + w]
    rows = (oy + np.arange(h)) % NOISE_TILE
    cols = (ox + np.arange(w)) % NOISE_TILE
    return tile[np.ix_(rows, cols)]


def blur_kernel_size(sigma: float) -> int:
    """The Gaussian kernel the photo's blur uses: ±3σ (odd, at least 3)."""
    return max(3, 2 * math.ceil(3 * sigma) + 1)


@njit(cache=True, nogil=True, fastmath=True)
def degrade_pixels(
    pixels: np.ndarray, blurred: np.ndarray, alpha: np.ndarray, grain: np.ndarray,
    noise: float, top: float,
) -> None:  # fmt: skip
    """Give painted pixels (h rows of 3·w interleaved values, in place) the photo's blur and
    noise over a mask: where the mask reaches (``alpha`` ≥ :data:`REACH_FLOOR`, what an
    8-bit occlusion map stores as non-zero) the pixels become ``blurred`` (same layout;
    empty: no blur), then get ``grain`` (h×w; empty: no noise) times ``noise`` × alpha
    (opacity included by the caller); integer images (``top`` > 1.5) are rounded and
    clipped to ``top``."""
    h, w = alpha.shape
    do_blur = blurred.shape[0] == h
    do_noise = grain.shape[0] == h
    integer = top > 1.5
    for y in range(h):
        for x in range(w):
            a = alpha[y, x]
            if a < REACH_FLOOR:
                continue
            n = grain[y, x] * noise * a if do_noise else 0.0
            for c in range(3):
                k = 3 * x + c
                v = np.float32(blurred[y, k]) if do_blur else np.float32(pixels[y, k])
                v += n
                if integer:
                    v = min(max(np.float32(np.rint(v)), 0.0), top)
                pixels[y, k] = v
