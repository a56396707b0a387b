"""Mask geometry: 68 landmarks → mask outline polygon for each shape family and coverage.

Every outline is built in the face's own frame (:class:`FaceFrame`: x along the eye line,
y towards the mouth, unit = eye-line-to-mouth distance) from the jaw, nose, eye and mouth
landmarks, then mapped back to pixels. Masks therefore follow roll (the frame rotates) and
yaw (the jaw and nose landmarks move), and every size is relative to the face.

Example:
    >>> from maskgen.landmarks import aligned_landmarks
    >>> outline = mask_outline(aligned_landmarks(), "surgical", "high")
    >>> outline.polygon.shape[1], outline.polygon.dtype.name
    (2, 'float32')
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numba import njit

from maskgen._assets import asset_json
from maskgen.surface import PosedFace, SurfaceMesh, posed_faces, surface_mesh


@dataclass(frozen=True)
class FamilyGeometry:
    """Numbers that shape one family, in face units (see :class:`FaceFrame`).

    Attributes:
        raise_top: how far the top edge rides up over the nose.
        droop: how far the cheek points hang below the nose anchor (a V-shaped top edge).
        side_drop: the side corners sit this far below the cheek points.
        outset: side corners pushed out beyond the jaw (negative: inside the jaw).
        bottom_drop: jaw points pushed out/down to hang below the jaw line.
        chin_drop: extra drop at the chin.
        smooth: draw the outline as a closed smooth spline (cloth-like, rounded).
        pointed: bottom edge comes to a point under the chin (KN95 fold).
        inset_bottom: bottom corners pulled towards the face centre (round outlines).
        runs_off: the outline continues this far below the chin (gaiters); 0 = closed at jaw.
        seam: a centre seam runs from the nose anchor to the bottom point (folded respirators).
        valve: the family can carry an exhalation valve (``MaskParams.valve``).
        ear_loops: the family is held by ear loops (``MaskParams.straps``); gaiters are not.
        pleats_as: the texture drawn when a draw asks for ``"pleats"`` (folded respirators
            have no pleats: ``"grain"``).
        template: an image template (:mod:`maskgen.template`: a template JSON path or a
            shipped template's name) painted onto the outline instead of a colour and
            texture; empty for drawn families.
    """

    raise_top: float = 0.04
    droop: float = 0.10
    side_drop: float = 0.05
    outset: float = 0.02
    bottom_drop: float = 0.06
    chin_drop: float = 0.10
    smooth: bool = False
    pointed: bool = False
    inset_bottom: float = 0.0
    runs_off: float = 0.0
    seam: bool = False
    valve: bool = False
    ear_loops: bool = True
    pleats_as: str = "pleats"
    template: str = ""


#: Where a coverage level lets the outline reach at most (see :class:`CoverageRule`).
_GUARDS = ("eyes", "nostrils", "lower_lip")


@dataclass(frozen=True)
class CoverageRule:
    """How a coverage level bounds the outline.

    Attributes:
        top_guard: the highest the outline may reach: just under the ``"eyes"``, under the
            ``"nostrils"`` (worn low) or under the ``"lower_lip"`` (worn on the chin); smooth
            outlines may overshoot their anchor.
        covers_mouth: the cheek points stay low enough to keep the mouth corners covered.
    """

    top_guard: str = "eyes"
    covers_mouth: bool = True

    def __post_init__(self) -> None:
        if self.top_guard not in _GUARDS:
            raise ValueError(f"top_guard must be one of {_GUARDS}, got {self.top_guard!r}")


def _load_shapes() -> tuple[
    FamilyRegistry, dict[str, tuple[int, int, float]], dict[str, CoverageRule]
]:
    shapes = asset_json("shapes.json")
    families = FamilyRegistry({name: FamilyGeometry(**g) for name, g in shapes["families"].items()})
    coverages = shapes["coverages"]
    anchors = {
        name: (int(c["from"]), int(c["to"]), float(c["fraction"])) for name, c in coverages.items()
    }
    rules = {
        name: CoverageRule(str(c["top_guard"]), bool(c["covers_mouth"]))
        for name, c in coverages.items()
    }
    return families, anchors, rules


#: Family names that name an image template: ``template:<name or path to its JSON>``.
TEMPLATE_PREFIX = "template:"
#: The outline numbers of template families (a cloth mask's: smooth, ear loops).
TEMPLATE_OUTLINE = FamilyGeometry(raise_top=0.06, droop=0.08, side_drop=0.06, outset=0.03,
                                  bottom_drop=0.08, chin_drop=0.12, smooth=True)  # fmt: skip


class FamilyRegistry(dict[str, FamilyGeometry]):
    """The family registry: a dict of names → :class:`FamilyGeometry` in which a
    ``template:<ref>`` name registers itself on first use (in every process that meets it,
    joblib and DataLoader workers included), with :data:`TEMPLATE_OUTLINE` and the template.
    """

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.startswith(TEMPLATE_PREFIX):
            return self._template(name) is not None
        return super().__contains__(name)

    def __missing__(self, name: str) -> FamilyGeometry:
        geometry = self._template(name) if name.startswith(TEMPLATE_PREFIX) else None
        if geometry is None:
            raise KeyError(name)
        return geometry

    def _template(self, name: str) -> FamilyGeometry | None:
        if super().__contains__(name):
            return super().__getitem__(name)
        from maskgen.template import TemplateError, load_template

        try:
            load_template(name[len(TEMPLATE_PREFIX) :])
        except TemplateError:
            return None
        geometry = replace(TEMPLATE_OUTLINE, template=name[len(TEMPLATE_PREFIX) :])
        self[name] = geometry
        return geometry


#: Shape families (``templates/shapes.json``); extend with :func:`register_family`.
GEOMETRY: FamilyRegistry
#: Where the top edge crosses the nose line, per coverage: (point a, point b, fraction a→b).
COVERAGE_ANCHORS: dict[str, tuple[int, int, float]]
#: How each coverage level bounds the outline.
COVERAGE_RULES: dict[str, CoverageRule]
GEOMETRY, COVERAGE_ANCHORS, COVERAGE_RULES = _load_shapes()
#: The built-in families and coverage levels (``GEOMETRY`` may grow at run time).
FAMILIES: tuple[str, ...] = tuple(GEOMETRY)
COVERAGES: tuple[str, ...] = tuple(COVERAGE_ANCHORS)


def register_family(name: str, geometry: FamilyGeometry, *, overwrite: bool = False) -> None:
    """Add a mask family at run time (e.g. a custom outline tuned on one's own data).

    Example:
        >>> register_family("tight", FamilyGeometry(outset=-0.08, chin_drop=0.02))
        >>> "tight" in GEOMETRY
        True
        >>> _ = GEOMETRY.pop("tight")
    """
    if name in GEOMETRY and not overwrite:
        raise ValueError(f"mask family {name!r} exists; pass overwrite=True to replace it")
    if geometry.template:
        from maskgen.template import load_template

        load_template(geometry.template)  # a template that cannot be read fails here
    GEOMETRY[name] = geometry


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned coordinates: ``origin`` = eye midpoint, ``ax`` along the eye line
    (image left → right), ``ay`` perpendicular towards the mouth, ``unit`` = distance in
    pixels from the eye line to the mouth corners' midpoint."""

    origin: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    unit: float

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> FaceFrame:
        origin, ax, ay, unit = _frames(np.asarray(lm, np.float32)[None])
        return cls(origin[0], ax[0], ay[0], float(unit[0]))

    @cached_property
    def _to_face_basis(self) -> np.ndarray:
        return np.stack([self.ax, self.ay], axis=1) / self.unit

    @cached_property
    def _to_image_basis(self) -> np.ndarray:
        return np.stack([self.ax, self.ay]) * self.unit

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        """Pixel points → face coordinates (u along the eye line, v towards the mouth)."""
        return (np.asarray(pts, np.float64) - self.origin) @ self._to_face_basis

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Face coordinates → pixel points (float32)."""
        return (np.asarray(uv, np.float64) @ self._to_image_basis + self.origin).astype(np.float32)


@dataclass(frozen=True)
class Outline:
    """A mask's geometry in image pixels.

    Attributes:
        polygon: (N, 2) closed outline.
        seam: polyline of a centre seam (KN95) or ``None``.
        valve: (centre_x, centre_y, radius) of an exhalation valve, or ``None``.
        straps: ear-loop polylines (possibly empty).
        frame: the face frame the outline was built in.
        top_count: how many of the polygon's first points are its top edge (left corner →
            nose anchor → right corner); the rest is the bottom edge back to the left corner
            (:func:`maskgen.mesh.mask_mesh` spans the surface between the two).
        posed: the posed face a version-3 outline lies on (:mod:`maskgen.surface`), else
            ``None`` (the outline lies flat in the image plane).
        frontal: a version-3 outline's polygon on the frontal face (pixels, same vertices),
            from which its surface is lifted (:meth:`surface`).
    """

    polygon: np.ndarray
    frame: FaceFrame
    seam: np.ndarray | None = None
    valve: tuple[float, float, float] | None = None
    straps: tuple[np.ndarray, ...] = field(default_factory=tuple)
    top_count: int = 5
    posed: PosedFace | None = None
    frontal: np.ndarray | None = None

    _surfaces: dict[tuple[int, int], SurfaceMesh] = field(
        default_factory=dict, compare=False, repr=False
    )

    def surface(self, columns: int = 24, rows: int = 8) -> SurfaceMesh | None:
        """The posed fabric between the top and bottom edges (version 3 only, else
        ``None``): vertices, camera-frame normals and surface coordinates on a grid (built
        once per outline and grid size)."""
        if self.posed is None or self.frontal is None:
            return None
        mesh = self._surfaces.get((columns, rows))
        if mesh is None:
            from maskgen.mesh import chain_grid

            k = self.top_count
            top = self.frontal[:k]
            bottom = np.concatenate([self.frontal[k - 1 :], self.frontal[:1]])[::-1]
            mesh = surface_mesh(self.posed, chain_grid(top, bottom, columns, rows))
            self._surfaces[(columns, rows)] = mesh
        return mesh


def catmull_rom_closed(points: np.ndarray, samples: int = 6) -> np.ndarray:
    """Closed Catmull-Rom spline through ``points`` ``(..., n, 2)`` with ``samples`` points
    per segment: ``(..., n * samples, 2)`` (leading axes are independent outlines)."""
    p1 = points
    p0, p2, p3 = (np.roll(points, k, -2) for k in (1, -1, -2))
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    a, b, c, d = (x[..., :, None, :] for x in (p0, p1, p2, p3))
    curve = 0.5 * (
        2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t2 + (3 * b - a - 3 * c + d) * t3
    )
    return curve.reshape(*points.shape[:-2], -1, 2)


#: Catmull-Rom samples per vertex of the smooth families.
SMOOTH_SAMPLES = 5
#: Versions of the outline construction (:attr:`maskgen.render.MaskParams.geometry`):
#: 1 = stop 10's; 2 keeps a low mask's side corners above the chin on short faces and its
#: cheeks between its corners; 3 builds version 2 on the frontal face and lays it on the
#: posed 3D surface (:mod:`maskgen.surface`).
GEOMETRY_VERSIONS: tuple[int, ...] = (1, 2, 3)
#: The first version built on the posed surface.
POSED_GEOMETRY = 3
#: Version 3 splits each straight outline segment into this many, so edges follow the surface.
POSED_SUBDIVISION = 3
#: Points along a posed seam.
POSED_SEAM_POINTS = 9
#: The version new draws get.
GEOMETRY_VERSION = GEOMETRY_VERSIONS[-1]
#: How far above the chin (face units) a mask's side corners stay at the least (version 2).
SIDE_CLEARANCE = 0.08
#: Vertex slots of an outline: the top edge (side, cheek, anchor, cheek, side) and the bottom
#: (right jaw, chin, left jaw: at most 8 + 1 + 8 points).
_TOP, _BOTTOM = 5, 17
# Quadratic Bézier weights of the ear loops' 8 samples: (1 - t)², 2t(1 - t), t².
_T = np.linspace(0, 1, 8)[:, None]
_BEZIER = ((1 - _T) ** 2, 2 * _T * (1 - _T), _T**2)


@functools.lru_cache(maxsize=1024)
def _row(geometry: FamilyGeometry, coverage: str) -> tuple[float, ...]:
    """A draw's family and coverage columns of the kernel table (cached: geometry objects
    are immutable)."""
    g = geometry
    a, b, t = COVERAGE_ANCHORS[coverage]
    rule = COVERAGE_RULES[coverage]
    return (g.raise_top, g.droop, g.side_drop, g.outset, g.bottom_drop, g.chin_drop,
            float(g.pointed), g.inset_bottom, g.runs_off, a, b, t,
            _GUARDS.index(rule.top_guard), float(rule.covers_mouth))  # fmt: skip


def _table(families: Sequence[str], coverages: Sequence[str], *jitter: np.ndarray) -> np.ndarray:
    """The kernel's ``(B, 18)`` draw table: family and coverage columns, then width, top and
    bottom offsets and the geometry version (unknown names are an error)."""
    for family in families:
        if family not in GEOMETRY:
            raise ValueError(f"unknown mask family {family!r}; choose from {', '.join(GEOMETRY)}")
    for coverage in coverages:
        if coverage not in COVERAGE_ANCHORS:
            raise ValueError(f"unknown coverage {coverage!r}; choose from {', '.join(COVERAGES)}")
    rows = [_row(GEOMETRY[f], c) for f, c in zip(families, coverages, strict=True)]
    return np.column_stack([np.array(rows, np.float64).reshape(len(rows), 14), *jitter])


@njit(cache=True, nogil=True)
def _frames_kernel(lm: np.ndarray, frames: np.ndarray) -> None:
    """Face frames of landmark sets ``(B, 68, 2)``: rows of ``frames`` ``(B, 7)`` hold the
    origin, ax, ay and unit (see :class:`FaceFrame`)."""
    for i in range(lm.shape[0]):
        eyes = np.zeros(4)  # left x, y, right x, y: means of 36–41 and 42–47, summed in order
        for k in range(6):
            eyes[0] += lm[i, 36 + k, 0]
            eyes[1] += lm[i, 36 + k, 1]
            eyes[2] += lm[i, 42 + k, 0]
            eyes[3] += lm[i, 42 + k, 1]
        lx, ly, rx, ry = eyes[0] / 6, eyes[1] / 6, eyes[2] / 6, eyes[3] / 6
        dx, dy = rx - lx, ry - ly
        norm = max(math.sqrt(dx * dx + dy * dy), 1e-9)
        axx, axy = dx / norm, dy / norm
        ayx, ayy = -axy, axx
        ox, oy = (lx + rx) / 2, (ly + ry) / 2
        mx = (np.float64(lm[i, 48, 0]) + np.float64(lm[i, 54, 0])) / 2
        my = (np.float64(lm[i, 48, 1]) + np.float64(lm[i, 54, 1])) / 2
        unit = (mx - ox) * ayx + (my - oy) * ayy
        f = frames[i]
        f[0], f[1], f[2], f[3], f[4], f[5], f[6] = ox, oy, axx, axy, ayx, ayy, max(unit, 1e-3)


def _frames(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched :meth:`FaceFrame.from_landmarks`: origin, ax, ay ``(B, 2)`` and unit ``(B,)``."""
    frames = np.empty((len(lm), 7))
    _frames_kernel(np.ascontiguousarray(lm, np.float32), frames)
    return frames[:, 0:2], frames[:, 2:4], frames[:, 4:6], frames[:, 6]


#: Columns of the kernel's per-draw table (:func:`_table`).
_K_RAISE, _K_DROOP, _K_SIDE_DROP, _K_OUTSET, _K_BOTTOM_DROP, _K_CHIN_DROP = range(6)
_K_POINTED, _K_INSET, _K_RUNS_OFF, _K_A, _K_B, _K_FRACTION, _K_GUARD, _K_MOUTH = range(6, 14)
_K_WIDTH, _K_TOP, _K_BOTTOM, _K_VERSION = range(14, 18)


@njit(cache=True, nogil=True)
def _jaw_crossing(L: np.ndarray, start: int, step: int, level: float) -> tuple[float, float, int]:
    """Where a jaw side (9 points from ``start`` by ``step``: ear → chin, face coordinates)
    crosses height ``level``, and the index of the first point strictly below it (9: none)."""
    for i in range(9):
        u, v = L[start + step * i, 0], L[start + step * i, 1]
        if v > level:
            if i == 0:
                return u, v, 1
            pu, pv = L[start + step * (i - 1), 0], L[start + step * (i - 1), 1]
            t = (level - pv) / max(v - pv, 1e-9)
            return pu + (u - pu) * t, pv + (v - pv) * t, i
    last = start + step * 8
    return L[last, 0], L[last, 1], 9


@njit(cache=True, nogil=True)
def _outline_vertices(
    L: np.ndarray,
    P: np.ndarray,
    vertices: np.ndarray,
    count: np.ndarray,
    anchor: np.ndarray,
    sides: np.ndarray,
    bounds: np.ndarray,
) -> None:
    """The outline construction of every draw ``i`` (face coordinates ``L[i]``, draw table
    ``P[i]``): its vertices (top edge, then bottom edge) and their count, the nose anchor,
    the side corners (left, right) and the clipping bounds (u_lo, v_lo, u_hi, v_hi)."""
    for i in range(L.shape[0]):
        lm, p = L[i], P[i]
        raise_top, chin_drop, bottom_drop = p[_K_RAISE], p[_K_CHIN_DROP], p[_K_BOTTOM_DROP]
        width, bottom_offset = p[_K_WIDTH], p[_K_BOTTOM]
        a, b, t = int(p[_K_A]), int(p[_K_B]), p[_K_FRACTION]
        # Top edge: the coverage's anchor on the nose, the cheeks, the side corners on the jaw.
        au = lm[a, 0] + (lm[b, 0] - lm[a, 0]) * t
        av = lm[a, 1] + (lm[b, 1] - lm[a, 1]) * t
        av += p[_K_TOP] - raise_top
        eye_guard = lm[36, 1]
        for k in range(37, 48):
            eye_guard = max(eye_guard, lm[k, 1])
        eye_guard += 0.08
        cheek = av + raise_top + p[_K_DROOP]
        if p[_K_MOUTH] > 0:  # keep the mouth corners under the mask, even in a broad smile
            cheek = min(cheek, min(lm[48, 1], lm[54, 1]) - 0.12)
        cheek = max(cheek, eye_guard)
        side_level = cheek + p[_K_SIDE_DROP]
        if p[_K_VERSION] >= 2:
            # On a short face a low mask's side corners fall below the chin and collapse onto
            # it (a bow-tie outline): keep the sides (and the cheeks) a little above the chin.
            side_limit = lm[8, 1] - SIDE_CLEARANCE
            cheek = min(cheek, side_limit)
            side_level = min(side_level, side_limit)
        lu, lv, il = _jaw_crossing(lm, 0, 1, side_level)
        ru, rv, ir = _jaw_crossing(lm, 16, -1, side_level)
        slu, slv = au + (lu - au) * width - p[_K_OUTSET], av + (lv - av) * width
        sru, srv = au + (ru - au) * width + p[_K_OUTSET], av + (rv - av) * width
        cheek_l, cheek_r = 0.0, 0.0
        for k in range(6):
            cheek_l += lm[36 + k, 0]
            cheek_r += lm[42 + k, 0]
        cheek_l, cheek_r = cheek_l / 6, cheek_r / 6
        if p[_K_VERSION] >= 2:  # a narrow mask's cheeks stay between its corners (no horns)
            cheek_l, cheek_r = max(cheek_l, min(slu, au)), min(cheek_r, max(sru, au))
        top = ((slu, slv), (cheek_l, cheek), (au, av), (cheek_r, cheek), (sru, srv))
        for k in range(5):
            vertices[i, k, 0], vertices[i, k, 1] = top[k]
        anchor[i, 0], anchor[i, 1] = au, av
        sides[i, 0, 0], sides[i, 0, 1], sides[i, 1, 0], sides[i, 1, 1] = slu, slv, sru, srv
        # Bottom edge: straight across below the chin (runs off the face), or along the jaw.
        chin_u, chin_v = lm[8, 0], lm[8, 1]
        n = 5
        if p[_K_RUNS_OFF] > 0:
            depth = chin_v + p[_K_RUNS_OFF] + bottom_offset
            vertices[i, 5, 0], vertices[i, 5, 1] = sru, depth
            vertices[i, 6, 0], vertices[i, 6, 1] = slu, depth
            n = 7
        else:
            cu, cv = au, lm[33, 1]
            span = max(chin_v - side_level, 1e-3)
            inset = p[_K_INSET]
            for j in range(17):  # right jaw below the side corner, chin, left jaw
                if j < 8:
                    k = 16 - j
                    if j < ir:
                        continue
                elif j == 8:
                    k = 8
                else:
                    k = 16 - j
                    if k < il:
                        continue
                pu, pv = lm[k, 0], lm[k, 1]
                # More drop near the chin; rounded families pull the upper corners inwards.
                closeness = min(max(1 - abs(pv - chin_v) / span, 0.0), 1.0)
                drop = bottom_drop + (chin_drop + bottom_offset) * (closeness * closeness)
                du, dv = pu - cu, pv - cv
                norm = max(math.sqrt(du * du + dv * dv), 1e-9)
                u, v = pu + du / norm * drop, pv + dv / norm * drop
                if inset != 0:
                    pull = inset * (1 - closeness)
                    if cu > u:
                        u += pull
                    elif cu < u:
                        u -= pull
                vertices[i, n, 0], vertices[i, n, 1] = u, v
                n += 1
            if p[_K_POINTED] > 0:  # a folded respirator's bottom: corner, tip, corner
                cru, crv = vertices[i, 5, 0], vertices[i, 5, 1]
                clu, clv = vertices[i, n - 1, 0], vertices[i, n - 1, 1]
                tu, tv = chin_u, chin_v + chin_drop + bottom_drop + bottom_offset
                five = ((cru, crv), ((cru + tu) / 2, (crv + tv) / 2 + 0.04), (tu, tv),
                        ((clu + tu) / 2, (clv + tv) / 2 + 0.04), (clu, clv))  # fmt: skip
                for k in range(5):
                    vertices[i, 5 + k, 0], vertices[i, 5 + k, 1] = five[k]
                n = 10
        count[i] = n
        # Bounds: never above the guard, never far beyond the jaw or below the chin.
        jaw_lo, jaw_hi = lm[0, 0], lm[0, 0]
        for k in range(1, 17):
            jaw_lo, jaw_hi = min(jaw_lo, lm[k, 0]), max(jaw_hi, lm[k, 0])
        guard = int(p[_K_GUARD])
        if guard == 1:  # under the nostrils
            v_lo = max(lm[31, 1], lm[33, 1], lm[35, 1]) + 0.05
        elif guard == 2:  # under the lower lip
            v_lo = lm[57, 1] + 0.04
        else:  # under the eyes
            v_lo = eye_guard - 0.1
        runs_off = p[_K_RUNS_OFF]
        bounds[i, 0], bounds[i, 1] = jaw_lo - 0.35, v_lo
        bounds[i, 2] = jaw_hi + 0.35
        bounds[i, 3] = chin_v + (runs_off + 0.6 if runs_off != 0 else 0.6)


def _ear_loops(
    L: np.ndarray, side_l: np.ndarray, side_r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ear loops in face coordinates ``(B, 4, 8, 2)`` (upper and lower curve of the left
    loop, then of the right) and which show ``(B, 4)``: the far side of a turned head is
    hidden."""
    nose_u = L[:, 30, 0]
    half_l, half_r = nose_u - L[:, 0:8, 0].min(1), L[:, 9:17, 0].max(1) - nose_u
    a, b, c = _BEZIER
    curves, shown = [], []
    for side, ear, half, other in ((side_l, L[:, 0], half_l, half_r),
                                   (side_r, L[:, 16], half_r, half_l)):  # fmt: skip
        out = np.sign(side[:, 0] - nose_u)
        ear_pt = ear + np.stack([0.12 * out, np.full_like(out, 0.05)], 1)
        lower = side + np.array([0.0, 0.45])
        s, e, lo = side[:, None], ear_pt[:, None], lower[:, None]
        ctrl = (lower + ear_pt) / 2 + np.stack([0.1 * out, np.full_like(out, 0.1)], 1)
        curves += [a * s + b * (s + e) / 2 + c * e, a * lo + b * ctrl[:, None] + c * e]
        shown += [half >= 0.6 * other] * 2
    return np.stack(curves, 1), np.stack(shown, 1)


def _to_image(uv: np.ndarray, origin: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Batched :meth:`FaceFrame.to_image`: ``(B, N, 2)`` face coordinates → float32 pixels."""
    return (np.matmul(uv, basis) + origin[:, None]).astype(np.float32)


def mask_outlines(
    landmarks: np.ndarray,
    families: Sequence[str],
    coverages: Sequence[str],
    width: Sequence[float] | np.ndarray,
    top_offset: Sequence[float] | np.ndarray,
    bottom_offset: Sequence[float] | np.ndarray,
    valve: Sequence[bool] | np.ndarray,
    straps: Sequence[bool] | np.ndarray,
    *,
    geometry: Sequence[int] | np.ndarray | None = None,
) -> list[Outline]:
    """Outlines of a batch of masks: the one geometry of both rendering paths.

    Every construction step runs on the whole batch in NumPy (the CPU renderer calls it with
    one draw, the batched augmentation with the batch); the family and coverage properties
    are data (:data:`GEOMETRY`, :data:`COVERAGE_RULES`).

    Args:
        landmarks: ``(B, 68, 2)`` pixel landmarks (validated by the caller).
        families, coverages: per draw, names in :data:`GEOMETRY` and :data:`COVERAGES`.
        width, top_offset, bottom_offset, valve, straps: per draw, as in :func:`mask_outline`.
        geometry: per draw, the construction's version (:data:`GEOMETRY_VERSIONS`; default
            the current one).

    Example:
        >>> from maskgen.landmarks import aligned_landmarks
        >>> lm = np.stack([aligned_landmarks()] * 2)
        >>> a, b = mask_outlines(lm, ["surgical", "gaiter"], ["high", "low"], [1, 1], [0, 0],
        ...                      [0, 0], [False, False], [False, False])
        >>> a.polygon.shape, b.polygon.shape  # version 3 splits straight segments in three
        ((60, 2), (21, 2))
    """
    lm = np.asarray(landmarks, np.float32)
    B = len(lm)
    versions = np.full(B, GEOMETRY_VERSION) if geometry is None else np.asarray(geometry)
    versions = versions.reshape(B)
    posed, built = _frontal(lm, versions)
    jitter = (np.asarray(v, np.float64).reshape(B)
              for v in (width, top_offset, bottom_offset, versions))  # fmt: skip
    table = _table(families, coverages, *jitter)
    geos = [GEOMETRY[f] for f in families]
    smooth = np.array([g.smooth for g in geos], bool)
    origin, ax, ay, unit = built_frames = _frames(built)
    L = _face_coordinates(built, built_frames)
    # The frames of the face as photographed (the outlines' frames) and its coordinates in
    # them: the construction's own where nothing is posed.
    frames = built_frames if built is lm else _frames(lm)
    vertices = np.empty((B, _TOP + _BOTTOM, 2))
    count, anchor = np.empty(B, np.intp), np.empty((B, 2))
    sides, bounds = np.empty((B, 2, 2)), np.empty((B, 4))
    _outline_vertices(L, table, vertices, count, anchor, sides, bounds)
    polygons = _smooth_and_clip(vertices, count, smooth, bounds[:, None, :2], bounds[:, None, 2:])
    to_image = np.stack([ax, ay], 1) * unit[:, None, None]
    images = [_to_image(p[None], origin[i : i + 1], to_image[i : i + 1])[0]
              for i, p in enumerate(polygons)]  # fmt: skip
    seams = _seams(polygons, anchor, count, geos, origin, to_image)
    has_valve = np.asarray(valve, bool).reshape(B) & np.array([g.valve for g in geos], bool)
    au, side_l, side_r = anchor[:, 0], sides[:, 0], sides[:, 1]
    if has_valve.any():
        c = np.stack([au + 0.45 * (side_r[:, 0] - au), L[:, 54, 1] + 0.05], 1)[:, None]
        valves = _to_image(c, origin, to_image)[:, 0]
    has_loops = np.asarray(straps, bool).reshape(B)
    if has_loops.any():
        # Which loops show is read off the face as photographed (a frontal view shows both).
        seen = L if built is lm else _face_coordinates(lm, frames)
        loops, _ = _ear_loops(L, side_l, side_r)
        _, shown = _ear_loops(seen, side_l, side_r)
        loops_px = _to_image(loops.reshape(B, 32, 2), origin, to_image).reshape(B, 4, 8, 2)
    out = []
    for i in range(B):
        frame = FaceFrame(frames[0][i], frames[1][i], frames[2][i], float(frames[3][i]))
        top_count = (_TOP - 1) * (SMOOTH_SAMPLES if smooth[i] else 1) + 1
        centre = None
        if has_valve[i]:
            centre = valves[i]
        lines = tuple(loops_px[i, k] for k in range(4) if shown[i, k]) if has_loops[i] else ()
        face = posed[i]
        if face is None:
            polygon, seam, frontal = images[i], seams[i], None
        else:
            frontal = images[i] if smooth[i] else _subdivide(images[i], POSED_SUBDIVISION)
            top_count = top_count if smooth[i] else (top_count - 1) * POSED_SUBDIVISION + 1
            polygon = face.place(frontal)
            seam = None if seams[i] is None else face.place(_resample(seams[i], POSED_SEAM_POINTS))
            centre = None if centre is None else face.place(centre[None])[0]
            lines = tuple(face.place_loop(line) for line in lines)
        valve_px = None
        if centre is not None:
            valve_px = (float(centre[0]), float(centre[1]), 0.14 * frame.unit)
        out.append(Outline(polygon, frame, seam, valve_px, lines, top_count, face, frontal))
    return out


def _frontal(lm: np.ndarray, versions: np.ndarray) -> tuple[list[PosedFace | None], np.ndarray]:
    """The posed faces of the draws built on the posed surface (``None`` for the others) and
    the landmarks every outline is constructed on: the frontal landmarks for those draws,
    the landmarks themselves (the same array) when there are none."""
    rows = np.flatnonzero(versions >= POSED_GEOMETRY)
    posed: list[PosedFace | None] = [None] * len(lm)
    if not len(rows):
        return posed, lm
    built = lm.copy()
    for i, face in zip(rows, posed_faces(lm[rows]), strict=True):
        posed[i] = face
        built[i] = face.frontal_landmarks()
    return posed, built


def _face_coordinates(lm: np.ndarray, frames: tuple[np.ndarray, ...]) -> np.ndarray:
    """Landmarks ``(B, 68, 2)`` in their face frames (:func:`_frames` of them)."""
    origin, ax, ay, unit = frames
    to_face = np.stack([ax, ay], 2) / unit[:, None, None]
    return np.matmul(lm.astype(np.float64) - origin[:, None], to_face)


def _subdivide(polygon: np.ndarray, pieces: int) -> np.ndarray:
    """A closed polygon with every segment split into ``pieces`` equal ones."""
    nxt = np.roll(polygon, -1, axis=0)
    t = (np.arange(pieces) / pieces)[None, :, None]
    return (polygon[:, None] + (nxt - polygon)[:, None] * t).reshape(-1, 2).astype(polygon.dtype)


def _resample(line: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a polyline."""
    steps = np.hypot(*np.diff(line, axis=0).T.astype(np.float64))
    s = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.linspace(0.0, s[-1], n)
    return np.column_stack([np.interp(at, s, line[:, 0]), np.interp(at, s, line[:, 1])])


def _smooth_and_clip(
    vertices: np.ndarray, n_vertices: np.ndarray, smooth: np.ndarray, lo: np.ndarray,
    hi: np.ndarray,
) -> list[np.ndarray]:  # fmt: skip
    """Each outline's valid vertices, smoothed (Catmull-Rom, by groups of one length) where
    its family is smooth, clipped to its bounds: a list of ``(N_i, 2)`` face-coordinate arrays."""
    if len(vertices) == 1:  # one outline: no grouping
        n = int(n_vertices[0])
        group = vertices[:, :n]
        if smooth[0]:
            group = catmull_rom_closed(group, samples=SMOOTH_SAMPLES)
        return [np.clip(group, lo, hi, out=group)[0]]
    out: list[np.ndarray] = [np.empty((0, 2))] * len(vertices)
    for n in np.unique(n_vertices):
        for is_smooth in (False, True):
            idx = np.flatnonzero((n_vertices == n) & (smooth == is_smooth))
            if not len(idx):
                continue
            group = vertices[idx, :n]
            if is_smooth:
                group = catmull_rom_closed(group, samples=SMOOTH_SAMPLES)
            np.clip(group, lo[idx], hi[idx], out=group)
            for k, i in enumerate(idx):
                out[i] = group[k]
    return out


def _seams(
    polygons: list[np.ndarray], anchor: np.ndarray, count: np.ndarray,
    geos: Sequence[FamilyGeometry], origin: np.ndarray, to_image: np.ndarray,
) -> list[np.ndarray | None]:  # fmt: skip
    """Centre seams (families whose geometry has ``seam``): anchor → the middle of the
    bottom edge (a pointed fold's tip), in pixels; ``None`` elsewhere."""
    out: list[np.ndarray | None] = [None] * len(polygons)
    for i, geo in enumerate(geos):
        if not geo.seam:
            continue
        middle = _TOP + (int(count[i]) - _TOP) // 2
        tip = polygons[i][middle * SMOOTH_SAMPLES if geo.smooth else middle]
        au, av = anchor[i]
        line = np.array([[au, av], [(au + tip[0]) / 2, (av + tip[1]) / 2], tip])
        out[i] = _to_image(line[None], origin[i : i + 1], to_image[i : i + 1])[0]
    return out


def mask_outline(
    landmarks: np.ndarray,
    family: str = "surgical",
    coverage: str = "high",
    *,
    width: float = 1.0,
    top_offset: float = 0.0,
    bottom_offset: float = 0.0,
    valve: bool = False,
    straps: bool = False,
    geometry: int = GEOMETRY_VERSION,
) -> Outline:
    """The outline of one mask of ``family`` at ``coverage`` on a face's 68 landmarks
    (:func:`mask_outlines` with one draw).

    Args:
        landmarks: (68, 2) pixel landmarks (validated by the caller).
        family: one of :data:`GEOMETRY`.
        coverage: one of :data:`COVERAGES`.
        width: scales how far the side corners reach out from the nose (1 = nominal).
        top_offset: shifts the top edge down (+) or up (−), in face units.
        bottom_offset: lets the bottom hang lower (+) or higher (−), in face units.
        valve: add an exhalation valve (families whose geometry has ``valve``).
        straps: add ear loops from the side corners towards the ears.
        geometry: the construction's version (:data:`GEOMETRY_VERSIONS`).
    """
    (outline,) = mask_outlines(np.asarray(landmarks)[None], [family], [coverage], [width],
                               [top_offset], [bottom_offset], [valve], [straps],
                               geometry=[geometry])  # fmt: skip
    return outline
