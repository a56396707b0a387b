"""A mask as a surface: vertices, surface coordinates and triangles whose boundary is the outline.

:func:`maskgen.shapes.mask_outlines` builds every outline as two chains that meet at the
side corners: the **top edge** (left corner → nose anchor → right corner) and the **bottom
edge** (right corner → jaw and chin → left corner). :func:`mask_mesh` spans the fabric
between them as a ruled grid:

- ``u`` runs across the mask (0 at the left corner, 1 at the right), the mean of the two
  chains' normalised arc lengths, so columns fall on every outline vertex of both chains;
- ``v`` runs from the top edge (0) to the bottom edge (1) in ``rows`` equal steps.

The outline is what the mesh's boundary gives (:attr:`MaskMesh.outline`): the polygon's own
vertices, in order, plus points inserted on its segments where the other chain has a column.
A posed 3D surface (depth per vertex, normals) and surface-following textures attach to the
same vertices and ``uv``; today the mesh is flat in the image plane.

Example:
    >>> from maskgen.landmarks import aligned_landmarks
    >>> from maskgen.shapes import mask_outline
    >>> mesh = mask_mesh(mask_outline(aligned_landmarks(), "surgical", "high"), rows=4)
    >>> mesh.vertices.shape[1], mesh.triangles.shape[1], float(mesh.uv.min()), float(mesh.uv.max())
    (2, 3, 0.0, 1.0)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from maskgen.shapes import Outline

#: Rows of the ruled grid between the top and bottom edges unless asked otherwise.
DEFAULT_ROWS = 8


@dataclass(frozen=True)
class MaskMesh:
    """A mask's surface.

    Attributes:
        vertices: ``(N, 2)`` float32 pixel positions.
        uv: ``(N, 2)`` float64 surface coordinates in [0, 1]²: ``u`` across the mask (left →
            right corner), ``v`` from the top edge to the bottom edge.
        triangles: ``(T, 3)`` vertex indices, all wound like the outline.
        boundary: ``(M,)`` vertex indices of the closed outline in the outline's order,
            starting at the left corner.
    """

    vertices: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray
    boundary: np.ndarray

    @property
    def outline(self) -> np.ndarray:
        """The closed outline the boundary gives: ``(M, 2)`` float32 pixels (the polygon
        from its left corner on, with points inserted on its segments)."""
        return self.vertices[self.boundary]

    def triangle_areas(self) -> np.ndarray:
        """Signed area of every triangle (same sign as the outline's shoelace area)."""
        a, b, c = (self.vertices[self.triangles[:, k]].astype(np.float64) for k in range(3))
        ab, ac = b - a, c - a
        return 0.5 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])


def corner_indices(outline: Outline) -> tuple[int, int]:
    """The polygon indices of the mask's left and right corners: its extreme points along
    the eye line. (The side corners of the construction are not always extreme: a smoothed
    chin cup's top edge swings out past them.) Falls back to the construction's corners when
    the extremes would not put the nose anchor on the top edge."""
    u = outline.frame.to_face(outline.polygon)[:, 0]
    left, right = int(np.argmin(u)), int(np.argmax(u))
    n, anchor = len(u), (outline.top_count - 1) // 2
    if (anchor - left) % n > (right - left) % n:
        return 0, outline.top_count - 1
    return left, right


def _chain(polygon: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Polygon indices from ``start`` to ``stop`` inclusive, forward and cyclically."""
    return (start + np.arange((stop - start) % len(polygon) + 1)) % len(polygon)


def edge_chains(outline: Outline) -> tuple[np.ndarray, np.ndarray]:
    """Polygon indices of the outline's top and bottom edges, both running from the left
    corner to the right corner (:func:`corner_indices`), sharing their end points."""
    left, right = corner_indices(outline)
    return _chain(outline.polygon, left, right), _chain(outline.polygon, right, left)[::-1]


@njit(cache=True, nogil=True)
def _arc_parameter(chain: np.ndarray) -> np.ndarray:
    """Normalised arc length along a chain (``(n, 2)`` float64): 0 at its first point, 1 at
    its last."""
    n = chain.shape[0]
    s = np.empty(n)
    s[0] = 0.0
    for i in range(1, n):
        s[i] = s[i - 1] + np.hypot(chain[i, 0] - chain[i - 1, 0], chain[i, 1] - chain[i - 1, 1])
    if s[-1] <= 0:  # NumPy's linspace(0, 1, n), which numba's does not round alike
        step = 1.0 / max(n - 1, 1)
        for i in range(n):
            s[i] = i * step
        s[-1] = 1.0
        return s
    return s / s[-1]


#: Columns closer than this (in ``u``) are one column.
_SAME_COLUMN = 1e-6


def _columns(*params: np.ndarray) -> np.ndarray:
    """The sorted union of the chains' vertex parameters, near-equal values merged."""
    u = np.unique(np.concatenate(params))
    keep = np.concatenate([[True], np.diff(u) > _SAME_COLUMN])
    keep[-1] = True
    return u[keep & np.concatenate([u[:-1] < 1 - _SAME_COLUMN, [True]])]


@njit(cache=True, nogil=True)
def _at(chain: np.ndarray, s: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Points of ``chain`` (parameter ``s``) at ``columns``: its own vertex where a column
    falls on a vertex's parameter, a point on the segment in between otherwise."""
    n, m = s.shape[0], columns.shape[0]
    points = np.empty((m, 2))
    for q in range(m):
        u = columns[q]
        seg = min(max(np.searchsorted(s, u, side="right") - 1, 0), n - 2)
        s0, s1 = s[seg], s[seg + 1]
        t = (u - s0) / (s1 - s0) if s1 > s0 else 0.0
        nearest = 0
        for i in range(1, n):  # the first of equally near vertices, as argmin takes it
            if abs(u - s[i]) < abs(u - s[nearest]):
                nearest = i
        if abs(u - s[nearest]) <= _SAME_COLUMN:
            points[q, 0], points[q, 1] = chain[nearest, 0], chain[nearest, 1]
        else:
            for k in range(2):
                points[q, k] = chain[seg, k] + (chain[seg + 1, k] - chain[seg, k]) * t
    return points


#: Smoothing sweeps over the grid's inner vertices (the boundary stays where it is).
RELAX_ITERATIONS = 200


@njit(cache=True, nogil=True)
def _relax_kernel(grid: np.ndarray, iterations: int) -> None:
    c, r = grid.shape[0], grid.shape[1]
    src, dst = grid, grid.copy()
    for _ in range(iterations):
        for i in range(1, c - 1):
            for j in range(1, r - 1):
                for k in range(2):
                    dst[i, j, k] = 0.25 * (
                        src[i - 1, j, k] + src[i + 1, j, k] + src[i, j - 1, k] + src[i, j + 1, k]
                    )
        src, dst = dst, src
    if iterations % 2:
        grid[1:-1, 1:-1] = src[1:-1, 1:-1]


def _relax(grid: np.ndarray, iterations: int) -> None:
    """Move the inner vertices of a ``(columns, rows + 1, 2)`` grid towards the mean of their
    four neighbours, in place (Jacobi sweeps): straight ruling lines between the two chains
    cross where one chain doubles back (a rounded chin-cup's corners); the relaxed grid does
    not."""
    if grid.shape[0] < 3 or grid.shape[1] < 3:
        return
    _relax_kernel(grid, iterations)


def _grid_indices(columns: int, rows: int) -> np.ndarray:
    """Vertex index of every (column, row) of the grid: the two corner columns collapse to
    one vertex each (0 and 1), inner columns hold ``rows + 1`` vertices each."""
    idx = np.empty((columns, rows + 1), np.intp)
    idx[0], idx[-1] = 0, 1
    idx[1:-1] = 2 + np.arange((columns - 2) * (rows + 1)).reshape(columns - 2, rows + 1)
    return idx


def _grid_triangles(idx: np.ndarray) -> np.ndarray:
    """Two triangles per grid cell, wound like the outline; those that collapse at the
    corner columns are dropped."""
    a, b = idx[:-1, :-1], idx[1:, :-1]  # top-left, top-right of each cell
    c, d = idx[1:, 1:], idx[:-1, 1:]  # bottom-right, bottom-left
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                           np.stack([a, c, d], -1).reshape(-1, 3)])  # fmt: skip
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    return tris[keep]


def mask_mesh(outline: Outline, rows: int = DEFAULT_ROWS) -> MaskMesh:
    """The surface whose boundary is ``outline`` (see the module docstring).

    Args:
        outline: one mask's outline from :func:`maskgen.shapes.mask_outlines`.
        rows: grid rows between the top and bottom edges (≥ 1).
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    polygon = outline.polygon.astype(np.float64)
    top, bottom = (polygon[i] for i in edge_chains(outline))
    s_top, s_bottom = _arc_parameter(top), _arc_parameter(bottom)
    columns = _columns(s_top, s_bottom)
    upper, lower = _at(top, s_top, columns), _at(bottom, s_bottom, columns)
    v = np.linspace(0.0, 1.0, rows + 1)
    grid = upper[:, None] * (1 - v[None, :, None]) + lower[:, None] * v[None, :, None]
    _relax(grid, RELAX_ITERATIONS)
    idx = _grid_indices(len(columns), rows)
    n = 2 + (len(columns) - 2) * (rows + 1)
    vertices = np.empty((n, 2))
    uv = np.empty((n, 2))
    vertices[idx.ravel()] = grid.reshape(-1, 2)
    uv[idx.ravel()] = np.stack(np.broadcast_arrays(columns[:, None], v[None, :]), -1).reshape(-1, 2)
    uv[0], uv[1] = (0.0, 0.5), (1.0, 0.5)  # each corner stands for its whole column
    vertices[0], vertices[1] = top[0], top[-1]
    boundary = np.concatenate([idx[:, 0], idx[-2:0:-1, -1]])
    return MaskMesh(vertices.astype(np.float32), uv, _grid_triangles(idx), boundary)


def chain_grid(top: np.ndarray, bottom: np.ndarray, columns: int, rows: int) -> np.ndarray:
    """The relaxed ruled grid between two chains that share their end points (left → right),
    at ``columns`` equally spaced arc-length parameters: ``(columns, rows + 1, 2)`` points,
    row 0 on ``top``, row ``rows`` on ``bottom``.

    Two shapes parametrised this way correspond cell by cell (a mask image template and the
    mask on a face: :mod:`maskgen.template`).
    """
    if columns < 2 or rows < 1:
        raise ValueError(f"a grid needs at least 2 columns and 1 row, got {columns}×{rows}")
    top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
    return _chain_grid(top, bottom, _spacing(columns), _spacing(rows + 1), RELAX_ITERATIONS)


@functools.lru_cache(maxsize=64)
def _spacing(n: int) -> np.ndarray:
    spaced = np.linspace(0.0, 1.0, n)
    spaced.setflags(write=False)
    return spaced


@njit(cache=True, nogil=True)
def _chain_grid(top: np.ndarray, bottom: np.ndarray, u: np.ndarray, v: np.ndarray,
                iterations: int) -> np.ndarray:  # fmt: skip
    upper, lower = _at(top, _arc_parameter(top), u), _at(bottom, _arc_parameter(bottom), u)
    grid = np.empty((u.shape[0], v.shape[0], 2))
    for i in range(u.shape[0]):
        for j in range(v.shape[0]):
            for k in range(2):
                grid[i, j, k] = upper[i, k] * (1 - v[j]) + lower[i, k] * v[j]
    if grid.shape[0] >= 3 and grid.shape[1] >= 3:
        _relax_kernel(grid, iterations)
    return grid


def outline_grid(outline: Outline, columns: int = 24, rows: int = DEFAULT_ROWS) -> np.ndarray:
    """:func:`chain_grid` of an outline's top and bottom edges (pixels)."""
    polygon = outline.polygon.astype(np.float64)
    top, bottom = (polygon[i] for i in edge_chains(outline))
    return chain_grid(top, bottom, columns, rows)


@functools.lru_cache(maxsize=64)
def grid_triangles(columns: int, rows: int) -> np.ndarray:
    """Triangles ``(T, 3)`` int64 of a ``(columns, rows + 1)`` grid, as indices into its
    row-major flattening (two per cell; the corner columns' collapsed ones included).
    Cached; read-only."""
    idx = np.arange(columns * (rows + 1), dtype=np.int64).reshape(columns, rows + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                           np.stack([a, c, d], -1).reshape(-1, 3)])  # fmt: skip
    tris.setflags(write=False)
    return tris


def mask_meshes(outlines: Sequence[Outline], rows: int = DEFAULT_ROWS) -> list[MaskMesh]:
    """:func:`mask_mesh` of every outline of a batch."""
    return [mask_mesh(o, rows) for o in outlines]
