"""Posed 3D mask surfaces: a face's 68 landmarks → a 3D lower face, posed and projected.

Geometry version 3 (:data:`maskgen.shapes.GEOMETRY_VERSIONS`) builds every mask on the face
seen *from the front* and then lays it on the face as posed in the photo:

1. **Pose.** A scaled-orthographic fit ``x ≈ s·R[:2]·X + t`` of the landmarks to the generic
   3D face (:mod:`maskgen.landmarks.pose`, ``templates/face_3d.json``) gives scale ``s``,
   rotation ``R`` and shift ``t``.
2. **This face in 3D.** Each landmark's 3D point is the generic one moved, parallel to the
   image plane, by its residual: ``X_i + R[:2]ᵀ·r_i / s``. Projected, these points are the
   landmarks exactly; seen from the front (``s·X[:, :2] + t``) they are the *frontal
   landmarks* the 2D outline construction of :mod:`maskgen.shapes` runs on, free of yaw,
   pitch and roll.
3. **The fabric.** The mask is a surface ``z(x, y)`` over the lower face, tied to this face's
   points: along the midline it spans the upper hull of the profile (nose bridge → nose tip →
   chin, stretched over the lips as fabric is), below the chin it runs back towards the neck;
   across, each height is an elliptic arc from the jaw (its depth, a vertical tangent) to the
   midline, continued backwards beyond the jaw (ear loops, outsets).
4. **Posing.** Every frontal point of a mask (outline, seam, valve, ear loops, mesh) is lifted
   onto the surface, rotated and projected. Where a turned head hides part of the arc, the
   point slides back along its height to the silhouette: on a turned face the outline follows
   the near cheek and ends at the far side's visible edge.

The surface also gives normals (camera frame: x right, y down, z towards the viewer) and
surface coordinates (3D arc lengths) for shading and textures (:func:`surface_mesh`).

A frontal face is its own frontal view: with ``R = I`` the frontal landmarks are the landmarks
and version 3 places every point where version 2 does.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import aligned_landmarks
    >>> posed = posed_faces(aligned_landmarks()[None])[0]
    >>> bool(np.abs(posed.place(posed.frontal_landmarks()) - aligned_landmarks()).max() < 0.5)
    True
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

from maskgen.landmarks.pose import _operator, face_3d

__all__ = ["PosedFace", "SurfaceMesh", "posed_faces", "surface_mesh"]

#: Midline points the fabric spans (nose bridge to chin): its profile's upper hull.
PROFILE = (27, 28, 29, 30, 33, 51, 62, 66, 57, 8)
#: Midline points of the face itself, under the nose (bridge root, nose base, lips, chin).
BASE_PROFILE = (27, 33, 51, 57, 8)
#: Jaw points that bound the fabric's cross-sections on each side (ear level to the jaw's
#: corner; further down, the sides keep the corner's width and depth). Fabric beyond the
#: jaw hangs from the jaw's widest point like a curtain: never deeper than that point until
#: it is wider than it.
LEFT_SIDE, RIGHT_SIDE = (0, 1, 2, 3, 4, 5), (16, 15, 14, 13, 12, 11)
#: How steeply the fabric runs back beyond the jaw (depth per unit of width).
BEYOND_JAW_SLOPE = 2.0
#: ... and on the far side of a face turned by ``FULLY_TURNED`` degrees or more, this steeply
#: (behind the silhouette; in between, the slope grows with the yaw).
MAX_BEYOND_SLOPE = 8.0
FULLY_TURNED = 10.0
#: How steeply it runs back under the chin (depth per unit of height).
UNDER_CHIN_SLOPE = 1.0
#: The silhouette search along a height: the step that tells whether a point is past it,
#: and the width the search narrows it to (model units).
SILHOUETTE_STEP = 1e-3
SILHOUETTE_TOLERANCE = 1e-3
#: The far side's arc ends at most this far down the unit circle (cosine of its end angle):
#: beyond about 38° of yaw it cannot turn as steeply as the line of sight, and the fabric's
#: silhouette falls a little inside the jaw landmarks.
MAX_ARC_END = 0.995


def _rotations(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale ``(B,)``, rotation ``(B, 3, 3)`` and shift ``(B, 2)`` of the scaled-orthographic
    pose fit (:mod:`maskgen.landmarks.pose`) of ``(B, 68, 2)`` landmarks."""
    lm = np.asarray(landmarks, np.float64)
    rows = lm.reshape(len(lm), 136) @ _operator().T
    a, b = rows[:, :3], rows[:, 3:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    scale = 0.5 * (na + nb)
    a, b = a / na[:, None], b / nb[:, None]
    c, d = a + b, a - b
    c = c / np.linalg.norm(c, axis=1, keepdims=True) * math.sqrt(0.5)
    d = d / np.linalg.norm(d, axis=1, keepdims=True) * math.sqrt(0.5)
    r1, r2 = c + d, c - d
    rotation = np.stack([r1, r2, np.cross(r1, r2)], 1)
    generic = face_3d().points
    projected = np.einsum("bij,nj->bni", rotation[:, :2], generic) * scale[:, None, None]
    shift = (lm - projected).mean(1)
    return scale, rotation, shift


def _upper_hull(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upper convex hull of profile points ``(y, z)``, sorted by ``y``."""
    order = np.argsort(y, kind="stable").tolist()
    ys, zs = y.tolist(), z.tolist()  # Python floats: the same doubles, without NumPy scalars
    hull: list[int] = []
    for i in order:
        while len(hull) >= 2:
            j, k = hull[-2], hull[-1]
            cross = (ys[k] - ys[j]) * (zs[i] - zs[j]) - (zs[k] - zs[j]) * (ys[i] - ys[j])
            if cross < 0:  # k lies below the chord j → i
                break
            hull.pop()
        hull.append(i)
    return y[hull], z[hull]


@dataclass(frozen=True)
class PosedFace:
    """One face in 3D: its pose and the fabric surface over its lower face.

    Attributes:
        scale: pixels per inter-ocular unit.
        rotation: ``(3, 3)`` model → camera rotation (rows: image x, image y, towards viewer).
        shift: ``(2,)`` pixel translation.
        points: ``(68, 3)`` this face's landmarks in 3D (model units: inter-ocular distance,
            x to the face's image right, y down, z towards the viewer).
    """

    scale: float
    rotation: np.ndarray
    shift: np.ndarray
    points: np.ndarray

    def frontal_landmarks(self) -> np.ndarray:
        """The landmarks seen from the front at the face's scale: ``(68, 2)`` pixels."""
        return (self.points[:, :2] * self.scale + self.shift).astype(np.float32)

    @cached_property
    def _profile(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = self.points[list(PROFILE)]
        hull_y, hull_z = _upper_hull(p[:, 1], p[:, 2])
        order = np.argsort(p[:, 1], kind="stable")
        base = self.points[list(BASE_PROFILE)]
        base_y, base_z = _upper_hull(base[:, 1], base[:, 2])
        return hull_y, hull_z, p[order, 1], p[order, 0], base_y, base_z

    @cached_property
    def _sides(self) -> tuple[np.ndarray, ...]:
        out = []
        for chain in (LEFT_SIDE, RIGHT_SIDE):
            p = self.points[list(chain)]
            y = np.maximum.accumulate(p[:, 1])  # heights must rise for interpolation
            widest = p[np.argmax(np.abs(p[:, 0] - self.points[8, 0]))]
            out += [y, p[:, 0], p[:, 2], widest[0], widest[2]]
        return tuple(out)

    @cached_property
    def _tables(self) -> tuple:
        """The arrays and numbers :func:`_depth` reads (see :meth:`lift`)."""
        hull_y, hull_z, mid_y, mid_x, base_y, base_z = self._profile
        ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz = self._sides
        view_x, view_z = float(self.rotation[2, 0]), float(self.rotation[2, 2])
        turned = min(abs(view_x) / math.sin(math.radians(FULLY_TURNED)), 1.0)
        return (hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz, float(lwx),
                float(lwz), ry, rx, rz, float(rwx), float(rwz), view_x, view_z, turned)  # fmt: skip

    def lift(self, xy: np.ndarray) -> np.ndarray:
        """Model points ``(N, 2)`` (frontal, model units) → on the fabric ``(N, 3)``.

        Across each height the face is an elliptic arc from its own midline depth to the jaw;
        the fabric is stretched from the ridge (nose, lips, chin) straight to where that line
        touches the arc, lies on the arc, and runs back beyond the jaw. On the near side the
        arc meets the jaw with a vertical tangent; on the far side it meets it along the line
        of sight, so that the far jaw landmarks (which follow a turned face's silhouette) are
        the fabric's silhouette too. (:func:`_depth`, compiled.)
        """
        xy = np.ascontiguousarray(np.asarray(xy, np.float64).reshape(-1, 2))
        out = np.empty((len(xy), 3))
        _lift_kernel(xy, out, *self._tables)
        return out

    def project(self, points: np.ndarray) -> np.ndarray:
        """3D model points ``(N, 3)`` → pixels ``(N, 2)`` (float64)."""
        return self.scale * (np.asarray(points, np.float64) @ self.rotation[:2].T) + self.shift

    def to_model(self, frontal_px: np.ndarray) -> np.ndarray:
        """Frontal pixels ``(N, 2)`` → frontal model points."""
        return (np.asarray(frontal_px, np.float64).reshape(-1, 2) - self.shift) / self.scale

    def visible(self, xy: np.ndarray) -> np.ndarray:
        """Model points ``(N, 2)`` moved back along their heights to the silhouette where the
        pose hides them: the visible point of the fabric nearest to each. Only the far side
        folds away (the near side's projection grows monotonically outwards)."""
        xy = np.ascontiguousarray(np.asarray(xy, np.float64).reshape(-1, 2))
        out = xy.copy()
        if abs(self.rotation[2, 0]) < 1e-6:  # a frontal face hides nothing
            return out
        across = self.rotation[:2, 0] / max(float(np.hypot(*self.rotation[:2, 0])), 1e-9)
        projection = self.rotation[:2].T @ across  # model direction whose image is `across`
        _silhouette_kernel(out, projection, *self._tables)
        return out

    def place(self, frontal_px: np.ndarray) -> np.ndarray:
        """Frontal pixels ``(N, 2)`` → where they lie on the posed face: ``(N, 2)`` float32."""
        xy = self.visible(self.to_model(frontal_px))
        return self.project(self.lift(xy)).astype(np.float32)

    def place_loop(self, frontal_px: np.ndarray) -> np.ndarray:
        """An ear loop (frontal pixels, from the mask's side corner to the ear) posed: it
        leaves the fabric at the corner and runs through the air to the ear's depth (the jaw
        point at ear level), not over the fabric's surface; ``(N, 2)`` float32 pixels."""
        xy = self.to_model(frontal_px)
        start = self.lift(xy[:1])[0, 2]
        ear = self.points[0 if xy[-1, 0] < self.points[30, 0] else 16, 2]
        depth = np.linspace(start, ear, len(xy))
        return self.project(np.column_stack([xy, depth])).astype(np.float32)


@njit(cache=True, nogil=True, inline="always")
def _interp(v: float, xp: np.ndarray, fp: np.ndarray) -> float:
    """np.interp for one value (clamped at both ends; ``xp`` non-decreasing)."""
    n = len(xp)
    if v <= xp[0]:
        return fp[0]
    if v >= xp[n - 1]:
        return fp[n - 1]
    i = 0
    while xp[i + 1] < v:
        i += 1
    d = xp[i + 1] - xp[i]
    if d <= 0.0:
        return fp[i + 1]
    return fp[i] + (fp[i + 1] - fp[i]) * (v - xp[i]) / d


@njit(cache=True, nogil=True, inline="always")
def _section(x: float, y: float, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz,
             lwx, lwz, ry, rx, rz, rwx, rwz) -> tuple:  # fmt: skip
    """Midline x, side, half width, jaw depth, ridge and face depths, widest reach and its
    depth of the cross-section through model point (x, y)."""
    x_mid = _interp(y, mid_y, mid_x)
    under = max(y - hull_y[len(hull_y) - 1], 0.0) * UNDER_CHIN_SLOPE
    ridge = _interp(y, hull_y, hull_z) - under
    base = min(_interp(y, base_y, base_z) - under, ridge)
    if x < x_mid:
        side, jaw_x, jaw_z, wx, wz = -1.0, _interp(y, ly, lx), _interp(y, ly, lz), lwx, lwz
    else:
        side, jaw_x, jaw_z, wx, wz = 1.0, _interp(y, ry, rx), _interp(y, ry, rz), rwx, rwz
    half = max(abs(jaw_x - x_mid), 1e-3)
    widest = max(abs(wx - x_mid), half)
    # Under the chin the fabric meets the neck's sides.
    return x_mid, side, half, jaw_z, max(ridge, jaw_z), max(base, jaw_z), widest, wz


@njit(cache=True, nogil=True, inline="always")
def _depth(x: float, y: float, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz, lwx,
           lwz, ry, rx, rz, rwx, rwz, view_x, view_z, turned) -> float:  # fmt: skip
    """The fabric's depth at model point (x, y) (see :meth:`PosedFace.lift`)."""
    x_mid, side, half, jaw_z, ridge, base, widest, widest_z = _section(
        x, y, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz,
        rwx, rwz)  # fmt: skip
    off = abs(x - x_mid)
    t = off / half
    far = side * view_x < 0
    if t > 1.0:
        slope = BEYOND_JAW_SLOPE
        curtain = min(widest_z, jaw_z) - slope * max(off - widest, 0.0)
        if far:  # turned away, the fabric beyond the jaw is behind it: no curtain
            slope += (MAX_BEYOND_SLOPE - BEYOND_JAW_SLOPE) * turned
            curtain -= MAX_BEYOND_SLOPE * turned * (off - half)
        return max(jaw_z - slope * (off - half), curtain)
    depth = max(base - jaw_z, 1e-6)
    end = 0.0
    if far:
        cot = view_z / max(abs(view_x), 1e-9)  # the line of sight's slope across the face
        end = min(1.0 / max(cot * half / depth - 1.0, 1.0), MAX_ARC_END)
    at = t * math.sqrt(1.0 - end * end)  # the arc is the unit circle up to (span, end)
    unit = math.sqrt(max(1.0 - at * at, 0.0))
    peak = end + (ridge - jaw_z) * (1.0 - end) / depth
    if peak > 1.0:
        touch = math.sqrt(1.0 - 1.0 / (peak * peak))
        if at < touch:
            unit = peak + (1.0 / peak - peak) * at / max(touch, 1e-9)
    return jaw_z + depth * (unit - end) / (1.0 - end)


@njit(cache=True, nogil=True)
def _lift_kernel(xy: np.ndarray, out: np.ndarray, hull_y, hull_z, mid_y, mid_x, base_y, base_z,
                 ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x, view_z,
                 turned) -> None:  # fmt: skip
    for i in range(xy.shape[0]):
        x, y = xy[i, 0], xy[i, 1]
        out[i, 0], out[i, 1] = x, y
        out[i, 2] = _depth(x, y, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz, lwx,
                           lwz, ry, rx, rz, rwx, rwz, view_x, view_z, turned)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _outward(px: float, y: float, side: float, projection: np.ndarray, hull_y, hull_z, mid_y,
             mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x,
             view_z, turned) -> float:  # fmt: skip
    """How far out across the image the fabric point at model (px, y) projects."""
    z = _depth(px, y, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry,
               rx, rz, rwx, rwz, view_x, view_z, turned)  # fmt: skip
    return side * (projection[0] * px + projection[1] * y + projection[2] * z)


@njit(cache=True, nogil=True)
def _silhouette_kernel(xy: np.ndarray, projection: np.ndarray, hull_y, hull_z, mid_y, mid_x,
                       base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x,
                       view_z, turned) -> None:  # fmt: skip
    """Slide the far side's hidden points (in place) to where their height's projection
    across the image peaks: a point whose projection still grows outwards is visible; for
    the others the peak is found by golden-section search (the projection rises to the
    silhouette and falls behind it)."""
    g = 0.6180339887498949
    for i in range(xy.shape[0]):
        x, y = xy[i, 0], xy[i, 1]
        x_mid, side = _section(x, y, hull_y, hull_z, mid_y, mid_x, base_y, base_z, ly, lx, lz,
                               lwx, lwz, ry, rx, rz, rwx, rwz)[:2]  # fmt: skip
        if side * view_x >= 0:
            continue
        reach = abs(x - x_mid)
        step = SILHOUETTE_STEP
        if reach <= step:
            continue
        here = _outward(x_mid + side * reach, y, side, projection, hull_y, hull_z, mid_y, mid_x,
                        base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x,
                        view_z, turned)  # fmt: skip
        before = _outward(x_mid + side * (reach - step), y, side, projection, hull_y, hull_z,
                          mid_y, mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx,
                          rwz, view_x, view_z, turned)  # fmt: skip
        if here >= before:
            continue
        lo, hi = 0.0, reach
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa = _outward(x_mid + side * a, y, side, projection, hull_y, hull_z, mid_y, mid_x,
                      base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x,
                      view_z, turned)  # fmt: skip
        fb = _outward(x_mid + side * b, y, side, projection, hull_y, hull_z, mid_y, mid_x,
                      base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx, rwz, view_x,
                      view_z, turned)  # fmt: skip
        while hi - lo > SILHOUETTE_TOLERANCE:
            if fa < fb:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = _outward(x_mid + side * b, y, side, projection, hull_y, hull_z, mid_y,
                              mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx,
                              rwz, view_x, view_z, turned)  # fmt: skip
            else:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = _outward(x_mid + side * a, y, side, projection, hull_y, hull_z, mid_y,
                              mid_x, base_y, base_z, ly, lx, lz, lwx, lwz, ry, rx, rz, rwx,
                              rwz, view_x, view_z, turned)  # fmt: skip
        xy[i, 0] = x_mid + side * 0.5 * (lo + hi)


def posed_faces(landmarks: np.ndarray) -> list[PosedFace]:
    """The posed 3D face of every landmark set ``(B, 68, 2)`` (pixels).

    Example:
        >>> from maskgen.synthetic import draw_wild_face, sample_identity
        >>> ident = sample_identity(np.random.default_rng(0))
        >>> _, lm = draw_wild_face(ident, np.random.default_rng(1), (240, 320), yaw=30,
        ...                        pitch=0, roll=0, postprocess=False)
        >>> face = posed_faces(lm[None])[0]
        >>> bool(np.abs(face.project(face.points) - lm).max() < 1e-3)
        True
    """
    lm = np.asarray(landmarks, np.float64)
    keys = [lm[i].tobytes() for i in range(len(lm))]
    out: list[PosedFace | None] = [_POSED.get(k) for k in keys]
    todo = [i for i, face in enumerate(out) if face is None]
    if todo:
        scale, rotation, shift = _rotations(lm[todo])
        generic = face_3d().points
        for j, i in enumerate(todo):
            residual = lm[i] - (scale[j] * generic @ rotation[j, :2].T + shift[j])
            points = generic + residual @ rotation[j, :2] / scale[j]
            face = PosedFace(float(scale[j]), rotation[j].copy(), shift[j].copy(), points)
            for array in (face.rotation, face.shift, face.points):
                array.setflags(write=False)  # shared by every draw on these landmarks
            out[i] = _POSED[keys[i]] = face
        while len(_POSED) > POSED_CACHE:
            _POSED.popitem(last=False)
    return out  # type: ignore[return-value]


#: Posed faces kept per process, by their landmarks (aligned datasets share a few layouts).
POSED_CACHE = 1024
_POSED: OrderedDict[bytes, PosedFace] = OrderedDict()


@dataclass(frozen=True)
class SurfaceMesh:
    """A posed mask's surface: a grid of ``columns × (rows + 1)`` vertices.

    Attributes:
        vertices: ``(C, R + 1, 2)`` float32 pixels (hidden vertices moved to the silhouette).
        normals: ``(C, R + 1, 3)`` unit normals in the camera frame (z towards the viewer).
        arc: ``(C, R + 1, 2)`` surface coordinates in inter-ocular units: 3D arc length
            across (from the mask's middle column) and height on the face (from the top of
            its middle column), so that textures wrap round the cheeks and pleats stay level.
    """

    vertices: np.ndarray
    normals: np.ndarray
    arc: np.ndarray


def surface_mesh(posed: PosedFace, frontal_grid: np.ndarray) -> SurfaceMesh:
    """Lift a frontal grid of the mask (``(C, R + 1, 2)`` frontal pixels, e.g.
    :func:`maskgen.mesh.chain_grid` of the frontal outline's edges) onto the posed surface."""
    c, r = frontal_grid.shape[:2]
    model = posed.to_model(frontal_grid.reshape(-1, 2))
    points = posed.lift(model).reshape(c, r, 3)
    across = np.concatenate([np.zeros((1, r)), np.cumsum(
        np.linalg.norm(np.diff(points, axis=0), axis=2), axis=0)])  # fmt: skip
    across -= across[c // 2]
    down = points[..., 1] - points[c // 2, 0, 1]
    seen = posed.visible(model)
    moved = np.flatnonzero(np.any(seen != model, axis=1))
    placed = points.reshape(-1, 3).copy()
    if len(moved):
        placed[moved] = posed.lift(seen[moved])
    pixels = posed.project(placed).reshape(c, r, 2)
    return SurfaceMesh(pixels.astype(np.float32), _grid_normals(points) @ posed.rotation.T,
                       np.stack([across, down], -1))  # fmt: skip


@njit(cache=True, nogil=True)
def _grid_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals (towards the viewer, model frame) of a lifted ``(C, R + 1, 3)`` grid from
    its tangents across and down (central differences, one-sided at the borders); where a
    column collapses to a point (the corners), its neighbour's."""
    c, r = points.shape[0], points.shape[1]
    normals = np.empty((c, r, 3))
    flat = np.zeros((c, r), np.bool_)
    across = np.empty(3)
    down = np.empty(3)
    for i in range(c):
        i0, i1 = max(i - 1, 0), min(i + 1, c - 1)
        for j in range(r):
            j0, j1 = max(j - 1, 0), min(j + 1, r - 1)
            for k in range(3):
                across[k] = points[i1, j, k] - points[i0, j, k]
                down[k] = points[i, j1, k] - points[i, j0, k]
                if 0 < i < c - 1:
                    across[k] /= 2.0
                if 0 < j < r - 1:
                    down[k] /= 2.0
            x = across[1] * down[2] - across[2] * down[1]
            y = across[2] * down[0] - across[0] * down[2]
            z = across[0] * down[1] - across[1] * down[0]
            if z < 0:
                x, y, z = -x, -y, -z
            length = np.sqrt(x * x + y * y + z * z)
            flat[i, j] = length < 1e-12
            length = max(length, 1e-12)
            normals[i, j, 0] = x / length
            normals[i, j, 1] = y / length
            normals[i, j, 2] = z / length
    for column, inner in ((0, 1), (c - 1, c - 2)):
        for j in range(r):
            if flat[column, j]:
                normals[column, j] = normals[inner, j]
    return normals
