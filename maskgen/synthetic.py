"""Procedural cartoon faces with identity, exact 68-point landmarks and head pose.

Built-in face data for demos, tests and a small CPU face-recognition model: every identity is
a parameter vector (:class:`Identity`) and every image is drawn with OpenCV from the 68
iBUG-300W landmarks of that identity, so the landmarks are exact by construction (the jaw is
the face silhouette, the lip polygons are the lip landmarks, the eye outline is the eye
landmarks, the nose is drawn through the nose landmarks).

Geometry lives in a canonical frontal 3D frame measured in inter-ocular distances (eye
centres at x = ±0.5, eye line at y = 0, y down, z towards the viewer). Yaw and pitch rotate
the 3D points, which are then projected orthographically; roll is a 2D rotation.

Identity cues sit in the upper face (eye shape and size, iris colour, brows, hair colour and
style, hairline, forehead marks and lines) and in the lower face (nose length/width/depth,
mouth width, lip thickness and colour, facial hair, chin and jaw shape, cheek blush,
nasolabial folds, cheek and chin marks, freckles), so a mask over the lower face removes
real identity information.

Speed (one core of an AMD EPYC, ``taskset -c 0``): ``draw_aligned_face`` ≈ 1.6 ms per 112×112
crop (drawn at 2× and downscaled with INTER_AREA; ≈ 2.8 ms the first time an identity is
drawn, then its pose-independent geometry is cached), ``draw_wild_face`` ≈ 4.5 ms per 480×640
image.

Learnability check (development machine, CPU): a 4-block CNN trained on 100 identities × 24
aligned crops reached 99 % accuracy on 6 held-out crops per identity after 12 epochs; zeroing
the crops below the nose (no mask training) dropped it to 59 %.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import ARCFACE_112, to_five
    >>> from maskgen.synthetic import draw_aligned_face, sample_identity
    >>> ident = sample_identity(np.random.default_rng(0))
    >>> image, lm = draw_aligned_face(ident, np.random.default_rng(1), yaw=0, pitch=0, roll=0)
    >>> image.shape, image.dtype.name, lm.shape, lm.dtype.name
    ((112, 112, 3), 'uint8', (68, 2), 'float32')
    >>> bool(np.abs(to_five(lm) - ARCFACE_112).max() < 3)
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from maskgen.landmarks.conventions import ARCFACE_112, ARCFACE_SIZE, similarity_transform, to_five

RGB = tuple[int, int, int]
#: A skin mark: canonical (x, y), radius (inter-ocular units) and strength (0..1).
Mark = tuple[float, float, float, float]

HAIR_STYLES = ("shaved", "short", "swept", "bangs", "long", "curly", "bun")
FACIAL_HAIR = ("none", "stubble", "moustache", "goatee", "full", "chinstrap", "circle")

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


@dataclass(frozen=True)
class Variation:
    """How much one identity's aligned crops vary (the within-identity spread).

    The defaults are the built-in spread (what :func:`draw_aligned_face` draws when given no
    ``variation``), and with them every image is byte-identical to one drawn without it.

    Attributes:
        yaw, pitch, roll: pose ranges in degrees (uniform in ±range).
        expression: scale of the mouth opening, the smile's deviation and the gaze.
        lighting: scale of the directional light gradient, the brightness change and the
            colour tint of the finishing pass.
        occlusion: probability of one random occluder (an ellipse or a bar of a muted
            colour, e.g. a hand, hair or an object) over the face, drawn after the face.

    Example:
        >>> Variation.from_dict({"yaw": 30}).yaw, Variation().is_default()
        (30.0, True)
    """

    yaw: float = 15.0
    pitch: float = 8.0
    roll: float = 8.0
    expression: float = 1.0
    lighting: float = 1.0
    occlusion: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"variation.{f.name} must be a number, got {value!r}")
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"variation.{f.name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if self.occlusion > 1:
            raise ValueError(f"variation.occlusion is a probability, got {self.occlusion!r}")

    def is_default(self) -> bool:
        """Whether this is the built-in spread."""
        return self == Variation()

    def to_dict(self) -> dict[str, float]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Variation:
        """A variation from a mapping; keys left out keep their defaults.

        Raises:
            ValueError: on an unknown key or a value that is not a finite number >= 0.
        """
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"unknown variation key {unknown[0]!r}; valid keys: {', '.join(names)}"
            )
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One synthetic person. Lengths are in inter-ocular distances (IOD), colours RGB.

    Face outline: ``face_width`` (half width at the eye line), ``chin_y`` (chin below the
    eye line), ``jaw_square`` (superellipse exponent; high = square jaw), ``chin_round``
    (1 = pointed, 2+ = round), ``chin_flat`` (half width of a flat chin), ``chin_cleft``.
    Eyes: ``eye_width``, ``eye_open`` (height / width), ``eye_tilt`` (outer corner up),
    ``iris_size`` (radius / eye width), ``iris_color``, ``lid_crease``.
    Brows: ``brow_height``, ``brow_arch``, ``brow_thickness``, ``brow_length``,
    ``brow_slant`` (inner end down), ``brow_color``.
    Nose: ``nose_length`` (tip below eye line), ``nose_width`` (wing half width),
    ``nose_base`` (base below tip), ``nose_depth``, ``nostril``.
    Mouth: ``mouth_y``, ``mouth_width`` (half width), ``upper_lip``, ``lower_lip``,
    ``cupid_bow``, ``lip_color``.
    Hair: ``hair_style`` (index into ``HAIR_STYLES``), ``hair_color``, ``hairline`` (height
    above eye line), ``hairline_square``, ``widow_peak``, ``recession``, ``hair_volume``,
    ``hair_length``, ``fringe`` (gap between fringe and brows), ``part`` (-1..1).
    Facial hair: ``facial_hair`` (index into ``FACIAL_HAIR``), ``facial_hair_color``,
    ``beard_density`` (0..1). Skin: ``skin``, ``blush``, ``folds``, ``forehead_lines``,
    ``marks`` (moles and freckles).
    """

    face_width: float
    chin_y: float
    jaw_square: float
    chin_round: float
    chin_flat: float
    chin_cleft: float
    skin: RGB
    eye_width: float
    eye_open: float
    eye_tilt: float
    iris_size: float
    iris_color: RGB
    lid_crease: float
    brow_height: float
    brow_arch: float
    brow_thickness: float
    brow_length: float
    brow_slant: float
    brow_color: RGB
    nose_length: float
    nose_width: float
    nose_base: float
    nose_depth: float
    nostril: float
    mouth_y: float
    mouth_width: float
    upper_lip: float
    lower_lip: float
    cupid_bow: float
    lip_color: RGB
    hair_style: int
    hair_color: RGB
    hairline: float
    hairline_square: float
    widow_peak: float
    recession: float
    hair_volume: float
    hair_length: float
    fringe: float
    part: float
    facial_hair: int
    facial_hair_color: RGB
    beard_density: float
    blush: float
    folds: float
    forehead_lines: float
    marks: tuple[Mark, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: _listify(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: _tuplify(v) for k, v in data.items()})


def _listify(value: Any) -> Any:
    return [_listify(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, (tuple, list)) else value


_SKIN_ANCHORS = np.array(
    [
        [255, 226, 204],
        [244, 200, 170],
        [228, 176, 140],
        [200, 140, 102],
        [165, 108, 74],
        [124, 80, 54],
        [86, 56, 40],
    ],
    dtype=np.float64,
)
_HAIR_PALETTE = np.array(
    [
        [28, 24, 22],  # black
        [58, 40, 30],  # dark brown
        [104, 70, 44],  # brown
        [150, 110, 70],  # light brown
        [214, 182, 120],  # blonde
        [176, 84, 40],  # ginger
        [150, 148, 146],  # grey
        [224, 222, 216],  # white
        [60, 90, 180],  # dyed blue
        [200, 80, 150],  # dyed pink
        [120, 60, 160],  # dyed purple
    ],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.2, 0.2, 0.14, 0.1, 0.1, 0.07, 0.07, 0.04, 0.03, 0.03, 0.02])
_IRIS_PALETTE = np.array(
    [
        [70, 42, 24],  # dark brown
        [110, 66, 34],  # brown
        [130, 110, 52],  # hazel
        [70, 120, 64],  # green
        [60, 120, 200],  # blue
        [110, 130, 146],  # grey
        [160, 110, 40],  # amber
    ],
    dtype=np.float64,
)
_LIPSTICK = np.array(
    [
        [196, 26, 44],  # red
        [128, 16, 36],  # dark red
        [232, 96, 140],  # pink
        [240, 116, 84],  # coral
        [112, 36, 84],  # plum
        [150, 84, 66],  # brown
        [206, 136, 124],  # nude
        [170, 60, 160],  # magenta
    ],
    dtype=np.float64,
)


def _rgb(c: np.ndarray | tuple[float, ...]) -> RGB:
    a = np.clip(np.round(np.asarray(c, dtype=np.float64)), 0, 255).astype(int)
    return (int(a[0]), int(a[1]), int(a[2]))


def _mix(a: tuple[float, ...], b: tuple[float, ...], t: float) -> np.ndarray:
    return (1 - t) * np.asarray(a, dtype=np.float64) + t * np.asarray(b, dtype=np.float64)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sample_skin(rng: np.random.Generator) -> RGB:
    t = _u(rng, 0, 1) * (len(_SKIN_ANCHORS) - 1)
    i = min(int(t), len(_SKIN_ANCHORS) - 2)
    base = _mix(_SKIN_ANCHORS[i], _SKIN_ANCHORS[i + 1], t - i)
    warmth = _u(rng, -10, 10)
    return _rgb(base + np.array([warmth, 0.0, -warmth]) + rng.uniform(-6, 6, 3))


def _sample_hair_color(rng: np.random.Generator) -> RGB:
    k = int(rng.choice(len(_HAIR_PALETTE), p=_HAIR_WEIGHTS / _HAIR_WEIGHTS.sum()))
    return _rgb(_HAIR_PALETTE[k] * _u(rng, 0.85, 1.15) + rng.uniform(-10, 10, 3))


def _sample_lips(rng: np.random.Generator, skin: RGB, lipstick: bool) -> RGB:
    if lipstick:
        k = int(rng.integers(len(_LIPSTICK)))
        return _rgb(_LIPSTICK[k] + rng.uniform(-14, 14, 3))
    natural = _mix(skin, (186, 70, 84), _u(rng, 0.3, 0.6)) * _u(rng, 0.72, 0.95)
    return _rgb(natural + rng.uniform(-8, 8, 3))


def _sample_marks(rng: np.random.Generator, ident_chin: float, hairline: float) -> tuple:
    marks: list[Mark] = []

    def add(n: int, xs: tuple[float, float], ys: tuple[float, float], r: tuple, s: tuple):
        for _ in range(n):
            x = _u(rng, *xs) * (1 if rng.random() < 0.5 else -1)
            marks.append((x, _u(rng, *ys), _u(rng, *r), _u(rng, *s)))

    if rng.random() < 0.65:  # lower-face moles: cheeks, upper lip, chin
        add(int(rng.integers(1, 3)), (0.3, 0.75), (0.6, 1.35), (0.03, 0.065), (0.5, 0.9))
    if rng.random() < 0.25:
        add(1, (0.0, 0.25), (ident_chin - 0.45, ident_chin - 0.2), (0.03, 0.06), (0.5, 0.9))
    if rng.random() < 0.4:  # forehead / temple
        add(1, (0.0, 0.65), (-hairline + 0.3, -0.6), (0.03, 0.06), (0.5, 0.9))
    if rng.random() < 0.3:  # near the eyes
        add(1, (0.75, 0.95), (-0.05, 0.35), (0.025, 0.05), (0.5, 0.9))
    if rng.random() < 0.14:  # freckles over nose and cheeks
        add(int(rng.integers(10, 22)), (0.05, 0.8), (0.2, 0.85), (0.015, 0.03), (0.2, 0.35))
    return tuple(tuple(round(v, 4) for v in m) for m in marks)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a random identity.

    Example:
        >>> import numpy as np
        >>> a = sample_identity(np.random.default_rng(3))
        >>> a == Identity.from_dict(a.to_dict())
        True
    """
    skin = _sample_skin(rng)
    hair = _sample_hair_color(rng)
    dyed = hair[2] > hair[0] + 30 or (hair[0] > 180 and hair[2] > 120 and hair[1] < 120)
    light = sum(hair) > 450
    brow = _mix((60, 42, 32), hair, 0.3) if dyed or light else _mix(hair, (20, 16, 14), 0.25)
    facial_hair = int(rng.choice(len(FACIAL_HAIR), p=[0.55, 0.08, 0.08, 0.08, 0.1, 0.05, 0.06]))
    beard_base = _mix((60, 42, 32), hair, 0.3) if dyed else np.asarray(hair) * 0.85
    if sum(skin) < 420 and sum(hair) > 420:  # light beards on dark skin are rare
        beard_base = _mix((40, 30, 26), hair, 0.25)
    lipstick = facial_hair == 0 and rng.random() < 0.45
    chin_y = _u(rng, 1.7, 2.05)
    hairline = _u(rng, 0.95, 1.4)
    iris = _IRIS_PALETTE[int(rng.integers(len(_IRIS_PALETTE)))] + rng.uniform(-10, 10, 3)
    style = int(rng.choice(len(HAIR_STYLES), p=[0.08, 0.24, 0.16, 0.14, 0.2, 0.1, 0.08]))
    return Identity(
        face_width=_u(rng, 1.04, 1.34),
        chin_y=chin_y,
        jaw_square=_u(rng, 1.5, 3.6),
        chin_round=_u(rng, 1.05, 2.3),
        chin_flat=_u(rng, 0.0, 0.24),
        chin_cleft=_u(rng, 0.4, 1.0) if rng.random() < 0.15 else 0.0,
        skin=skin,
        eye_width=_u(rng, 0.34, 0.47),
        eye_open=_u(rng, 0.26, 0.48),
        eye_tilt=_u(rng, -0.12, 0.22),
        iris_size=_u(rng, 0.17, 0.25),
        iris_color=_rgb(iris),
        lid_crease=_u(rng, 0.3, 1.0) if rng.random() < 0.6 else 0.0,
        brow_height=_u(rng, 0.22, 0.38),
        brow_arch=_u(rng, 0.0, 0.14),
        brow_thickness=_u(rng, 0.04, 0.13),
        brow_length=_u(rng, 0.04, 0.2),
        brow_slant=_u(rng, -0.08, 0.1),
        brow_color=_rgb(brow * _u(rng, 0.8, 1.1)),
        nose_length=_u(rng, 0.51, 0.63),
        nose_width=_u(rng, 0.17, 0.33),
        nose_base=_u(rng, 0.1, 0.2),
        nose_depth=_u(rng, 0.3, 0.55),
        nostril=_u(rng, 0.6, 1.4),
        mouth_y=_u(rng, 1.09, 1.23),
        mouth_width=_u(rng, 0.35, 0.47),
        upper_lip=_u(rng, 0.045, 0.12),
        lower_lip=_u(rng, 0.06, 0.16),
        cupid_bow=_u(rng, 0.0, 0.04),
        lip_color=_sample_lips(rng, skin, lipstick),
        hair_style=style,
        hair_color=hair,
        hairline=hairline,
        hairline_square=_u(rng, 1.6, 4.0),
        widow_peak=_u(rng, 0.05, 0.2) if rng.random() < 0.2 else 0.0,
        recession=_u(rng, 0.1, 0.4) if rng.random() < 0.2 else 0.0,
        hair_volume=_u(rng, 1.2, 1.35) if style == 5 else _u(rng, 1.03, 1.14),
        hair_length=_u(rng, 0.2, 1.8),
        fringe=_u(rng, 0.04, 0.22),
        part=_u(rng, -1, 1),
        facial_hair=facial_hair,
        facial_hair_color=_rgb(beard_base * _u(rng, 0.85, 1.1)),
        beard_density=_u(rng, 0.55, 1.0),
        blush=_u(rng, 0.15, 0.45) if rng.random() < 0.3 and facial_hair in (0, 2, 3) else 0.0,
        folds=_u(rng, 0.3, 1.0) if rng.random() < 0.35 else 0.0,
        forehead_lines=_u(rng, 0.3, 1.0) if rng.random() < 0.25 else 0.0,
        marks=_sample_marks(rng, chin_y, hairline),
    )


# --------------------------------------------------------------------------------------------
# Canonical 3D geometry
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _cr_basis(n: int) -> np.ndarray:
    t = np.arange(n) / n
    t2, t3 = t * t, t * t * t
    return 0.5 * np.stack(
        [-t3 + 2 * t2 - t, 3 * t3 - 5 * t2 + 2, -3 * t3 + 4 * t2 + t, t3 - t2], axis=1
    )


def _spline(p: np.ndarray, n: int = 6, closed: bool = False) -> np.ndarray:
    """Catmull-Rom curve through the rows of ``p`` (``n`` samples per segment)."""
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
        nseg = len(p)
    else:
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
        nseg = len(p) - 1
    idx = np.arange(nseg)[:, None] + np.arange(4)
    out = np.einsum("tj,sjd->std", _cr_basis(n), ext[idx]).reshape(-1, p.shape[1])
    return out if closed else np.concatenate([out, p[-1:]])


def _surface_z(x: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Depth of the face surface: a gently curved shell, receding at the sides."""
    return -0.55 * (x / width) ** 2 - 0.04 * (y - 0.5) ** 2


def _on_surface(xy: np.ndarray, width: float, dz: float = 0.0) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    z = _surface_z(xy[:, 0], xy[:, 1], width) + dz
    return np.column_stack([xy, z])


def _jaw(ident: Identity) -> np.ndarray:
    """17 jaw points (2D), equally spaced along the outline from ear to ear."""
    w, c, cw = ident.face_width, ident.chin_y, ident.chin_flat
    s = np.linspace(0.0, 1.0, 120)
    y = 0.04 + (c - 0.04) * s
    x = cw + (w - cw) * np.clip(1 - s**ident.jaw_square, 0, 1) ** (1 / ident.chin_round)
    half = np.column_stack([-x, y])
    path = np.concatenate([half, half[::-1][1:] * [-1, 1]])
    seg = np.hypot(*np.diff(path, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.linspace(0, arc[-1], 17)
    pts = np.column_stack([np.interp(at, arc, path[:, 0]), np.interp(at, arc, path[:, 1])])
    pts[8] = [0.0, c]
    return pts


def _eye(ident: Identity, side: int) -> np.ndarray:
    """Six eye points (2D) in iBUG order; ``side`` -1 = image left (36–41), +1 = right."""
    cx, w = 0.5 * side, ident.eye_width
    h = ident.eye_open * w
    tilt = ident.eye_tilt * w / 2
    left_y = -tilt if side < 0 else tilt  # outer corner is up by ``tilt``
    xs = np.array([-w / 2, -w / 6, w / 6, w / 2, w / 6, -w / 6]) + cx
    ramp = (xs - cx) / (w / 2)  # -1 at the left corner, +1 at the right corner
    ys = left_y * (1 - ramp) / 2 - left_y * (1 + ramp) / 2
    ys = ys + np.array([0.0, -0.55, -0.55, 0.0, 0.45, 0.45]) * h
    return np.column_stack([xs, ys])


def _brow(ident: Identity, side: int) -> np.ndarray:
    """Five brow points (2D), left to right in the image, on the brow's mid line."""
    ew = ident.eye_width
    inner = side * (0.5 - ew / 2 - 0.03)
    outer = side * (0.5 + ew / 2 + ident.brow_length)
    u = np.linspace(0, 1, 5)  # 0 = outer end, 1 = inner end
    x = outer + (inner - outer) * u
    arch = ident.brow_arch * np.clip(1 - ((u - 0.4) / 0.6) ** 2, 0, None)
    y = -ident.brow_height - arch + ident.brow_slant * (u - 0.5) + 0.06 * (1 - u) ** 2
    pts = np.column_stack([x, y])
    return pts if side < 0 else pts[::-1]


def _nose(ident: Identity) -> np.ndarray:
    """Nine nose points (3D): bridge 27–30 and base 31–35."""
    t, nw, d = ident.nose_length, ident.nose_width, ident.nose_depth
    nb = t + ident.nose_base
    bridge = np.array([[0, 0.02, 0.1], [0, t / 3, 0.1 + (d - 0.1) / 3]])
    bridge = np.concatenate([bridge, [[0, 2 * t / 3, 0.1 + 2 * (d - 0.1) / 3], [0, t, d]]], axis=0)
    base = np.array(
        [
            [-nw, nb - 0.075, 0.08],
            [-nw * 0.5, nb - 0.035, 0.16],
            [0, nb, 0.2],
            [nw * 0.5, nb - 0.035, 0.16],
            [nw, nb - 0.075, 0.08],
        ]
    )
    return np.concatenate([bridge, base])


def _mouth(ident: Identity, open_: float, smile: float) -> np.ndarray:
    """Twenty mouth points (3D), 48–67."""
    w, my = ident.mouth_width, ident.mouth_y
    tu, tl, bow = ident.upper_lip, ident.lower_lip, ident.cupid_bow
    o = open_ / 2
    outer = np.array(
        [
            [-w, 0],
            [-0.62 * w, -0.82 * tu - o * 0.6],
            [-0.24 * w, -tu - o],
            [0, -tu + bow - o],
            [0.24 * w, -tu - o],
            [0.62 * w, -0.82 * tu - o * 0.6],
            [w, 0],
            [0.6 * w, 0.8 * tl + o * 0.6],
            [0.26 * w, tl + o],
            [0, tl + o],
            [-0.26 * w, tl + o],
            [-0.6 * w, 0.8 * tl + o * 0.6],
        ]
    )
    inner = np.array(
        [
            [-0.86 * w, 0],
            [-0.42 * w, -o * 0.9],
            [0, -o],
            [0.42 * w, -o * 0.9],
            [0.86 * w, 0],
            [0.42 * w, o * 0.9],
            [0, o],
            [-0.42 * w, o * 0.9],
        ]
    )
    pts = np.concatenate([outer, inner])
    pts[:, 1] += my - smile * (pts[:, 0] / w) ** 2 + smile * 0.3
    z = _surface_z(pts[:, 0], pts[:, 1], ident.face_width) + 0.12 * (1 - (pts[:, 0] / w) ** 2)
    return np.column_stack([pts, z + 0.02])


def _upper_landmarks(ident: Identity) -> np.ndarray:
    """Landmarks 0–47 (jaw, brows, nose, eyes) in 3D: they do not depend on expression."""
    w = ident.face_width
    jaw = _jaw(ident)
    jaw3 = np.column_stack([jaw, _jaw_z(jaw[:, 0], w)])
    brows = _on_surface(np.concatenate([_brow(ident, -1), _brow(ident, 1)]), w, 0.04)
    eyes = _on_surface(np.concatenate([_eye(ident, -1), _eye(ident, 1)]), w, -0.03)
    return np.concatenate([jaw3, brows, _nose(ident), eyes])


def _jaw_z(x: np.ndarray, width: float) -> np.ndarray:
    return -0.55 * np.abs(x / width) ** 1.6


def landmarks_3d(ident: Identity, mouth_open: float = 0.0, smile: float = 0.0) -> np.ndarray:
    """The 68 landmarks of ``ident`` in the canonical 3D frame (IOD units, y down).

    Example:
        >>> import numpy as np
        >>> lm = landmarks_3d(sample_identity(np.random.default_rng(0)))
        >>> lm.shape, float(lm[36:42, 0].mean() + 0.5) < 1e-9
        ((68, 3), True)
    """
    return np.concatenate([_static(ident).lm48, _mouth(ident, mouth_open, smile)])


def _hairline(ident: Identity) -> np.ndarray:
    """Dense hairline (2D) from the right temple over the forehead to the left temple."""
    wh, yt, top = ident.face_width * 0.965, -0.22, ident.hairline
    th = np.linspace(0, np.pi, 41)
    e = 2 / ident.hairline_square
    c, s = np.cos(th), np.sin(th)
    x = wh * np.sign(c) * np.abs(c) ** e
    y = yt - (top + yt) * np.abs(s) ** e
    y = y + ident.widow_peak * np.exp(-((x / 0.18) ** 2))
    y = y - ident.recession * np.exp(-(((np.abs(x) - 0.5) / 0.22) ** 2))
    return np.column_stack([x, y])


def _ellipsoid(ident: Identity, scale: float, cut: float) -> np.ndarray:
    """Points of the cranium ellipsoid (scaled about its centre), flattened below ``cut``."""
    rx, ry, rz, yc, zc = ident.face_width * 1.02, 1.75, 1.15, -0.3, -1.15
    lat = np.linspace(-np.pi / 2, np.pi / 2, 11)
    lon = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    la, lo = np.meshgrid(lat, lon)
    x = rx * scale * np.cos(la) * np.cos(lo)
    z = rz * scale * np.cos(la) * np.sin(lo) + zc
    y = yc + ry * scale * np.sin(la)
    return np.column_stack([x.ravel(), np.minimum(y.ravel(), cut), z.ravel()])


def _ears(ident: Identity) -> dict[str, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    xe = ident.face_width * 0.97
    parts = {}
    for side, name in ((-1, "ear_l"), (1, "ear_r")):
        x = side * (xe + 0.07 + 0.06 * np.cos(t))
        ear = np.column_stack([x, 0.3 + 0.3 * np.sin(t), -1.05 + 0.2 * np.cos(t)])
        centre = ear.mean(0)
        parts[name] = ear
        parts[name + "_in"] = centre + (ear - centre) * 0.55
    return parts


def _neck_and_clothes(ident: Identity) -> dict[str, np.ndarray]:
    c, nw = ident.chin_y, 0.5 * ident.face_width
    neck = np.array([[-nw, c * 0.5], [nw, c * 0.5], [nw * 1.08, c + 1.6], [-nw * 1.08, c + 1.6]])
    clothes = np.array(
        [
            [-3.4, c + 6.0],
            [-3.3, c + 1.6],
            [-2.4, c + 1.0],
            [-nw * 1.3, c + 0.75],
            [0.0, c + 1.0],
            [nw * 1.3, c + 0.75],
            [2.4, c + 1.0],
            [3.3, c + 1.6],
            [3.4, c + 6.0],
        ]
    )
    return {
        "neck": np.column_stack([neck, np.full(4, -0.7)]),
        "clothes": np.column_stack([_spline(clothes, 3), np.full(3 * 8 + 1, -0.9)]),
    }


def _fringe(ident: Identity, hairline: np.ndarray) -> np.ndarray:
    """Fringe polygon (2D): above the hairline and down to a jagged cut above the brows."""
    w = ident.face_width * 0.9
    x = np.linspace(-w, w, 17)
    brow_top = ident.brow_height + ident.brow_arch + ident.brow_thickness / 2
    y = np.full_like(x, -(brow_top + ident.fringe))
    if HAIR_STYLES[ident.hair_style] == "swept":
        y = y - 0.35 * (1 + ident.part * x / w) * (0.5 + 0.5 * np.abs(ident.part))
    y = y + 0.04 * (np.arange(len(x)) % 2)
    line_y = np.interp(x, hairline[::-1, 0], hairline[::-1, 1])
    y = np.maximum(y, line_y)
    # The top edge lies above the hairline so no skin seam shows between fringe and cap.
    top = hairline * [1.04, 1.0] + [0.0, -0.12]
    return np.concatenate([top, np.column_stack([x, y])])


def _hair_static(ident: Identity, hairline: np.ndarray) -> dict[str, np.ndarray]:
    style = HAIR_STYLES[ident.hair_style]
    v, w = ident.hair_volume, ident.face_width
    cut = {"long": 0.35, "curly": 0.45, "shaved": 0.05}.get(style, 0.12)
    # The cap also spans the hairline pushed outwards, so hair frames the forehead at any yaw.
    frame = _on_surface(hairline * [1.08, 1.0] + [0.0, -0.06 - 0.08 * v], w)
    parts = {"cap": np.concatenate([_ellipsoid(ident, v, cut), frame])}
    if style == "long":
        length = ident.chin_y + ident.hair_length
        drape = np.array(
            [
                [-w * v * 1.05, length, -1.1],
                [w * v * 1.05, length, -1.1],
                [-w * v * 1.02, 0.3, -1.3],
                [w * v * 1.02, 0.3, -1.3],
            ]
        )
        parts["drape"] = np.concatenate([parts["cap"], drape])
        for side, name in ((-1, "lock_l"), (1, "lock_r")):
            lock = np.array(
                [
                    [0.85 * w, -0.4],
                    [1.1 * w * v, -0.1],
                    [1.18 * w * v, length - 0.2],
                    [1.0 * w, length],
                    [0.7 * w, length - 0.15],
                    [0.8 * w, 0.5],
                ]
            )
            lock = _spline(lock * [side, 1], 4, closed=True)
            parts[name] = np.column_stack([lock, np.full(len(lock), -0.45)])
    if style in ("bangs", "swept") or (style == "long" and ident.part > 0.3):
        parts["fringe"] = _on_surface(_fringe(ident, hairline), w, 0.05)
    if style == "bun":
        parts["bun"] = np.array([[0.0, -0.3 - 1.75 * v - 0.1, -1.0]])
    return parts


def _skin_details(ident: Identity, hairline: np.ndarray) -> dict[str, np.ndarray]:
    w = ident.face_width
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    blush = np.column_stack([0.2 * np.cos(t), 0.13 * np.sin(t)])
    parts = {}
    if ident.blush:
        parts["blush_l"] = _on_surface(blush + np.array([-0.64, 0.72]), w)
        parts["blush_r"] = _on_surface(blush + np.array([0.64, 0.72]), w)
    forehead_top = float(-hairline[len(hairline) // 2, 1])
    for k in range(3 if ident.forehead_lines else 0):
        y0 = -(ident.brow_height + ident.brow_arch + 0.22 + 0.13 * k)
        if -y0 > forehead_top - 0.1:
            break
        x = np.linspace(-0.45 + 0.05 * k, 0.45 - 0.05 * k, 9)
        parts[f"line{k}"] = _on_surface(np.column_stack([x, y0 + 0.12 * (x / 0.5) ** 2]), w)
    if ident.marks:
        m = np.asarray(ident.marks, dtype=np.float64)
        parts["marks"] = _on_surface(m[:, :2], w, 0.01)
    if ident.chin_cleft:
        c = ident.chin_y
        parts["cleft"] = _on_surface([[0, c - 0.2], [0, c - 0.2 + 0.12 * ident.chin_cleft]], w)
    return parts


def _nose_details(ident: Identity) -> dict[str, np.ndarray]:
    t, nw = ident.nose_length, ident.nose_width
    nb = t + ident.nose_base
    w = ident.face_width
    yb = np.linspace(0.05, nb - 0.1, 6)
    frac = (yb - yb[0]) / (yb[-1] - yb[0])
    outer = -(0.08 + (nw * 0.85 - 0.08) * frac**2)
    inner = outer * 0.45 + 0.01
    shadow = np.concatenate([np.column_stack([outer, yb]), np.column_stack([inner, yb])[::-1]])
    parts = {"nose_shadow": _on_surface(shadow, w, 0.1)}
    for side, name in ((-1, "wing_l"), (1, "wing_r")):
        wing = np.array(
            [
                [0.75 * nw, nb - 0.22],
                [1.08 * nw, nb - 0.12],
                [nw, nb - 0.075],
                [0.5 * nw, nb - 0.035],
            ]
        )
        parts[name] = _on_surface(_spline(wing * [side, 1], 5), w, 0.12)
    nostril_y = nb - 0.045
    parts["nostrils"] = np.array([[-0.48 * nw, nostril_y, 0.15], [0.48 * nw, nostril_y, 0.15]])
    parts["tip"] = np.array([[0.02, t - 0.05, ident.nose_depth]])
    return parts


def _face_rings(ident: Identity, lm: np.ndarray, hairline: np.ndarray) -> dict[str, np.ndarray]:
    """The face polygon (jaw + hairline) and two inset copies for soft edge shading."""
    w = ident.face_width
    jaw = _spline(lm[0:17, :2], 5)
    face = np.concatenate([np.column_stack([jaw, _jaw_z(jaw[:, 0], w)]), _on_surface(hairline, w)])
    centre = np.array([0.0, 0.6, 0.0])
    return {
        "face": face,
        "face_mid": centre + (face - centre) * [0.965, 0.975, 1.0],
        "face_inner": centre + (face - centre) * [0.93, 0.95, 1.0],
    }


def _brow_polygon(ident: Identity, pts: np.ndarray) -> np.ndarray:
    dense = _spline(pts, 5)
    u = np.linspace(0, 1, len(dense))
    inner_first = pts[0, 0] > 0  # the image-right brow runs inner -> outer
    th = ident.brow_thickness * (0.45 + 0.55 * ((1 - u) if inner_first else u))
    top = dense.copy()
    top[:, 1] -= 0.45 * th
    bottom = dense.copy()
    bottom[:, 1] += 0.55 * th
    return np.concatenate([top, bottom[::-1]])


_EYE_N = 19  # dense points per lid (3 segments × 6 + 1)


def _eye_shapes(ident: Identity, lm: np.ndarray, side: int) -> np.ndarray:
    """Upper lid, lower lid (dense, through the landmarks) and the crease line (3D)."""
    p = lm[36:42] if side < 0 else lm[42:48]
    upper = _spline(p[[0, 1, 2, 3]], 6)
    lower = _spline(p[[3, 4, 5, 0]], 6)
    crease = upper[2:-2].copy()
    lift = 0.07 + 0.05 * ident.lid_crease
    crease[:, 1] -= lift * np.sin(np.linspace(0.3, np.pi - 0.3, len(crease)))
    return np.concatenate([upper, lower, crease])


@dataclass(frozen=True)
class _Static:
    """Pose- and expression-independent geometry of one identity (3D, stacked)."""

    points: np.ndarray
    slices: dict[str, slice]
    lm48: np.ndarray
    eyes: dict[int, np.ndarray]


def _stack(parts: dict[str, np.ndarray], start: int = 0) -> tuple[np.ndarray, dict[str, slice]]:
    slices, i = {}, start
    for name, arr in parts.items():
        slices[name] = slice(i, i + len(arr))
        i += len(arr)
    return np.concatenate(list(parts.values())), slices


@lru_cache(maxsize=1024)
def _static(ident: Identity) -> _Static:
    """All geometry of an identity that no pose or expression changes (cached)."""
    lm = _upper_landmarks(ident)
    hairline = _hairline(ident)
    parts: dict[str, np.ndarray] = {"skull": _ellipsoid(ident, 1.0, 0.3)}
    parts.update(_hair_static(ident, hairline))
    parts.update(_ears(ident))
    parts.update(_neck_and_clothes(ident))
    parts.update(_face_rings(ident, lm, hairline))
    parts.update(_skin_details(ident, hairline))
    parts.update(_nose_details(ident))
    eyes = {}
    for side, name, sl in ((-1, "l", slice(17, 22)), (1, "r", slice(22, 27))):
        parts["brow_" + name] = _brow_polygon(ident, lm[sl])
        eyes[side] = parts["eyelid_" + name] = _eye_shapes(ident, lm, side)
    if FACIAL_HAIR[ident.facial_hair] in ("full", "stubble", "chinstrap"):
        band = 0.14 if FACIAL_HAIR[ident.facial_hair] == "chinstrap" else None
        parts["beard"] = _on_surface(_beard_outline(ident, lm, band), ident.face_width, 0.02)
    points, slices = _stack(parts)
    points.setflags(write=False)
    lm.setflags(write=False)
    return _Static(points, slices, lm, eyes)


@lru_cache(maxsize=4)
def _circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.cos(t), np.sin(t)])


def _iris_polygon(outline: np.ndarray, centre: np.ndarray, radius: float, n: int) -> np.ndarray:
    """Circle clipped to the eye: x to the corners, y between the lids (3D)."""
    upper = outline[:_EYE_N]
    lower = outline[2 * _EYE_N - 1 : _EYE_N - 1 : -1]
    circ = centre + radius * _circle(n)
    x = np.clip(circ[:, 0], upper[0, 0], upper[-1, 0])
    lo = np.interp(x, upper[:, 0], upper[:, 1])
    hi = np.interp(x, lower[:, 0], lower[:, 1])
    y = np.clip(circ[:, 1], lo, hi)
    return np.column_stack([x, y, np.interp(x, upper[:, 0], upper[:, 2])])


def _beard_outline(ident: Identity, lm: np.ndarray, band: float | None) -> np.ndarray:
    """Full beard: jaw line up to the sideburns, a ragged cheek line down to under the nose;
    or a chinstrap band along the jaw (2D)."""
    if band is not None:
        lower = _spline(lm[2:15, :2], 3)
        centre = np.array([0.0, ident.mouth_y])
        inner = centre + (lower - centre) * (1 - band / np.hypot(*(lower - centre).T))[:, None]
        return np.concatenate([lower, inner[::-1]])
    lower = _spline(lm[1:16, :2], 3)
    w, tip, nb = ident.face_width, lm[30, 1], lm[33, 1]
    right = np.array([[0.8 * w, 0.55], [0.58 * w, tip + 0.12], [lm[35, 0] + 0.1, nb + 0.03]])
    top = _spline(
        np.concatenate([lower[-1:], right, [[0.0, nb + 0.05]], right[::-1] * [-1, 1], lower[:1]]), 4
    )
    top = top[1:-1]
    ragged = 0.025 * (np.arange(len(top)) % 2)  # hairy edge: alternate points dip
    top[:, 1] += ragged
    return np.concatenate([lower, top])


def _mouth_hair(ident: Identity, lm: np.ndarray) -> dict[str, np.ndarray]:
    """Moustache and goatee polygons (3D), which follow the mouth's expression."""
    kind = FACIAL_HAIR[ident.facial_hair]
    w = ident.face_width
    parts: dict[str, np.ndarray] = {}
    if kind in ("moustache", "circle", "full", "stubble"):
        lip_top = lm[48:55, :2] + [0.0, -0.01]
        lip_top[0] += [-0.06, 0.05]
        lip_top[-1] += [0.06, 0.05]
        nose = lm[35:30:-1, :2] + [
            [0.04, 0.05],
            [0.02, 0.04],
            [0, 0.04],
            [-0.02, 0.04],
            [-0.04, 0.05],
        ]
        parts["moustache"] = _on_surface(np.concatenate([lip_top, nose]), w, 0.08)
    if kind in ("goatee", "circle"):
        mw = ident.mouth_width
        below = lm[57, 1] + 0.04
        chin = lm[6:11, :2] * [0.85, 1.0] + [0, -0.02]
        ring = [
            [mw * 0.95, lm[54, 1] + 0.02],
            [mw * 0.7, below + 0.04],
            [0, below],
            [-mw * 0.7, below + 0.04],
        ]
        top = [[-mw * 0.95, lm[48, 1] + 0.02]]
        parts["goatee"] = _on_surface(np.concatenate([top, chin, ring]), w, 0.06)
    return parts


def _dynamic_parts(
    ident: Identity, lm: np.ndarray, st: _Static, gaze: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-image geometry: landmarks, lips, irises, mouth hair and folds (3D)."""
    m = lm[48:68]
    parts: dict[str, np.ndarray] = {"lm": lm}
    parts["lip_upper"] = np.concatenate([_spline(m[0:7], 4), m[[16, 15, 14, 13, 12]]])
    lower = np.concatenate([m[6:12], m[0:1]])
    parts["lip_lower"] = np.concatenate([_spline(lower, 4), m[[12, 19, 18, 17, 16]]])
    parts["mouth_inner"] = _spline(m[12:20], 4, closed=True)
    open_ = float(m[18, 1] - m[14, 1])
    if open_ > 0.03:
        drop = np.array([0.0, 1.0, 1.0, 1.0, 0.0])[:, None] * [0.0, min(0.45 * open_, 0.07), 0]
        top = m[12:17]
        parts["teeth"] = np.concatenate([top, (top + drop)[::-1]])
    r = ident.iris_size * ident.eye_width
    for side in (-1, 1):
        p = lm[36:42] if side < 0 else lm[42:48]
        centre = p[:, :2].mean(0) + gaze * ident.eye_width
        parts[f"iris{side}"] = _iris_polygon(st.eyes[side], centre, r, 20)
        parts[f"pupil{side}"] = _iris_polygon(st.eyes[side], centre, r * 0.45, 12)
        parts[f"glint{side}"] = np.array([[centre[0] + 0.45 * r, centre[1] - 0.45 * r, p[1, 2]]])
    if ident.folds:
        for side in (-1, 1):
            corner = lm[48 if side < 0 else 54, :2]
            wing = lm[31 if side < 0 else 35, :2]
            fold = np.array(
                [
                    wing + np.array([side * 0.1, -0.08]),
                    wing + np.array([side * 0.2, 0.12]),
                    corner + np.array([side * 0.1, -0.02]),
                    corner + np.array([side * 0.12, 0.12]),
                ]
            )
            parts[f"fold{side}"] = _on_surface(_spline(fold, 4), ident.face_width, 0.02)
    parts.update(_mouth_hair(ident, lm))
    return parts


# --------------------------------------------------------------------------------------------
# Pose and transforms
# --------------------------------------------------------------------------------------------


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """3×3 rotation: yaw about y (positive: nose to image right), then pitch about x
    (positive: nose up)."""
    a, b = np.radians(yaw), np.radians(pitch)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
    return rx @ ry


def _rot2d(angle_deg: float, centre: np.ndarray) -> np.ndarray:
    """2×3 matrix rotating by ``angle_deg`` about ``centre`` (positive: clockwise on screen,
    i.e. the image-right eye moves down)."""
    a = np.radians(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.column_stack([r, centre - r @ centre])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine ``outer ∘ inner``."""
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


def _affine(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    return points @ M[:, :2].T + M[:, 2]


@dataclass
class _Pose:
    yaw: float
    pitch: float
    roll: float
    mouth_open: float
    smile: float
    gaze: np.ndarray


def _sample_pose(
    rng: np.random.Generator,
    given: tuple[float | None, ...],
    ranges: tuple[float, float, float],
    expression: float = 1.0,
) -> _Pose:
    """Draw the pose values not ``given`` (yaw, pitch, roll, mouth_open, smile).

    The same number of draws is made whatever is given, so the stream stays aligned.
    ``expression`` scales the mouth opening, the smile's deviation and the gaze (1 leaves
    every value exactly as it is).
    """
    yaw, pitch, roll, mouth_open, smile = given
    d = rng.uniform(-1, 1, 8)
    e = float(expression)  # x * 1.0 == x exactly, so the default changes nothing
    opening = float((d[3] > 0.4) * (d[4] + 1) * 0.07 * e)
    return _Pose(
        yaw=float(d[0] * ranges[0]) if yaw is None else float(yaw),
        pitch=float(d[1] * ranges[1]) if pitch is None else float(pitch),
        roll=float(d[2] * ranges[2]) if roll is None else float(roll),
        mouth_open=opening if mouth_open is None else mouth_open,
        smile=float(d[5] * 0.03 * e + 0.02) if smile is None else float(smile),
        gaze=np.array([d[6] * 0.1 * e, d[7] * 0.04 * e]),
    )


def _posed(ident: Identity, pose: _Pose) -> tuple[np.ndarray, dict[str, slice]]:
    """All geometry rotated by the pose's yaw and pitch and projected orthographically
    (canonical 2D units), with each part's slice; the 68 landmarks are ``slices["lm"]``."""
    st = _static(ident)
    lm3 = np.concatenate([st.lm48, _mouth(ident, pose.mouth_open, pose.smile)])
    dyn, slices = _stack(_dynamic_parts(ident, lm3, st, pose.gaze), len(st.points))
    rot = _rotation(pose.yaw, pose.pitch)[:2].T
    projected = np.concatenate([st.points @ rot, dyn @ rot])
    return projected, {**st.slices, **slices}


def _to_canvas(
    projected: np.ndarray, slices: dict[str, slice], M: np.ndarray
) -> dict[str, np.ndarray]:
    """Map projected geometry to canvas pixels as OpenCV fixed-point int32 arrays."""
    fixed = np.rint(_affine(projected, M) * _ONE).astype(np.int32)
    return {name: fixed[s] for name, s in slices.items()}


# --------------------------------------------------------------------------------------------
# Drawing (all point arrays are int32 fixed point with ``_SHIFT`` fractional bits)
# --------------------------------------------------------------------------------------------

Color = tuple[float, float, float]


def _poly(img: np.ndarray, pts: np.ndarray, color: Color) -> None:
    cv2.fillPoly(img, [pts], color, _AA, _SHIFT)


def _lines(img: np.ndarray, pts: np.ndarray, color: Color, thick: float) -> None:
    cv2.polylines(img, [pts], False, color, max(1, round(thick)), _AA, _SHIFT)


def _dot(img: np.ndarray, c: np.ndarray, r: float, color: Color) -> None:
    cv2.circle(img, (int(c[0]), int(c[1])), max(1, round(r * _ONE)), color, -1, _AA, _SHIFT)


def _shade(c: tuple, f: float) -> Color:
    return (min(c[0] * f, 255.0), min(c[1] * f, 255.0), min(c[2] * f, 255.0))


def _blend(a: tuple, b: tuple, t: float) -> Color:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


@dataclass
class _Look:
    """Per-image colours (not identity cues)."""

    hair: Color
    clothes: Color
    collar: Color


def _sample_look(ident: Identity, rng: np.random.Generator) -> _Look:
    v = rng.uniform(0, 1, 5)
    clothes = (30 + 200 * v[0], 30 + 200 * v[1], 30 + 200 * v[2])
    return _Look(
        hair=_shade(ident.hair_color, 0.94 + 0.12 * v[3]),
        clothes=clothes,
        collar=_shade(clothes, 0.7 + 0.1 * v[4]),
    )


_G = dict[str, np.ndarray]


def _draw_body(img: np.ndarray, g: _G, ident: Identity, look: _Look, u: float) -> None:
    if "drape" in g:
        _poly(img, cv2.convexHull(g["drape"]), _shade(look.hair, 0.8))
    _poly(img, g["neck"], _shade(ident.skin, 0.8))
    _poly(img, g["clothes"], look.clothes)
    _lines(img, g["clothes"][9:16], look.collar, 0.06 * u)
    for name in ("lock_l", "lock_r"):
        if name in g:
            _poly(img, g[name], look.hair)


def _draw_head(img: np.ndarray, g: _G, ident: Identity, look: _Look, u: float) -> None:
    skin = ident.skin
    style = HAIR_STYLES[ident.hair_style]
    _poly(img, cv2.convexHull(g["skull"]), skin)
    cap = cv2.convexHull(g["cap"])
    cap_color = _blend(skin, look.hair, 0.45) if style == "shaved" else look.hair
    _poly(img, cap, cap_color)
    if style == "curly":
        for p in cap[::2, 0]:
            _dot(img, p, 0.2 * u, cap_color)
    if "bun" in g:
        _dot(img, g["bun"][0], 0.38 * u, look.hair)
    if style != "long":
        for name in ("ear_l", "ear_r"):
            _poly(img, g[name], _shade(skin, 0.93))
            _poly(img, g[name + "_in"], _shade(skin, 0.78))
    _poly(img, g["face"], _shade(skin, 0.9))
    _poly(img, g["face_mid"], _shade(skin, 0.95))
    _poly(img, g["face_inner"], skin)


def _draw_skin_details(img: np.ndarray, g: _G, ident: Identity, u: float) -> None:
    skin = ident.skin
    if "blush_l" in g:
        flush = _blend(skin, (220, 80, 90), ident.blush)
        _poly(img, g["blush_l"], flush)
        _poly(img, g["blush_r"], flush)
    for k in range(3):
        if f"line{k}" in g:
            _lines(img, g[f"line{k}"], _shade(skin, 1 - 0.15 * ident.forehead_lines), 0.025 * u)
    if "marks" in g:
        for p, m in zip(g["marks"], ident.marks, strict=True):
            _dot(img, p, m[2] * u, _blend(skin, (70, 40, 30), m[3]))
    if "cleft" in g:
        _lines(img, g["cleft"], _shade(skin, 0.8), 0.025 * u)
    for side in (-1, 1):
        if f"fold{side}" in g:
            _lines(img, g[f"fold{side}"], _shade(skin, 1 - 0.15 * ident.folds), 0.025 * u)


def _draw_nose(img: np.ndarray, g: _G, ident: Identity, u: float) -> None:
    skin = ident.skin
    _poly(img, g["nose_shadow"], _shade(skin, 0.92))
    for name in ("wing_l", "wing_r"):
        _lines(img, g[name], _shade(skin, 0.72), 0.03 * u)
    axes = (max(1, round(0.055 * ident.nostril * u * _ONE)), max(1, round(0.03 * u * _ONE)))
    for p in g["nostrils"]:
        centre = (int(p[0]), int(p[1]))
        cv2.ellipse(img, centre, axes, 0, 0, 360, _shade(skin, 0.42), -1, _AA, _SHIFT)
    _dot(img, g["tip"][0], 0.035 * u, _blend(skin, (255, 255, 255), 0.12))


def _draw_facial_hair(img: np.ndarray, g: _G, ident: Identity) -> None:
    kind = FACIAL_HAIR[ident.facial_hair]
    if kind == "none":
        return
    t = 0.16 if kind == "stubble" else ident.beard_density
    color = _blend(ident.skin, ident.facial_hair_color, t)
    for name in ("beard", "goatee", "moustache"):
        if name in g:
            _poly(img, g[name], color)


def _draw_mouth(img: np.ndarray, g: _G, ident: Identity, u: float) -> None:
    lip = ident.lip_color
    _poly(img, g["lip_lower"], lip)
    _poly(img, g["lip_upper"], _shade(lip, 0.86))
    _poly(img, g["mouth_inner"], (70, 22, 28))
    if "teeth" in g:
        _poly(img, g["teeth"], (236, 232, 222))
    inner = g["mouth_inner"]
    _lines(img, inner[: len(inner) // 2 + 1], _shade(lip, 0.45), 0.025 * u)


def _draw_eyes(img: np.ndarray, g: _G, ident: Identity, u: float) -> None:
    skin = ident.skin
    lash = _blend(ident.brow_color, (20, 14, 12), 0.5)
    sclera = _blend((244, 242, 236), skin, 0.12)
    for side, name in ((-1, "eyelid_l"), (1, "eyelid_r")):
        pts = g[name]
        upper, lower = pts[:_EYE_N], pts[_EYE_N : 2 * _EYE_N]
        _poly(img, pts[: 2 * _EYE_N - 1], sclera)
        _poly(img, g[f"iris{side}"], ident.iris_color)
        _poly(img, g[f"pupil{side}"], (14, 10, 10))
        _dot(img, g[f"glint{side}"][0], 0.022 * u, (250, 250, 250))
        _lines(img, upper, lash, 0.05 * u)
        _lines(img, lower, _shade(skin, 0.66), 0.02 * u)
        if ident.lid_crease:
            _lines(img, pts[2 * _EYE_N :], _shade(skin, 0.8), 0.02 * u)


def _draw(img: np.ndarray, g: _G, ident: Identity, look: _Look, unit: float) -> None:
    """Draw a whole head (body, head, skin details, features) in painter's order."""
    _draw_body(img, g, ident, look, unit)
    _draw_head(img, g, ident, look, unit)
    _draw_skin_details(img, g, ident, unit)
    _draw_nose(img, g, ident, unit)
    _draw_facial_hair(img, g, ident)
    _draw_mouth(img, g, ident, unit)
    _draw_eyes(img, g, ident, unit)
    _poly(img, g["brow_l"], ident.brow_color)
    _poly(img, g["brow_r"], ident.brow_color)
    if "fringe" in g:
        _poly(img, g["fringe"], look.hair)


# --------------------------------------------------------------------------------------------
# Backgrounds and image finishing
# --------------------------------------------------------------------------------------------


def _gradient(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth muted colour field: random colours on a coarse grid, bilinearly upsampled."""
    grid = rng.uniform(0, 1, (*cells, 3))
    grey = rng.uniform(40, 215)
    grid = (grey + (grid - 0.5) * rng.uniform(60, 220)).clip(0, 255).astype(np.uint8)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def _wild_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _gradient(rng, h, w, (int(rng.integers(2, 5)), int(rng.integers(2, 5))))
    base = cv2.resize(img, (4, 4), interpolation=cv2.INTER_AREA).reshape(-1, 3).mean(0)
    for _ in range(int(rng.integers(3, 12))):
        color = tuple(float(c) for c in _mix(base, rng.uniform(0, 255, 3), rng.uniform(0.3, 0.9)))
        kind = int(rng.integers(3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(min(h, w) // 16, min(h, w) // 2))
        if kind == 0:
            x2, y2 = x + int(rng.integers(-size, size)), y + int(rng.integers(-size, size))
            cv2.rectangle(img, (x, y), (x2, y2), color, -1, _AA)
        elif kind == 1:
            cv2.circle(img, (x, y), size // 2, color, -1, _AA)
        else:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(2, 12)), _AA)
    return img


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed field of Gaussian noise (uint8, mean 128, sd 32); images take random windows."""
    bank = np.random.default_rng(20240611).standard_normal((1024, 1024, 3), dtype=np.float32)
    bank = np.clip(bank * 32 + 128, 0, 255).astype(np.uint8)
    bank.setflags(write=False)
    return bank


def _noise(h: int, w: int, fy: float, fx: float) -> np.ndarray:
    bank = _noise_bank()
    if h > bank.shape[0] or w > bank.shape[1]:
        bank = np.tile(bank, (-(-h // bank.shape[0]), -(-w // bank.shape[1]), 1))
    oy, ox = int(fy * (bank.shape[0] - h)), int(fx * (bank.shape[1] - w))
    return bank[oy : oy + h, ox : ox + w]


def _finish(
    img: np.ndarray, rng: np.random.Generator, enabled: bool = True, lighting: float = 1.0
) -> np.ndarray:
    """Lighting (directional gradient, brightness, tint), blur and sensor noise.

    Integer OpenCV arithmetic throughout (fixed-point gain with 7 fractional bits): several
    times faster than a float pipeline on large images. ``lighting`` scales the gradient,
    the brightness change and the tint (1 leaves every value exactly as it is).
    """
    v = rng.uniform(-1, 1, 9)
    if not enabled:
        return img
    h, w = img.shape[:2]
    sigma = 0.45 * (v[0] + 1)
    if sigma > 0.35:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    strength = 0.2 * (v[2] + 1) * lighting
    gx = np.float32(128 * strength * np.cos(np.pi * v[1]) / w)
    gy = np.float32(128 * strength * np.sin(np.pi * v[1]) / h)
    gain = (np.arange(h, dtype=np.float32) - h / 2)[:, None] * gy
    gain = gain + (
        (np.arange(w, dtype=np.float32) - w / 2) * gx
        + np.float32(128 * (1 + 0.15 * v[3] * lighting))
    )
    gain8 = np.clip(gain, 0, 255).astype(np.uint8)
    out = cv2.multiply(img, cv2.merge([gain8, gain8, gain8]), scale=1 / 128)
    out = cv2.multiply(out, (1 + 0.04 * v[4] * lighting, 1.0, 1 - 0.04 * v[4] * lighting, 0.0))
    noise_sd = 3.0 * (v[5] + 1)
    bank = _noise(h, w, (v[6] + 1) / 2, (v[7] + 1) / 2)
    return cv2.addWeighted(out, 1.0, bank, noise_sd / 32, -128 * noise_sd / 32)


# --------------------------------------------------------------------------------------------
# Public renderers
# --------------------------------------------------------------------------------------------


def draw_aligned_face(
    identity: Identity,
    rng: np.random.Generator,
    *,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
    mouth_open: float | None = None,
    smile: float | None = None,
    align_noise: float = 0.6,
    size: int = ARCFACE_SIZE,
    postprocess: bool = True,
    variation: Variation | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render an ArcFace-aligned crop of ``identity`` and its 68 landmarks.

    Pose angles are in degrees; ``None`` draws them (yaw ±15°, pitch ±8°, roll ±8°, or the
    ranges of ``variation``). The
    face is first aligned by the similarity transform from its 5 points to the ArcFace
    template (scaled to ``size``), then rolled about the template's nose tip, so an explicit
    ``roll`` survives alignment (positive: the image-right eye moves down). For a frontal
    face the eye line is then at exactly ``roll`` degrees; with yaw the 5-point alignment
    itself adds a small tilt (about 1° at 35° yaw), as it does on real crops. ``align_noise``
    is the spread (pixels at 112) of a random shift plus 2 % scale jitter; 0 = exact.
    ``mouth_open`` (0..0.15) and ``smile`` (-0.02..0.06) are in inter-ocular units.
    ``postprocess`` switches lighting, blur and noise on or off. ``variation``
    (:class:`Variation`) widens or narrows the within-identity spread: pose ranges,
    expression, lighting and random occluders; ``None`` or the default :class:`Variation`
    draw exactly the same image.

    Returns a ``size``×``size``×3 ``uint8`` RGB image and ``float32`` (68, 2) landmarks.
    """
    var = Variation() if variation is None else variation
    ranges = (var.yaw, var.pitch, var.roll)
    pose = _sample_pose(rng, (yaw, pitch, roll, mouth_open, smile), ranges, var.expression)
    look = _sample_look(identity, rng)
    jit = rng.standard_normal(3) * align_noise
    projected, slices = _posed(identity, pose)
    lm2 = projected[slices["lm"]]
    template = ARCFACE_112.astype(np.float64) * (size / ARCFACE_SIZE)
    M = similarity_transform(to_five(lm2.astype(np.float32)), template)
    M = _compose(_rot2d(pose.roll, template[2]), M)
    s = 1 + 0.03 * jit[2]
    M = _compose(np.array([[s, 0, jit[0] * size / 112], [0, s, jit[1] * size / 112]]), M)
    canvas_M = M * 2.0
    canvas_M[:, 2] += 0.5  # canvas pixels 2i and 2i+1 average into output pixel i
    canvas = _gradient(rng, 2 * size, 2 * size, (2, 2))
    unit = float(np.sqrt(abs(np.linalg.det(canvas_M[:, :2]))))
    _draw(canvas, _to_canvas(projected, slices, canvas_M), identity, look, unit)
    if var.occlusion > 0 and rng.random() < var.occlusion:  # no draw at all by default
        _occlude(canvas, rng, 2 * size / ARCFACE_SIZE)
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    img = _finish(img, rng, postprocess, var.lighting)
    return img, _affine(lm2, M).astype(np.float32)


def _occlude(canvas: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """One occluder over the face of an aligned canvas: an ellipse (a hand, a hair strand,
    an object) or a bar, of a muted colour, centred in the face area (``scale`` = canvas
    pixels per pixel of the 112 crop)."""
    v = rng.uniform(0, 1, 8)
    centre = (scale * (24 + 64 * v[0]), scale * (30 + 70 * v[1]))
    axes = (scale * (10 + 18 * v[2]), scale * (5 + 12 * v[3]))
    color = tuple(float(c) for c in 40 + 170 * rng.uniform(0, 1, 3))
    fixed = (round(centre[0] * _ONE), round(centre[1] * _ONE))
    size = (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE)))
    angle = 180 * v[4]
    if v[5] < 0.6:
        cv2.ellipse(canvas, fixed, size, angle, 0, 360, color, -1, _AA, _SHIFT)
    else:
        box = cv2.boxPoints(((centre[0], centre[1]), (2 * axes[0], axes[1]), angle))
        _poly(canvas, np.rint(box * _ONE).astype(np.int32), color)


def _wild_affine(
    lm2: np.ndarray, rng: np.random.Generator, h: int, w: int, roll: float, face_frac: float
) -> np.ndarray:
    """Scale the face to ``face_frac`` of the image width, roll it, place it inside."""
    span = float(np.hypot(*(lm2[16] - lm2[0])))
    R = _rot2d(roll, np.zeros(2))[:, :2] * (face_frac * w / max(span, 1e-6))
    M = np.column_stack([R, -R @ lm2.mean(0)])
    margin = 0.04 * min(h, w)
    avail = np.array([w, h]) - 2 * margin
    pts = _affine(lm2, M)
    extent = pts.max(0) - pts.min(0)
    if (extent > avail).any():
        M[:, :2] *= float((avail / extent).min())
        pts = _affine(lm2, M)
        extent = pts.max(0) - pts.min(0)
    room = np.maximum(avail - extent, 0)
    M[:, 2] += margin - pts.min(0) + rng.uniform(0, 1, 2) * room
    return M


def draw_wild_face(
    identity: Identity,
    rng: np.random.Generator,
    size: tuple[int, int] = (480, 640),
    *,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
    face_frac: float | None = None,
    background: tuple[int, int, int] | None = None,
    postprocess: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``identity`` as a head on a procedural background ("in the wild").

    ``size`` is (height, width). The face (jaw width) spans ``face_frac`` of the image width
    (drawn from 0.15–0.5 when ``None``), at a random position, yaw ±30°, pitch ±12°, roll
    ±25° unless given. ``background``: a plain RGB colour instead of the procedural scene.

    Returns an H×W×3 ``uint8`` RGB image and ``float32`` (68, 2) landmarks in its pixels
    (all inside the image).

    Example:
        >>> import numpy as np
        >>> ident = sample_identity(np.random.default_rng(0))
        >>> img, lm = draw_wild_face(ident, np.random.default_rng(1), (240, 320))
        >>> img.shape, bool((lm >= 0).all() and (lm[:, 0] < 320).all())
        ((240, 320, 3), True)
    """
    h, w = size
    pose = _sample_pose(rng, (yaw, pitch, roll, None, None), (30.0, 12.0, 25.0))
    look = _sample_look(identity, rng)
    frac = float(rng.uniform(0.15, 0.5)) if face_frac is None else float(face_frac)
    projected, slices = _posed(identity, pose)
    lm2 = projected[slices["lm"]]
    M = _wild_affine(lm2, rng, h, w, pose.roll, frac)
    if background is None:
        img = _wild_background(rng, h, w)
    else:
        img = np.empty((h, w, 3), np.uint8)
        img[:] = background
    unit = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    _draw(img, _to_canvas(projected, slices, M), identity, look, unit)
    img = _finish(img, rng, postprocess)
    return img, _affine(lm2, M).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class SyntheticFaces:
    """Map-style dataset of synthetic faces: item ``i`` → ``(image, label, landmarks)``.

    Item ``i`` shows identity ``i // images_per_identity`` and depends only on
    ``(seed, i)``, so it is identical whatever order or worker reads it. ``kind`` is
    ``"aligned"`` (``size``: crop side, default 112) or ``"wild"`` (``size``: (height,
    width), default (480, 640)). ``variation`` (a :class:`Variation` or its dict, aligned
    crops only) sets the within-identity spread; ``None`` is the built-in one.

    Example:
        >>> ds = SyntheticFaces(3, 2, seed=5)
        >>> len(ds), ds[3][1], ds[3][0].shape
        (6, 1, (112, 112, 3))
    """

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        seed: int = 0,
        kind: str = "aligned",
        size: int | tuple[int, int] | None = None,
        variation: Variation | dict[str, Any] | None = None,
    ) -> None:
        if kind not in ("aligned", "wild"):
            raise ValueError(f"kind must be 'aligned' or 'wild', got {kind!r}")
        if not isinstance(variation, Variation):
            variation = Variation.from_dict(variation)
        if kind == "wild" and not variation.is_default():
            raise ValueError("variation applies to aligned crops only (kind='aligned')")
        self.variation = variation
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError("num_identities and images_per_identity must be >= 1")
        self.num_identities = int(num_identities)
        self.images_per_identity = int(images_per_identity)
        self.seed = int(seed)
        self.kind = kind
        default = ARCFACE_SIZE if kind == "aligned" else (480, 640)
        self.size = default if size is None else size
        self._identities: dict[int, Identity] = {}

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def identity(self, label: int) -> Identity:
        """The identity behind ``label`` (deterministic from ``(seed, label)``)."""
        if not 0 <= label < self.num_identities:
            raise IndexError(f"label {label} out of range [0, {self.num_identities})")
        if label not in self._identities:
            rng = np.random.default_rng([self.seed, label, 7])
            self._identities[label] = sample_identity(rng)
        return self._identities[label]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} items")
        label = i // self.images_per_identity
        rng = np.random.default_rng([self.seed, i])
        ident = self.identity(label)
        if self.kind == "aligned":
            size = self.size if isinstance(self.size, int) else int(self.size[0])
            img, lm = draw_aligned_face(ident, rng, size=size, variation=self.variation)
        else:
            hw = self.size if isinstance(self.size, tuple) else (int(self.size), int(self.size))
            img, lm = draw_wild_face(ident, rng, (int(hw[0]), int(hw[1])))
        return img, label, lm
