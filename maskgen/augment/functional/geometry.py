"""The CPU renderer's geometry, packed for a batch: outlines and details as device tensors.

There is one geometry: :func:`maskgen.render.mask_geometry` builds every outline (family
numbers from ``templates/shapes.json``, coverage anchors, ear loops, valves, seams) for both
rendering paths. This module only packs those outlines for the batched rasteriser: the mask
polygons padded to one length, and every detail (seam, valve disc, valve rim, ear loops) as a
closed polygon tagged with its sample and layer. Outlines are memoised per landmark set and
geometry (:class:`maskgen.render.RenderState`), so an aligned batch costs a few dictionary
look-ups per sample; landmark sets the renderer rejects leave their sample unmasked, with a
warning that names the first one and why.

Example:
    >>> from maskgen.landmarks import aligned_landmarks
    >>> from maskgen.render import MaskParams
    >>> lm = aligned_landmarks((224, 224))[None]  # ear loops show from 36 px face units
    >>> g = batch_geometry(lm, [MaskParams(family="n95", valve=True, straps=True)], 224, 224)
    >>> g.polygon.shape[0], sorted(set((g.owner % len(LAYERS)).tolist()))
    (1, [1, 2, 3])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from maskgen.render import (
    MaskParams,
    face_of,
    loop_width,
    mask_box,
    mask_geometries,
    seam_width,
)
from maskgen.shapes import Outline

__all__ = ["LAYERS", "BatchGeometry", "batch_geometry", "stroke_polygon"]

#: Detail layers of every sample, painted in this order over the mask's colour.
LAYERS: tuple[str, ...] = ("seam", "valve", "rim", "loops")
_SEAM, _VALVE, _RIM, _LOOPS = range(len(LAYERS))
#: Vertices of a valve disc (and of each circle of its rim).
CIRCLE_VERTICES = 24


class BatchGeometry(NamedTuple):
    """Packed outlines of a batch (pixels of its frames).

    Attributes:
        polygon: ``(B, N, 2)`` mask outlines, padded by repeating their first vertex.
        origin, ax: ``(B, 2)`` face frames (eye midpoint, eye-line direction).
        unit: ``(B,)`` face unit in pixels (eye line → mouth).
        box: ``(B, 4)`` the box each draw touches (x0, y0, x1, y1), as the CPU renderer's.
        details: ``(M, K, 2)`` detail polygons (strokes, discs, rims), padded likewise.
        owner: ``(M,)`` ``sample * len(LAYERS) + layer`` of each detail polygon.
        drawn: ``(B,)`` bool: the sample has a mask inside its frame.
        detail_offsets: on the host, ``B + 1`` prefix counts: sample ``i``'s detail polygons
            are ``details[detail_offsets[i]:detail_offsets[i + 1]]``.
        outlines: on the host, each sample's outline (``None``: not drawn); posed ones carry
            the surface the fabric is painted from (:mod:`maskgen.augment.functional.fabric`).
    """

    polygon: torch.Tensor
    origin: torch.Tensor
    ax: torch.Tensor
    unit: torch.Tensor
    box: torch.Tensor
    details: torch.Tensor
    owner: torch.Tensor
    drawn: torch.Tensor
    detail_offsets: tuple[int, ...] = (0,)
    outlines: tuple[Outline | None, ...] = ()


def stroke_polygon(lines: np.ndarray, half_width: float) -> np.ndarray:
    """Polylines ``(..., k, 2)`` of ``half_width`` pixels either side, as closed polygons
    ``(..., 2k, 2)`` (several lines of one length in one call).

    Example:
        >>> stroke_polygon(np.array([[0.0, 0.0], [4.0, 0.0]]), 1.0).tolist()
        [[0.0, 1.0], [4.0, 1.0], [4.0, -1.0], [0.0, -1.0]]
    """
    pts = np.asarray(lines, np.float64)
    d = np.empty_like(pts)  # tangents: central differences inside, one-sided at the ends
    d[..., 1:-1, :] = pts[..., 2:, :] - pts[..., :-2, :]
    d[..., 0, :] = pts[..., 1, :] - pts[..., 0, :]
    d[..., -1, :] = pts[..., -1, :] - pts[..., -2, :]
    d /= np.maximum(np.sqrt((d * d).sum(-1, keepdims=True)), 1e-9)
    normal = np.stack([-d[..., 1], d[..., 0]], -1) * half_width
    return np.concatenate([pts + normal, (pts - normal)[..., ::-1, :]], -2)


def _circle(cx: float, cy: float, r: float, reverse: bool = False) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
    if reverse:
        t = t[::-1]
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


#: The extra half-width (pixels) of a 1-px stroke, see :func:`stroke_half_width`.
STROKE_AA = 0.75


def stroke_half_width(thickness: int) -> float:
    """Half the width of the polygon that covers what OpenCV's anti-aliased polyline of
    ``thickness`` covers: 0.75 px for 1-px lines; thicker lines are drawn as if their
    thickness were rounded up to an odd number, plus 0.75 px a side. (Fitted by occlusion
    IoU of the CPU renderer's ear loops on faces of 112–448 px, thicknesses 1–6: 0.85–0.97,
    against 0.46 for a 1-px line at the old fixed +1 px.)

    Example:
        >>> [stroke_half_width(t) for t in (1, 2, 3, 4, 5)]
        [0.75, 1.75, 2.75, 2.75, 3.75]
    """
    if thickness <= 1:
        return STROKE_AA
    return (thickness + 1) // 2 + STROKE_AA


def _details(outline: Outline, unit: float) -> list[tuple[int, np.ndarray]]:
    """(layer, polygon) of every detail of an outline, in the CPU renderer's sizes."""
    out: list[tuple[int, np.ndarray]] = []
    if outline.seam is not None:
        out.append((_SEAM, stroke_polygon(outline.seam, stroke_half_width(seam_width(unit)))))
    if outline.valve is not None:
        cx, cy, r = outline.valve
        out.append((_VALVE, _circle(cx, cy, r + 0.5)))
        half = max(1, round(r * 0.15)) / 2 + 0.25
        # An annulus: the outer circle, then the inner one backwards (the bridge cancels).
        outer, inner = _circle(cx, cy, r + half), _circle(cx, cy, max(r - half, 0.0), True)
        out.append((_RIM, np.concatenate([outer, outer[:1], inner, inner[:1]])))
    if outline.straps:
        loops = stroke_polygon(np.stack(outline.straps), stroke_half_width(loop_width(unit)))
        out += [(_LOOPS, loop) for loop in loops]
    return out


def _pad(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Polygons of any lengths as one ``(n, N, 2)`` array, each padded with its first vertex."""
    n = max((len(p) for p in polygons), default=3)
    out = np.empty((len(polygons), max(n, 3), 2), np.float32)
    for i, p in enumerate(polygons):
        out[i, : len(p)] = p
        out[i, len(p) :] = p[0]
    return out


def _faces(lm: np.ndarray, shape: tuple[int, int]) -> tuple[list[Any], list[str]]:
    """Validated faces (:func:`maskgen.render.face_of`), ``None`` where a set is rejected,
    and the rejections."""
    faces: list[Any] = []
    rejected: list[str] = []
    for i in range(len(lm)):
        try:
            faces.append(face_of(lm[i], shape))
        except ValueError as exc:  # an implausible set: the sample stays unmasked, and said
            faces.append(None)
            rejected.append(f"sample {i}: {exc}")
    return faces, rejected


def batch_geometry(
    landmarks: np.ndarray | torch.Tensor,
    draws: Sequence[MaskParams],
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> BatchGeometry:
    """Outlines of ``draws`` on ``landmarks`` ``(B, 68|5, 2)``, packed on ``device``."""
    lm = landmarks.detach().cpu().numpy() if torch.is_tensor(landmarks) else np.asarray(landmarks)
    lm = lm.astype(np.float32, copy=False)
    shape = (int(height), int(width))
    polygons, frames, boxes, drawn = [], [], [], []
    details: list[np.ndarray] = []
    owner: list[int] = []
    empty = np.zeros((3, 2), np.float32)
    offsets = [0]
    faces, rejected = _faces(lm, shape)
    valid = [i for i, f in enumerate(faces) if f is not None]
    built = mask_geometries([faces[i] for i in valid], [draws[i] for i in valid])
    outlines: list[Outline | None] = [None] * len(draws)
    for i, outline in zip(valid, built, strict=True):
        outlines[i] = outline
    for i, params in enumerate(draws):
        face, outline = faces[i], outlines[i]
        box = None if outline is None else mask_box(outline, face.unit, params, *shape)
        if outline is None or box is None:
            polygons.append(empty)
            frames.append((0.0, 0.0, 1.0, 0.0, 1.0))
            boxes.append((width, height, 0, 0))
            drawn.append(False)
            offsets.append(len(details))
            outlines[i] = None
            continue
        frame = outline.frame
        polygons.append(outline.polygon)
        frames.append((*frame.origin.tolist(), *frame.ax.tolist(), frame.unit))
        boxes.append(box)
        drawn.append(True)
        for layer, poly in _details(outline, face.unit):
            details.append(poly)
            owner.append(i * len(LAYERS) + layer)
        offsets.append(len(details))
    if rejected:
        warnings.warn(
            f"{len(rejected)} of {len(draws)} landmark sets rejected, left unmasked "
            f"(first: {rejected[0]})",
            stacklevel=2,
        )
    f = torch.tensor(frames, dtype=torch.float32, device=device).reshape(-1, 5)
    return BatchGeometry(
        polygon=torch.from_numpy(_pad(polygons)).to(device),
        origin=f[:, 0:2],
        ax=f[:, 2:4],
        unit=f[:, 4],
        box=torch.tensor(boxes, dtype=torch.long, device=device).reshape(-1, 4),
        details=torch.from_numpy(_pad(details)).to(device),
        owner=torch.tensor(owner, dtype=torch.long, device=device),
        drawn=torch.tensor(drawn, dtype=torch.bool, device=device),
        detail_offsets=tuple(offsets),
        outlines=tuple(outlines),
    )
