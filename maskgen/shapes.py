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

import numpy as np

FAMILIES: tuple[str, ...] = ("surgical", "wide", "round", "kn95", "n95", "cloth", "gaiter")
COVERAGES: tuple[str, ...] = ("high", "medium", "low", "chin")


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


GEOMETRY: dict[str, FamilyGeometry] = {
    "surgical": FamilyGeometry(),
    "wide": FamilyGeometry(raise_top=0.02, droop=0.03, side_drop=0.0, outset=0.09,
                           bottom_drop=0.10, chin_drop=0.14),
    "round": FamilyGeometry(raise_top=0.05, droop=0.14, side_drop=0.10, outset=-0.02,
                            bottom_drop=0.03, chin_drop=0.08, smooth=True, inset_bottom=0.14),
    "kn95": FamilyGeometry(raise_top=0.08, droop=0.22, side_drop=0.08, outset=-0.01,
                           bottom_drop=0.05, chin_drop=0.22, pointed=True),
    "n95": FamilyGeometry(raise_top=0.06, droop=0.14, side_drop=0.06, outset=-0.04,
                          bottom_drop=0.04, chin_drop=0.10, smooth=True, inset_bottom=0.06),
    "cloth": FamilyGeometry(raise_top=0.06, droop=0.09, side_drop=0.04, outset=0.04,
                            bottom_drop=0.07, chin_drop=0.12, smooth=True),
    "gaiter": FamilyGeometry(raise_top=0.02, droop=0.04, side_drop=0.0, outset=0.12,
                             bottom_drop=0.0, chin_drop=0.0, runs_off=1.6),
}  # fmt: skip

#: Where the top edge crosses the nose line, per coverage: (point a, point b, fraction a→b).
COVERAGE_ANCHORS: dict[str, tuple[int, int, float]] = {
    "high": (27, 30, 0.36),  # up on the nose bridge
    "medium": (27, 30, 0.62),  # mid nose
    "low": (33, 51, 0.45),  # below the nostrils: nose exposed (worn incorrectly)
    "chin": (57, 8, 0.30),  # below the lower lip: chin only (worn incorrectly)
}


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
        lm = lm.astype(np.float64)
        eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
        ax = eye_r - eye_l
        ax /= max(np.hypot(*ax), 1e-9)
        ay = np.array([-ax[1], ax[0]])
        origin = (eye_l + eye_r) / 2
        unit = float((0.5 * (lm[48] + lm[54]) - origin) @ ay)
        return cls(origin, ax, ay, max(unit, 1e-3))

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        rel = (np.asarray(pts, np.float64) - self.origin) / self.unit
        return np.stack([rel @ self.ax, rel @ self.ay], axis=-1)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        basis = np.stack([self.ax, self.ay]) * self.unit
        return (np.asarray(uv) @ basis + self.origin).astype(np.float32)


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


def _jaw_point_at_level(jaw_side: np.ndarray, level: float) -> tuple[np.ndarray, int]:
    """Point where a jaw side (ear → chin, face coords) crosses height ``level``.

    Returns the point and the index of the first jaw landmark strictly below it.
    """
    v = jaw_side[:, 1]
    below = np.flatnonzero(v > level)
    if len(below) == 0:
        return jaw_side[-1].copy(), len(jaw_side)
    i = int(below[0])
    if i == 0:
        return jaw_side[0].copy(), 1
    a, b = jaw_side[i - 1], jaw_side[i]
    t = (level - a[1]) / max(b[1] - a[1], 1e-9)
    return a + (b - a) * t, i


def _push(points: np.ndarray, centre: np.ndarray, amount: np.ndarray | float) -> np.ndarray:
    """Move points away from ``centre`` by ``amount`` (face units)."""
    d = points - centre
    n = np.hypot(d[:, 0], d[:, 1])[:, None]
    return points + d / np.maximum(n, 1e-9) * np.reshape(amount, (-1, 1))


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

    Args:
        landmarks: (68, 2) pixel landmarks (validated by the caller).
        family: one of :data:`FAMILIES`.
        coverage: one of :data:`COVERAGES`.
        width: scales how far the side corners reach out from the nose (1 = nominal).
        top_offset: shifts the top edge down (+) or up (−), in face units.
        bottom_offset: lets the bottom hang lower (+) or higher (−), in face units.
        valve: add an exhalation valve (N95/KN95 only).
        straps: add ear loops from the side corners towards the ears.
    """
    if family not in GEOMETRY:
        raise ValueError(f"unknown mask family {family!r}; choose from {', '.join(FAMILIES)}")
    if coverage not in COVERAGE_ANCHORS:
        raise ValueError(f"unknown coverage {coverage!r}; choose from {', '.join(COVERAGES)}")
    geo = GEOMETRY[family]
    frame = FaceFrame.from_landmarks(landmarks)
    L = frame.to_face(landmarks)

    a, b, t = COVERAGE_ANCHORS[coverage]
    anchor = L[a] + (L[b] - L[a]) * t
    anchor[1] += top_offset - geo.raise_top
    eye_guard = float(L[36:48, 1].max()) + 0.08
    cheek_level = max(anchor[1] + geo.raise_top + geo.droop, eye_guard)
    side_level = cheek_level + geo.side_drop

    left_jaw, right_jaw = L[0:9], L[16:7:-1]
    side_l, il = _jaw_point_at_level(left_jaw, side_level)
    side_r, ir = _jaw_point_at_level(right_jaw, side_level)
    side_l = anchor + (side_l - anchor) * width
    side_r = anchor + (side_r - anchor) * width
    side_l[0] -= geo.outset
    side_r[0] += geo.outset
    cheek_l = np.array([L[36:42, 0].mean(), cheek_level])
    cheek_r = np.array([L[42:48, 0].mean(), cheek_level])
    top = np.stack([side_l, cheek_l, anchor, cheek_r, side_r])

    centre = np.array([anchor[0], float(L[33, 1])])
    chin = L[8]
    chin_v = float(chin[1])
    if geo.runs_off > 0:
        depth = chin_v + geo.runs_off + bottom_offset
        bottom = np.array([[side_r[0], depth], [side_l[0], depth]])
    else:
        # Jaw points below the sides, right side then back up the left, ear → chin → ear.
        jaw_below = np.concatenate([right_jaw[ir:8], [chin], left_jaw[il:8][::-1]])
        # Pull the jaw points in/out: more drop near the chin, optional inset at the corners.
        closeness = 1 - np.abs(jaw_below[:, 1] - chin_v) / max(chin_v - side_level, 1e-3)
        closeness = np.clip(closeness, 0, 1)
        drop = geo.bottom_drop + (geo.chin_drop + bottom_offset) * closeness**2
        bottom = _push(jaw_below, centre, drop)
        if geo.inset_bottom:
            pull = geo.inset_bottom * (1 - closeness)
            bottom[:, 0] += np.sign(centre[0] - bottom[:, 0]) * pull
        if geo.pointed:
            tip = chin + np.array([0.0, geo.chin_drop + geo.bottom_drop + bottom_offset])
            corner_r, corner_l = bottom[0], bottom[-1]
            bottom = np.stack([corner_r, (corner_r + tip) / 2 + [0, 0.04], tip,
                               (corner_l + tip) / 2 + [0, 0.04], corner_l])  # fmt: skip
    poly = np.concatenate([top, bottom])
    if geo.smooth:
        poly = catmull_rom_closed(poly, samples=5)

    # Bound the mask to the face: never above the eyes, never far beyond the jaw or chin.
    jaw_u = L[0:17, 0]
    lo_u, hi_u = float(jaw_u.min()) - 0.35, float(jaw_u.max()) + 0.35
    max_v = chin_v + (geo.runs_off + 0.6 if geo.runs_off else 0.6)
    poly[:, 0] = np.clip(poly[:, 0], lo_u, hi_u)
    poly[:, 1] = np.clip(poly[:, 1], eye_guard - 0.1, max_v)

    seam = None
    if family == "kn95":
        seam = frame.to_image(np.stack([anchor, (anchor + poly[len(top) + 2]) / 2,
                                        poly[len(top) + 2]]))  # fmt: skip
    valve_px = None
    if valve and family in ("n95", "kn95"):
        c = np.array([anchor[0] + 0.45 * (side_r[0] - anchor[0]), float(L[54, 1]) + 0.05])
        cx, cy = frame.to_image(c[None])[0]
        valve_px = (float(cx), float(cy), 0.14 * frame.unit)
    strap_lines: tuple[np.ndarray, ...] = ()
    if straps:
        strap_lines = _ear_loops(L, frame, side_l, side_r)
    return Outline(frame.to_image(poly), frame, seam, valve_px, strap_lines)


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
        t = np.linspace(0, 1, 8)[:, None]
        upper_curve = (1 - t) ** 2 * side + 2 * t * (1 - t) * (side + ear_pt) / 2 + t**2 * ear_pt
        ctrl = (lower + ear_pt) / 2 + np.array([0.1 * out, 0.1])
        lower_curve = (1 - t) ** 2 * lower + 2 * t * (1 - t) * ctrl + t**2 * ear_pt
        loops.append(frame.to_image(upper_curve))
        loops.append(frame.to_image(lower_curve))
    return tuple(loops)
