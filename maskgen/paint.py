"""Fused painting of one mask over its bounding box (numba).

:func:`paint_mask` does in one pass over the box what would otherwise take a dozen
OpenCV/NumPy passes and their temporaries (profiling on 112×112 crops showed call overhead and
temporaries, not arithmetic, dominating the render): for every covered pixel it samples the
periodic texture tile (bilinear, wrapped), multiplies by the face's low-frequency lighting
(bilinear from a small grid), mixes the two tones, lays the detail overlays (seams, valves,
ear loops) and blends the result into the image by the soft coverage.

The lighting grid is measured on the unpainted box first (:func:`lighting_ratio`): the mean
luminance of each cell relative to the coverage-weighted mean under the mask, clipped to
[0.5, 1.45] and raised to the shading strength.

Kernels are compiled on first use and cached on disk (``numba``'s ``cache=True``), so only
the first process pays the compilation.

Example:
    >>> import numpy as np
    >>> box = np.full((4, 6, 3), 100, np.uint8)
    >>> alpha = np.ones((4, 6), np.float32)
    >>> paint_mask(box, alpha, colours=np.array([[10, 20, 30], [0, 0, 0]], np.float32))
    >>> box[0, 0].tolist()
    [10, 20, 30]
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from maskgen.appearance import PLEATS_PER_TILE

#: Lighting factors are clipped to this range (relative to the mean under the mask).
LIGHT_RANGE = (0.5, 1.45)
_DARKEST, _BRIGHTEST = LIGHT_RANGE  # module constants are frozen into the compiled kernels
_R, _G, _B = 0.299, 0.587, 0.114  # luminance weights

_NO_TILE = np.zeros((2, 2, 1), np.float32)
_NO_OVERLAYS = np.zeros((0, 1, 1), np.uint8)
_NO_OVERLAY_COLOURS = np.zeros((0, 3), np.float32)
_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
_NO_UV = np.zeros((0, 0, 2), np.float32)
_NO_NORMALS = np.zeros((0, 0, 3), np.float32)
_NO_CREASES = np.zeros((0, 7))
_FRONTAL = np.array([0.0, 0.0, 1.0])
_DOWN = np.array([0.0, 1.0, 0.0])
#: Share of the posed fabric's light that does not depend on its orientation
#: (:mod:`maskgen.fabric`).
FABRIC_AMBIENT = 0.45
_AMBIENT = FABRIC_AMBIENT  # module constants are frozen into the compiled kernels
# Cached tiles and overlays are read-only, and numba compiles one specialisation per
# writability: the stand-ins are read-only too, so all calls share one.
_NO_TILE.setflags(write=False)
_NO_OVERLAYS.setflags(write=False)
_NO_UV.setflags(write=False)
_NO_NORMALS.setflags(write=False)
_NO_CREASES.setflags(write=False)
#: The height of a crease of steepest slope 1 and half-width 1 (:mod:`maskgen.fabric`): its
#: profile (1 − s²)² has its steepest slope 8 / (3√3) at s = 1/√3.
CREASE_HEIGHT = 3.0 * math.sqrt(3.0) / 8.0


@njit(cache=True, nogil=True)
def lighting_grid(h: int, w: int) -> tuple[int, int]:
    """(rows, columns) of the coarse grid lighting is measured on, for an h×w box.

    Example:
        >>> lighting_grid(54, 89)
        (6, 6)
    """
    return max(2, min(6, h // 6)), max(2, min(6, w // 6))


@njit(cache=True, nogil=True)
def _cell(i: int, n: int, cells: int) -> tuple[int, int]:
    """Pixel range [lo, hi) of cell ``i`` when ``n`` pixels are split into ``cells``."""
    lo = (i * n) // cells
    hi = ((i + 1) * n) // cells
    if lo >= n:
        lo = n - 1
    if hi <= lo:
        hi = lo + 1
    return lo, hi


#: Lighting models (:attr:`maskgen.render.MaskParams.lighting`): 1 = the mean luminance of
#: each grid cell (stop 10; it copies the mouth, nostrils and beard into the mask); 2 = a
#: plane fitted to the cells' luminance without their dark features (light, not features).
LIGHTING_MODELS: tuple[int, ...] = (1, 2)
#: Model 2 leaves out the pixels darker than this share of their cell's mean luminance.
FEATURE_TRIM = 0.85
#: Model 2's light grid (per side, at most): the plane sampled this finely upsamples smoothly.
PLANE_GRID = 24
#: Ridge on model 2's slopes, as a share of the total cell weight (keeps few cells stable).
_RIDGE = 1e-3


@njit(cache=True, nogil=True)
def _cell_luma(
    pixels: np.ndarray, alpha: np.ndarray, rows: int, cols: int, bgr: bool, trim: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean luminance and mean coverage of every cell (every second pixel); ``trim`` > 0:
    a second pass averages only the pixels at least ``trim`` × the cell's mean."""
    first, last = (_B, _R) if bgr else (_R, _B)  # luma weights in storage order
    h, w = alpha.shape
    luma = np.zeros((rows, cols))
    weight = np.zeros((rows, cols))
    for i in range(rows):
        y0, y1 = _cell(i, h, rows)
        for j in range(cols):
            x0, x1 = _cell(j, w, cols)
            s = 0.0
            a = 0.0
            n = 0
            for y in range(y0, y1, 2):
                for x in range(x0, x1, 2):
                    k = 3 * x
                    s += first * pixels[y, k] + _G * pixels[y, k + 1] + last * pixels[y, k + 2]
                    a += alpha[y, x]
                    n += 1
            luma[i, j] = s / n
            weight[i, j] = a / n
            if trim > 0.0:
                floor = trim * luma[i, j]
                s = 0.0
                n = 0
                for y in range(y0, y1, 2):
                    for x in range(x0, x1, 2):
                        k = 3 * x
                        v = first * pixels[y, k] + _G * pixels[y, k + 1] + last * pixels[y, k + 2]
                        if v >= floor:
                            s += v
                            n += 1
                if n > 0:
                    luma[i, j] = s / n
    return luma, weight


@njit(cache=True, nogil=True)
def _fit_plane(luma: np.ndarray, weight: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """The weighted least-squares plane a + b·x + c·y through the cells' luminance (cell
    centres at x, y in [-1, 1]), evaluated at the centres of an ``out_rows`` × ``out_cols``
    grid over the same box."""
    rows, cols = luma.shape
    m = np.zeros((3, 3))
    r = np.zeros(3)
    for i in range(rows):
        yc = (2.0 * i + 1.0) / rows - 1.0
        for j in range(cols):
            xc = (2.0 * j + 1.0) / cols - 1.0
            f = np.array([1.0, xc, yc])
            wt = weight[i, j]
            for p in range(3):
                r[p] += wt * f[p] * luma[i, j]
                for q in range(3):
                    m[p, q] += wt * f[p] * f[q]
    ridge = _RIDGE * m[0, 0]
    m[1, 1] += ridge
    m[2, 2] += ridge
    coef = np.linalg.solve(m, r)
    out = np.empty((out_rows, out_cols))
    for i in range(out_rows):
        yc = (2.0 * i + 1.0) / out_rows - 1.0
        for j in range(out_cols):
            out[i, j] = coef[0] + coef[1] * ((2.0 * j + 1.0) / out_cols - 1.0) + coef[2] * yc
    return out


@njit(cache=True, nogil=True)
def _lighting_ratio(
    pixels: np.ndarray, alpha: np.ndarray, rows: int, cols: int, strength: float, bgr: bool,
    model: int,
) -> np.ndarray:  # fmt: skip
    # Model 2 evaluates its plane on a grid fine enough that upsampling adds no kinks.
    h, w = alpha.shape
    out_rows, out_cols = (min(h, PLANE_GRID), min(w, PLANE_GRID)) if model >= 2 else (rows, cols)
    ratio = np.ones((out_rows, out_cols), np.float32)
    luma, weight = _cell_luma(pixels, alpha, rows, cols, bgr, FEATURE_TRIM if model >= 2 else 0.0)
    total = weight.sum()
    if total <= 1e-6:
        return ratio
    mean = (luma * weight).sum() / total
    if mean <= 1e-6:
        return ratio
    light = _fit_plane(luma, weight, out_rows, out_cols) if model >= 2 else luma
    for i in range(out_rows):
        for j in range(out_cols):
            r = min(max(light[i, j] / mean, _DARKEST), _BRIGHTEST)
            ratio[i, j] = r**strength
    return ratio


def lighting_ratio(
    roi: np.ndarray, alpha: np.ndarray, strength: float, model: int = LIGHTING_MODELS[-1]
) -> np.ndarray:
    """Low-frequency luminance of ``roi`` (h×w×3, any dtype) under ``alpha`` (h×w coverage),
    relative to its coverage-weighted mean, on a :func:`lighting_grid` grid: a float32
    factor around 1, clipped to :data:`LIGHT_RANGE` and raised to ``strength``. ``model``:
    one of :data:`LIGHTING_MODELS`.

    Example:
        >>> import numpy as np
        >>> roi = np.zeros((12, 12, 3), np.uint8)
        >>> roi[:, 6:] = 200
        >>> roi[:, :6] = 100
        >>> ratio = lighting_ratio(roi, np.ones((12, 12), np.float32), 1.0, model=1)
        >>> ratio.shape, [round(float(v), 3) for v in ratio[0]]
        ((2, 2), [0.667, 1.333])
    """
    if roi.ndim != 3 or roi.shape[2] < 3 or roi.shape[:2] != alpha.shape:
        raise ValueError(f"roi {roi.shape} and alpha {alpha.shape} do not match")
    rows, cols = lighting_grid(*alpha.shape)
    pixels, _, bgr = _interleaved(roi)
    return _lighting_ratio(pixels, alpha, rows, cols, float(strength), bgr, int(model))


def _interleaved(roi: np.ndarray) -> tuple[np.ndarray, bool, bool]:
    """``roi`` (h×w×≥3 RGB) as the kernels read it: h rows of 3·w interleaved channel
    values; whether that is a copy (then the caller writes it back); whether the channels
    are stored in BGR order. A view when the pixels are packed RGB, or packed BGR seen
    through a channel-reversed view (``decode_image(..., bgr_storage=True)``); else a copy."""
    h, w = roi.shape[:2]
    item = roi.itemsize
    if roi.shape[2] == 3 and roi.strides[1] == 3 * item and abs(roi.strides[2]) == item:
        # Merging the last two axes of such a view is always possible without a copy.
        bgr = roi.strides[2] < 0
        return (roi[..., ::-1] if bgr else roi).reshape(h, 3 * w), False, bgr
    return np.ascontiguousarray(roi[..., :3]).reshape(h, 3 * w), True, False


@njit(cache=True, nogil=True)
def _resize_taps(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Left index and weight of linear upsampling from ``cells`` to ``n`` samples, with
    pixel centres aligned as ``cv2.resize(..., INTER_LINEAR)`` aligns them."""
    lo = np.empty(n, np.int64)
    frac = np.empty(n, np.float32)
    scale = cells / n
    for i in range(n):
        s = (i + 0.5) * scale - 0.5
        k = math.floor(s)
        f = s - k
        if k < 0:
            k, f = 0, 0.0
        if k >= cells - 1:
            k, f = cells - 1, 0.0
        lo[i] = k
        frac[i] = f
    return lo, frac


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _sample_at(tile: np.ndarray, u: float, v: float, j: int, shade: np.ndarray,
               mix: np.ndarray) -> None:  # fmt: skip
    """The bilinear sample of the tile at (u, v) into ``shade[j]`` (its last channel) and, for
    two-channel tiles, ``mix[j]`` (channel 0).

    Coordinates are positive, so truncation floors them; the tile is TILE+1 texels wide
    (one wrapped texel appended), so the integer part wraps with a bit mask. The texel
    indices are unsigned: numba then skips its negative-index wrap-around checks.
    """
    wrap = np.uint64(tile.shape[0] - 2)
    one = np.uint64(1)
    last = tile.shape[2] - 1
    iu = np.int64(u)
    iv = np.int64(v)
    tu = np.float32(u - iu)
    tv = np.float32(v - iv)
    cu = np.uint64(iu) & wrap
    cv = np.uint64(iv) & wrap
    s00 = tile[cv, cu, last]
    s01 = tile[cv, cu + one, last]
    s10 = tile[cv + one, cu, last]
    s11 = tile[cv + one, cu + one, last]
    upper = s00 + tu * (s01 - s00)
    shade[j] = upper + tv * (s10 + tu * (s11 - s10) - upper)
    if last == 1:
        s00 = tile[cv, cu, 0]
        s01 = tile[cv, cu + one, 0]
        s10 = tile[cv + one, cu, 0]
        s11 = tile[cv + one, cu + one, 0]
        upper = s00 + tu * (s01 - s00)
        mix[j] = upper + tv * (s10 + tu * (s11 - s10) - upper)


@njit(cache=True, nogil=True, fastmath=True)
def _sample_row(
    tile: np.ndarray, u0: float, du: float, v0: float, dv: float, shade: np.ndarray,
    mix: np.ndarray,
) -> None:  # fmt: skip
    """Bilinear samples of the tile along a row span: its j-th pixel samples
    (u0 + j·du, v0 + j·dv) (:func:`_sample_at`)."""
    for j in range(shade.shape[0]):
        # Coordinates in float64: with the positive shift, float32 would keep too few bits.
        _sample_at(tile, u0 + j * du, v0 + j * dv, j, shade, mix)


@njit(cache=True, nogil=True, fastmath=True)
def _sample_points(
    tile: np.ndarray, uv: np.ndarray, m: np.ndarray, shift: float, shade: np.ndarray,
    mix: np.ndarray,
) -> None:  # fmt: skip
    """Bilinear samples at per-pixel surface coordinates ``uv`` (n, 2): pixel j samples the
    tile at (m0·u + m1·v + m2, m3·u + m4·v + m5) (:func:`_sample_at`)."""
    for j in range(shade.shape[0]):
        a, b = uv[j, 0], uv[j, 1]
        _sample_at(tile, m[0] * a + m[1] * b + m[2] + shift, m[3] * a + m[4] * b + m[5] + shift,
                   j, shade, mix)  # fmt: skip


@njit(cache=True, nogil=True)
def _fabric_mean(alpha: np.ndarray, normals: np.ndarray, lx: float, ly: float, lz: float) -> float:
    """Coverage-weighted mean of ambient + Lambert over the box (the relief's normaliser)."""
    h, w = alpha.shape
    s = 0.0
    a = 0.0
    for y in range(h):
        for x in range(w):
            c = alpha[y, x]
            if c > 0.0:
                d = normals[y, x, 0] * lx + normals[y, x, 1] * ly + normals[y, x, 2] * lz
                s += c * (_AMBIENT + (1.0 - _AMBIENT) * max(d, 0.0))
                a += c
    return s / a if a > 0.0 else 1.0


@njit(cache=True, nogil=True)
def _darken_kernel(pixels: np.ndarray, band: np.ndarray, depth: float, top: float) -> None:
    """pixels (h, 3w) *= 1 − depth·band where the band is positive."""
    h, w = band.shape
    rounding = 0.5 if top > 1.5 else 0.0
    for y in range(h):
        for x in range(w):
            b = band[y, x]
            if b > 0.0:
                f = 1.0 - depth * b
                for c in range(3):
                    v = pixels[y, 3 * x + c] * f
                    pixels[y, 3 * x + c] = v + rounding if rounding > 0.0 else v


def darken(roi: np.ndarray, band: np.ndarray, depth: float, max_value: float = 255.0) -> None:
    """Multiply ``roi`` (h×w×≥3, any dtype) by ``1 − depth·band`` in place (a contact shadow).

    Example:
        >>> import numpy as np
        >>> roi = np.full((1, 2, 3), 200, np.uint8)
        >>> darken(roi, np.array([[0.0, 1.0]], np.float32), 0.5)
        >>> roi[0, :, 0].tolist()
        [200, 100]
    """
    pixels, copied, _ = _interleaved(roi)
    _darken_kernel(pixels, np.ascontiguousarray(band, np.float32), float(depth), float(max_value))
    if copied:
        roi[..., :3] = pixels.reshape(roi.shape[0], roi.shape[1], 3)


@njit(cache=True, nogil=True, fastmath=True)
def _blend_row(
    row: np.ndarray, colour: np.ndarray, cover: np.ndarray, top: float, rounding: float
) -> None:
    """row += cover·(clip(colour) − row), element by element: contiguous float32 operands
    indexed from 0, so the compiler vectorises it."""
    zero = np.float32(0.0)
    ceiling = np.float32(top)
    half = np.float32(rounding)
    for i in range(row.shape[0]):
        c = min(max(colour[i], zero), ceiling)
        b = np.float32(row[i])
        row[i] = b + cover[i] * (c - b) + half


@njit(cache=True, nogil=True)
def _crease_terms(lines: np.ndarray, depth: float) -> np.ndarray:
    """Per-pixel coefficients of the used ``lines`` (:func:`maskgen.fabric.crease_lines`),
    scaled by ``depth``: ``(k, 14)`` float32 centre u, v; along and across per unit of
    u and v (over the half-length and half-width); the slope across and along for a unit
    profile; the direction's cos and sin; the support's bounds u0, u1, v0, v1."""
    k = 0
    for i in range(lines.shape[0]):
        if lines[i, 6] != 0.0 and lines[i, 4] > 0.0 and lines[i, 5] > 0.0:
            k += 1
    terms = np.empty((k, 14), np.float32)
    k = 0
    for i in range(lines.shape[0]):
        cu, cv, c, s, half, width, tilt = lines[i]
        if not (tilt != 0.0 and half > 0.0 and width > 0.0):
            continue
        height = depth * tilt * CREASE_HEIGHT * width
        reach_u = abs(c) * half + abs(s) * width
        reach_v = abs(s) * half + abs(c) * width
        terms[k] = (cu, cv, c / half, s / half, -s / width, c / width, -4.0 * height / width,
                    -4.0 * height / half, c, s, cu - reach_u, cu + reach_u, cv - reach_v,
                    cv + reach_v)  # fmt: skip
        k += 1
    return terms


#: The creases' slopes are summed over chunks of this many pixels of a row, each crease
#: only over the chunks whose surface coordinates its support reaches.
_CREASE_CHUNK = 16


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _crease_row(
    uv: np.ndarray, nrow: np.ndarray, terms: np.ndarray, light: np.ndarray, pleats: np.ndarray,
    buffers: tuple[np.ndarray, ...], lambert: np.ndarray, chunks: np.ndarray,
) -> bool:  # fmt: skip
    """The creased fabric's Lambert cosine along a row span (surface coordinates ``uv`` and
    normals ``nrow``, (n, 3)), in chunks of :data:`_CREASE_CHUNK` pixels: for each chunk
    some crease's support reaches (``chunks[i]``; the others are left unset), the creases'
    slope (∂h/∂u, ∂h/∂v) as :func:`maskgen.fabric.crease_slopes` makes it bends the normal
    n to n + (p − ∂h/∂v)·t_v − ∂h/∂u·t_u, p the pleats' tilt, t_v the unit tangent down the
    face (the face's downward axis without its normal part), t_u = t_v × n across it; the
    cosine with the light, clamped at 0, goes into ``lambert``. Whether any chunk is creased.

    ``light`` (9,) float32: the light L, the downward axis D and L × D; ``pleats`` (4,):
    the pleats' tilt and the coefficients of their phase on u, v and 1 (tilt 0: none);
    ``buffers``: eight float32 scratch arrays of :data:`_CREASE_CHUNK`. Each chunk's work runs over
    contiguous float32 buffers indexed from 0: the compiler vectorises it."""
    n = lambert.shape[0]
    zero, one, two = np.float32(0.0), np.float32(1.0), np.float32(2.0)
    tiny = np.float32(1e-6)
    lx, ly, lz, dx, dy, dz = light[0], light[1], light[2], light[3], light[4], light[5]
    qx, qy, qz = light[6], light[7], light[8]
    dl = dx * lx + dy * ly + dz * lz
    ub, vb, gu, gv, n0, n1, n2, tilt = buffers
    touched = False
    for i in range((n + _CREASE_CHUNK - 1) // _CREASE_CHUNK):
        c0 = i * _CREASE_CHUNK
        m = min(_CREASE_CHUNK, n - c0)
        u0 = u1 = uv[c0, 0]
        v0 = v1 = uv[c0, 1]
        for j in range(_CREASE_CHUNK):  # a constant count: the loops below vectorise whole
            r = c0 + min(j, m - 1)  # a short chunk repeats its last pixel
            a, b = uv[r, 0], uv[r, 1]
            ub[j] = a
            vb[j] = b
            u0 = a if a < u0 else u0
            u1 = a if a > u1 else u1
            v0 = b if b < v0 else v0
            v1 = b if b > v1 else v1
        chunks[i] = False
        mu, mv = np.float32(0.5) * (u0 + u1), np.float32(0.5) * (v0 + v1)
        hu, hv = np.float32(0.5) * (u1 - u0), np.float32(0.5) * (v1 - v0)
        for k in range(terms.shape[0]):
            # Separating axes: the chunk's box of coordinates and the crease's support.
            if terms[k, 10] >= u1 or terms[k, 11] <= u0 or terms[k, 12] >= v1 or terms[k, 13] <= v0:
                continue
            au, av, bu, bv = terms[k, 2], terms[k, 3], terms[k, 4], terms[k, 5]
            x, y = mu - terms[k, 0], mv - terms[k, 1]
            if abs(x * au + y * av) >= one + abs(au) * hu + abs(av) * hv:
                continue
            if abs(x * bu + y * bv) >= one + abs(bu) * hu + abs(bv) * hv:
                continue
            if not chunks[i]:
                chunks[i] = True
                for j in range(_CREASE_CHUNK):
                    gu[j] = zero
                    gv[j] = zero
            cu, cv, ka, kl = terms[k, 0], terms[k, 1], terms[k, 6], terms[k, 7]
            c, s = terms[k, 8], terms[k, 9]
            for j in range(_CREASE_CHUNK):
                x = ub[j] - cu
                y = vb[j] - cv
                t = x * au + y * av
                q = x * bu + y * bv
                a = one - q * q
                a = a if a > zero else zero
                b = one - t * t
                b = b if b > zero else zero
                across = ka * q * a * b * b
                along = kl * t * b * a * a
                gu[j] += along * c - across * s
                gv[j] += along * s + across * c
        if not chunks[i]:
            continue
        touched = True
        for j in range(_CREASE_CHUNK):
            r = c0 + min(j, m - 1)
            n0[j] = nrow[r, 0]
            n1[j] = nrow[r, 1]
            n2[j] = nrow[r, 2]
            tilt[j] = zero
        if pleats[0] != 0.0:
            for j in range(m):
                phase = pleats[1] * ub[j] + pleats[2] * vb[j] + pleats[3]
                tilt[j] = pleats[0] * math.cos(2.0 * math.pi * phase)
        for j in range(_CREASE_CHUNK):
            a, b, c = n0[j], n1[j], n2[j]
            d = a * lx + b * ly + c * lz
            dn = a * dx + b * dy + c * dz
            nn = a * a + b * b + c * c
            # |D − (D·n) n|² for a unit D; (D − (D·n) n)·L; ((D − (D·n) n) × n)·L = n·(L × D).
            # x ** −0.5 rather than 1 / sqrt(x): numba's float32 sqrt keeps the loop scalar.
            tangent = one - dn * dn * (two - nn)
            inv = (tangent if tangent > tiny else tiny) ** np.float32(-0.5)
            lit_v = (dl - dn * d) * inv
            lit_u = (a * qx + b * qy + c * qz) * inv
            bend = tilt[j] - gv[j]
            g = gu[j]
            bent = (d + bend * lit_v - g * lit_u) * (one + bend * bend + g * g) ** np.float32(-0.5)
            n0[j] = bent if bent > zero else zero
        for j in range(m):
            lambert[c0 + j] = n0[j]
    return touched


@njit(cache=True, nogil=True, fastmath=True)
def _paint(
    pixels: np.ndarray,
    alpha: np.ndarray,
    opacity: float,
    tile: np.ndarray,
    m: np.ndarray,
    colours: np.ndarray,
    overlays: np.ndarray,
    overlay_colours: np.ndarray,
    top: float,
    shading: float,
    bgr: bool,
    lighting: int,
    surface_uv: np.ndarray,
    normals: np.ndarray,
    light_dir: np.ndarray,
    fabric: float,
    relief: float,
    down: np.ndarray,
    creases: float,
    crease_lines: np.ndarray,
) -> None:
    # Row by row, over the row's covered span: shade and mix into span buffers, the colour
    # and the coverage into interleaved span buffers, then one blend into the row. float32
    # throughout, and every inner loop runs over views indexed from 0: numba then drops its
    # negative-index checks and the compiler vectorises (a per-pixel blend indexed from
    # the span start ran 2.5 times slower; a fused per-pixel loop in float64, twice).
    h, w = alpha.shape
    textured = tile.shape[0] > 2
    on_surface = surface_uv.shape[0] > 0
    embossed = normals.shape[0] > 0 and fabric > 0.0
    lit = shading > 0.0
    lx_, ly_, lz_ = light_dir[0], light_dir[1], light_dir[2]
    relief_scale = 1.0
    if embossed:  # the fabric's shading, normalised to a mean of 1 under the mask
        relief_scale = 1.0 / max(_fabric_mean(alpha, normals, lx_, ly_, lz_), 1e-6)
    strength = np.float32(fabric)
    # Pleats as relief: their folds tilt the normal along the surface's downward tangent.
    folded = embossed and on_surface and textured and relief > 0.0
    dx_, dy_, dz_ = down[0], down[1], down[2]
    folds = PLEATS_PER_TILE / (tile.shape[0] - 1)
    # Cloth creases: a height field in surface coordinates whose slope tilts the normal.
    terms = _crease_terms(crease_lines, creases)
    creased = embossed and on_surface and creases > 0.0 and terms.shape[0] > 0
    touched = False
    span = w if creased else 0
    crease_lambert = np.zeros(span, np.float32)
    chunks = np.zeros(span // _CREASE_CHUNK + 1, np.bool_)
    scratch = np.empty((8, _CREASE_CHUNK), np.float32)
    buffers = (scratch[0], scratch[1], scratch[2], scratch[3], scratch[4], scratch[5],
               scratch[6], scratch[7])  # fmt: skip
    crease_light = np.empty(9, np.float32)  # L, D and L × D
    crease_light[:3] = light_dir
    crease_light[3:6] = down
    crease_light[6] = light_dir[1] * down[2] - light_dir[2] * down[1]
    crease_light[7] = light_dir[2] * down[0] - light_dir[0] * down[2]
    crease_light[8] = light_dir[0] * down[1] - light_dir[1] * down[0]
    pleats = np.zeros(4)
    if folded:
        pleats[0] = relief
        pleats[1:] = folds * m[3:6]
    if lit:  # measured on the face before any of it is painted
        grid_rows, grid_cols = lighting_grid(h, w)
        light = _lighting_ratio(pixels, alpha, grid_rows, grid_cols, shading, bgr, lighting)
    else:
        light = np.ones((1, 1), np.float32)
    n_over = overlays.shape[0]
    zero = np.float32(0.0)
    rounding = 0.5 if top > 1.5 else 0.0  # integer images round to nearest
    opacity32 = np.float32(opacity)
    rows, cols = light.shape
    ly, fy = _resize_taps(h, rows)
    lx, fx = _resize_taps(w, cols)
    lx1 = np.minimum(lx + 1, cols - 1)
    light_row = np.ones(cols, np.float32)
    shade_buf = np.ones(w, np.float32)
    mix_buf = np.zeros(w, np.float32)
    colour_buf = np.empty(3 * w, np.float32)
    cover_buf = np.empty(3 * w, np.float32)
    # Tile coordinates are made positive before truncation, so int() floors them: the
    # offset is a multiple of the tile size, larger than any coordinate of a sane box.
    shift = float(1 << 30)
    first, last = (2, 0) if bgr else (0, 2)  # colour channels in storage order
    p0, p1, p2 = colours[0, first], colours[0, 1], colours[0, last]
    d0, d1, d2 = colours[1, first] - p0, colours[1, 1] - p1, colours[1, last] - p2
    inv255 = np.float32(1.0 / 255.0)
    for y in range(h):
        start, stop = 0, w
        while start < stop and alpha[y, start] <= zero:
            start += 1
        while stop > start and alpha[y, stop - 1] <= zero:
            stop -= 1
        n = stop - start
        if n == 0:
            continue
        shade, mix = shade_buf[:n], mix_buf[:n]
        colour, cover = colour_buf[: 3 * n], cover_buf[: 3 * n]
        cover_row = alpha[y, start:stop]
        if textured and on_surface:
            _sample_points(tile, surface_uv[y, start:stop], m, shift, shade, mix)
        elif textured:
            u0 = m[0] * start + m[1] * y + m[2] + shift
            v0 = m[3] * start + m[4] * y + m[5] + shift
            _sample_row(tile, u0, m[0], v0, m[3], shade, mix)
        if creased:
            touched = _crease_row(surface_uv[y, start:stop], normals[y, start:stop], terms,
                                  crease_light, pleats, buffers, crease_lambert[:n],
                                  chunks)  # fmt: skip
        if embossed:
            nrow = normals[y, start:stop]
            for j in range(n):
                n0, n1, n2 = nrow[j, 0], nrow[j, 1], nrow[j, 2]
                d = n0 * lx_ + n1 * ly_ + n2 * lz_
                if touched and chunks[j // _CREASE_CHUNK]:
                    d = crease_lambert[j]
                elif folded:
                    dn = dx_ * n0 + dy_ * n1 + dz_ * n2
                    t0, t1, t2 = dx_ - dn * n0, dy_ - dn * n1, dz_ - dn * n2
                    tl = math.sqrt(t0 * t0 + t1 * t1 + t2 * t2)
                    if tl > 1e-6:
                        a, b = surface_uv[y, start + j, 0], surface_uv[y, start + j, 1]
                        phase = folds * (m[3] * a + m[4] * b + m[5])
                        c = relief * math.cos(2.0 * math.pi * phase)
                        d = (d + c * (t0 * lx_ + t1 * ly_ + t2 * lz_) / tl) / math.sqrt(1 + c * c)
                lambert = (_AMBIENT + (1.0 - _AMBIENT) * max(d, 0.0)) * relief_scale
                bump = np.float32(1.0) + strength * (np.float32(lambert) - np.float32(1.0))
                shade[j] = shade[j] * bump if textured else bump
        if lit:
            r0 = ly[y]
            r1 = min(r0 + 1, rows - 1)
            for j in range(cols):
                light_row[j] = light[r0, j] + fy[y] * (light[r1, j] - light[r0, j])
            left, right, frac = lx[start:stop], lx1[start:stop], fx[start:stop]
            for j in range(n):
                lit_j = light_row[left[j]] + frac[j] * (light_row[right[j]] - light_row[left[j]])
                shade[j] = shade[j] * lit_j if textured or embossed else lit_j
        for j in range(n):
            s = shade[j]
            t = mix[j]
            colour[3 * j] = s * (p0 + t * d0)
            colour[3 * j + 1] = s * (p1 + t * d1)
            colour[3 * j + 2] = s * (p2 + t * d2)
            a = cover_row[j] * opacity32
            cover[3 * j] = a
            cover[3 * j + 1] = a
            cover[3 * j + 2] = a
        for o in range(n_over):
            q0, q1 = overlay_colours[o, first], overlay_colours[o, 1]
            q2 = overlay_colours[o, last]
            detail = overlays[o, y, start:stop]
            for j in range(n):
                c = np.float32(detail[j]) * inv255
                colour[3 * j] += c * (q0 - colour[3 * j])
                colour[3 * j + 1] += c * (q1 - colour[3 * j + 1])
                colour[3 * j + 2] += c * (q2 - colour[3 * j + 2])
        _blend_row(pixels[y, 3 * start : 3 * stop], colour, cover, top, rounding)


def paint_mask(
    roi: np.ndarray,
    alpha: np.ndarray,
    *,
    colours: np.ndarray,
    opacity: float = 1.0,
    tile: np.ndarray | None = None,
    tile_map: np.ndarray | tuple[float, ...] | None = None,
    shading: float = 0.0,
    overlays: np.ndarray | None = None,
    overlay_colours: np.ndarray | None = None,
    max_value: float = 255.0,
    lighting: int = LIGHTING_MODELS[-1],
    surface_uv: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    light: np.ndarray | None = None,
    fabric: float = 0.0,
    relief: float = 0.0,
    down: np.ndarray | None = None,
    creases: float = 0.0,
    crease_lines: np.ndarray | None = None,
) -> None:
    """Paint a mask into ``roi`` in place.

    Args:
        roi: h×w×3 RGB image region, any integer or float dtype: a view into the image is
            fine, a channel-reversed view of BGR pixels too.
        alpha: h×w float32 soft coverage in [0, 1]; pixels at 0 keep their value.
        colours: (2, 3) float32 primary and secondary colour in ``[0, max_value]``.
        opacity: multiplies ``alpha``.
        tile: a periodic TILE×TILE tile padded by one wrapped texel on the right and at the
            bottom, (TILE+1, TILE+1, C) float32; C = 1: shade only; C = 2: (mix, shade), mix
            0 → primary, 1 → secondary. ``None``: untextured.
        tile_map: six floats (a, b, c, d, e, f): box pixel (x, y) samples the tile at
            (a·x + b·y + c, d·x + e·y + f), wrapped.
        shading: strength of the face's lighting on the mask (0 = flat): the colour is
            multiplied by :func:`lighting_ratio` of the unpainted ``roi``, upsampled linearly.
        overlays: (k, h, w) uint8 coverages of flat-coloured details laid over the mask in
            order (seams, valves, ear loops), with ``overlay_colours`` (k, 3) float32.
        max_value: the image's white (255 for uint8, 65535 for uint16, 1 for float).
        lighting: the lighting model (:data:`LIGHTING_MODELS`).
        surface_uv: (h, w, 2) float32 surface coordinates of every pixel (a posed
            surface's, :func:`maskgen.fabric.surface_maps`): ``tile_map`` then maps them,
            not the pixel positions, to the tile. ``None``: the tile lies in the image plane.
        normals: (h, w, 3) float32 camera-frame surface normals; with ``light`` (3,) and
            ``fabric`` > 0 the shade gets the fabric's own shading: ambient plus Lambert,
            over its coverage-weighted mean, mixed with 1 by ``fabric``
            (:mod:`maskgen.fabric`).
        relief: with a textured posed surface, the tilt its folds give the normal (pleats:
            :data:`maskgen.appearance.TEXTURE_RELIEF`), along ``down`` (3,), the face's
            downward axis in the camera frame, with the tile's period.
        creases: with ``surface_uv`` and the fabric's shading, the depth of the cloth's
            creases ``crease_lines`` (:func:`maskgen.fabric.crease_lines`): their height
            field's slope (:func:`maskgen.fabric.crease_slopes`, × ``creases``) tilts the
            normal across and down the face (with the pleats' tilt, if any).
    """
    if roi.ndim != 3 or roi.shape[2] < 3 or roi.shape[:2] != alpha.shape:
        raise ValueError(f"roi {roi.shape} and alpha {alpha.shape} do not match")
    if tile is not None and tile.ndim == 2:
        tile = tile[..., None]
    if overlays is None or not len(overlays):
        overlays, overlay_colours = _NO_OVERLAYS, _NO_OVERLAY_COLOURS
    pixels, copied, bgr = _interleaved(roi)
    _paint(
        pixels,
        alpha,
        float(opacity),
        _NO_TILE if tile is None else tile,
        _IDENTITY if tile_map is None else np.asarray(tile_map, np.float64),
        colours,
        overlays,
        overlay_colours,
        float(max_value),
        float(shading),
        bgr,
        int(lighting),
        _NO_UV if surface_uv is None else surface_uv,
        _NO_NORMALS if normals is None else normals,
        _FRONTAL if light is None else np.asarray(light, np.float64),
        float(fabric),
        float(relief),
        _DOWN if down is None else np.asarray(down, np.float64),
        float(creases),
        _NO_CREASES if crease_lines is None else np.asarray(crease_lines, np.float64),
    )
    if copied:
        roi[..., :3] = pixels.reshape(roi.shape[0], roi.shape[1], 3)
