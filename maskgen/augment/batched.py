"""Batched face masking on the tensor's own device: a torch functional core and a kornia
augmentation (:class:`RandomFaceMask`).

The geometry is :func:`maskgen.shapes.mask_outline` re-done in tensor operations over the whole
batch (face frame, coverage anchors, eye guard, jaw crossing, push/outset, Catmull-Rom smoothing,
pointed bottoms, gaiters running off the chin, clipping to the face box); family numbers are read
from :data:`maskgen.shapes.GEOMETRY` when the augmentation is built, so a newly registered family
works without code changes. Every outline is a fixed-length polygon (5 samples per vertex;
families drawn without smoothing repeat their vertices, and short outlines are padded by
repeating their first vertex), and :func:`rasterize_polygons` computes the anti-aliased coverage
of all polygons at once with a sparse scanline accumulation (exact horizontal coverage, vertical
supersampling): the work grows with the outlines' perimeter, not with the number of edges times
the number of pixels.

Cost: all per-pixel work runs on the band of rows and columns that any mask of the batch touches
(at 112×112 about 65 of the 112 rows), found with one host sync (band and counts); textures are
sampled only for the textured samples, from one atlas of the tile bank with one ``grid_sample``;
the shading statistics are one batched product over the frames' rows in their own memory layout
(NCHW or NHWC); the colour is built and blended one channel plane at a time, straight into the
output when no gradient is needed. On the CPU the band work runs over chunks of
:data:`CPU_CHUNK` samples. For 256×3×112×112 on one CPU thread this took 77–110 ms of CPU
time, 2.9–4.4× less than :class:`maskgen.augment.MaskFace` on the same images. The issue's
target of 5× was not reached; ``docs/online_masking.md`` has the measurements and what bounds
them.

Appearance follows :mod:`maskgen.appearance`: palette and random colours, the procedural texture
tiles (:func:`maskgen.appearance.texture_tile`, stacked into a bank and sampled in the face frame
with wrapping), face-matched shading (the cell-average / bilinear pair of
:func:`maskgen.paint.lighting_ratio` as small per-sample matrices), soft edges (per-sample
Gaussian, reflect padding) and opacity.

Not batched (left to the CPU renderer, :func:`maskgen.render.render` / :class:`MaskFace`):
ear loops (``straps``), exhalation valves (``valve``) and the KN95 centre seam. They are thin
anti-aliased polylines and discs of about one pixel at 112×112 whose cost in a dense batched
rasteriser (a distance field per pixel and per segment) would exceed the whole mask; their
``MaskParams`` fields are ignored here and reported as ``False`` by
:meth:`RandomFaceMask.to_mask_params`. The pixel hidden by a strap is not part of the occlusion map
of the batched path.

Example:
    >>> import torch
    >>> aug = RandomFaceMask(p=1.0)
    >>> x = torch.rand(2, 3, 112, 112)
    >>> out = aug(x)
    >>> out.shape, aug.last_alpha.shape, bool(aug.last_alpha.amax() > 0.99)
    (torch.Size([2, 3, 112, 112]), torch.Size([2, 1, 112, 112]), True)
    >>> torch.equal(aug(x, params=aug._params), out)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.augmentation.random_generator import RandomGeneratorBase
from kornia.augmentation.utils import _adapted_sampling

from maskgen import appearance as app
from maskgen.augment._memory import empty_like_large
from maskgen.landmarks import ARCFACE_112, ARCFACE_SIZE, canonical_68
from maskgen.render import MaskParams, MaskSpec
from maskgen.shapes import COVERAGE_ANCHORS, COVERAGES, GEOMETRY

__all__ = [
    "BatchOutline",
    "FaceMaskGenerator",
    "RandomFaceMask",
    "batch_outlines",
    "coverage_table",
    "expand_five",
    "face_lighting_batch",
    "geometry_table",
    "mask_batch",
    "rasterize_polygons",
    "soften_batch",
    "texture_fields",
]

#: Column order of :func:`geometry_table` (fields of :class:`maskgen.shapes.FamilyGeometry`).
GEOMETRY_FIELDS: tuple[str, ...] = (
    "raise_top",
    "droop",
    "side_drop",
    "outset",
    "bottom_drop",
    "chin_drop",
    "smooth",
    "pointed",
    "inset_bottom",
    "runs_off",
)
#: Outward offset (pixels) of the outlines before exact-area rasterisation: OpenCV's
#: anti-aliased polygon fill (the CPU renderer) adds a one-pixel AA line around the filled
#: interior, which grows the covered area by about this much along the boundary.
AA_OFFSET = 0.6
#: Samples per outline vertex (Catmull-Rom samples per segment of the smooth families).
SAMPLES = 5
#: Top-edge vertices (side, cheek, anchor, cheek, side) and bottom slots (8 + chin + 8 jaw points).
_TOP, _BOTTOM = 5, 17
_JAW_RIGHT = list(range(16, 7, -1))  # ear → chin, image right side
_LUMA = (0.299, 0.587, 0.114)
#: Samples per chunk of the per-pixel work on the CPU (bounds the temporaries of big batches).
CPU_CHUNK = 128


# ----------------------------------------------------------------------------------- tables


def geometry_table(
    families: Sequence[str] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(F, 10)`` float32 table of :data:`maskgen.shapes.GEOMETRY` (columns: ``GEOMETRY_FIELDS``).

    Example:
        >>> geometry_table(["surgical"]).shape
        torch.Size([1, 10])
    """
    names = list(GEOMETRY) if families is None else list(families)
    rows = [[float(getattr(GEOMETRY[n], f)) for f in GEOMETRY_FIELDS] for n in names]
    return torch.tensor(rows, dtype=torch.float32, device=device)


#: Coverage kinds with their own top guard in :func:`maskgen.shapes.mask_outline`.
_COVERAGE_KIND = {"low": 1.0, "chin": 2.0}


def coverage_table(device: torch.device | str | None = None) -> torch.Tensor:
    """``(C, 4)`` table (point a, point b, fraction, kind) of ``COVERAGE_ANCHORS`` in
    ``COVERAGES`` order; kind 1 = worn low (nose out), 2 = on the chin, 0 = otherwise."""
    rows = [[*(float(v) for v in COVERAGE_ANCHORS[c]), _COVERAGE_KIND.get(c, 0.0)]
            for c in COVERAGES]  # fmt: skip
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _arcface_68(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.array(canonical_68()), dtype=dtype, device=device)


def expand_five(five: torch.Tensor) -> torch.Tensor:
    """Batched :func:`maskgen.landmarks.landmarks_from_five`: ``(B, 5, 2)`` → ``(B, 68, 2)``.

    The canonical 68-point layout is mapped onto each face by the least-squares similarity
    transform from the ArcFace template to its 5 points (closed form of Umeyama in 2D).

    Example:
        >>> import torch
        >>> from maskgen.landmarks import ARCFACE_112, aligned_landmarks
        >>> lm = expand_five(torch.tensor(ARCFACE_112)[None] * 2)
        >>> bool(torch.allclose(lm[0], torch.tensor(aligned_landmarks()) * 2, atol=1e-3))
        True
    """
    dtype = torch.float64 if five.device.type == "cpu" else torch.float32
    dst = five.to(dtype)
    src = torch.as_tensor(np.asarray(ARCFACE_112), dtype=dtype, device=five.device)
    mu_s, mu_d = src.mean(0), dst.mean(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    var = (s**2).sum()
    a = (s[None, :, 0] * d[..., 0] + s[None, :, 1] * d[..., 1]).sum(1) / var
    b = (s[None, :, 0] * d[..., 1] - s[None, :, 1] * d[..., 0]).sum(1) / var
    pts = _arcface_68(five.device, dtype) - mu_s
    x = a[:, None] * pts[:, 0] - b[:, None] * pts[:, 1]
    y = b[:, None] * pts[:, 0] + a[:, None] * pts[:, 1]
    return (torch.stack([x, y], -1) + mu_d).to(torch.float32)


def aligned_batch(
    batch: int, height: int, width: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The canonical aligned layout for ``height``×``width`` crops, ``(batch, 68, 2)``."""
    lm = _arcface_68(torch.device(device or "cpu"), torch.float32) * (width / ARCFACE_SIZE)
    return lm[None].expand(batch, -1, -1)


# ----------------------------------------------------------------------------------- geometry


class BatchOutline(NamedTuple):
    """Batched outlines: ``polygon`` ``(B, N, 2)`` pixels (closed, padded); ``origin``, ``ax``
    ``(B, 2)`` and ``unit`` ``(B,)`` describe each face frame
    (:class:`maskgen.shapes.FaceFrame`)."""

    polygon: torch.Tensor
    origin: torch.Tensor
    ax: torch.Tensor
    unit: torch.Tensor


def _jaw_at_level(jaw: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``maskgen.shapes._jaw_point_at_level``: jaw ``(B, 9, 2)``, level ``(B,)``."""
    below = jaw[..., 1] > level[:, None]
    has = below.any(1)
    first = below.to(torch.uint8).argmax(1)
    i = first.clamp_min(1)
    a = jaw.gather(1, (i - 1)[:, None, None].expand(-1, 1, 2))[:, 0]
    b = jaw.gather(1, i[:, None, None].expand(-1, 1, 2))[:, 0]
    t = (level - a[:, 1]) / (b[:, 1] - a[:, 1]).clamp_min(1e-9)
    pt = a + (b - a) * t[:, None]
    pt = torch.where((first == 0)[:, None], jaw[:, 0], pt)
    pt = torch.where(has[:, None], pt, jaw[:, -1])
    idx = torch.where(has, i, torch.full_like(i, jaw.shape[1]))
    return pt, idx


def _catmull_rom(points: torch.Tensor, count: torch.Tensor, samples: int) -> torch.Tensor:
    """Closed Catmull-Rom spline through the first ``count`` of ``points`` ``(B, S, 2)``.

    Returns ``(B, S * samples, 2)``; segments past ``count`` repeat the first point.
    """
    B, S, _ = points.shape
    j = torch.arange(S, device=points.device)[None]
    n = count[:, None].clamp_min(1)

    def at(offset: int) -> torch.Tensor:
        idx = torch.remainder(j + offset, n)
        return points.gather(1, idx[..., None].expand(-1, -1, 2))[:, :, None]

    p0, p1, p2, p3 = at(-1), at(0), at(1), at(2)
    t = torch.arange(samples, device=points.device, dtype=points.dtype) / samples
    t = t[None, None, :, None]
    t2, t3 = t * t, t * t * t
    curve = 0.5 * (
        2 * p1
        + (p2 - p0) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
        + (3 * p1 - p0 - 3 * p2 + p3) * t3
    )
    curve = torch.where((j < count[:, None])[..., None, None], curve, points[:, :1, None])
    return curve.reshape(B, S * samples, 2)


def batch_outlines(
    landmarks: torch.Tensor,
    family_idx: torch.Tensor,
    coverage_idx: torch.Tensor,
    width: torch.Tensor,
    top_offset: torch.Tensor,
    bottom_offset: torch.Tensor,
    *,
    geometry: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
) -> BatchOutline:
    """Outline polygons of a batch of masks (batched :func:`maskgen.shapes.mask_outline`).

    Args:
        landmarks: ``(B, 68, 2)`` pixel landmarks.
        family_idx: ``(B,)`` rows of ``geometry`` (default: :func:`geometry_table` in
            ``GEOMETRY`` order).
        coverage_idx: ``(B,)`` indices into :data:`maskgen.shapes.COVERAGES`.
        width, top_offset, bottom_offset: ``(B,)`` as in :func:`maskgen.shapes.mask_outline`.
        geometry: ``(F, 10)`` family table; anchors: ``(C, 3)`` coverage table.

    Returns:
        :class:`BatchOutline` whose ``polygon`` is ``(B, 110, 2)`` (22 vertex slots × 5 samples).

    Example:
        >>> import torch
        >>> from maskgen.landmarks import aligned_landmarks
        >>> lm = torch.tensor(aligned_landmarks())[None]
        >>> one, zero = torch.ones(1), torch.zeros(1)
        >>> idx = torch.zeros(1, dtype=torch.long)
        >>> batch_outlines(lm, idx, idx, one, zero, zero).polygon.shape
        torch.Size([1, 110, 2])
    """
    device = landmarks.device
    lm = landmarks.to(torch.float32)
    B = lm.shape[0]
    geo = geometry_table(device=device) if geometry is None else geometry.to(device)
    anc = coverage_table(device) if anchors is None else anchors.to(device)
    g = geo[family_idx.to(device).long()]
    raise_top, droop, side_drop, outset, bottom_drop, chin_drop = g[:, :6].unbind(1)
    smooth, pointed, inset_bottom, runs_off = g[:, 6] > 0, g[:, 7] > 0, g[:, 8], g[:, 9]
    width, top_offset, bottom_offset = (
        v.to(device=device, dtype=torch.float32) for v in (width, top_offset, bottom_offset)
    )

    # Face frame.
    eye_l, eye_r = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    ax = eye_r - eye_l
    ax = ax / ax.norm(dim=1, keepdim=True).clamp_min(1e-9)
    ay = torch.stack([-ax[:, 1], ax[:, 0]], 1)
    origin = (eye_l + eye_r) / 2
    unit = ((0.5 * (lm[:, 48] + lm[:, 54]) - origin) * ay).sum(1).clamp_min(1e-3)
    rel = (lm - origin[:, None]) / unit[:, None, None]
    L = torch.stack([(rel * ax[:, None]).sum(-1), (rel * ay[:, None]).sum(-1)], -1)

    # Top edge.
    cov = anc[coverage_idx.to(device).long()]
    ia, ib, t, kind = cov[:, 0].long(), cov[:, 1].long(), cov[:, 2], cov[:, 3]
    ar = torch.arange(B, device=device)
    anchor = L[ar, ia] + (L[ar, ib] - L[ar, ia]) * t[:, None]
    anchor_v = anchor[:, 1] + top_offset - raise_top
    anchor = torch.stack([anchor[:, 0], anchor_v], 1)
    eye_guard = L[:, 36:48, 1].amax(1) + 0.08
    cheek_level = anchor_v + raise_top + droop
    # Keep the mouth corners under the mask (except when worn on the chin).
    mouth_cap = torch.minimum(L[:, 48, 1], L[:, 54, 1]) - 0.12
    cheek_level = torch.where(kind != 2, torch.minimum(cheek_level, mouth_cap), cheek_level)
    cheek_level = torch.maximum(cheek_level, eye_guard)
    side_level = cheek_level + side_drop

    left_jaw, right_jaw = L[:, 0:9], L[:, _JAW_RIGHT]
    side_l, il = _jaw_at_level(left_jaw, side_level)
    side_r, ir = _jaw_at_level(right_jaw, side_level)
    side_l = anchor + (side_l - anchor) * width[:, None]
    side_r = anchor + (side_r - anchor) * width[:, None]
    side_l = side_l - torch.stack([outset, torch.zeros_like(outset)], 1)
    side_r = side_r + torch.stack([outset, torch.zeros_like(outset)], 1)
    cheek_l = torch.stack([L[:, 36:42, 0].mean(1), cheek_level], 1)
    cheek_r = torch.stack([L[:, 42:48, 0].mean(1), cheek_level], 1)
    top = torch.stack([side_l, cheek_l, anchor, cheek_r, side_r], 1)

    # Bottom edge: jaw points below the sides, right ear → chin → left ear, in 17 slots.
    centre = torch.stack([anchor[:, 0], L[:, 33, 1]], 1)
    chin = L[:, 8]
    chin_v = chin[:, 1]
    k = torch.arange(8, device=device)
    r_idx = torch.maximum(k[None], ir[:, None]).clamp_max(8)
    k_rev = torch.arange(7, -1, -1, device=device)
    l_idx = torch.maximum(k_rev[None], il[:, None]).clamp_max(8)
    jaw_below = torch.cat(
        [
            right_jaw.gather(1, r_idx[..., None].expand(-1, -1, 2)),
            chin[:, None],
            left_jaw.gather(1, l_idx[..., None].expand(-1, -1, 2)),
        ],
        1,
    )
    jaw_valid = torch.cat(
        [k[None] >= ir[:, None], torch.ones(B, 1, dtype=torch.bool, device=device),
         k_rev[None] >= il[:, None]], 1,
    )  # fmt: skip
    span = (chin_v - side_level).clamp_min(1e-3)
    closeness = (1 - (jaw_below[..., 1] - chin_v[:, None]).abs() / span[:, None]).clamp(0, 1)
    drop = bottom_drop[:, None] + (chin_drop + bottom_offset)[:, None] * closeness**2
    d = jaw_below - centre[:, None]
    n = d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    bottom = jaw_below + d / n * drop[..., None]
    pull = inset_bottom[:, None] * (1 - closeness)
    bx = bottom[..., 0] + torch.sign(centre[:, None, 0] - bottom[..., 0]) * pull
    bottom = torch.stack([bx, bottom[..., 1]], -1)

    # Pointed bottom (KN95 fold): 5 points in the 17 slots.
    zero = torch.zeros_like(chin_v)
    tip = chin + torch.stack([zero, chin_drop + bottom_drop + bottom_offset], 1)
    corner_r, corner_l = bottom[:, 0], bottom[:, -1]
    lift = torch.tensor([0.0, 0.04], device=device)
    pointed_pts = torch.stack(
        [corner_r, (corner_r + tip) / 2 + lift, tip, (corner_l + tip) / 2 + lift, corner_l], 1
    )
    pad_p = pointed_pts[:, -1:].expand(-1, _BOTTOM - 5, -1)
    pointed_b = torch.cat([pointed_pts, pad_p], 1)
    slot = torch.arange(_BOTTOM, device=device)
    pointed_valid = (slot < 5)[None].expand(B, -1)

    # Gaiter: runs off below the chin, 2 points.
    depth = chin_v + runs_off + bottom_offset
    runs_pts = torch.stack(
        [torch.stack([side_r[:, 0], depth], 1), torch.stack([side_l[:, 0], depth], 1)], 1
    )
    runs_b = torch.cat([runs_pts, runs_pts[:, -1:].expand(-1, _BOTTOM - 2, -1)], 1)
    runs_valid = (slot < 2)[None].expand(B, -1)

    is_runs = (runs_off > 0)[:, None]
    use_pointed = (pointed & ~(runs_off > 0))[:, None]
    bottom = torch.where(is_runs[..., None], runs_b, bottom)
    bottom = torch.where(use_pointed[..., None], pointed_b, bottom)
    valid_b = torch.where(is_runs, runs_valid, torch.where(use_pointed, pointed_valid, jaw_valid))

    # Compact the valid vertices to the front (stable), pad with the first vertex.
    slots = torch.cat([top, bottom], 1)
    valid = torch.cat([torch.ones(B, _TOP, dtype=torch.bool, device=device), valid_b], 1)
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
    pts = slots.gather(1, order[..., None].expand(-1, -1, 2))
    count = valid.sum(1)
    S = pts.shape[1]
    in_range = torch.arange(S, device=device)[None] < count[:, None]
    pts = torch.where(in_range[..., None], pts, pts[:, :1])
    straight = pts.repeat_interleave(SAMPLES, dim=1)
    curved = _catmull_rom(pts, count, SAMPLES)
    poly = torch.where(smooth[:, None, None], curved, straight)

    # Bound the mask to the face.
    jaw_u = L[:, 0:17, 0]
    lo_u, hi_u = jaw_u.amin(1) - 0.35, jaw_u.amax(1) + 0.35
    max_v = chin_v + torch.where(runs_off > 0, runs_off + 0.6, torch.full_like(runs_off, 0.6))
    u = torch.maximum(torch.minimum(poly[..., 0], hi_u[:, None]), lo_u[:, None])
    nostrils = L[:, [31, 33, 35], 1].amax(1) + 0.05
    top_guard = torch.where(kind == 1, nostrils, eye_guard - 0.1)
    top_guard = torch.where(kind == 2, L[:, 57, 1] + 0.04, top_guard)
    v = torch.maximum(torch.minimum(poly[..., 1], max_v[:, None]), top_guard[:, None])

    scale = unit[:, None, None]
    image = origin[:, None] + (u[..., None] * ax[:, None] + v[..., None] * ay[:, None]) * scale
    return BatchOutline(image, origin, ax, unit)


# ----------------------------------------------------------------------------------- raster


def offset_polygons(polygons: torch.Tensor, delta: float) -> torch.Tensor:
    """Move every edge of closed polygons ``(B, N, 2)`` outwards by ``delta`` pixels (mitred
    corners, miter limit 2). Repeated vertices are allowed: each vertex is moved along the
    bisector of its nearest distinct incoming and outgoing edges.

    Example:
        >>> import torch
        >>> sq = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [2.0, 2.0], [0.0, 2.0]]])
        >>> out = offset_polygons(sq, 0.5)[0].round(decimals=3)
        >>> out[0].tolist(), out[3].tolist()
        ([-0.5, -0.5], [2.5, 2.5])
    """
    if delta == 0 or polygons.shape[1] < 3:
        return polygons
    B, N, _ = polygons.shape
    device = polygons.device
    e = polygons.roll(-1, dims=1) - polygons
    length = e.norm(dim=-1)
    valid = length > 1e-6
    area = (polygons[..., 0] * polygons.roll(-1, 1)[..., 1]
            - polygons.roll(-1, 1)[..., 0] * polygons[..., 1]).sum(1)  # fmt: skip
    orient = torch.where(area >= 0, 1.0, -1.0).to(polygons)[:, None, None]
    normal = torch.stack([e[..., 1], -e[..., 0]], -1) / length.clamp_min(1e-6)[..., None] * orient
    idx = torch.arange(2 * N, device=device)[None].expand(B, -1)
    v2 = torch.cat([valid, valid], 1)
    last = torch.where(v2, idx, torch.full_like(idx, -1)).cummax(1).values
    first = torch.where(v2, idx, torch.full_like(idx, 2 * N)).flip(1).cummin(1).values.flip(1)
    i = torch.arange(N, device=device)
    incoming = torch.remainder(last[:, N + i - 1], N)
    outgoing = torch.remainder(first[:, i].clamp_max(2 * N - 1), N)
    n_in = normal.gather(1, incoming[..., None].expand(-1, -1, 2))
    n_out = normal.gather(1, outgoing[..., None].expand(-1, -1, 2))
    m = n_in + n_out
    m_len = m.norm(dim=-1, keepdim=True)
    m_hat = torch.where(m_len > 1e-6, m / m_len.clamp_min(1e-6), n_in)
    cos = (m_hat * n_in).sum(-1, keepdim=True).clamp_min(0.5)
    shift = m_hat * (delta / cos)
    ok = valid.any(1)[:, None, None]
    return torch.where(ok, polygons + shift, polygons)


def rasterize_polygons(
    polygons: torch.Tensor, height: int, width: int, subsamples: int = 4
) -> torch.Tensor:
    """Anti-aliased coverage ``(B, H, W)`` in [0, 1] of closed polygons ``(B, N, 2)``.

    Pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)`` (centres at +0.5, the continuous convention
    of :func:`maskgen.appearance.to_fixed_point`). Every edge deposits its signed crossings with
    ``subsamples`` scanlines per pixel row into a difference buffer of pixel rows (weight
    ``1/subsamples``, sign oriented so that the inside counts positive), with the exact
    horizontal coverage split between the two pixels around the crossing; one cumulative sum
    along the rows gives the sub-row average of the winding number, clamped to [0, 1]. For
    outlines that do not cross themselves this is the average coverage of the sub-rows (the
    non-zero rule per scanline). The work is proportional to the polygons' height times their
    number of crossings, so repeated (zero length) vertices cost nothing.

    Example:
        >>> import torch
        >>> square = torch.tensor([[[2.0, 2.0], [6.0, 2.0], [6.0, 6.0], [2.0, 6.0]]])
        >>> cov = rasterize_polygons(square, 8, 8)
        >>> float(cov.sum()), float(cov[0, 3, 3]), float(cov[0, 0, 0])
        (16.0, 1.0, 0.0)
    """
    B, N, _ = polygons.shape
    device = polygons.device
    S = int(subsamples)
    if B == 0 or N < 2 or height <= 0 or width <= 0:
        return torch.zeros(B, max(height, 0), max(width, 0), device=device)
    p0 = polygons.to(torch.float32)
    p1 = p0.roll(-1, dims=1)
    # Orient the polygons so that their inside has a positive winding number.
    area = (p0[..., 0] * p1[..., 1] - p1[..., 0] * p0[..., 1]).sum(1)
    orient = torch.where(area >= 0, -1.0 / S, 1.0 / S)
    x0, y0 = p0[..., 0].reshape(-1), p0[..., 1].reshape(-1)
    x1, y1 = p1[..., 0].reshape(-1), p1[..., 1].reshape(-1)
    ylo, yhi = torch.minimum(y0, y1), torch.maximum(y0, y1)
    rows = height * S
    # Sub-row k (centre (k + 0.5) / S) is crossed when ylo <= y_k < yhi.
    k0 = torch.ceil(ylo * S - 0.5).clamp(0, rows).long()
    k1 = torch.ceil(yhi * S - 0.5).clamp(0, rows).long()
    count = (k1 - k0).clamp_min(0)
    total = int(count.sum())
    if total == 0:
        return torch.zeros(B, height, width, device=device)
    # Per edge (gathered once per crossing): its first sub-row minus the rank of its first
    # crossing, start point (x, y in sub-rows), dx per sub-row, signed weight, first row.
    dy = y1 - y0
    step = (x1 - x0) / torch.where(dy == 0, torch.ones_like(dy), dy) / S
    start = torch.cumsum(count, 0) - count
    sample = torch.arange(B, device=device).repeat_interleave(N)
    table = torch.stack(
        [
            (k0 - start).to(torch.float32),
            x0,
            y0 * S - 0.5,
            step,
            torch.sign(dy) * orient.repeat_interleave(N),
            (sample * height).to(torch.float32),
        ],
        1,
    )
    edge = torch.repeat_interleave(torch.arange(B * N, device=device), count, output_size=total)
    off, ex, ey, dx, weight, row0 = table.index_select(0, edge).unbind(1)
    k = torch.arange(total, device=device, dtype=torch.float32) + off
    x = torch.addcmul(ex, k - ey, dx).clamp_(0, width)
    i0 = torch.floor(x)
    right = (x - i0) * weight
    stride = width + 2
    base = ((row0 + torch.div(k, S, rounding_mode="floor")) * stride + i0).long()
    acc = torch.zeros(B * height * stride, device=device, dtype=torch.float32)
    acc.index_add_(0, base, weight - right)
    acc.index_add_(0, base + 1, right)
    return acc.view(B, height, stride).cumsum(2)[..., :width].clamp_(0, 1)


def soften_batch(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of ``alpha`` ``(B, H, W)`` (batched
    :func:`maskgen.appearance.soften`: OpenCV's float kernel size ``round(8σ + 1) | 1``,
    reflect-101 borders, no blur for ``σ < 0.3``)."""
    sigma = sigma.to(alpha.device, torch.float32)
    ksize = torch.round(sigma * 8 + 1).long() | 1
    radius = torch.where(sigma < 0.3, torch.zeros_like(ksize), (ksize - 1) // 2)
    R = int(radius.max()) if alpha.shape[0] else 0
    if R == 0:
        return alpha
    R = min(R, alpha.shape[-1] - 1, alpha.shape[-2] - 1)
    offs = torch.arange(-R, R + 1, device=alpha.device, dtype=torch.float32)
    safe = sigma.clamp_min(1e-3)[:, None]
    w = torch.exp(-(offs[None] ** 2) / (2 * safe**2))
    w = torch.where(offs[None].abs() <= radius[:, None], w, torch.zeros_like(w))
    w = w / w.sum(1, keepdim=True)
    delta = (offs == 0).to(torch.float32)[None].expand_as(w)
    w = torch.where((radius == 0)[:, None], delta, w)
    B = alpha.shape[0]
    padded = F.pad(alpha[None], (R, R, R, R), mode="reflect")
    rows = F.conv2d(padded, w[:, None, :, None], groups=B)
    return F.conv2d(rows, w[:, None, None, :], groups=B)[0]


# ----------------------------------------------------------------------------------- appearance


def _box(polygon: torch.Tensor, pad: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample ROI ``(B, 4)`` = x0, y0, x1, y1 as in ``maskgen.render._bbox`` (long)."""
    lo, hi = polygon.amin(1), polygon.amax(1)
    x0 = torch.floor(lo[:, 0] - pad).clamp_min(0)
    y0 = torch.floor(lo[:, 1] - pad).clamp_min(0)
    x1 = (torch.ceil(hi[:, 0] + pad) + 1).clamp_max(width)
    y1 = (torch.ceil(hi[:, 1] + pad) + 1).clamp_max(height)
    return torch.stack([x0, y0, x1, y1], 1)


def _area_matrix(
    start: torch.Tensor, size: torch.Tensor, cells: torch.Tensor, n: int
) -> torch.Tensor:
    """``(B, 6, n)`` INTER_AREA weights of ``cells`` cells over pixels ``[start, start+size)``."""
    device = start.device
    j = torch.arange(6, device=device, dtype=torch.float32)[None, :, None]
    px = torch.arange(n, device=device, dtype=torch.float32)[None, None] - start[:, None, None]
    step = (size / cells.clamp_min(1))[:, None, None]
    lo, hi = j * step, (j + 1) * step
    w = (torch.minimum(px + 1, hi) - torch.maximum(px, lo)).clamp_min(0)
    w = torch.where(j < cells[:, None, None], w, torch.zeros_like(w))
    return w / step


def _linear_matrix(
    start: torch.Tensor, size: torch.Tensor, cells: torch.Tensor, n: int
) -> torch.Tensor:
    """``(B, n, 6)`` INTER_LINEAR weights: ``cells`` cells onto ``[start, start+size)``."""
    device = start.device
    px = torch.arange(n, device=device, dtype=torch.float32)[None] - start[:, None]
    src = (px + 0.5) * (cells / size.clamp_min(1))[:, None] - 0.5
    src = torch.minimum(src.clamp_min(0), (cells - 1)[:, None])
    i0 = torch.floor(src)
    f = src - i0
    i1 = torch.minimum(i0 + 1, (cells - 1)[:, None])
    out = torch.zeros(start.shape[0], n, 6, device=device)
    out.scatter_add_(2, i0.long()[..., None], (1 - f)[..., None])
    return out.scatter_add_(2, i1.long()[..., None], f[..., None])


def face_lighting_batch(
    images: torch.Tensor,
    coverage: torch.Tensor,
    box: torch.Tensor,
    strength: torch.Tensor,
    window: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Batched face lighting (:func:`maskgen.paint.lighting_ratio`, upsampled over the box)
    over per-sample ROIs.

    Args:
        images: ``(B, 3, H, W)`` whole frames; box: ``(B, 4)`` ROIs (x0, y0, x1, y1) in frame
            pixels; strength: ``(B,)`` shading strength (0: no shading).
        coverage: occlusion maps (soft edges, opacity) of the ``window`` ``(x0, y0, x1, y1)``
            of the frames (default: whole frames), ``(B, h, w)``.

    Returns:
        ``(B, 1, h, w)`` float32 factor around 1 over ``window`` (meaningful inside each ROI).
    """
    B, C, H, W = images.shape
    wx0, wy0, wx1, wy1 = (0, 0, W, H) if window is None else window
    box = box.to(torch.float32)
    x0, y0, w, h = box[:, 0], box[:, 1], box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    gw = torch.clamp(torch.div(w, 6, rounding_mode="floor"), 2, 6)
    gh = torch.clamp(torch.div(h, 6, rounding_mode="floor"), 2, 6)
    ax_, ay_ = _area_matrix(x0, w, gw, W), _area_matrix(y0, h, gh, H)
    # INTER_AREA of the luma: one batched product over the window's rows (the ROIs lie inside
    # it), in the frames' memory layout (NHWC: columns and channels together).
    luma = torch.tensor(_LUMA, device=images.device, dtype=torch.float32)
    ay_w = ay_[:, :, wy0:wy1]
    rows = images[:, :, wy0:wy1]
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        pixels = rows.permute(0, 2, 3, 1).reshape(B, wy1 - wy0, W * C)
        cols = torch.bmm(ay_w.to(images.dtype), pixels).to(torch.float32).view(B, 6, W, C)
        small = cols @ luma
    else:
        weights = (ay_w[:, None] * luma[None, :, None, None]).reshape(B * C, 6, wy1 - wy0)
        planes = rows.reshape(B * C, wy1 - wy0, W)
        small = torch.bmm(weights.to(images.dtype), planes).to(torch.float32)
        small = small.view(B, C, 6, W).sum(1)
    small = small @ ax_.transpose(1, 2)
    cov = coverage.to(torch.float32)
    small_a = ay_w @ cov @ ax_[:, :, wx0:wx1].transpose(1, 2)
    mean = (small * small_a).sum((1, 2)) / small_a.sum((1, 2)).clamp_min(1e-6)
    strength = strength.to(small)
    ok = (mean > 1e-6) & (strength != 0)
    ratio = small / torch.where(ok, mean, torch.ones_like(mean))[:, None, None]
    ratio = ratio.clamp(0.5, 1.45) ** strength[:, None, None]
    ratio = torch.where(ok[:, None, None], ratio, torch.ones_like(ratio))
    ux = _linear_matrix(x0 - wx0, w, gw, wx1 - wx0)
    uy = _linear_matrix(y0 - wy0, h, gh, wy1 - wy0)
    return (uy @ (ratio @ ux.transpose(1, 2)))[:, None]


def texture_fields(
    tiles: torch.Tensor,
    origin: torch.Tensor,
    ax: torch.Tensor,
    period_px: torch.Tensor,
    angle_deg: torch.Tensor,
    height: int,
    width: int,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched texture sampling (as :func:`maskgen.paint.paint_mask` samples a tile placed by
    :func:`maskgen.appearance.tile_map`) over whole images: ``(B, 2, H, W)``.

    ``tiles`` are ``(K, 2, T, T)`` periodic tiles, one per sample (``K = B``) or a bank that
    ``index`` ``(B,)`` picks from; one tile every ``period_px`` pixels along the face axis
    ``ax`` turned by ``angle_deg``, anchored at ``origin`` (same pixel mapping as the OpenCV
    inverse warp, bilinear with wrapping). The tiles are laid out once in a single atlas
    (each with a one-texel circular border) and sampled with one ``grid_sample`` call.
    """
    K, _, T, _ = tiles.shape
    n = origin.shape[0]
    device = tiles.device
    if index is None:
        index = torch.arange(n, device=device)
    # Each tile repeated 2×2 plus one wrapped texel (S = 2T + 1 a side): a tile coordinate
    # is a sum of a column term and a row term, each reduced modulo T on its own (cheap 1-D
    # work), so the sum lies in [0, 2T) and needs no per-pixel wrapping.
    S = 2 * T + 1
    atlas = torch.cat([tiles, tiles, tiles[:, :, :1]], 2)
    atlas = torch.cat([atlas, atlas, atlas[:, :, :, :1]], 3)
    atlas = atlas.transpose(0, 1).reshape(1, 2, K * S, S)
    theta = torch.atan2(ax[:, 1], ax[:, 0]) + torch.deg2rad(angle_deg.to(ax))
    c, s = torch.cos(theta), torch.sin(theta)
    k = T / period_px.to(ax).clamp_min(1e-3)
    xs = torch.arange(width, device=device, dtype=torch.float32)[None] - origin[:, :1]
    ys = torch.arange(height, device=device, dtype=torch.float32)[None] - origin[:, 1:]
    kc, ks = (k * c)[:, None], (k * s)[:, None]
    # Atlas pixel → normalised coordinate (align_corners=True): x * sx - 1, y * sy - 1.
    sx, sy = 2.0 / (S - 1), 2.0 / (K * S - 1)
    row = (index.to(device) * S).to(torch.float32)[:, None]
    ux = torch.remainder(kc * xs, T).mul_(sx).sub_(1.0)  # (n, w)
    uy = torch.remainder(ks * ys, T).mul_(sx)  # (n, h)
    vx = torch.remainder(-ks * xs, T).mul_(sy)
    vy = torch.remainder(kc * ys, T).add_(row).mul_(sy).sub_(1.0)
    grid = torch.empty(n, height, width, 2, device=device, dtype=torch.float32)
    torch.add(ux[:, None, :], uy[:, :, None], out=grid[..., 0])
    torch.add(vx[:, None, :], vy[:, :, None], out=grid[..., 1])
    grid = grid.to(tiles.dtype).view(1, n * height, width, 2)
    out = F.grid_sample(atlas, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(2, n, height, width).transpose(0, 1)


def mask_batch(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    params: dict[str, torch.Tensor],
    *,
    tiles: torch.Tensor | None = None,
    geometry: torch.Tensor | None = None,
    subsamples: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one mask per image: the functional core of :class:`RandomFaceMask`.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1]; never modified.
        landmarks: ``(B, 68, 2)`` or ``(B, 5, 2)`` pixel landmarks.
        params: per-sample tensors of length ``B`` (see :class:`FaceMaskGenerator`): ``family``,
            ``coverage``, ``color``, ``secondary_color`` (0–255), ``texture_scale``,
            ``texture_angle``, ``shading``, ``edge_softness``, ``opacity``, ``width``,
            ``top_offset``, ``bottom_offset``; with ``tiles``, ``tile`` indexes its first axis.
        tiles: ``(K, 2, T, T)`` texture tiles (mix, shade); ``None``: untextured.
        geometry: ``(F, 10)`` family table (default: :func:`geometry_table`).
        subsamples: vertical supersampling of the rasteriser.

    Returns:
        The masked images (same dtype, differentiable w.r.t. ``images``) and the occlusion maps
        ``(B, 1, H, W)`` float32.

    All per-pixel work is done on the band of rows and columns that any mask of the batch
    touches; textures only for the textured samples. Host syncs: one for the band and counts,
    one per chunk in the rasteriser (its number of crossings). Without
    gradients to ``images`` the masks are blended straight into the output (on the CPU by
    chunks of :data:`CPU_CHUNK` samples); with them, by differentiable ops
    (``d out / d images = 1 - alpha``).
    """
    B, _, H, W = images.shape
    device = images.device

    def p(name: str) -> torch.Tensor:
        return params[name].to(device)

    lm = landmarks.to(device, torch.float32)
    if lm.shape[1] == 5:
        lm = expand_five(lm)
    outline = batch_outlines(
        lm, p("family"), p("coverage"), p("width"), p("top_offset"), p("bottom_offset"),
        geometry=geometry,
    )  # fmt: skip
    polygon = offset_polygons(outline.polygon, AA_OFFSET)
    sigma = p("edge_softness").float() * outline.unit
    pad = 2 * sigma + 2
    box = _box(outline.polygon, pad, H, W)  # the CPU renderer's ROI (shading statistics)
    band = _box(polygon, pad + 1, H, W)
    shading = p("shading").float()
    texture = p("texture").long()
    textured = texture > 0 if tiles is not None and "tile" in params else texture < 0
    two_tone = torch.tensor([t in app.TWO_TONE_TEXTURES for t in app.TEXTURES], device=device)
    two_tone = two_tone[texture.clamp(0, len(app.TEXTURES) - 1)] & textured
    grad = torch.is_grad_enabled() and images.requires_grad
    # On the CPU the band work runs over chunks of samples (bounds the temporaries).
    chunk = CPU_CHUNK if device.type == "cpu" and not grad and B > CPU_CHUNK else max(B, 1)
    starts = range(0, B, chunk)
    per_chunk = torch.zeros(len(starts), device=device, dtype=band.dtype).index_add_(
        0, torch.div(torch.arange(B, device=device), chunk, rounding_mode="floor"),
        textured.to(band.dtype),
    )  # fmt: skip
    stats = torch.cat(
        [band[:, :2].amin(0), band[:, 2:].amax(0),
         torch.stack([two_tone.sum(), (shading != 0).sum()]).to(band), per_chunk]
    ).tolist()  # fmt: skip
    x0, y0, x1, y1, n_two, n_shaded = (int(v) for v in stats[:6])
    if x1 <= x0 or y1 <= y0:
        return images + 0 * images, images.new_zeros(B, 1, H, W, dtype=torch.float32)
    shift = torch.tensor([x0, y0], device=device, dtype=polygon.dtype)
    draw = {
        "polygon": polygon - shift,
        "sigma": sigma,
        "opacity": p("opacity").float(),
        "box": box,
        "shading": shading,
        "textured": textured,
        "two_tone": two_tone,
        "origin": outline.origin - shift,
        "ax": outline.ax,
        "period": p("texture_scale").float() * outline.unit,
        "angle": p("texture_angle").float(),
        "tile": p("tile").long() if "tile" in params else texture,
        "primary": p("color").float() / 255.0,
        "secondary": p("secondary_color").float() / 255.0,
    }
    window = (x0, y0, x1, y1)
    flags = (n_two > 0, n_shaded > 0)
    if grad:
        band_out, alpha = _draw_band(images, draw, window, int(stats[6]), flags, tiles, subsamples)
        out = _paste(images, band_out, x0, y0, x1, y1)
    else:
        out = _frame(images, x0, y0, x1, y1)
        alphas = []
        for i, s in enumerate(starts):
            part = {k: v[s : s + chunk] for k, v in draw.items()}
            n_tex = int(stats[6 + i])
            target = out[s : s + chunk, :, y0:y1, x0:x1]
            alphas.append(
                _draw_band(images[s : s + chunk], part, window, n_tex, flags, tiles, subsamples,
                           target)[1]
            )  # fmt: skip
        alpha = alphas[0] if len(alphas) == 1 else torch.cat(alphas)
    alpha_full = F.pad(alpha[:, None], (x0, W - x1, y0, H - y1))
    return out, alpha_full


def _draw_band(
    images: torch.Tensor,
    q: dict[str, torch.Tensor],
    window: tuple[int, int, int, int],
    n_tex: int,
    flags: tuple[bool, bool],
    tiles: torch.Tensor | None,
    subsamples: int,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of ``images`` over ``window`` (x0, y0, x1, y1; ``q``: per-sample draw tensors in
    window coordinates): the blended band (written into ``target`` when given, else a new
    differentiable tensor) and the occlusion maps ``(B, h, w)``."""
    B = images.shape[0]
    device = images.device
    x0, y0, x1, y1 = window
    h, w = y1 - y0, x1 - x0
    any_two, any_shaded = flags
    alpha = soften_batch(rasterize_polygons(q["polygon"], h, w, subsamples), q["sigma"])
    alpha = alpha.mul_(q["opacity"][:, None, None])  # (B, h, w), owned
    crop = images[:, :, y0:y1, x0:x1]

    # Shade factor (B, h, w): face lighting times the textures' shade channel.
    shade: torch.Tensor | None = None
    if any_shaded:
        shade = face_lighting_batch(images.detach(), alpha, q["box"], q["shading"], window)[:, 0]
    mix: torch.Tensor | None = None
    if n_tex and tiles is not None:
        # The textured samples first (stable), without a host sync.
        sub = torch.sort((~q["textured"]).to(torch.uint8), stable=True).indices[:n_tex]
        field = texture_fields(
            tiles.to(device), q["origin"][sub], q["ax"][sub], q["period"][sub], q["angle"][sub],
            h, w, index=q["tile"][sub],
        )  # fmt: skip
        if shade is None:
            shade = torch.ones(B, h, w, device=device)
        shade.index_copy_(0, sub, shade.index_select(0, sub).mul_(field[:, 1]))
        if any_two:
            mix = torch.zeros(B, h, w, device=device)
            mix.index_copy_(0, sub, field[:, 0] * q["two_tone"][sub, None, None])
    primary, secondary = q["primary"], q["secondary"]
    dtype = images.dtype
    alpha_x = alpha.to(dtype)

    def plane(c: int) -> torch.Tensor:
        """Mask colour of channel ``c`` over the band, ``(B, h, w)``, clamped to [0, 1]."""
        pc = primary[:, c, None, None]
        if mix is not None:
            v = torch.addcmul(pc, mix, (secondary[:, c] - primary[:, c])[:, None, None])
            if shade is not None:
                v.mul_(shade)
        elif shade is not None:
            v = shade * pc
        else:
            return pc.clamp(0.0, 1.0).to(dtype).expand(B, h, w)
        return v.clamp_(0.0, 1.0).to(dtype)  # unit range (the CPU path saturates too)

    if target is None:
        colour = torch.stack([plane(c) for c in range(images.shape[1])], 1)
        return torch.lerp(crop, colour, alpha_x[:, None]), alpha
    for c in range(images.shape[1]):  # one colour plane at a time, any memory layout
        torch.lerp(crop[:, c], plane(c), alpha_x, out=target[:, c])
    return target, alpha


def _frame(images: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """A new tensor holding ``images`` outside ``[y0:y1, x0:x1]`` (inside: uninitialised)."""
    out = empty_like_large(images)
    out[:, :, :y0] = images[:, :, :y0]
    out[:, :, y1:] = images[:, :, y1:]
    out[:, :, y0:y1, :x0] = images[:, :, y0:y1, :x0]
    out[:, :, y0:y1, x1:] = images[:, :, y0:y1, x1:]
    return out


def _paste(
    images: torch.Tensor, band: torch.Tensor, x0: int, y0: int, x1: int, y1: int
) -> torch.Tensor:
    """``images`` with ``band`` in place of ``[y0:y1, x0:x1]`` (a new tensor, by concatenation)."""
    W = images.shape[-1]
    if x0 > 0 or x1 < W:
        rows = images[:, :, y0:y1]
        band = torch.cat([rows[..., :x0], band, rows[..., x1:]], 3)
    return torch.cat([images[:, :, :y0], band, images[:, :, y1:]], 2)


# ----------------------------------------------------------------------------------- kornia


def _categorical(weights: dict[str, float], names: Sequence[str]) -> torch.Tensor:
    return torch.tensor([float(weights.get(n, 0.0)) for n in names], dtype=torch.float64)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV-style HSV (h in [0, 180), s, v in [0, 255]) → RGB 0–255, ``(B, 3)``."""
    h6 = torch.floor(h) * 2 / 60.0
    s, v = torch.floor(s) / 255.0, torch.floor(v) / 255.0
    c = v * s
    x = c * (1 - (torch.remainder(h6, 2) - 1).abs())
    m = v - c
    z = torch.zeros_like(c)
    sector = torch.floor(h6).long().clamp(0, 5)
    table = torch.stack(
        [torch.stack(t, -1) for t in ((c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c),
                                      (c, z, x))], 1,
    )  # fmt: skip
    rgb = table.gather(1, sector[:, None, None].expand(-1, 1, 3))[:, 0] + m[:, None]
    return torch.round(rgb * 255)


class FaceMaskGenerator(RandomGeneratorBase):
    """kornia random generator of batched mask draws from a :class:`maskgen.render.MaskSpec`.

    Produces per-sample tensors: ``family`` (index into ``families``), ``coverage`` (index
    into :data:`maskgen.shapes.COVERAGES`), ``color`` and ``secondary_color`` (``(B, 3)``,
    0–255), ``texture`` (index into :data:`maskgen.appearance.TEXTURES`, 0 = none),
    ``texture_seed`` (one of ``texture_seeds``), ``texture_scale``, ``texture_angle``,
    ``shading``, ``edge_softness``, ``opacity``, ``width``, ``top_offset``, ``bottom_offset``.
    Palettes are drawn by weight and a colour uniformly inside the palette; a random HSV colour
    replaces it with ``spec.random_color_prob``.
    """

    def __init__(
        self,
        spec: MaskSpec,
        families: Sequence[str],
        texture_seeds: Sequence[int] = tuple(range(8)),
    ) -> None:
        super().__init__()
        self.spec = spec
        self.families = tuple(families)
        self.texture_seeds = tuple(int(s) for s in texture_seeds)
        colours, weights = [], []
        for name in sorted(spec.palettes):
            cols = app.palette_colors(name)
            colours += cols
            weights += [float(spec.palettes[name]) / len(cols)] * len(cols)
        self._colours = torch.tensor(colours, dtype=torch.float32)
        self._colour_w = torch.tensor(weights, dtype=torch.float64)
        self._accents = torch.tensor(app.accent_colors(), dtype=torch.float32)

    def __repr__(self) -> str:
        return f"spec={self.spec!r}"

    def make_samplers(self, device: torch.device, dtype: torch.dtype) -> None:
        spec = self.spec
        cat = torch.distributions.Categorical

        def categorical(w: torch.Tensor) -> torch.distributions.Distribution:
            return cat(probs=(w / w.sum()).to(device=device, dtype=torch.float32))

        def uniform(bounds: tuple[float, float]) -> torch.distributions.Distribution:
            lo, hi = (torch.tensor(float(b), device=device, dtype=dtype) for b in bounds)
            return torch.distributions.Uniform(lo, torch.maximum(hi, lo), validate_args=False)

        self._family = categorical(_categorical(spec.families, self.families))
        self._coverage = categorical(_categorical(spec.coverages, COVERAGES))
        self._texture = categorical(_categorical(spec.textures, app.TEXTURES))
        self._colour = categorical(self._colour_w)
        self._accent = categorical(torch.ones(len(self._accents), dtype=torch.float64))
        self._seed = categorical(torch.ones(len(self.texture_seeds), dtype=torch.float64))
        self._unit = uniform((0.0, 1.0))
        self._ranges = {
            name: uniform(getattr(spec, name))
            for name in ("texture_scale", "texture_angle", "shading", "edge_softness", "width",
                         "top_offset", "bottom_offset")
        }  # fmt: skip

    def forward(
        self, batch_shape: tuple[int, ...], same_on_batch: bool = False
    ) -> dict[str, torch.Tensor]:
        B = int(batch_shape[0])
        device = self.device

        def draw(dist: torch.distributions.Distribution, *extra: int) -> torch.Tensor:
            return _adapted_sampling((B, *extra), dist, same_on_batch)

        family = draw(self._family)
        coverage = draw(self._coverage)
        colour_idx = draw(self._colour)
        colour = self._colours.to(device)[colour_idx]
        hsv = draw(self._unit, 3) * torch.tensor([180.0, 180.0, 185.0], device=device)
        hsv = hsv + torch.tensor([0.0, 40.0, 60.0], device=device)
        random_colour = _hsv_to_rgb(hsv[:, 0], hsv[:, 1], hsv[:, 2])
        use_random = draw(self._unit) < self.spec.random_color_prob
        colour = torch.where(use_random[:, None], random_colour, colour)
        accents = self._accents.to(device)
        accent_idx = draw(self._accent)
        same = (accents[accent_idx] == colour).all(1)
        accent_idx = torch.where(same, (accent_idx + 1) % len(accents), accent_idx)
        texture = draw(self._texture)
        pleats, grain = app.TEXTURES.index("pleats"), app.TEXTURES.index("grain")
        if "kn95" in self.families:
            kn95 = family == self.families.index("kn95")
            texture = torch.where(
                kn95 & (texture == pleats), torch.full_like(texture, grain), texture
            )
        seeds = torch.tensor(self.texture_seeds, dtype=torch.long, device=device)
        out = {
            "family": family.long(),
            "coverage": coverage.long(),
            "color": colour,
            "secondary_color": accents[accent_idx],
            "texture": texture.long(),
            "texture_seed": seeds[draw(self._seed)],
        }
        for name, dist in self._ranges.items():
            out[name] = draw(dist)
        out["opacity"] = torch.ones(B, device=device, dtype=self.dtype)
        return out


_PARAM_KEYS = ("family", "coverage", "color", "secondary_color", "texture", "texture_seed",
               "texture_scale", "texture_angle", "shading", "edge_softness", "opacity", "width",
               "top_offset", "bottom_offset")  # fmt: skip


class RandomFaceMask(IntensityAugmentationBase2D):
    """Draw synthetic face masks on a ``B×3×H×W`` float batch, on the batch's own device.

    The shape families, coverage levels, palettes, textures, shading and soft edges of
    :func:`maskgen.render.render`, drawn from a :class:`maskgen.render.MaskSpec` by a kornia
    random generator (:class:`FaceMaskGenerator`) and rasterised for the whole batch in tensor
    operations (:func:`mask_batch`). Ear loops, valves and the KN95 seam are not drawn here
    (see the module docstring): use :class:`maskgen.augment.MaskFace` on the CPU for those.

    Args:
        spec: what may be drawn (default ``MaskSpec()``).
        p: per-sample probability of masking.
        landmarks: default landmarks, ``(68, 2)``/``(5, 2)`` or per sample ``(B, K, 2)``;
            ``None`` means the aligned ArcFace layout scaled to the image width. Inside
            :class:`kornia.augmentation.AugmentationSequential` (which passes no extra
            arguments) set ``aug.landmarks = ...`` before each call.
        same_on_batch: one draw for the whole batch.
        keepdim: keep a ``C×H×W`` input's shape.
        p_batch: probability of masking the batch at all.
        subsamples: scanlines per pixel row of the rasteriser.
        texture_seeds: tile seeds drawn for textured masks (a bank of tiles is built per seed).

    Per call, ``forward(x, params=None, landmarks=None, return_alpha=False)``: ``landmarks``
    overrides the default; the draw (landmarks included) is kept in ``_params`` and replays with
    ``aug(x, params=aug._params)``; the occlusion maps of the last call are ``last_alpha``
    (``B×1×H×W``, zero for samples that were not masked) and come back as ``(out, alpha)``
    with ``return_alpha=True``. The input is never modified and gradients flow to it.

    Example:
        >>> import torch
        >>> from maskgen.landmarks import aligned_landmarks
        >>> aug = RandomFaceMask(p=1.0, same_on_batch=True)
        >>> lm = torch.tensor(aligned_landmarks())[None].repeat(2, 1, 1)
        >>> out, alpha = aug(torch.rand(2, 3, 112, 112), landmarks=lm, return_alpha=True)
        >>> bool(torch.equal(alpha[0], alpha[1])), len(aug.to_mask_params(aug._params))
        (True, 2)
    """

    def __init__(
        self,
        spec: MaskSpec | None = None,
        p: float = 0.5,
        *,
        landmarks: Any = None,
        same_on_batch: bool = False,
        keepdim: bool = False,
        p_batch: float = 1.0,
        subsamples: int = 4,
        texture_seeds: Sequence[int] = tuple(range(8)),
    ) -> None:
        super().__init__(p=p, p_batch=p_batch, same_on_batch=same_on_batch, keepdim=keepdim)
        self.spec = MaskSpec() if spec is None else spec
        self.family_names: tuple[str, ...] = tuple(GEOMETRY)
        self.subsamples = int(subsamples)
        self._param_generator = FaceMaskGenerator(self.spec, self.family_names, texture_seeds)
        self.landmarks = landmarks
        self.last_alpha: torch.Tensor | None = None
        self._alpha: torch.Tensor | None = None
        self.register_buffer("geometry", geometry_table(self.family_names), persistent=False)
        kinds = [t for t in app.TEXTURES[1:] if self.spec.textures.get(t, 0) > 0]
        if "pleats" in kinds and "grain" not in kinds and "kn95" in self.spec.families:
            kinds.append("grain")
        keys = [(app.TEXTURES.index(k), int(s)) for k in kinds for s in texture_seeds]
        self._tile_keys: list[tuple[int, int]] = []
        self.register_buffer("tiles", torch.zeros(0, 2, app.TILE, app.TILE), persistent=False)
        self._add_tiles(keys)

    # -- texture bank -----------------------------------------------------------------------

    def _add_tiles(self, keys: Sequence[tuple[int, int]]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._tile_keys]
        if not new:
            return
        arr = np.stack([app.texture_tile(app.TEXTURES[k], s) for k, s in new]).transpose(0, 3, 1, 2)
        add = torch.as_tensor(np.ascontiguousarray(arr), device=self.tiles.device)
        self.tiles = torch.cat([self.tiles, add.to(self.tiles.dtype)])
        self._tile_keys += new

    def _tile_index(self, texture: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        """Bank rows of (texture, seed) pairs, adding missing tiles (e.g. replayed MaskParams)."""
        device = texture.device
        if not self._tile_keys:
            keys = torch.zeros(0, dtype=torch.long, device=device)
        else:
            keys = torch.tensor([k * 2**32 + s for k, s in self._tile_keys], device=device)
        query = texture.long() * 2**32 + seed.long()
        match = query[:, None] == keys[None]
        found = match.any(1) | (texture == 0)
        if not bool(found.all()):
            missing = torch.stack([texture[~found], seed[~found]], 1).tolist()
            self._add_tiles([(int(k), int(s)) for k, s in missing])
            return self._tile_index(texture, seed)
        return match.to(torch.uint8).argmax(1) if keys.numel() else torch.zeros_like(query)

    # -- parameters ------------------------------------------------------------------------

    def forward_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        params = super().forward_parameters(batch_shape)
        if self.landmarks is not None:
            params["landmarks"] = self._batch_landmarks(self.landmarks, int(batch_shape[0]))
        return params

    @staticmethod
    def _batch_landmarks(landmarks: Any, batch: int) -> torch.Tensor:
        lm = torch.as_tensor(np.asarray(landmarks) if not torch.is_tensor(landmarks) else landmarks)
        lm = lm.to(torch.float32)
        if lm.ndim == 2:
            lm = lm[None].expand(batch, -1, -1)
        if lm.ndim != 3 or lm.shape[1:] not in ((68, 2), (5, 2)):
            raise ValueError(f"landmarks must be (68|5, 2) or (B, 68|5, 2), got {tuple(lm.shape)}")
        if lm.shape[0] != batch:
            raise ValueError(f"{lm.shape[0]} landmark sets for a batch of {batch}")
        return lm

    def params_from_mask_params(
        self, draws: Sequence[MaskParams], landmarks: Any = None
    ) -> dict[str, torch.Tensor]:
        """Params dict (for ``aug(x, params=...)``) that replays CPU :class:`MaskParams` draws.

        ``straps``, ``strap_color`` and ``valve`` are not drawn by the batched path.
        """
        n = len(draws)
        out: dict[str, torch.Tensor] = {
            "family": torch.tensor([self.family_names.index(d.family) for d in draws]),
            "coverage": torch.tensor([COVERAGES.index(d.coverage) for d in draws]),
            "color": torch.tensor([d.color for d in draws], dtype=torch.float32).reshape(n, 3),
            "secondary_color": torch.tensor(
                [d.secondary_color for d in draws], dtype=torch.float32
            ).reshape(n, 3),
            "texture": torch.tensor([app.TEXTURES.index(d.texture) for d in draws]),
            "texture_seed": torch.tensor([d.texture_seed for d in draws], dtype=torch.long),
        }
        for name in _PARAM_KEYS[6:]:
            out[name] = torch.tensor([float(getattr(d, name)) for d in draws])
        out["batch_prob"] = torch.ones(n)
        if landmarks is not None:
            out["landmarks"] = self._batch_landmarks(landmarks, n)
        return out

    def to_mask_params(self, params: dict[str, torch.Tensor]) -> list[MaskParams]:
        """The draws of ``params`` as CPU :class:`MaskParams` (JSON-serialisable, replayable
        with :func:`maskgen.render.render`; ``straps``/``valve`` are ``False``)."""
        host = {k: params[k].detach().cpu() for k in _PARAM_KEYS}
        n = int(host["family"].shape[0])
        draws = []
        for i in range(n):
            fields: dict[str, Any] = {
                "family": self.family_names[int(host["family"][i])],
                "coverage": COVERAGES[int(host["coverage"][i])],
                "color": tuple(round(float(v)) for v in host["color"][i]),
                "secondary_color": tuple(round(float(v)) for v in host["secondary_color"][i]),
                "texture": app.TEXTURES[int(host["texture"][i])],
                "texture_seed": int(host["texture_seed"][i]),
                "straps": False,
                "valve": False,
            }
            for name in _PARAM_KEYS[6:]:
                fields[name] = float(host[name][i])
            draws.append(MaskParams(**fields))
        return draws

    # -- kornia hooks ----------------------------------------------------------------------

    def _take(self, value: torch.Tensor, n: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bring a parameter to the ``n`` samples being transformed, by its own length."""
        if value.shape[0] == n:
            return value
        if value.shape[0] == 1:
            return value.expand(n, *value.shape[1:])
        gate = params.get("batch_prob")
        if gate is not None and gate.shape[0] == value.shape[0]:
            picked = value[(gate > 0.5).to(value.device)]
            if picked.shape[0] == n:
                return picked
        raise ValueError(f"parameter of length {value.shape[0]} for {n} samples")

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n, _, H, W = input.shape
        if n == 0:
            self._alpha = input.new_zeros(0, 1, H, W, dtype=torch.float32)
            return input
        p = {k: self._take(params[k], n, params) for k in _PARAM_KEYS}
        if "landmarks" in params and params["landmarks"] is not None:
            lm = self._take(params["landmarks"], n, params)
        else:
            lm = aligned_batch(n, H, W, input.device)
        # kornia >= 0.9 hands over the whole batch when p < 1 and keeps the input where the gate
        # is off: draw only the gated samples.
        gate = params.get("batch_prob")
        rows: torch.Tensor | None = None
        if gate is not None and gate.shape[0] == n and not (self.p == 1.0 and self.p_batch == 1.0):
            rows = torch.nonzero(torch.atleast_1d(gate).to(input.device) > 0.5).flatten()
            if rows.shape[0] == n:
                rows = None
            elif rows.shape[0] == 0:
                self._alpha = input.new_zeros(n, 1, H, W, dtype=torch.float32)
                return input
            else:
                p = {k: v[rows.to(v.device)] for k, v in p.items()}
                lm = lm[rows.to(lm.device)]
        tiles = None
        if bool((p["texture"] > 0).any()):
            p["tile"] = self._tile_index(p["texture"].to(self.tiles.device),
                                         p["texture_seed"].to(self.tiles.device))  # fmt: skip
            tiles = self.tiles
        images = input if rows is None else input[rows]
        out, alpha = mask_batch(
            images, lm, p, tiles=tiles, geometry=self.geometry, subsamples=self.subsamples
        )
        if rows is not None:  # kornia takes the other rows from the input (torch.where)
            out = torch.empty_like(input).index_copy_(0, rows, out)
            alpha = alpha.new_zeros(n, *alpha.shape[1:]).index_copy_(0, rows, alpha)
        self._alpha = alpha
        return out

    def forward(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor] | None = None,
        landmarks: Any = None,
        return_alpha: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        shape = input.shape
        batch = 1 if input.ndim < 4 else int(shape[0])
        if params is None:
            params = self.forward_parameters((batch, *self.transform_tensor(input).shape[1:]))
        if landmarks is not None:
            params = dict(params)
            params["landmarks"] = self._batch_landmarks(landmarks, batch)
        self._alpha = None
        out = super().forward(input, params=params, **kwargs)
        H, W = shape[-2], shape[-1]
        applied = self._alpha
        gate = self._params.get("batch_prob")
        always = gate is None or (self.p == 1.0 and self.p_batch == 1.0)
        if applied is not None and applied.shape[0] == batch and always:
            alpha = applied
        else:
            alpha = torch.zeros(batch, 1, H, W, device=input.device)
            if applied is not None:
                sel = torch.ones(batch, dtype=torch.bool, device=input.device)
                if not always:
                    sel = (torch.atleast_1d(gate) > 0.5).to(input.device)
                if applied.shape[0] == batch:
                    alpha = applied * sel[:, None, None, None]
                else:
                    alpha = alpha.index_put((sel,), applied)
        self.last_alpha = alpha
        self._alpha = None
        return (out, alpha) if return_alpha else out
