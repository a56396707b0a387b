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

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
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


#: The numbers and flags of :class:`FamilyGeometry` the outline construction reads.
_GEOMETRY_FIELDS = tuple(f.name for f in fields(FamilyGeometry) if f.name != "pleats_as")
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
    dict[str, FamilyGeometry], dict[str, tuple[int, int, float]], dict[str, CoverageRule]
]:
    shapes = asset_json("shapes.json")
    families = {name: FamilyGeometry(**g) for name, g in shapes["families"].items()}
    coverages = shapes["coverages"]
    anchors = {
        name: (int(c["from"]), int(c["to"]), float(c["fraction"])) for name, c in coverages.items()
    }
    rules = {
        name: CoverageRule(str(c["top_guard"]), bool(c["covers_mouth"]))
        for name, c in coverages.items()
    }
    return families, anchors, rules


#: Shape families (``templates/shapes.json``); extend with :func:`register_family`.
GEOMETRY: dict[str, FamilyGeometry]
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
    """

    polygon: np.ndarray
    frame: FaceFrame
    seam: np.ndarray | None = None
    valve: tuple[float, float, float] | None = None
    straps: tuple[np.ndarray, ...] = field(default_factory=tuple)


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
#: Vertex slots of an outline: the top edge (side, cheek, anchor, cheek, side) and the bottom
#: (right jaw, chin, left jaw: at most 8 + 1 + 8 points).
_TOP, _BOTTOM = 5, 17
_RIGHT_JAW = np.arange(16, 7, -1)  # ear → chin, image right
_LEFT_JAW = np.arange(0, 9)
# Quadratic Bézier weights of the ear loops' 8 samples: (1 - t)², 2t(1 - t), t².
_T = np.linspace(0, 1, 8)[:, None]
_BEZIER = ((1 - _T) ** 2, 2 * _T * (1 - _T), _T**2)


def _table(families: Sequence[str], coverages: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-draw columns of the family and coverage data (unknown names are an error)."""
    for family in families:
        if family not in GEOMETRY:
            raise ValueError(f"unknown mask family {family!r}; choose from {', '.join(GEOMETRY)}")
    for coverage in coverages:
        if coverage not in COVERAGE_ANCHORS:
            raise ValueError(f"unknown coverage {coverage!r}; choose from {', '.join(COVERAGES)}")
    geos = [GEOMETRY[f] for f in families]
    cols = {name: np.array([getattr(g, name) for g in geos]) for name in _GEOMETRY_FIELDS}
    anchors = [COVERAGE_ANCHORS[c] for c in coverages]
    cols["anchor_a"] = np.array([a for a, _, _ in anchors], np.intp)
    cols["anchor_b"] = np.array([b for _, b, _ in anchors], np.intp)
    cols["fraction"] = np.array([t for _, _, t in anchors], np.float64)
    rules = [COVERAGE_RULES[c] for c in coverages]
    cols["guard"] = np.array([_GUARDS.index(r.top_guard) for r in rules], np.intp)
    cols["mouth"] = np.array([r.covers_mouth for r in rules])
    return cols


def _frames(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched :meth:`FaceFrame.from_landmarks`: origin, ax, ay ``(B, 2)`` and unit ``(B,)``."""
    eyes = lm[:, 36:48].reshape(-1, 2, 6, 2).mean(axis=2, dtype=np.float64)
    (lx, ly), (rx, ry) = eyes[:, 0].T, eyes[:, 1].T
    dx, dy = rx - lx, ry - ly
    norm = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-9)
    ax = np.stack([dx / norm, dy / norm], 1)
    ay = np.stack([-ax[:, 1], ax[:, 0]], 1)
    origin = np.stack([(lx + rx) / 2, (ly + ry) / 2], 1)
    mouth = lm[:, [48, 54]].astype(np.float64)
    mx, my = (mouth[:, 0, 0] + mouth[:, 1, 0]) / 2, (mouth[:, 0, 1] + mouth[:, 1, 1]) / 2
    unit = (mx - origin[:, 0]) * ay[:, 0] + (my - origin[:, 1]) * ay[:, 1]
    return origin, ax, ay, np.maximum(unit, 1e-3)


def _jaw_at_level(jaw: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each jaw side ``(B, 9, 2)`` (ear → chin) crosses height ``level`` ``(B,)``, and
    the index of the first jaw point strictly below it (9 if none is)."""
    below = jaw[..., 1] > level[:, None]
    has = below.any(1)
    first = np.where(has, below.argmax(1), jaw.shape[1])
    rows = np.arange(len(jaw))
    i = np.clip(first, 1, jaw.shape[1] - 1)
    (pu, pv), (u, v) = jaw[rows, i - 1].T, jaw[rows, i].T
    t = (level - pv) / np.maximum(v - pv, 1e-9)
    point = np.stack([pu + (u - pu) * t, pv + (v - pv) * t], 1)
    point = np.where((first == 0)[:, None], jaw[:, 0], point)
    point = np.where(has[:, None], point, jaw[:, -1])
    return point, np.where(first == 0, 1, first)


def _bottom_edge(
    L: np.ndarray, g: dict[str, np.ndarray], il: np.ndarray, ir: np.ndarray,
    side_level: np.ndarray, centre: np.ndarray, bottom_offset: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Bottoms of closed masks: jaw points below the side corners (right → chin → left),
    pushed out and down; ``(B, 17, 2)`` slots, valid ones first, and their counts."""
    B = len(L)
    k = np.arange(8)
    slots = np.concatenate([L[:, 16 - k], L[:, 8:9], L[:, 7 - k]], 1)
    valid = np.concatenate(
        [k[None] >= ir[:, None], np.ones((B, 1), bool), (7 - k)[None] >= il[:, None]], 1
    )
    chin_v = L[:, 8, 1][:, None]
    span = np.maximum(chin_v[:, 0] - side_level, 1e-3)[:, None]
    # More drop near the chin; rounded families pull the upper corners inwards.
    closeness = np.minimum(np.maximum(1 - np.abs(slots[..., 1] - chin_v) / span, 0.0), 1.0)
    drop = g["bottom_drop"][:, None] + (g["chin_drop"] + bottom_offset)[:, None] * (
        closeness * closeness
    )
    du, dv = slots[..., 0] - centre[:, 0:1], slots[..., 1] - centre[:, 1:2]
    n = np.maximum(np.sqrt(du * du + dv * dv), 1e-9)
    u, v = slots[..., 0] + du / n * drop, slots[..., 1] + dv / n * drop
    pull = g["inset_bottom"][:, None] * (1 - closeness)
    u = u + np.sign(centre[:, 0:1] - u) * pull
    order = np.argsort(~valid, axis=1, kind="stable")  # valid slots first, in order
    bottom = np.take_along_axis(np.stack([u, v], -1), order[..., None], 1)
    count = valid.sum(1)
    # A pointed bottom (KN95 fold): corner, mid, tip, mid, corner.
    pointed = g["pointed"]
    if pointed.any():
        rows = np.arange(B)
        cr, cl = bottom[:, 0], bottom[rows, count - 1]
        tip = np.stack(
            [L[:, 8, 0], L[:, 8, 1] + g["chin_drop"] + g["bottom_drop"] + bottom_offset], 1
        )
        lift = np.array([0.0, 0.04])
        five = np.stack([cr, (cr + tip) / 2 + lift, tip, (cl + tip) / 2 + lift, cl], 1)
        bottom[pointed, :5] = five[pointed]
        count = np.where(pointed, 5, count)
    return bottom, count


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
) -> list[Outline]:
    """Outlines of a batch of masks: the one geometry of both rendering paths.

    Every construction step runs on the whole batch in NumPy (the CPU renderer calls it with
    one draw, the batched augmentation with the batch); the family and coverage properties
    are data (:data:`GEOMETRY`, :data:`COVERAGE_RULES`).

    Args:
        landmarks: ``(B, 68, 2)`` pixel landmarks (validated by the caller).
        families, coverages: per draw, names in :data:`GEOMETRY` and :data:`COVERAGES`.
        width, top_offset, bottom_offset, valve, straps: per draw, as in :func:`mask_outline`.

    Example:
        >>> from maskgen.landmarks import aligned_landmarks
        >>> lm = np.stack([aligned_landmarks()] * 2)
        >>> a, b = mask_outlines(lm, ["surgical", "gaiter"], ["high", "low"], [1, 1], [0, 0],
        ...                      [0, 0], [False, False], [False, False])
        >>> a.polygon.shape, b.polygon.shape
        ((20, 2), (7, 2))
    """
    lm = np.asarray(landmarks, np.float32)
    B = len(lm)
    g = _table(families, coverages)
    width, top_offset, bottom_offset = (np.asarray(v, np.float64).reshape(B)
                                        for v in (width, top_offset, bottom_offset))  # fmt: skip
    origin, ax, ay, unit = _frames(lm)
    to_face = np.stack([ax, ay], 2) / unit[:, None, None]
    L = np.matmul(lm.astype(np.float64) - origin[:, None], to_face)
    rows = np.arange(B)

    # Top edge: the nose anchor of the coverage, the cheeks and the side corners on the jaw.
    la, lb, t = L[rows, g["anchor_a"]], L[rows, g["anchor_b"]], g["fraction"]
    au = la[:, 0] + (lb[:, 0] - la[:, 0]) * t
    av = la[:, 1] + (lb[:, 1] - la[:, 1]) * t + (top_offset - g["raise_top"])
    eye_guard = L[:, 36:48, 1].max(1) + 0.08
    cheek_level = av + g["raise_top"] + g["droop"]
    # Keep the mouth corners under the mask, even in a broad smile (unless worn on the chin).
    mouth_cap = np.minimum(L[:, 48, 1], L[:, 54, 1]) - 0.12
    cheek_level = np.where(g["mouth"], np.minimum(cheek_level, mouth_cap), cheek_level)
    cheek_level = np.maximum(cheek_level, eye_guard)
    side_level = cheek_level + g["side_drop"]
    (lu, lv), il = (lambda pt, i: (pt.T, i))(*_jaw_at_level(L[:, _LEFT_JAW], side_level))
    (ru, rv), ir = (lambda pt, i: (pt.T, i))(*_jaw_at_level(L[:, _RIGHT_JAW], side_level))
    side_l = np.stack([au + (lu - au) * width - g["outset"], av + (lv - av) * width], 1)
    side_r = np.stack([au + (ru - au) * width + g["outset"], av + (rv - av) * width], 1)
    cheek_u = [L[:, lo, 0] for lo in (36, 42)]
    for k in range(1, 6):  # summed in order, as the scalar construction did
        cheek_u = [cheek_u[0] + L[:, 36 + k, 0], cheek_u[1] + L[:, 42 + k, 0]]
    anchor = np.stack([au, av], 1)
    top = np.stack([side_l, np.stack([cheek_u[0] / 6, cheek_level], 1), anchor,
                    np.stack([cheek_u[1] / 6, cheek_level], 1), side_r], 1)  # fmt: skip

    # Bottom edge: along the jaw, or straight across below the chin (runs off the face).
    chin_v = L[:, 8, 1]
    centre = np.stack([au, L[:, 33, 1]], 1)
    bottom, count = _bottom_edge(L, g, il, ir, side_level, centre, bottom_offset)
    runs = g["runs_off"] > 0
    if runs.any():
        depth = chin_v + g["runs_off"] + bottom_offset
        bottom[runs, 0] = np.stack([side_r[:, 0], depth], 1)[runs]
        bottom[runs, 1] = np.stack([side_l[:, 0], depth], 1)[runs]
        count = np.where(runs, 2, count)
    vertices = np.concatenate([top, bottom], 1)
    n_vertices = _TOP + count

    # Bound the mask to the face: never above the eyes, never far beyond the jaw or chin.
    jaw_u = L[:, 0:17, 0]
    guards = np.stack([eye_guard - 0.1, L[:, [31, 33, 35], 1].max(1) + 0.05, L[:, 57, 1] + 0.04])
    lo = np.stack([jaw_u.min(1) - 0.35, guards[g["guard"], rows]], 1)[:, None]
    hi = np.stack([jaw_u.max(1) + 0.35, chin_v + np.where(runs, g["runs_off"] + 0.6, 0.6)], 1)
    polygons = _smooth_and_clip(vertices, n_vertices, g["smooth"], lo, hi[:, None])

    to_image = np.stack([ax, ay], 1) * unit[:, None, None]
    images = [_to_image(p[None], origin[i : i + 1], to_image[i : i + 1])[0]
              for i, p in enumerate(polygons)]  # fmt: skip
    seams = _seams(polygons, anchor, count, g, origin, to_image)
    c = np.stack([au + 0.45 * (side_r[:, 0] - au), L[:, 54, 1] + 0.05], 1)[:, None]
    valves = _to_image(c, origin, to_image)[:, 0]
    has_valve = np.asarray(valve, bool) & g["valve"]
    loops, shown = _ear_loops(L, side_l, side_r)
    loops_px = _to_image(loops.reshape(B, 32, 2), origin, to_image).reshape(B, 4, 8, 2)
    has_loops = np.asarray(straps, bool)
    out = []
    for i in range(B):
        frame = FaceFrame(origin[i], ax[i], ay[i], float(unit[i]))
        valve_px = None
        if has_valve[i]:
            valve_px = (float(valves[i, 0]), float(valves[i, 1]), 0.14 * frame.unit)
        lines = tuple(loops_px[i, k] for k in range(4) if shown[i, k]) if has_loops[i] else ()
        out.append(Outline(images[i], frame, seams[i], valve_px, lines))
    return out


def _smooth_and_clip(
    vertices: np.ndarray, n_vertices: np.ndarray, smooth: np.ndarray, lo: np.ndarray,
    hi: np.ndarray,
) -> list[np.ndarray]:  # fmt: skip
    """Each outline's valid vertices, smoothed (Catmull-Rom, by groups of one length) where
    its family is smooth, clipped to its bounds: a list of ``(N_i, 2)`` face-coordinate arrays."""
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
    g: dict[str, np.ndarray], origin: np.ndarray, to_image: np.ndarray,
) -> list[np.ndarray | None]:  # fmt: skip
    """Centre seams (families whose geometry has ``seam``): anchor → the middle of the
    bottom edge (a pointed fold's tip), in pixels; ``None`` elsewhere."""
    out: list[np.ndarray | None] = [None] * len(polygons)
    for i in np.flatnonzero(g["seam"]):
        middle = _TOP + int(count[i]) // 2
        tip = polygons[i][middle * SMOOTH_SAMPLES if g["smooth"][i] else middle]
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
    """
    (outline,) = mask_outlines(np.asarray(landmarks)[None], [family], [coverage], [width],
                               [top_offset], [bottom_offset], [valve], [straps])  # fmt: skip
    return outline
