"""The posed fabric's appearance: surface maps, the face's light direction, Lambert shading,
surface-following texture coordinates and the contact shadow on the skin.

A version-3 outline (:mod:`maskgen.surface`) carries a surface mesh: camera-frame normals
and surface coordinates (3D arc lengths) on a grid. :func:`surface_maps` rasterises them
over a mask's box; from them

- :func:`surface_tile_map` lays the texture tile in surface coordinates, so checks and
  pleats bend round the cheeks and are foreshortened on the far side of a turned face;
- the painting kernel (:func:`maskgen.paint.paint_mask`: ``normals``, ``light``, ``fabric``)
  shades the fabric: ambient (:data:`AMBIENT`) plus Lambert light from a direction estimated
  from the face (:func:`light_direction`), normalised to a mean of 1 under the mask, so the
  face's own lighting still sets its brightness and this adds the curvature: the fabric
  darkens as it turns away from the light and towards the silhouette;
- :func:`crease_lines` lays a draw's cloth creases on the fabric (tension folds fanning from
  the side corners where the ear loops pull, slack folds across the lower part), as soft
  ridges of a height field in surface coordinates whose slopes (:func:`crease_slopes`) tilt
  the normal the kernel shades (``creases``, ``crease_lines``).

:func:`contact_shadow` is a soft dark band on the skin just outside the mask's edge and ear
loops (the fabric standing off the skin), for every geometry version.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import aligned_landmarks
    >>> from maskgen.shapes import mask_outline
    >>> outline = mask_outline(aligned_landmarks(), "surgical", "high", geometry=3)
    >>> maps = surface_maps(outline.surface(), (10, 30, 100, 110))
    >>> maps.shape, bool(maps[40, 46, 4] > 0.5)  # (h, w, arc u, arc v, nx, ny, nz)
    ((80, 90, 5), True)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
from numba import njit

from maskgen.appearance import TILE
from maskgen.mesh import grid_triangles
from maskgen.paint import CREASE_HEIGHT, FABRIC_AMBIENT, _interleaved
from maskgen.surface import SurfaceMesh

__all__ = [
    "LightBasis",
    "contact_shadow",
    "crease_lines",
    "crease_slopes",
    "light_basis",
    "light_direction",
    "shadow_reach",
    "surface_maps",
    "surface_tile_map",
]

#: Share of the fabric's light that does not depend on its orientation.
AMBIENT = FABRIC_AMBIENT
#: Light directions lean at most this far from the line of sight (degrees).
MAX_LIGHT_TILT = 60.0
#: Contact shadow: its width (Gaussian sigma, face units) and its depth at full strength.
SHADOW_SIGMA = 0.04
SHADOW_DEPTH = 0.35
_SPAN_TOLERANCE = 1e-4  # barycentric weight; the exact test's is 1e-6
#: Cloth creases (:func:`crease_lines`): at most this many per mask (rows of the lines array:
#: two tension folds from each side corner, two slack folds across the lower part) ...
MAX_CREASES = 6
#: ... each a row of centre u, v, direction cos, sin, half-length, half-width (face units)
#: and steepest slope (signed: + a ridge, − a valley; 0: an unused row) ...
CREASE_FIELDS = 7
#: ... which is at most this at ``creases`` = 1 (tan of the tilt it gives the normal).
CREASE_TILT = 0.7
_CREASE_STREAM = 0x0C7EA5E5  # the creases' random stream, apart from the texture tile's


@njit(cache=True, nogil=True, inline="always")
def _row_span(px_lo: int, px_hi: int, py: float, ax: float, ay: float, bx: float, by: float,
              cx: float, cy: float, det: float) -> tuple[int, int]:  # fmt: skip
    """The columns of row ``py`` (pixel centre) that can lie in a triangle: its barycentric
    weights are affine in the pixel centre's x, so each bounds the row on one side. Solved
    for a looser tolerance than :func:`_rasterise`'s exact test, which decides on the few
    pixels the span gives (those it tests are all it would have accepted of its box)."""
    lo, hi = float(px_lo), float(px_hi)
    # (slope, value at x = 0) of wb and wc along the row; wa = 1 − wb − wc.
    sb = (cy - ay) / det
    tb = (-ax * (cy - ay) - (cx - ax) * (py - ay)) / det
    sc = -(by - ay) / det
    tc = ((bx - ax) * (py - ay) + ax * (by - ay)) / det
    for slope, value in ((sb, tb), (sc, tc), (-sb - sc, 1.0 - tb - tc)):
        if slope > 1e-9:
            lo = max(lo, (-_SPAN_TOLERANCE - value) / slope - 0.5 - 1e-6)
        elif slope < -1e-9:
            hi = min(hi, (-_SPAN_TOLERANCE - value) / slope - 0.5 + 1e-6)
        elif value < -_SPAN_TOLERANCE:
            return 0, -1
    return max(px_lo, math.ceil(lo)), min(px_hi, math.floor(hi))


@njit(cache=True, nogil=True)
def _rasterise(vertices: np.ndarray, triangles: np.ndarray, values: np.ndarray,
               out: np.ndarray, owner: np.ndarray, facing: float) -> None:  # fmt: skip
    """Barycentric interpolation of per-vertex ``values`` over the pixels (centres at +0.5) of
    every triangle wound like ``facing`` (the sign of the mesh's area: the others are folded
    behind the silhouette, facing away), the first triangle to cover a pixel keeping it."""
    h, w = owner.shape
    k = values.shape[1]
    for t in range(triangles.shape[0]):
        a, b, c = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        ax, ay = vertices[a, 0], vertices[a, 1]
        bx, by = vertices[b, 0], vertices[b, 1]
        cx, cy = vertices[c, 0], vertices[c, 1]
        det = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
        if abs(det) < 1e-9 or det * facing < 0:
            continue
        x0 = max(math.floor(min(ax, bx, cx) - 0.5), 0)
        x1 = min(math.ceil(max(ax, bx, cx) - 0.5), w - 1)
        y0 = max(math.floor(min(ay, by, cy) - 0.5), 0)
        y1 = min(math.ceil(max(ay, by, cy) - 0.5), h - 1)
        for y in range(y0, y1 + 1):
            py = y + 0.5
            lo, hi = _row_span(px_lo=x0, px_hi=x1, py=py, ax=ax, ay=ay, bx=bx, by=by, cx=cx,
                               cy=cy, det=det)  # fmt: skip
            for x in range(lo, hi + 1):
                if owner[y, x]:
                    continue
                px = x + 0.5
                wb = ((px - ax) * (cy - ay) - (cx - ax) * (py - ay)) / det
                wc = ((bx - ax) * (py - ay) - (px - ax) * (by - ay)) / det
                wa = 1.0 - wb - wc
                if wa < -1e-6 or wb < -1e-6 or wc < -1e-6:
                    continue
                owner[y, x] = True
                for q in range(k):
                    out[y, x, q] = wa * values[a, q] + wb * values[b, q] + wc * values[c, q]


@njit(cache=True, nogil=True)
def _extend(out: np.ndarray, owner: np.ndarray) -> None:
    """Give uncovered pixels (the soft edge's fringe) their row's nearest covered value, and
    rows without any the nearest covered row's."""
    h, w = owner.shape
    filled = np.zeros(h, np.bool_)
    for y in range(h):
        last = -1
        for x in range(w):
            if owner[y, x]:
                if last < 0:
                    for z in range(x):
                        out[y, z] = out[y, x]
                last = x
            elif last >= 0:
                out[y, x] = out[y, last]
        filled[y] = last >= 0
    for y in range(h):
        if filled[y]:
            continue
        best = -1
        for d in range(1, h):
            if y - d >= 0 and filled[y - d]:
                best = y - d
                break
            if y + d < h and filled[y + d]:
                best = y + d
                break
        if best >= 0:
            out[y] = out[best]


def surface_maps(surface: SurfaceMesh, box: tuple[int, int, int, int]) -> np.ndarray:
    """The surface over ``box`` = (x0, y0, x1, y1): ``(h, w, 5)`` float32 arc u, arc v and
    the normal's x, y, z at every pixel (pixels beyond the mesh take the nearest value)."""
    x0, y0, x1, y1 = box
    c, r = surface.vertices.shape[:2]
    vertices = surface.vertices.reshape(-1, 2).astype(np.float64) - np.array([x0, y0], float)
    values = np.empty((c * r, 5))
    values[:, :2] = surface.arc.reshape(-1, 2)
    values[:, 2:] = surface.normals.reshape(-1, 3)
    out = np.zeros((y1 - y0, x1 - x0, 5), np.float32)
    owner = np.zeros((y1 - y0, x1 - x0), np.bool_)
    tris = grid_triangles(c, r - 1)
    _rasterise(vertices, tris, values, out, owner, _winding(vertices, tris))
    _extend(out, owner)
    return out


@njit(cache=True, nogil=True)
def _winding(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """The sign of a mesh's total (doubled) triangle area: how its front-facing triangles
    wind on screen."""
    area = np.empty(triangles.shape[0])
    for t in range(triangles.shape[0]):
        a, b, d = triangles[t, 0], triangles[t, 1], triangles[t, 2]
        area[t] = (vertices[b, 0] - vertices[a, 0]) * (vertices[d, 1] - vertices[a, 1]) - (
            vertices[d, 0] - vertices[a, 0]) * (vertices[b, 1] - vertices[a, 1])  # fmt: skip
    return float(np.sign(_pairwise_sum(area)))


def surface_tile_map(
    scale_px: float, period_px: float, angle_deg: float
) -> tuple[float, float, float, float, float, float]:
    """Where surface coordinates (a, b) sample the texture tile: (m0·a + m1·b + m2,
    m3·a + m4·b + m5), the tile laid one period every ``period_px`` pixels of surface (arc
    lengths × ``scale_px``, pixels per arc unit) and turned by ``angle_deg`` relative to the
    face's axes, as :func:`maskgen.appearance.tile_map` lays it in the image plane.

    Example:
        >>> surface_tile_map(40.0, 40.0, 0.0)[:2]
        (64.0, 0.0)
    """
    k = TILE / max(period_px, 1e-3) * scale_px
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    return (c * k, s * k, 0.0, -s * k, c * k, 0.0)


class LightBasis(NamedTuple):
    """What :func:`light_direction` needs of a coverage map, made once per geometry: the
    covered pixels' (``alpha`` > 0.5) mean column and row, the half-width that scales their
    centred coordinates, and the inverse of those coordinates' 2×2 moment matrix."""

    mean_x: float
    mean_y: float
    half: float
    inverse: tuple[float, float, float, float]

    @property
    def nbytes(self) -> int:
        return 64


@njit(cache=True, nogil=True, inline="always")
def _block_sum(a: np.ndarray, start: int, n: int) -> float:
    """NumPy's sum of at most 128 values: sequential under 8, else 8 running sums."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += a[i]
        return total
    r = a[start : start + 8].copy()
    i = 8
    while i < n - n % 8:
        for k in range(8):
            r[k] += a[start + i + k]
        i += 8
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for j in range(start + i, start + n):
        total += a[j]
    return total


@njit(cache=True, nogil=True)
def _pairwise_sum(a: np.ndarray) -> float:
    """``a.sum()`` in NumPy's order (halves split at multiples of 8 down to blocks of 128,
    :func:`_block_sum`), so that a compiled kernel's sums equal NumPy's to the bit. Without
    recursion (cached recursive kernels crash numba)."""
    starts, sizes = np.empty(128, np.int64), np.empty(128, np.int64)
    combine = np.empty(128, np.bool_)
    values = np.empty(128)
    top, held = 0, 0
    starts[0], sizes[0], combine[0] = 0, a.shape[0], False
    top = 1
    while top:
        top -= 1
        s, n = starts[top], sizes[top]
        if combine[top]:
            held -= 1
            values[held - 1] += values[held]
        elif n <= 128:
            values[held] = _block_sum(a, s, n)
            held += 1
        else:
            half = n // 2
            half -= half % 8
            combine[top] = True  # after both halves (left first)
            starts[top + 1], sizes[top + 1], combine[top + 1] = s + half, n - half, False
            starts[top + 2], sizes[top + 2], combine[top + 2] = s, half, False
            top += 3
    return values[0]


@njit(cache=True, nogil=True)
def _coverage_moments(alpha: np.ndarray) -> tuple[int, float, float, float, float, float, float]:
    """Count, mean column, mean row and half-width of the pixels with ``alpha`` > 0.5, and
    the sums of x², x·y, y² of their centred, half-width-scaled coordinates."""
    h, w = alpha.shape
    n = 0
    total_x = total_y = 0.0
    lo, hi = w, -1
    for y in range(h):
        for x in range(w):
            if alpha[y, x] > 0.5:
                n += 1
                total_x += x
                total_y += y
                lo, hi = min(lo, x), max(hi, x)
    if n < 16:
        return n, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0
    mean_x, mean_y = total_x / n, total_y / n  # integer sums: exact in any order
    half = 0.5 * max(float(hi - lo), 1.0)
    xx, xy, yy = np.empty(n), np.empty(n), np.empty(n)
    k = 0
    for y in range(h):
        for x in range(w):
            if alpha[y, x] > 0.5:
                u, v = (x - mean_x) / half, (y - mean_y) / half
                xx[k], xy[k], yy[k] = u * u, u * v, v * v
                k += 1
    return n, mean_x, mean_y, half, _pairwise_sum(xx), _pairwise_sum(xy), _pairwise_sum(yy)


def light_basis(alpha: np.ndarray) -> LightBasis | None:
    """:class:`LightBasis` of a coverage map (``None``: too few covered pixels)."""
    n, mean_x, mean_y, half, xx, xy, yy = _coverage_moments(alpha)
    if n < 16:
        return None
    moments = np.array([[xx, xy], [xy, yy]])
    if abs(np.linalg.det(moments)) < 1e-12:
        return None
    i = np.linalg.inv(moments)
    return LightBasis(mean_x, mean_y, half, (i[0, 0], i[0, 1], i[1, 0], i[1, 1]))


@njit(cache=True, nogil=True)
def _luma_moments(pixels: np.ndarray, bgr: bool, alpha: np.ndarray, mean_x: float,
                  mean_y: float, half: float) -> tuple[int, float, float, float]:  # fmt: skip
    """Count, Σ luma, Σ x·luma and Σ y·luma over the covered pixels (``alpha`` > 0.5) of
    interleaved ``pixels``, x and y their coordinates centred and scaled by the basis (as
    float32)."""
    first, last = (0.114, 0.299) if bgr else (0.299, 0.114)
    h, w = alpha.shape
    xs = np.empty(w, np.float32)  # each column's coordinate, divided once per column
    for x in range(w):
        xs[x] = np.float32((x - mean_x) / half)
    n = 0
    total = sx = sy = 0.0
    for r in range(h):
        y = np.float32((r - mean_y) / half)
        for x in range(w):
            if alpha[r, x] > 0.5:
                c = 3 * x
                v = first * pixels[r, c] + 0.587 * pixels[r, c + 1] + last * pixels[r, c + 2]
                n += 1
                total += v
                sx += xs[x] * v
                sy += y * v
    return n, total, sx, sy


def light_direction(
    roi: np.ndarray, coverage: np.ndarray, ax: np.ndarray, max_value: float,
    basis: LightBasis | None = None,
) -> np.ndarray:  # fmt: skip
    """The light's direction (camera frame, unit, z towards the viewer) estimated from the
    unpainted face under a mask's box: the least-squares luminance slope across and down the
    covered pixels (``coverage`` > 0.5; ``basis``: its :func:`light_basis`, made once per
    geometry), relative to their mean, as the tangent of the light's tilt (a Lambertian
    face lit from one side is brighter on that side, about in proportion to it), at most
    :data:`MAX_LIGHT_TILT`."""
    basis = light_basis(coverage) if basis is None else basis
    if basis is None:
        return np.array([0.0, 0.0, 1.0])
    pixels, _, bgr = _interleaved(roi)
    n, total, sx, sy = _luma_moments(pixels, bgr, coverage, basis.mean_x, basis.mean_y,
                                     basis.half)  # fmt: skip
    mean = total / n
    if mean <= 1e-3 * max_value:
        return np.array([0.0, 0.0, 1.0])
    sx, sy = sx / mean, sy / mean
    a, b, c, d = basis.inverse
    gx, gy = a * sx + b * sy, c * sx + d * sy
    ux, uy = float(ax[0]), float(ax[1])
    tilt = math.tan(math.radians(MAX_LIGHT_TILT))
    across = min(max(gx * ux + gy * uy, -tilt), tilt)
    down = min(max(-gx * uy + gy * ux, -tilt), tilt)
    lx, ly = across * ux - down * uy, across * uy + down * ux
    norm = math.sqrt(lx * lx + ly * ly + 1.0)
    return np.array([lx / norm, ly / norm, 1.0 / norm])


def shadow_reach(unit: float) -> int:
    """How far (pixels) beyond the mask's coverage its contact shadow can reach on a face of
    ``unit`` pixels: the pixels a render changes lie within this distance of its occlusion
    map.

    Example:
        >>> shadow_reach(40.0)
        8
    """
    sigma = _shadow_sigma(unit)
    return (round(8 * sigma + 1) | 1) // 2 + 1


def _shadow_sigma(unit: float) -> float:
    return max(SHADOW_SIGMA * unit, 0.5)


def contact_shadow(alpha8: np.ndarray, unit: float) -> np.ndarray:
    """Where the mask's contact shadow falls: ``(h, w)`` float32 in [0, 1], a soft band just
    outside the coverage ``alpha8`` (uint8), ``SHADOW_SIGMA`` face units wide; 0 under it."""
    cover = alpha8.astype(np.float32) * np.float32(1 / 255)
    spread = cv2.GaussianBlur(cover, (0, 0), _shadow_sigma(unit))  # as soften_batch blurs
    return np.clip(2.0 * (spread - cover), 0.0, 1.0) * (1.0 - cover)


@lru_cache(maxsize=4096)
def _crease_uniforms(seed: int) -> np.ndarray:
    """The uniforms a texture seed lays its creases with (read-only, cached per seed)."""
    u = np.random.default_rng([_CREASE_STREAM, int(seed) & 0xFFFFFFFFFFFFFFFF]).random(32)
    u.setflags(write=False)
    return u


@njit(cache=True, nogil=True)
def _on_fabric(arc: np.ndarray, s: float, r: float) -> tuple[float, float]:
    """Surface coordinates of the point at fractions ``s`` across the mesh's columns and ``r``
    down its rows (bilinear in the grid of ``arc``, ``(C, R + 1, 2)``)."""
    c, rows = arc.shape[0], arc.shape[1]
    x = min(max(s, 0.0), 1.0) * (c - 1)
    y = min(max(r, 0.0), 1.0) * (rows - 1)
    i, j = min(int(x), c - 2), min(int(y), rows - 2)
    fx, fy = x - i, y - j
    out = np.empty(2)
    for k in range(2):
        top = arc[i, j, k] + fx * (arc[i + 1, j, k] - arc[i, j, k])
        bottom = arc[i, j + 1, k] + fx * (arc[i + 1, j + 1, k] - arc[i, j + 1, k])
        out[k] = top + fy * (bottom - top)
    return out[0], out[1]


@njit(cache=True, nogil=True)
def _segment(lines: np.ndarray, k: int, u0: float, v0: float, u1: float, v1: float,
             width: float, tilt: float) -> None:  # fmt: skip
    """Row ``k`` of ``lines``: the crease from (u0, v0) to (u1, v1)."""
    du, dv = u1 - u0, v1 - v0
    length = math.sqrt(du * du + dv * dv)
    if length < 1e-6:
        return
    lines[k, 0], lines[k, 1] = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    lines[k, 2], lines[k, 3] = du / length, dv / length
    lines[k, 4], lines[k, 5], lines[k, 6] = 0.5 * length, width, tilt


@njit(cache=True, nogil=True)
def _lay_creases(arc: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`crease_lines` from the mesh's surface coordinates and 32 uniforms."""
    lines = np.zeros((MAX_CREASES, CREASE_FIELDS))
    if arc.shape[0] < 2 or arc.shape[1] < 2:
        return lines
    k = 0
    # Tension folds: from the side corner (where the ear loop pulls) towards the nose and
    # the chin, fading at both ends; one or two a side.
    for side in range(2):
        q = u[8 * side : 8 * side + 8]
        count = 1 + int(q[0] < 0.6)
        for f in range(count):
            towards_chin = (f == 1) or (count == 1 and q[1] < 0.5)
            s0, r0 = 0.02 + 0.06 * q[2 + f], 0.3 + 0.4 * q[3 + f]
            s1 = 0.26 + 0.14 * q[4 + f]
            r1 = 0.62 + 0.3 * q[5 + f] if towards_chin else 0.08 + 0.22 * q[5 + f]
            if side == 1:
                s0, s1 = 1.0 - s0, 1.0 - s1
            a0, b0 = _on_fabric(arc, s0, r0)
            a1, b1 = _on_fabric(arc, s1, r1)
            sign = 1.0 if q[6 + f] < 0.5 else -1.0
            width = 0.06 + 0.05 * q[4 + f]
            _segment(lines, k, a0, b0, a1, b1, width, sign * CREASE_TILT * (0.6 + 0.4 * q[2 + f]))
            k += 1
    # Slack folds: across the lower part and under the chin, along the fabric's width
    # (turned a little).
    q = u[16:32]
    u_lo, u_hi = arc[:, :, 0].min(), arc[:, :, 0].max()
    for f in range(1 + int(q[0] < 0.5)):
        p = q[1 + 5 * f : 6 + 5 * f]
        s, r = 0.3 + 0.4 * p[0], (0.55 + 0.17 * p[1]) if f == 0 else (0.78 + 0.14 * p[1])
        a, b = _on_fabric(arc, s, r)
        a_left, b_left = _on_fabric(arc, s - 0.02, r)
        a_right, b_right = _on_fabric(arc, s + 0.02, r)
        angle = math.atan2(b_right - b_left, a_right - a_left) + math.radians(24.0) * (p[2] - 0.5)
        half = min(0.45 + 0.5 * p[3], 0.3 * (u_hi - u_lo))
        du, dv = half * math.cos(angle), half * math.sin(angle)
        sign = 1.0 if p[4] < 0.5 else -1.0
        _segment(lines, k, a - du, b - dv, a + du, b + dv, 0.1 + 0.06 * p[3],
                 sign * CREASE_TILT * (0.5 + 0.4 * p[2]))  # fmt: skip
        k += 1
    return lines


def crease_lines(seed: int, surface: SurfaceMesh | None) -> np.ndarray:
    """The cloth creases of a draw with texture seed ``seed`` on a posed mask's ``surface``:
    ``(MAX_CREASES, CREASE_FIELDS)`` float64 rows of centre u, v (surface coordinates),
    direction cos, sin (in those coordinates), half-length and half-width (face units) and
    steepest slope (signed, ± 0.5–1 of :data:`CREASE_TILT` at ``creases`` = 1; 0: unused).

    Laid in the mesh's own grid (fractions of its columns and rows), so they fit every family
    and coverage and stay on the fabric whatever the pose: one or two tension folds from each
    side corner towards the nose and the chin, one or two slack folds across the lower part.
    No surface: no creases (every row unused).

    Example:
        >>> from maskgen.landmarks import aligned_landmarks
        >>> from maskgen.shapes import mask_outline
        >>> outline = mask_outline(aligned_landmarks(), "surgical", "high", geometry=3)
        >>> lines = crease_lines(7, outline.surface())
        >>> lines.shape, bool((lines == crease_lines(7, outline.surface())).all())
        ((6, 7), True)
        >>> 3 <= int((lines[:, 6] != 0).sum()) <= 6, bool((lines[:, 5] < 0.2).all())
        (True, True)
    """
    if surface is None:
        return np.zeros((MAX_CREASES, CREASE_FIELDS))
    arc = np.ascontiguousarray(surface.arc, np.float64)
    return _lay_creases(arc, _crease_uniforms(int(seed)))


def crease_slopes(uv: np.ndarray, lines: np.ndarray, depth: float = 1.0) -> np.ndarray:
    """The slope (∂h/∂u, ∂h/∂v) of the creases' height field at surface coordinates ``uv``
    (``(..., 2)``): ``(..., 2)`` float64, ``depth`` × the sum over the ``lines`` of
    :func:`crease_lines`. Each crease is h·(1 − s²)²·(1 − t²)² within its half-width
    (s = ±1 across) and half-length (t = ±1 along), 0 beyond; h is set by its steepest slope.
    The reference for the painting kernel's creases and the batched ones.

    Example:
        >>> line = np.array([[0.0, 0.0, 1.0, 0.0, 1.0, 0.1, 0.4]])  # along u, steepest 0.4
        >>> g = crease_slopes(np.array([[0.0, -0.1 / 3**0.5], [0.0, 0.0], [0.0, 0.5]]), line)
        >>> [round(float(v), 3) for v in g[:, 1]]  # across it: steepest, flat on top, none
        [0.4, 0.0, 0.0]
    """
    uv = np.asarray(uv, np.float64)
    out = np.zeros(uv.shape)
    for cu, cv, c, s, half, width, tilt in np.asarray(lines, np.float64):
        if tilt == 0.0:
            continue
        x, y = uv[..., 0] - cu, uv[..., 1] - cv
        along, across = (x * c + y * s) / half, (-x * s + y * c) / width
        a = np.maximum(1.0 - across * across, 0.0)
        b = np.maximum(1.0 - along * along, 0.0)
        height = depth * tilt * CREASE_HEIGHT * width
        g_across = -4.0 * height * across * a * b * b / width
        g_along = -4.0 * height * along * b * a * a / half
        out[..., 0] += g_along * c - g_across * s
        out[..., 1] += g_along * s + g_across * c
    return out
