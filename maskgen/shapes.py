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

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from maskgen._assets import asset_json


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


def _load_shapes() -> tuple[dict[str, FamilyGeometry], dict[str, tuple[int, int, float]]]:
    shapes = asset_json("shapes.json")
    families = {name: FamilyGeometry(**g) for name, g in shapes["families"].items()}
    anchors = {
        name: (int(c["from"]), int(c["to"]), float(c["fraction"]))
        for name, c in shapes["coverages"].items()
    }
    return families, anchors


#: Shape families (``templates/shapes.json``); extend with :func:`register_family`.
GEOMETRY: dict[str, FamilyGeometry]
#: Where the top edge crosses the nose line, per coverage: (point a, point b, fraction a→b).
COVERAGE_ANCHORS: dict[str, tuple[int, int, float]]
GEOMETRY, COVERAGE_ANCHORS = _load_shapes()
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
        (lx, ly), (rx, ry) = lm[36:48].reshape(2, 6, 2).mean(axis=1, dtype=np.float64).tolist()
        dx, dy = rx - lx, ry - ly
        norm = max((dx * dx + dy * dy) ** 0.5, 1e-9)
        ax = np.array([dx / norm, dy / norm])
        ay = np.array([-ax[1], ax[0]])
        ox, oy = (lx + rx) / 2, (ly + ry) / 2
        (m1x, m1y), (m2x, m2y) = lm[[48, 54]].tolist()
        unit = ((m1x + m2x) / 2 - ox) * ay[0] + ((m1y + m2y) / 2 - oy) * ay[1]
        return cls(np.array([ox, oy]), ax, ay, max(float(unit), 1e-3))

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
    """

    polygon: np.ndarray
    frame: FaceFrame
    seam: np.ndarray | None = None
    valve: tuple[float, float, float] | None = None
    straps: tuple[np.ndarray, ...] = field(default_factory=tuple)


def catmull_rom_closed(points: np.ndarray, samples: int = 6) -> np.ndarray:
    """Closed Catmull-Rom spline through ``points`` with ``samples`` points per segment."""
    p1 = points
    p0, p2, p3 = np.roll(points, 1, 0), np.roll(points, -1, 0), np.roll(points, -2, 0)
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    t2, t3 = t * t, t * t * t
    a, b, c, d = (x[:, None, :] for x in (p0, p1, p2, p3))
    curve = 0.5 * (
        2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t2 + (3 * b - a - 3 * c + d) * t3
    )
    return curve.reshape(-1, 2)


Point = tuple[float, float]


def _jaw_point_at_level(jaw_side: list[list[float]], level: float) -> tuple[Point, int]:
    """Point where a jaw side (ear → chin, face coords) crosses height ``level``.

    Returns the point and the index of the first jaw landmark strictly below it.
    """
    prev = None
    for i, (u, v) in enumerate(jaw_side):
        if v > level:
            if prev is None:
                return (u, v), 1
            pu, pv = prev
            t = (level - pv) / max(v - pv, 1e-9)
            return (pu + (u - pu) * t, pv + (v - pv) * t), i
        prev = (u, v)
    last = jaw_side[-1]
    return (last[0], last[1]), len(jaw_side)


def _push(point: Point, centre: Point, amount: float) -> Point:
    """Move a point away from ``centre`` by ``amount`` (face units)."""
    du, dv = point[0] - centre[0], point[1] - centre[1]
    n = max((du * du + dv * dv) ** 0.5, 1e-9)
    return point[0] + du / n * amount, point[1] + dv / n * amount


def _lerp(a: list[float], b: list[float], t: float) -> Point:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _bottom_edge(
    L: list[list[float]],
    geo: FamilyGeometry,
    il: int,
    ir: int,
    side_level: float,
    centre: Point,
    bottom_offset: float,
) -> list[Point]:
    """Bottom of a closed mask: jaw points below the side corners, right side → chin → left."""
    chin = (L[8][0], L[8][1])
    chin_v = chin[1]
    right_jaw = [L[16 - k] for k in range(ir, 8)]
    left_jaw = [L[k] for k in range(7, il - 1, -1)]
    span = max(chin_v - side_level, 1e-3)
    bottom = []
    for pt in [*right_jaw, chin, *left_jaw]:
        # More drop near the chin; rounded families pull the upper corners inwards.
        closeness = min(max(1 - abs(pt[1] - chin_v) / span, 0.0), 1.0)
        drop = geo.bottom_drop + (geo.chin_drop + bottom_offset) * closeness**2
        u, v = _push((pt[0], pt[1]), centre, drop)
        if geo.inset_bottom:
            pull = geo.inset_bottom * (1 - closeness)
            u += pull if centre[0] > u else -pull if centre[0] < u else 0.0
        bottom.append((u, v))
    if geo.pointed:
        tip = (chin[0], chin_v + geo.chin_drop + geo.bottom_drop + bottom_offset)
        cr, cl = bottom[0], bottom[-1]
        bottom = [
            cr,
            ((cr[0] + tip[0]) / 2, (cr[1] + tip[1]) / 2 + 0.04),
            tip,
            ((cl[0] + tip[0]) / 2, (cl[1] + tip[1]) / 2 + 0.04),
            cl,
        ]
    return bottom


def _top_guard(L: list[list[float]], coverage: str, eye_guard: float) -> float:
    """Highest the outline may reach: under the eyes; under the nostrils when worn low;
    under the lower lip when worn on the chin (smooth outlines may overshoot their anchor)."""
    if coverage == "low":
        return max(L[31][1], L[33][1], L[35][1]) + 0.05
    if coverage == "chin":
        return L[57][1] + 0.04
    return eye_guard - 0.1


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
) -> Outline:
    """Build the outline of a mask of ``family`` at ``coverage`` on a face's 68 landmarks.

    The construction runs on Python floats (a few dozen points): at this size that is
    several times faster than NumPy's per-call overhead.

    Args:
        landmarks: (68, 2) pixel landmarks (validated by the caller).
        family: one of :data:`FAMILIES`.
        coverage: one of :data:`COVERAGES`.
        width: scales how far the side corners reach out from the nose (1 = nominal).
        top_offset: shifts the top edge down (+) or up (−), in face units.
        bottom_offset: lets the bottom hang lower (+) or higher (−), in face units.
        valve: add an exhalation valve (families whose geometry has ``valve``).
        straps: add ear loops from the side corners towards the ears.
    """
    if family not in GEOMETRY:
        raise ValueError(f"unknown mask family {family!r}; choose from {', '.join(GEOMETRY)}")
    if coverage not in COVERAGE_ANCHORS:
        raise ValueError(f"unknown coverage {coverage!r}; choose from {', '.join(COVERAGES)}")
    geo = GEOMETRY[family]
    frame = FaceFrame.from_landmarks(landmarks)
    L = frame.to_face(landmarks).tolist()

    a, b, t = COVERAGE_ANCHORS[coverage]
    au, av = _lerp(L[a], L[b], t)
    av += top_offset - geo.raise_top
    eye_guard = max(p[1] for p in L[36:48]) + 0.08
    cheek_level = av + geo.raise_top + geo.droop
    if coverage != "chin":
        # Keep the mouth corners under the mask, even in a broad smile.
        cheek_level = min(cheek_level, min(L[48][1], L[54][1]) - 0.12)
    cheek_level = max(cheek_level, eye_guard)
    side_level = cheek_level + geo.side_drop

    (lu, lv), il = _jaw_point_at_level(L[0:9], side_level)
    (ru, rv), ir = _jaw_point_at_level(L[16:7:-1], side_level)
    side_l = (au + (lu - au) * width - geo.outset, av + (lv - av) * width)
    side_r = (au + (ru - au) * width + geo.outset, av + (rv - av) * width)
    cheek_l = (sum(p[0] for p in L[36:42]) / 6, cheek_level)
    cheek_r = (sum(p[0] for p in L[42:48]) / 6, cheek_level)
    anchor = (au, av)
    top = [side_l, cheek_l, anchor, cheek_r, side_r]

    chin_v = L[8][1]
    if geo.runs_off > 0:
        depth = chin_v + geo.runs_off + bottom_offset
        bottom = [(side_r[0], depth), (side_l[0], depth)]
    else:
        centre = (au, L[33][1])
        bottom = _bottom_edge(L, geo, il, ir, side_level, centre, bottom_offset)
    poly = np.array(top + bottom, dtype=np.float64)
    if geo.smooth:
        poly = catmull_rom_closed(poly, samples=5)

    # Bound the mask to the face: never above the eyes, never far beyond the jaw or chin.
    jaw_u = [p[0] for p in L[0:17]]
    max_v = chin_v + (geo.runs_off + 0.6 if geo.runs_off else 0.6)
    np.clip(poly, (min(jaw_u) - 0.35, _top_guard(L, coverage, eye_guard)),
            (max(jaw_u) + 0.35, max_v), out=poly)  # fmt: skip

    seam = None
    if geo.seam:  # anchor → the middle of the bottom edge (a pointed fold's tip)
        middle = len(top) + len(bottom) // 2
        tip = poly[middle * 5 if geo.smooth else middle]
        seam = frame.to_image(np.array([anchor, ((au + tip[0]) / 2, (av + tip[1]) / 2), tip]))
    valve_px = None
    if valve and geo.valve:
        c = np.array([[au + 0.45 * (side_r[0] - au), L[54][1] + 0.05]])
        cx, cy = frame.to_image(c)[0]
        valve_px = (float(cx), float(cy), 0.14 * frame.unit)
    strap_lines: tuple[np.ndarray, ...] = ()
    if straps:
        strap_lines = _ear_loops(np.asarray(L), frame, np.array(side_l), np.array(side_r))
    return Outline(frame.to_image(poly), frame, seam, valve_px, strap_lines)


# Quadratic Bézier weights of the ear loops' 8 samples: (1 - t)², 2t(1 - t), t².
_T = np.linspace(0, 1, 8)[:, None]
_BEZIER = ((1 - _T) ** 2, 2 * _T * (1 - _T), _T**2)


def _ear_loops(
    L: np.ndarray,
    frame: FaceFrame,
    side_l: np.ndarray,
    side_r: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Ear loops from the side corners to the ears; the far side of a turned head is hidden."""
    nose_u = float(L[30, 0])
    half_l, half_r = nose_u - float(L[0:8, 0].min()), float(L[9:17, 0].max()) - nose_u
    loops = []
    for side, ear, half, other in ((side_l, L[0], half_l, half_r), (side_r, L[16], half_r, half_l)):
        if half < 0.6 * other:
            continue
        out = np.sign(side[0] - nose_u)
        ear_pt = ear + np.array([0.12 * out, 0.05])
        lower = side + np.array([0.0, 0.45])
        a, b, c = _BEZIER
        upper_curve = a * side + b * (side + ear_pt) / 2 + c * ear_pt
        ctrl = (lower + ear_pt) / 2 + np.array([0.1 * out, 0.1])
        lower_curve = a * lower + b * ctrl + c * ear_pt
        loops.append(frame.to_image(upper_curve))
        loops.append(frame.to_image(lower_curve))
    return tuple(loops)
