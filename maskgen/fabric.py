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
  darkens as it turns away from the light and towards the silhouette.

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
from typing import NamedTuple

import cv2
import numpy as np
from numba import njit

from maskgen.appearance import TILE
from maskgen.mesh import grid_triangles
from maskgen.paint import FABRIC_AMBIENT, _interleaved
from maskgen.surface import SurfaceMesh

__all__ = [
    "LightBasis",
    "contact_shadow",
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
            for x in range(x0, x1 + 1):
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
    values = np.concatenate([surface.arc, surface.normals], axis=2).reshape(-1, 5)
    out = np.zeros((y1 - y0, x1 - x0, 5), np.float32)
    owner = np.zeros((y1 - y0, x1 - x0), np.bool_)
    tris = grid_triangles(c, r - 1).astype(np.int64)
    a, b, d = (vertices[tris[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (d[:, 1] - a[:, 1]) - (d[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    _rasterise(vertices, tris, values.astype(np.float64), out, owner, float(np.sign(area.sum())))
    _extend(out, owner)
    return out


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
    covered pixels (flat indices into the box), their centred coordinates and the inverse of
    the coordinates' 2×2 moment matrix."""

    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    inverse: tuple[float, float, float, float]

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.cols.nbytes + self.x.nbytes + self.y.nbytes


def light_basis(alpha: np.ndarray) -> LightBasis | None:
    """:class:`LightBasis` of a coverage map (``None``: too few covered pixels)."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) < 16:
        return None
    half = 0.5 * max(float(xs.max() - xs.min()), 1.0)
    x = (xs - xs.mean()) / half
    y = (ys - ys.mean()) / half
    # Element-wise sums, not BLAS dot products (whose threads contend in busy workers).
    xy = float((x * y).sum())
    moments = np.array([[float((x * x).sum()), xy], [xy, float((y * y).sum())]])
    if abs(np.linalg.det(moments)) < 1e-12:
        return None
    i = np.linalg.inv(moments)
    return LightBasis(ys.astype(np.int32), 3 * xs.astype(np.int32), x.astype(np.float32),
                      y.astype(np.float32), (i[0, 0], i[0, 1], i[1, 0], i[1, 1]))  # fmt: skip


@njit(cache=True, nogil=True)
def _luma_moments(pixels: np.ndarray, bgr: bool, rows: np.ndarray, cols: np.ndarray,
                  x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:  # fmt: skip
    """Σ luma, Σ x·luma and Σ y·luma over the covered pixels (rows, interleaved columns) of
    interleaved ``pixels``."""
    first, last = (0.114, 0.299) if bgr else (0.299, 0.114)
    total = sx = sy = 0.0
    for k in range(rows.shape[0]):
        r, c = rows[k], cols[k]
        v = first * pixels[r, c] + 0.587 * pixels[r, c + 1] + last * pixels[r, c + 2]
        total += v
        sx += x[k] * v
        sy += y[k] * v
    return total, sx, sy


def light_direction(
    roi: np.ndarray, alpha: np.ndarray | LightBasis | None, ax: np.ndarray, max_value: float
) -> np.ndarray:
    """The light's direction (camera frame, unit, z towards the viewer) estimated from the
    unpainted face under a mask's box: the least-squares luminance slope across and down the
    covered pixels (``alpha`` > 0.5, or its :func:`light_basis`), relative to their mean, as
    the tangent of the light's tilt (a Lambertian face lit from one side is brighter on that
    side, about in proportion to it), at most :data:`MAX_LIGHT_TILT`."""
    basis = light_basis(alpha) if isinstance(alpha, np.ndarray) else alpha
    if basis is None:
        return np.array([0.0, 0.0, 1.0])
    pixels, _, bgr = _interleaved(roi)
    total, sx, sy = _luma_moments(pixels, bgr, basis.rows, basis.cols, basis.x, basis.y)
    mean = total / len(basis.rows)
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
