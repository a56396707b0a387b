"""Render masks: ``MaskSpec`` (what may be drawn) → ``MaskParams`` (one draw) → pixels.

``render(image, landmarks, params)`` returns the masked image, a float occlusion map (alpha,
H×W in [0, 1]) and the params. The same params on the same input give byte-identical output;
params round-trip through JSON so every mask can be replayed from a manifest.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import aligned_landmarks
    >>> face = np.full((112, 112, 3), 180, np.uint8)
    >>> params = MaskSpec().sample(np.random.default_rng(0))
    >>> result = render(face, aligned_landmarks(), params)
    >>> result.image.shape, result.alpha.dtype.name, bool(0.0 <= result.alpha.min() <= 1.0)
    ((112, 112, 3), 'float32', True)
    >>> MaskParams.from_json(params.to_json()) == params
    True
"""

from __future__ import annotations

import bisect
import colorsys
import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

import cv2
import numpy as np

from maskgen import appearance as app
from maskgen import fabric, paint
from maskgen.jpeg import (
    JpegGrid,
    compress,
    compress_bgr,
    mcu_box,
    noise_survival,
    quality_of_scale,
)
from maskgen.landmarks import landmarks_from_five, validate_landmarks
from maskgen.photo import (
    MIN_BLUR,
    MIN_NOISE,
    PhotoLook,
    blur_kernel_size,
    degrade_pixels,
    face_region,
    match_colours,
    noise_field,
    photo_look,
)
from maskgen.shapes import (
    COVERAGES,
    GEOMETRY,
    GEOMETRY_VERSION,
    GEOMETRY_VERSIONS,
    POSED_GEOMETRY,
    FaceFrame,
    Outline,
    mask_outlines,
)
from maskgen.template import load_template, warp_template

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from JSON data (lists → tuples); unknown keys are an error."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class MaskParams:
    """One concrete, JSON-serialisable mask draw. Lengths are in face units (the distance
    from the eye line to the mouth), so a draw means the same on any image size.

    Attributes:
        family: shape family (:data:`maskgen.shapes.FAMILIES`).
        coverage: "high" (nose bridge), "medium", "low" (nose out), "chin" (chin only).
        color: primary RGB colour.
        secondary_color: second tone for stripes, checks, dots and prints.
        texture: one of :data:`maskgen.appearance.TEXTURES`.
        texture_seed: seed of the procedural texture tile.
        texture_scale: texture period in face units.
        texture_angle: texture rotation relative to the eye line, degrees.
        shading: 0 = flat colour, 1 = follow the face's low-frequency luminance fully.
        edge_softness: edge blur, in face units (0.01 ≈ 0.4 px on a 112 crop).
        opacity: peak alpha.
        width: side reach (1 = nominal).
        top_offset, bottom_offset: move the top / bottom edge, in face units.
        straps: draw ear loops where the face is large enough to show them (families whose
            geometry has ``ear_loops``).
        strap_color: colour of the ear loops.
        valve: exhalation valve (families whose geometry has ``valve``: N95, KN95).
        geometry: the outline construction's version (:data:`maskgen.shapes.GEOMETRY_VERSIONS`).
        lighting: how ``shading`` measures the face's light (:data:`maskgen.paint.LIGHTING_MODELS`).
        noise: the mask gets this multiple of the photo's own noise (0: a clean mask).
        blur: the mask gets this multiple of the photo's own blur (0: as sharp as drawn).
        color_match: how far the mask's colours take the photo's colour cast and, on a grey
            or colourless photo, its colourlessness (0: the drawn colours as they are).
            (:mod:`maskgen.photo` measures the photo around the face.) These three are off
            in a hand-made ``MaskParams`` (its colours are meant literally) and on in the
            draws of a default :class:`MaskSpec`.
        fabric: strength of the fabric's own shading on a posed surface (geometry 3):
            Lambert light from the face's light direction at the surface normals
            (:mod:`maskgen.fabric`; 0: none).
        contact_shadow: strength of the soft shadow on the skin just outside the mask's
            edge and ear loops (0: none). Both are off in a hand-made ``MaskParams`` and on
            in the draws of a default :class:`MaskSpec`.
        creases: depth of the cloth's creases on a posed surface with fabric shading: soft
            folds laid in surface coordinates (seeded by ``texture_seed``) that tilt the
            normal, so they answer the light like the pleats do (0: a smooth fabric).
        compression: the mask gets the photo's own JPEG compression, its quantisation scale
            times this (:func:`maskgen.jpeg.estimate_jpeg` reads it from the pixels and
            :func:`maskgen.jpeg.grid_of_file` from the file; 0, or a photo that shows no JPEG
            grid: none). Both are off in a hand-made
            ``MaskParams`` and on in the draws of a default :class:`MaskSpec`.

    New draws get the current ``geometry`` and ``lighting``; a recorded draw without them is
    drawn as it was before they existed (:data:`LEGACY`), so old manifests replay as they
    were rendered.
    """

    family: str = "surgical"
    coverage: str = "high"
    color: RGB = (141, 191, 226)
    secondary_color: RGB = (255, 255, 255)
    texture: str = "none"
    texture_seed: int = 0
    texture_scale: float = 1.0
    texture_angle: float = 0.0
    shading: float = 0.0
    edge_softness: float = 0.01
    opacity: float = 1.0
    width: float = 1.0
    top_offset: float = 0.0
    bottom_offset: float = 0.0
    straps: bool = False
    strap_color: RGB = (240, 240, 240)
    valve: bool = False
    geometry: int = GEOMETRY_VERSION
    lighting: int = paint.LIGHTING_MODELS[-1]
    noise: float = 0.0
    blur: float = 0.0
    color_match: float = 0.0
    fabric: float = 0.0
    contact_shadow: float = 0.0
    creases: float = 0.0
    compression: float = 0.0

    def __post_init__(self) -> None:
        if self.family not in GEOMETRY:
            raise ValueError(f"unknown mask family {self.family!r}; choose from {tuple(GEOMETRY)}")
        if self.coverage not in COVERAGES:
            raise ValueError(f"unknown coverage {self.coverage!r}; choose from {COVERAGES}")
        if self.texture not in app.TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose from {app.TEXTURES}")
        for name in ("color", "secondary_color", "strap_color"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3 or not all(0 <= v <= 255 for v in value):
                raise ValueError(f"{name} must be three integers in 0..255, got {value}")
            object.__setattr__(self, name, value)
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], got {self.opacity}")
        for name in ("noise", "blur", "color_match", "fabric", "contact_shadow", "creases",
                     "compression"):  # fmt: skip
            value = getattr(self, name)
            top = 4.0 if name in ("noise", "blur", "compression") else 1.0
            if not (math.isfinite(value) and 0.0 <= value <= top):
                raise ValueError(f"{name} must be in [0, {top:g}], got {value}")
        if self.lighting not in paint.LIGHTING_MODELS:
            known = paint.LIGHTING_MODELS
            raise ValueError(
                f"unknown lighting model {self.lighting!r}; this maskgen knows {known}"
            )
        if self.geometry not in GEOMETRY_VERSIONS:
            known = GEOMETRY_VERSIONS
            raise ValueError(
                f"unknown geometry version {self.geometry!r}; this maskgen knows {known}"
            )

    @classmethod
    def _trusted(cls, **values: Any) -> MaskParams:
        """Build from values already known to be valid (``MaskSpec.sample``'s draws, checked
        once when the spec was made): skips ``__post_init__``, which costs more than the
        draw itself on the per-image hot path."""
        params = object.__new__(cls)
        params.__dict__.update(_PARAM_DEFAULTS, **values)
        return params

    def to_dict(self) -> dict[str, Any]:
        # Field by field: ``dataclasses.asdict`` deep-copies and costs ~15× more (every
        # value is immutable; the colours become lists for JSON).
        d = {name: getattr(self, name) for name in _PARAM_FIELDS}
        for name in ("color", "secondary_color", "strap_color"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskParams:
        """A recorded draw; fields it lacks take their :data:`LEGACY` value (else the default)."""
        return _from_dict(cls, {**LEGACY, **data})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MaskParams:
        return cls.from_dict(json.loads(text))


_PARAM_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(MaskParams)}
_PARAM_FIELDS = tuple(_PARAM_DEFAULTS)
#: What a recorded draw that lacks a field meant: the behaviour before the field existed.
LEGACY: dict[str, Any] = {"geometry": 1, "lighting": 1}


def _cumulative(weights: dict[str, float], what: str) -> tuple[list[str], list[float]]:
    """Sorted names and their cumulative probabilities (validated)."""
    names = sorted(weights)
    values = [float(weights[n]) for n in names]
    total = sum(values)
    if not names or total <= 0 or min(values) < 0:
        raise ValueError(f"{what} weights must be non-negative with a positive sum: {weights}")
    acc, cumulative = 0.0, []
    for v in values:
        acc += v / total
        cumulative.append(acc)
    cumulative[-1] = 1.0
    return names, cumulative


def _pick(table: tuple[list[str], list[float]], u: float) -> str:
    names, cumulative = table
    return names[min(bisect.bisect_right(cumulative, u), len(names) - 1)]


def _hsv_colour(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


@dataclass(frozen=True)
class MaskSpec:
    """What may be drawn, with probabilities; ``sample(rng)`` makes one :class:`MaskParams`.

    Weights are relative (they need not sum to 1); a weight of 0 disables an option.
    Ranges are (low, high) uniform intervals; the geometry ranges (width, offsets, edge
    softness) are sampled on ``geometry_levels`` evenly spaced values (0 = continuous).
    Texture tiles come from ``texture_variants`` seeds per texture (0 = any seed): tiles
    are generated once and cached, and scale, angle and placement still vary per draw.
    """

    families: dict[str, float] = field(
        default_factory=lambda: {
            "surgical": 3,
            "wide": 1,
            "round": 1,
            "kn95": 1.5,
            "n95": 1,
            "cloth": 2,
            "gaiter": 0.5,
        }
    )
    coverages: dict[str, float] = field(
        default_factory=lambda: {"high": 6, "medium": 3, "low": 1, "chin": 0.5}
    )
    palettes: dict[str, float] = field(
        default_factory=lambda: {
            "medical_blue": 3,
            "white": 2,
            "black": 2,
            "grey": 1,
            "pink": 0.5,
            "khaki": 0.5,
            "navy": 1,
            "red": 0.5,
            "medical_green": 0.5,
        }
    )
    random_color_prob: float = 0.15
    textures: dict[str, float] = field(
        default_factory=lambda: {
            "none": 3,
            "pleats": 2,
            "grain": 2,
            "stripes": 0.5,
            "checks": 0.5,
            "dots": 0.5,
            "print": 0.5,
        }
    )
    texture_scale: tuple[float, float] = (0.6, 1.2)
    texture_angle: tuple[float, float] = (-8.0, 8.0)
    shading: tuple[float, float] = (0.5, 1.0)
    edge_softness: tuple[float, float] = (0.005, 0.02)
    width: tuple[float, float] = (0.95, 1.05)
    top_offset: tuple[float, float] = (-0.03, 0.03)
    bottom_offset: tuple[float, float] = (-0.04, 0.04)
    straps_prob: float = 0.8
    valve_prob: float = 0.3
    geometry_levels: int = 3
    texture_variants: int = 64
    noise: tuple[float, float] = (0.8, 1.2)
    blur: tuple[float, float] = (0.6, 1.0)
    color_match: tuple[float, float] = (0.7, 1.0)
    fabric: tuple[float, float] = (0.6, 1.0)
    contact_shadow: tuple[float, float] = (0.3, 0.7)
    creases: tuple[float, float] = (0.3, 1.0)
    compression: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self) -> None:
        for name, known in (("families", GEOMETRY), ("coverages", COVERAGES),
                            ("textures", app.TEXTURES)):  # fmt: skip
            unknown = {v for v in getattr(self, name) if v not in known}  # template:… too
            if unknown:
                raise ValueError(f"unknown {name} {sorted(unknown)}; choose from {tuple(known)}")
        unknown = set(self.palettes) - set(app.palette_names())
        if unknown:
            raise ValueError(
                f"unknown palettes {sorted(unknown)}; choose from {app.palette_names()}"
            )
        tables = {
            name: _cumulative(getattr(self, name), name)
            for name in ("families", "coverages", "palettes", "textures")
        }
        colours = {name: app.palette_colors(name) for name in self.palettes}
        object.__setattr__(self, "_tables", tables)
        object.__setattr__(self, "_colours", colours)
        accents = app.accent_colors()
        object.__setattr__(self, "_accents", accents)
        # The accents a draw may pair with each colour (never the colour itself).
        without = {c: [a for a in accents if a != c] for cs in colours.values() for c in cs}
        object.__setattr__(self, "_accents_without", without)
        spans = tuple(
            (float(lo), float(hi) - float(lo))
            for lo, hi in (self.texture_scale, self.texture_angle, self.shading,
                           self.edge_softness, self.width, self.top_offset, self.bottom_offset)
        )  # fmt: skip
        object.__setattr__(self, "_spans", spans)

    def sample(self, rng: np.random.Generator) -> MaskParams:
        """Draw one :class:`MaskParams` from ``rng``.

        Always consumes the same amount of randomness (19 uniforms, one integer, then 3 + 2 + 2
        uniforms for the photo's look, the surface and the cloth), so a seeded stream of draws
        stays aligned whatever the options.
        """
        u = rng.random(19).tolist()
        texture_seed = int(rng.integers(0, self.texture_variants or 2**31 - 1))
        # Drawn after the others, so that the fields older versions drew keep their values.
        look = rng.random(3).tolist()
        surface = rng.random(2).tolist()
        cloth = rng.random(2).tolist()
        tables = self._tables  # type: ignore[attr-defined]
        family = _pick(tables["families"], u[0])
        coverage = _pick(tables["coverages"], u[1])
        colors = self._colours[_pick(tables["palettes"], u[2])]  # type: ignore[attr-defined]
        color = colors[min(int(u[3] * len(colors)), len(colors) - 1)]
        if u[4] < self.random_color_prob:
            # Uniform hue, moderate saturation and value (no uint8 wrap-around).
            color = _hsv_colour(u[5], 0.15 + 0.7 * u[6], 0.25 + 0.7 * u[7])
        accents = self._accents_without.get(color)  # type: ignore[attr-defined]
        if accents is None:  # a random colour
            accents = [c for c in self._accents if c != color]  # type: ignore[attr-defined]
        secondary = accents[min(int(u[8] * len(accents)), len(accents) - 1)]
        texture = _pick(tables["textures"], u[9])
        geo = GEOMETRY[family]
        if texture == "pleats":
            texture = geo.pleats_as
        # Ranges as (low, span) pairs, fetched once: this runs once per output image.
        scale, angle, shading, soft, width, top, bottom = self._spans  # type: ignore[attr-defined]
        # Geometry jitter snapped to `geometry_levels` evenly spaced values (0 = continuous):
        # aligned datasets, whose crops share one landmark layout, then reuse cached outlines.
        n = self.geometry_levels
        if n > 1:
            g = [round(v * (n - 1)) / (n - 1) for v in u[13:17]]
        else:
            g = u[13:17] if n <= 0 else [0.5] * 4
        return MaskParams._trusted(
            family=family,
            coverage=coverage,
            color=color,
            secondary_color=secondary,
            texture=texture,
            texture_seed=texture_seed,
            texture_scale=scale[0] + scale[1] * u[10],
            texture_angle=angle[0] + angle[1] * u[11],
            shading=shading[0] + shading[1] * u[12],
            edge_softness=soft[0] + soft[1] * g[0],
            width=width[0] + width[1] * g[1],
            top_offset=top[0] + top[1] * g[2],
            bottom_offset=bottom[0] + bottom[1] * g[3],
            straps=u[17] < self.straps_prob and geo.ear_loops,
            valve=u[18] < self.valve_prob and geo.valve,
            noise=self.noise[0] + (self.noise[1] - self.noise[0]) * look[0],
            blur=self.blur[0] + (self.blur[1] - self.blur[0]) * look[1],
            color_match=self.color_match[0] + (self.color_match[1] - self.color_match[0]) * look[2],
            fabric=self.fabric[0] + (self.fabric[1] - self.fabric[0]) * surface[0],
            contact_shadow=self.contact_shadow[0]
            + (self.contact_shadow[1] - self.contact_shadow[0]) * surface[1],
            creases=self.creases[0] + (self.creases[1] - self.creases[0]) * cloth[0],
            compression=self.compression[0]
            + (self.compression[1] - self.compression[0]) * cloth[1],
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskSpec:
        return _from_dict(cls, data)


class RenderResult(NamedTuple):
    """``image``: masked image (same dtype/channels as the input); ``alpha``: H×W float32
    occlusion map in [0, 1]; ``params``: the draw that made it."""

    image: np.ndarray
    alpha: np.ndarray
    params: MaskParams


#: Ear loops are drawn only when the eye-to-mouth distance is at least this many pixels.
MIN_STRAP_UNIT_PX = 36.0


def _as_rgb(image: np.ndarray) -> tuple[np.ndarray, str]:
    """View any supported image as H×W×3 RGB; returns the array and how to restore it."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2), "gray"
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2), "gray1"
    if image.ndim == 3 and image.shape[2] == 3:
        return image, "rgb"
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3], "rgba"
    raise ValueError(f"image must be H×W, H×W×1, H×W×3 or H×W×4, got shape {image.shape}")


def _restore(rgb: np.ndarray, original: np.ndarray, kind: str) -> np.ndarray:
    if kind == "rgb":
        return rgb
    if kind == "rgba":
        return np.concatenate([rgb, original[..., 3:]], axis=2)
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if np.issubdtype(original.dtype, np.integer):
        gray = np.clip(np.rint(gray), 0, np.iinfo(original.dtype).max)
    gray = gray.astype(original.dtype)
    return gray if kind == "gray" else gray[..., None]


_MAX_VALUES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


def _max_value(dtype: np.dtype) -> float:
    known = _MAX_VALUES.get(dtype)
    if known is not None:
        return known
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported image dtype {dtype}")


def _bbox(outline: Outline, pad: float, h: int, w: int) -> Box | None:
    pts = [outline.polygon, *outline.straps]
    allpts = np.concatenate(pts) if len(pts) > 1 else outline.polygon
    x0 = max(int(np.floor(allpts[:, 0].min() - pad)), 0)
    y0 = max(int(np.floor(allpts[:, 1].min() - pad)), 0)
    x1 = min(int(np.ceil(allpts[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(allpts[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


#: Tones of the detail overlays, as factors of the primary colour (``None``: the strap colour).
SEAM_TONE, VALVE_TONE = 0.72, 0.85


def seam_width(unit: float) -> int:
    """Line width in pixels of a centre seam on a face of ``unit`` pixels."""
    return max(1, round(unit * 0.02))


def loop_width(unit: float) -> int:
    """Line width in pixels of an ear loop on a face of ``unit`` pixels."""
    return max(1, round(unit * 0.035))


@dataclass(frozen=True)
class _Occlusion:
    """Everything about a draw that depends only on landmarks, geometry params and frame size:
    the outline, its bounding box, its soft-edged occlusion map (straps included) and the
    coverages of its flat-coloured details (seam, valve disc and rim, bare ear loops)."""

    outline: Outline
    box: tuple[int, int, int, int] | None
    alpha: np.ndarray | None  # (h, w) float32 over the box, before opacity; read-only
    overlays: np.ndarray | None = None  # (k, h, w) uint8 detail coverages, painted in order
    tones: tuple[float | None, ...] = ()  # one per overlay: factor of primary, None = straps
    colour: np.ndarray | None = None  # (h, w, 3) float32 0–255: an image template's pixels
    shadow: np.ndarray | None = None  # (h, w) float32 contact shadow band on the skin

    uv: np.ndarray | None = None  # (h, w, 2) float32 surface coordinates (posed outlines)
    normals: np.ndarray | None = None  # (h, w, 3) float32 camera-frame normals
    light_basis: fabric.LightBasis | None = None  # the coverage's light-estimate moments


class _OcclusionCache:
    """Small LRU of :class:`_Occlusion` bounded in bytes.

    Aligned datasets map every crop onto the same canonical layout, so the same geometry
    recurs constantly; in-the-wild faces simply miss. Entries are read-only arrays, so a hit
    returns exactly what a miss would compute.
    """

    def __init__(self, max_bytes: int = 96 << 20, max_entry_bytes: int = 1 << 20) -> None:
        self.max_bytes, self.max_entry_bytes = max_bytes, max_entry_bytes
        self._entries: OrderedDict[tuple, tuple[_Occlusion, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> _Occlusion | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def put(self, key: tuple, value: Any, size: int | None = None) -> None:
        if size is None:  # an occlusion map (its surface maps are counted in `surfaces`)
            arrays = (value.alpha, value.overlays, value.colour, value.shadow, value.light_basis)
            size = sum(a.nbytes for a in arrays if a is not None)
        if size > self.max_entry_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes or len(self._entries) > 4096:
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


class _Face(NamedTuple):
    """Validated (68, 2) landmarks (read-only), their bytes as a cache key, and the face unit."""

    landmarks: np.ndarray
    key: bytes
    unit: float


class RenderState:
    """The renderer's per-process memory: validated faces, occlusion maps and outlines.

    Everything in it is derived from its key alone and read-only, so a hit gives exactly what
    a miss computes; it only saves time (aligned datasets share one landmark layout).
    :func:`render_state` returns the process's instance; :meth:`clear` empties it.
    """

    def __init__(self) -> None:
        self.faces: OrderedDict[tuple, _Face] = OrderedDict()
        self.occlusions = _OcclusionCache()
        self.outlines: OrderedDict[tuple, Outline] = OrderedDict()
        # A posed outline's surface maps over its box: shared by the draws that differ only
        # in edge softness, shading and colours (one entry serves many occlusion maps).
        self.surfaces = _OcclusionCache(max_bytes=64 << 20, max_entry_bytes=4 << 20)

    def clear(self) -> None:
        self.faces.clear()
        self.occlusions.clear()
        self.outlines.clear()
        self.surfaces.clear()


_STATE = RenderState()


def render_state() -> RenderState:
    """This process's :class:`RenderState`."""
    return _STATE


def face_of(landmarks: np.ndarray, shape: tuple[int, ...]) -> _Face:
    """Validate landmarks (5 points expanded to 68) once per distinct set and image size."""
    try:
        lm = np.asarray(landmarks, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"landmarks are not numeric: {exc}") from exc
    faces = _STATE.faces
    key = (lm.tobytes(), lm.shape, shape[0], shape[1]) if lm.ndim == 2 else None
    if key is not None and key in faces:
        return faces[key]
    lm = validate_landmarks(lm, shape)
    if len(lm) == 5:
        lm = landmarks_from_five(lm)
    lm.setflags(write=False)
    face = _Face(lm, lm.tobytes(), FaceFrame.from_landmarks(lm).unit)
    if key is not None:
        faces[key] = face
        if len(faces) > 1024:
            faces.popitem(last=False)
    return face


def _geometry_key(face: _Face, params: MaskParams) -> tuple:
    """What the outline of a draw depends on. Options that cannot show on this face are left
    out, so draws that differ only in them share one entry."""
    geo = GEOMETRY[params.family]
    straps = params.straps and geo.ear_loops and face.unit >= MIN_STRAP_UNIT_PX
    valve = params.valve and geo.valve
    return (face.key, params.family, params.coverage, params.width, params.top_offset,
            params.bottom_offset, params.geometry, valve, straps)  # fmt: skip


def mask_geometries(faces: Sequence[_Face], draws: Sequence[MaskParams]) -> list[Outline]:
    """The outlines of draws on validated faces (:func:`face_of`): the one geometry of both
    rendering paths. Outlines already built come from :class:`RenderState`; the others are
    built together, in one :func:`maskgen.shapes.mask_outlines` call."""
    keys = [_geometry_key(f, d) for f, d in zip(faces, draws, strict=True)]
    outlines = _STATE.outlines
    found = [outlines.get(k) for k in keys]
    todo = {k: i for i, (k, o) in enumerate(zip(keys, found, strict=True)) if o is None}
    if todo:
        rows = list(todo.values())
        built = mask_outlines(
            np.stack([faces[i].landmarks for i in rows]),
            [draws[i].family for i in rows],
            [draws[i].coverage for i in rows],
            [draws[i].width for i in rows],
            [draws[i].top_offset for i in rows],
            [draws[i].bottom_offset for i in rows],
            [keys[i][-2] for i in rows],  # valve, where the family has one
            [keys[i][-1] for i in rows],  # ear loops, where they show
            geometry=[draws[i].geometry for i in rows],
        )
        new = dict(zip(todo, built, strict=True))
        outlines.update(new)
        while len(outlines) > 4096:
            outlines.popitem(last=False)
        found = [new[k] if o is None else o for k, o in zip(keys, found, strict=True)]
    return found  # type: ignore[return-value]


def mask_geometry(face: _Face, params: MaskParams) -> Outline:
    """The outline of one draw on a validated face (:func:`mask_geometries`)."""
    return mask_geometries([face], [params])[0]


def mask_box(outline: Outline, unit: float, params: MaskParams, h: int, w: int) -> Box | None:
    """The box a draw touches on an h×w image (outline, ear loops, the soft edge and, for a
    draw with one, the contact shadow)."""
    pad = 2 * params.edge_softness * unit + 2
    if params.contact_shadow > 0:
        pad = max(pad, fabric.shadow_reach(unit))
    return _bbox(outline, pad, h, w)


def _surface_maps(outline: Outline, key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """A posed outline's surface coordinates and normals over its box (``key[-1]``), cached."""
    cached = _STATE.surfaces.get(key)
    if cached is None:
        maps = fabric.surface_maps(outline.surface(), key[-1])  # type: ignore[arg-type]
        maps.setflags(write=False)
        cached = (maps[..., :2], maps[..., 2:])  # views: the kernels read strided arrays
        _STATE.surfaces.put(key, cached, maps.nbytes)
    return cached


def _wants_surface(params: MaskParams) -> bool:
    """Whether a draw paints from its posed surface's maps (texture or fabric shading)."""
    return params.geometry >= POSED_GEOMETRY and (params.texture != "none" or params.fabric > 0)


def _occlusion(face: _Face, h: int, w: int, params: MaskParams) -> _Occlusion:
    """Outline, bounding box and soft-edged occlusion map of a draw, cached by geometry."""
    key = (*_geometry_key(face, params), h, w, params.edge_softness, params.contact_shadow > 0,
           _wants_surface(params), params.fabric > 0)  # fmt: skip
    cache = _STATE.occlusions
    cached = cache.get(key)
    if cached is not None:
        return cached
    unit = face.unit
    outline = mask_geometry(face, params)
    sigma = params.edge_softness * unit
    box = mask_box(outline, unit, params, h, w)
    if box is None:
        result = _Occlusion(outline, None, None)
        cache.put(key, result)
        return result
    x0, y0, x1, y1 = box
    shape, offset = (y1 - y0, x1 - x0), (x0, y0)
    colour = None
    template = GEOMETRY[params.family].template
    if template:  # an image template: its own pixels and coverage, warped onto the outline
        colour, cover = warp_template(load_template(template), outline, shape, offset)
        alpha8 = np.round(cover * 255).astype(np.uint8)
        colour.setflags(write=False)
    else:
        alpha8 = app.fill_polygon(shape, outline.polygon, offset)
    layers: list[np.ndarray] = []
    tones: list[float | None] = []
    if outline.seam is not None:
        seam = np.zeros(shape, np.uint8)
        app.draw_polyline(seam, outline.seam, offset, 255, seam_width(unit))
        layers.append(seam)
        tones.append(SEAM_TONE)
    if outline.valve is not None:
        layers += app.valve_layers(shape, outline.valve, offset)
        tones += [VALVE_TONE, SEAM_TONE]
    if outline.straps:
        loops = np.zeros(shape, np.uint8)
        thickness = loop_width(unit)
        for line in outline.straps:
            app.draw_polyline(loops, line, offset, 255, thickness)
        # Loops show in the strap colour only where the mask itself does not cover them.
        layers.append(np.where((loops > 0) & (alpha8 < 255), np.uint8(255), np.uint8(0)))
        tones.append(None)
        alpha8 = np.maximum(alpha8, loops)
    alpha = app.soften(alpha8.astype(np.float32) * np.float32(1 / 255), sigma)
    alpha.setflags(write=False)
    overlays = None
    if layers:
        overlays = np.stack(layers)
        overlays.setflags(write=False)
    shadow = None
    if params.contact_shadow > 0:
        shadow = fabric.contact_shadow(alpha8, unit)
        shadow.setflags(write=False)
    uv = normals = basis = None
    if _wants_surface(params) and colour is None and outline.posed is not None:
        uv, normals = _surface_maps(outline, (*_geometry_key(face, params), box))
        basis = fabric.light_basis(alpha) if params.fabric > 0 else None
    result = _Occlusion(outline, box, alpha, overlays, tuple(tones), colour, shadow, uv,
                        normals, basis)  # fmt: skip
    cache.put(key, result)
    return result


def paint_face(
    image: np.ndarray, landmarks: np.ndarray, params: MaskParams, *, jpeg: JpegGrid | bool = True
) -> tuple[tuple[int, int, int, int] | None, np.ndarray | None]:
    """Paint the mask described by ``params`` into ``image`` in place; the core of
    :func:`render`, without its full-frame occlusion map.

    Args:
        image: H×W×3 RGB or H×W×4 RGBA array (uint8, uint16 or float in [0, 1]); only the
            mask's bounding box is touched.
        landmarks: (68, 2) or (5, 2) pixel landmarks (see :func:`render`).
        params: the draw.
        jpeg: the photo's JPEG compression, for ``params.compression``: ``True`` to read it
            from the pixels (:func:`maskgen.jpeg.estimate_jpeg`), ``False`` for a photo
            known not to be compressed, or the grid its file gives
            (:func:`maskgen.jpeg.grid_of_file`: exact, and cheaper than reading pixels).

    Returns:
        The box (x0, y0, x1, y1) and the occlusion (float32 over the box, opacity applied),
        or ``(None, None)`` when the mask falls outside the image.

    Example:
        >>> import numpy as np
        >>> from maskgen.landmarks import aligned_landmarks
        >>> face = np.full((112, 112, 3), 180, np.uint8)
        >>> box, alpha = paint_face(face, aligned_landmarks(), MaskParams(color=(0, 0, 255)))
        >>> alpha.shape == (box[3] - box[1], box[2] - box[0]), face[100, 56].tolist()
        (True, [0, 0, 255])
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"paint_face needs an H×W×3 or H×W×4 image, got shape {image.shape}")
    h, w = image.shape[:2]
    cov = _occlusion(face_of(landmarks, image.shape), h, w, params)
    if cov.box is None or cov.alpha is None:
        return None, None
    x0, y0, x1, y1 = cov.box
    max_value = _max_value(image.dtype)
    look = None
    if params.noise > 0 or params.blur > 0 or params.color_match > 0 or params.compression > 0:
        frame = cov.outline.frame
        region = face_region(frame.origin, frame.ax, frame.unit, h, w)
        look = photo_look(image, region, max_value, jpeg=params.compression > 0 and jpeg is True)
        if isinstance(jpeg, JpegGrid):
            look = replace(look, jpeg=jpeg)
    roi = image[y0:y1, x0:x1, :3]
    _paint_box(roi, cov, params, max_value, look)
    if params.contact_shadow > 0 and cov.shadow is not None:
        depth = params.contact_shadow * fabric.SHADOW_DEPTH * params.opacity
        paint.darken(roi, cov.shadow, depth, max_value)
    if look is not None and look.jpeg is not None and params.compression > 0:
        # The photo's noise is measured as its compression left it. The mask's goes in
        # before the same compression, which keeps a share of it (as it does on a flat
        # patch); fresh noise after it makes up the rest.
        scale = look.jpeg.scale * params.compression
        kept = noise_survival(scale, params.noise * look.noise)
        _photo_degradations(roi, cov, params, look, max_value)
        decoded = _codec_pixels(image, cov.box, look.jpeg.phase, scale, max_value)
        _photo_degradations(roi, cov, params, look, max_value, replacement=decoded,
                            noise_gain=math.sqrt(1 - kept * kept), grain_seed=1)  # fmt: skip
    elif look is not None:
        _photo_degradations(roi, cov, params, look, max_value)
    alpha = cov.alpha if params.opacity == 1.0 else cov.alpha * np.float32(params.opacity)
    return cov.box, alpha


def _photo_degradations(
    roi: np.ndarray,
    cov: _Occlusion,
    params: MaskParams,
    look: PhotoLook,
    max_value: float,
    *, replacement: np.ndarray | None = None, noise_gain: float = 1.0, grain_seed: int = 0,
) -> None:  # fmt: skip
    """Give the painted mask the photo's blur (its texture and edge, within the occlusion
    map) and then its noise (under the mask; times ``noise_gain``, from the noise field of
    the draw's texture seed + ``grain_seed``), in place. ``replacement``: BGR pixels of the
    box (the codec's, :func:`_codec_pixels`) that take the blur's place."""
    assert cov.alpha is not None
    h, w = cov.alpha.shape
    sigma = params.blur * look.blur
    spread = params.noise * look.noise * max_value / 255.0
    do_blur = replacement is None and sigma >= MIN_BLUR
    do_noise = spread >= MIN_NOISE * max_value / 255.0
    if not (do_blur or do_noise or replacement is not None):
        return
    pixels, copied, bgr = paint._interleaved(roi)
    blurred = _EMPTY
    if replacement is not None:  # in the storage order of the pixels
        blurred = np.ascontiguousarray(replacement if bgr else replacement[..., ::-1])
        blurred = blurred.reshape(h, 3 * w)
    elif do_blur:  # in the storage order of the pixels, whatever it is
        k = blur_kernel_size(sigma)
        blurred = cv2.GaussianBlur(pixels.reshape(h, w, 3), (k, k), sigma).reshape(h, 3 * w)
    grain = noise_field(h, w, params.texture_seed + grain_seed) if do_noise else _EMPTY
    degrade_pixels(pixels, blurred, cov.alpha, grain, spread * noise_gain * params.opacity,
                   max_value)  # fmt: skip
    if copied:
        roi[..., :3] = pixels.reshape(h, w, 3)


_EMPTY = np.zeros((0, 0), np.float32)


def _codec_pixels(
    image: np.ndarray, box: Box, phase: tuple[int, int], scale: float, max_value: float
) -> np.ndarray:
    """The box's pixels (BGR) as a JPEG encoder and decoder at IJG ``scale`` leave the image
    on its grid at ``phase``: the box widened to whole MCUs (:func:`maskgen.jpeg.mcu_box`)
    goes through the codec, so its blocks and ringing fall on the photo's own."""
    x0, y0, x1, y1 = box
    (gx0, gy0, gx1, gy1), start = mcu_box(box, phase, image.shape[0], image.shape[1])
    region = image[gy0:gy1, gx0:gx1, :3]
    if image.dtype == np.uint8:  # the codec's own pixels, no float round trip
        decoded = compress_bgr(region[..., ::-1], quality_of_scale(scale), start)
    else:
        decoded = compress(region, scale, start, max_value)[..., ::-1]
    return decoded[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]


def _paint_template(
    roi: np.ndarray, cov: _Occlusion, params: MaskParams, max_value: float,
    look: PhotoLook | None = None,
) -> None:  # fmt: skip
    """Blend an image template's warped pixels into ``roi`` (in place), lit like the face
    (``shading``), with the ear loops in the strap colour over it."""
    assert cov.colour is not None and cov.alpha is not None
    colour = cov.colour
    if look is not None and params.color_match > 0:
        colour = match_colours(colour, look, params.color_match)
    colour = colour * np.float32(max_value / 255.0)
    if params.shading > 0:
        ratio = paint.lighting_ratio(roi, cov.alpha, params.shading, params.lighting)
        h, w = cov.alpha.shape
        colour = colour * cv2.resize(ratio, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    a = (cov.alpha * np.float32(params.opacity))[..., None]
    out = roi.astype(np.float32) * (1 - a) + colour * a
    if cov.overlays is not None:
        strap = np.array(params.strap_color, np.float32) * np.float32(max_value / 255.0)
        for layer, tone in zip(cov.overlays, cov.tones, strict=True):
            if tone is None:  # ear loops; seams and valves belong to drawn families
                o = layer[..., None].astype(np.float32) * np.float32(params.opacity / 255)
                out = out * (1 - o) + strap * o
    if np.issubdtype(roi.dtype, np.integer):
        out = np.clip(np.rint(out), 0, max_value)
    roi[...] = out.astype(roi.dtype)


def _paint_box(
    roi: np.ndarray, cov: _Occlusion, params: MaskParams, max_value: float,
    look: PhotoLook | None = None,
) -> None:  # fmt: skip
    """Shade, texture and blend the mask of ``cov`` into ``roi`` (its box, in place); with
    ``look``, its colours take the photo's (``params.color_match``)."""
    if cov.colour is not None:
        _paint_template(roi, cov, params, max_value, look)
        return
    # One table: primary, secondary, then each overlay's colour (built from Python floats:
    # a handful of tiny NumPy operations per image cost more than the arithmetic).
    primary = params.color
    table = [primary, params.secondary_color]
    if cov.overlays is not None:
        strap = params.strap_color
        table += [strap if tone is None else [c * tone for c in primary] for tone in cov.tones]
    colours = np.array(table, np.float32)
    if look is not None and params.color_match > 0:
        colours = match_colours(colours, look, params.color_match)
    if max_value != 255.0:
        colours *= np.float32(max_value / 255.0)
    tile = placement = light = None
    frame = cov.outline.frame
    if params.texture != "none":
        tile = app.padded_tile(
            params.texture, params.texture_seed, params.texture not in app.TWO_TONE_TEXTURES
        )
        posed = cov.outline.posed
        period = params.texture_scale * frame.unit
        if cov.uv is not None and posed is not None:
            placement = fabric.surface_tile_map(posed.scale, period, params.texture_angle)
        else:
            placement = app.tile_map(frame.origin, frame.ax, period, params.texture_angle,
                                     cov.box)  # type: ignore[arg-type]  # fmt: skip
    if params.fabric > 0 and cov.normals is not None:
        light = fabric.light_direction(roi, cov.alpha, frame.ax, max_value, cov.light_basis)
    paint.paint_mask(
        roi,
        cov.alpha,  # type: ignore[arg-type]
        colours=colours[:2],
        opacity=params.opacity,
        tile=tile,
        tile_map=placement,
        shading=params.shading,
        overlays=cov.overlays,
        overlay_colours=colours[2:],
        max_value=max_value,
        lighting=params.lighting,
        surface_uv=cov.uv,
        normals=cov.normals if light is not None else None,
        light=light,
        fabric=params.fabric,
        relief=app.TEXTURE_RELIEF.get(params.texture, 0.0),
        down=None if cov.outline.posed is None else cov.outline.posed.rotation[:, 1],
        creases=params.creases,
        crease_lines=fabric.crease_lines(params.texture_seed, cov.outline.surface())
        if params.creases > 0 and light is not None and cov.uv is not None
        else None,
    )


def render(
    image: np.ndarray,
    landmarks: np.ndarray,
    params: MaskParams,
    *,
    inplace: bool = False,
    jpeg: JpegGrid | bool = True,
) -> RenderResult:
    """Draw the mask described by ``params`` on the face given by ``landmarks``.

    Args:
        image: H×W×3 RGB (also H×W / H×W×1 gray, H×W×4 RGBA; uint8, uint16 or float in
            [0, 1]). Never modified unless ``inplace``.
        landmarks: (68, 2) or (5, 2) pixel landmarks; 5 points are expanded through the
            canonical aligned layout. Invalid or implausible sets raise ``ValueError``.
        params: the draw.
        inplace: write the mask into ``image`` itself (H×W×3 or H×W×4 arrays only) and
            return it, touching only the mask's bounding box: no full-frame copy, which
            matters for large photos in a pipeline that owns its decoded images.
        jpeg: the photo's JPEG compression (:func:`paint_face`).
    """
    image = np.asarray(image)
    rgb, kind = _as_rgb(image)
    if inplace and kind not in ("rgb", "rgba"):
        raise ValueError("inplace rendering needs an H×W×3 or H×W×4 image")
    # Gray input is already a fresh RGB expansion: only RGB(A) views need a copy.
    out_rgb = rgb if inplace or kind in ("gray", "gray1") else rgb.copy()
    box, alpha = paint_face(out_rgb, landmarks, params, jpeg=jpeg)
    alpha_full = np.zeros(rgb.shape[:2], np.float32)
    if box is not None:
        x0, y0, x1, y1 = box
        alpha_full[y0:y1, x0:x1] = alpha
    out = image if inplace else _restore(out_rgb, image, kind)
    return RenderResult(out, alpha_full, params)
