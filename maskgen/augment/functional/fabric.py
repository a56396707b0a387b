"""Batched fabric on the posed surface: the device form of :mod:`maskgen.fabric`.

The surface maps (normals, surface coordinates) are rasterised on the host by the CPU
renderer's own :func:`maskgen.fabric.surface_maps` over the batch's band of rows and columns
and moved to the device once; from them, on the device and for the whole batch: the
surface-following texture fields, the light direction estimated from each face, the Lambert
relief (pleats and cloth creases included), and the contact shadow on the skin, with the CPU
renderer's constants. The creases are laid per sample on the host by the CPU renderer's own
:func:`maskgen.fabric.crease_lines` and evaluated here for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from maskgen import fabric
from maskgen.appearance import PLEATS_PER_TILE
from maskgen.augment.functional.raster import soften_batch
from maskgen.fabric import AMBIENT
from maskgen.paint import CREASE_HEIGHT
from maskgen.shapes import Outline

__all__ = [
    "contact_shadow_batch",
    "crease_slopes_batch",
    "fabric_relief_batch",
    "fold_phases",
    "surface_fields",
    "surface_maps_batch",
]

_LUMA = (0.299, 0.587, 0.114)


def surface_maps_batch(
    outlines: Sequence[Outline | None], rows: Sequence[int], window: tuple[int, int, int, int],
    device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """``(len(rows), 5, h, w)`` surface maps (arc u, arc v, normal x, y, z) of the posed
    outlines ``outlines[i]`` for ``i`` in ``rows`` over ``window`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = window
    out = np.zeros((len(rows), y1 - y0, x1 - x0, 5), np.float32)
    for k, i in enumerate(rows):
        outline = outlines[i]
        mesh = None if outline is None else outline.surface()
        if mesh is not None:
            out[k] = fabric.surface_maps(mesh, window)
    return torch.from_numpy(out).to(device).permute(0, 3, 1, 2)


def surface_fields(
    tiles: torch.Tensor, arc: torch.Tensor, scale_px: torch.Tensor, period_px: torch.Tensor,
    angle_deg: torch.Tensor, index: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Texture fields ``(n, 2, h, w)`` (mix, shade) sampled at the surface coordinates ``arc``
    ``(n, 2, h, w)``, as :func:`maskgen.fabric.surface_tile_map` places the tile (``tiles``
    ``(K, 2, T, T)``, ``index`` ``(n,)`` into them), bilinear and wrapped."""
    K, _, T, _ = tiles.shape
    n, _, h, w = arc.shape
    atlas = torch.cat([tiles, tiles[:, :, :1]], 2)
    atlas = torch.cat([atlas, atlas[:, :, :, :1]], 3)  # (K, 2, T + 1, T + 1)
    k = (T / period_px.to(arc).clamp_min(1e-3) * scale_px.to(arc))[:, None, None]
    theta = torch.deg2rad(angle_deg.to(arc))[:, None, None]
    c, s = torch.cos(theta), torch.sin(theta)
    u, v = arc[:, 0], arc[:, 1]
    tu = torch.remainder((c * u + s * v) * k, T)
    tv = torch.remainder((-s * u + c * v) * k, T)
    # One atlas row of tiles: tile j's texel (x, y) sits at (x, j (T + 1) + y).
    S = T + 1
    gx = tu * (2.0 / (S - 1)) - 1.0
    gy = (tv + index.to(arc)[:, None, None] * S) * (2.0 / (K * S - 1)) - 1.0
    grid = torch.stack([gx, gy], -1).view(1, n * h, w, 2)
    flat = atlas.transpose(0, 1).reshape(1, 2, K * S, S)
    out = F.grid_sample(flat, grid.to(flat.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)  # fmt: skip
    return out.view(2, n, h, w).transpose(0, 1)


def light_directions(crop: torch.Tensor, alpha: torch.Tensor, ax: torch.Tensor) -> torch.Tensor:
    """:func:`maskgen.fabric.light_direction` of every sample: ``(n, 3)`` unit vectors from the
    unpainted band ``crop`` ``(n, 3, h, w)`` under the occlusion maps ``alpha`` ``(n, h, w)``."""
    n, _, h, w = crop.shape
    device = crop.device
    weight = (alpha > 0.5).to(torch.float32)
    total = weight.sum((1, 2))
    luma = sum(wt * crop[:, c].to(torch.float32) for c, wt in enumerate(_LUMA))
    mean = (luma * weight).sum((1, 2)) / total.clamp_min(1)
    value = luma / mean.clamp_min(1e-6)[:, None, None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, None, :].expand(n, h, w)
    ys = torch.arange(h, device=device, dtype=torch.float32)[None, :, None].expand(n, h, w)
    big = torch.tensor(1e9, device=device)
    lo = torch.where(weight > 0, xs, big).amin((1, 2))
    hi = torch.where(weight > 0, xs, -big).amax((1, 2))
    half = (0.5 * (hi - lo)).clamp_min(0.5)[:, None, None]
    cx = (xs * weight).sum((1, 2)) / total.clamp_min(1)
    cy = (ys * weight).sum((1, 2)) / total.clamp_min(1)
    x = (xs - cx[:, None, None]) / half
    y = (ys - cy[:, None, None]) / half

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b * weight).sum((1, 2)).to(torch.float64)

    sxx, sxy, syy = dot(x, x), dot(x, y), dot(y, y)
    vm = value - (value * weight).sum((1, 2))[:, None, None] / total.clamp_min(1)[:, None, None]
    sxv, syv = dot(x, vm), dot(y, vm)
    det = sxx * syy - sxy * sxy
    safe = det.abs() > 1e-12
    det = torch.where(safe, det, torch.ones_like(det))
    gx = torch.where(safe, (syy * sxv - sxy * syv) / det, torch.zeros_like(det))
    gy = torch.where(safe, (sxx * syv - sxy * sxv) / det, torch.zeros_like(det))
    ux, uy = ax[:, 0].to(torch.float64), ax[:, 1].to(torch.float64)
    tilt = math.tan(math.radians(fabric.MAX_LIGHT_TILT))
    across = (gx * ux + gy * uy).clamp(-tilt, tilt)
    down = (-gx * uy + gy * ux).clamp(-tilt, tilt)
    light = torch.stack([across * ux - down * uy, across * uy + down * ux, torch.ones_like(gx)], 1)
    light = light / light.norm(dim=1, keepdim=True)
    usable = (total >= 16) & (mean > 1e-3)
    frontal = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device)
    return torch.where(usable[:, None], light, frontal).to(torch.float32)


def crease_slopes_batch(
    arc: torch.Tensor, lines: torch.Tensor, depth: torch.Tensor
) -> torch.Tensor:
    """:func:`maskgen.fabric.crease_slopes` of every sample: the slope (∂h/∂u, ∂h/∂v)
    ``(n, 2, h, w)`` of the creases ``lines`` ``(n, K, CREASE_FIELDS)``
    (:func:`maskgen.fabric.crease_lines`) at surface coordinates ``arc`` ``(n, 2, h, w)``,
    times ``depth`` ``(n,)``."""
    lines = lines.to(arc)
    u, v = arc[:, 0], arc[:, 1]
    gu = torch.zeros_like(u)
    gv = torch.zeros_like(v)
    scale = depth.to(arc)
    for k in range(lines.shape[1]):
        cu, cv, c, s, half, width, tilt = (t[:, None, None] for t in lines[:, k].unbind(1))
        half, width = half.clamp_min(1e-6), width.clamp_min(1e-6)
        x, y = u - cu, v - cv
        along, across = (x * c + y * s) / half, (y * c - x * s) / width
        a = (1.0 - across * across).clamp_min(0.0)
        b = (1.0 - along * along).clamp_min(0.0)
        height = (scale[:, None, None] * tilt) * (CREASE_HEIGHT * 4.0)
        g_across = -height * across * a * b * b
        g_along = -height * along * b * a * a * (width / half)
        gu += g_along * c - g_across * s
        gv += g_along * s + g_across * c
    return torch.stack([gu, gv], 1)


def fabric_relief_batch(
    normals: torch.Tensor, alpha: torch.Tensor, light: torch.Tensor, strength: torch.Tensor,
    folds: tuple[torch.Tensor, ...] | None = None,
    creases: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """The CPU kernel's fabric shading (:func:`maskgen.paint.paint_mask`'s ``fabric``) of
    every sample: ``(n, h, w)`` from the normals
    ``(n, 3, h, w)``, occlusion maps, lights ``(n, 3)`` and strengths ``(n,)``; with ``folds``
    = (tilt ``(n,)``, down axes ``(n, 3)``, fold phases ``(n, h, w)``), pleats as relief as the
    CPU kernel makes them (:func:`maskgen.paint.paint_mask`'s ``relief``); with ``creases`` =
    (down axes ``(n, 3)``, slopes ``(n, 2, h, w)``, :func:`crease_slopes_batch`), the cloth's
    creases too (``creases``, ``crease_lines``)."""
    lambert = (normals * light[:, :, None, None]).sum(1)
    plain = AMBIENT + (1.0 - AMBIENT) * lambert.clamp_min(0.0)
    mean = (plain * alpha).sum((1, 2)) / alpha.sum((1, 2)).clamp_min(1e-6)
    if creases is not None or folds is not None:
        lambert = _bent(normals, lambert, light, folds, creases)
    shade = AMBIENT + (1.0 - AMBIENT) * lambert.clamp_min(0.0)
    relief = shade / mean.clamp_min(1e-6)[:, None, None]
    return 1.0 + strength[:, None, None].to(relief) * (relief - 1.0)


def _bent(
    normals: torch.Tensor, lambert: torch.Tensor, light: torch.Tensor,
    folds: tuple[torch.Tensor, ...] | None, creases: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:  # fmt: skip
    """Lambert's cosine with the normal n bent by the pleats' tilt p and the creases' slope
    as the CPU kernel bends it: to n + (p − ∂h/∂v)·t_v − ∂h/∂u·t_u, t_v the unit tangent
    down the face, t_u = t_v × n (either may be absent)."""
    down = creases[0] if creases is not None else folds[1]  # type: ignore[index]
    lit = light[:, :, None, None]
    along = (normals * down[:, :, None, None]).sum(1, keepdim=True)
    tangent = down[:, :, None, None] - along * normals
    length = tangent.norm(dim=1)
    unit = tangent / length.clamp_min(1e-6)[:, None]
    bend = torch.zeros_like(lambert)
    if folds is not None:
        tilt, _, phase = folds
        bend = bend + tilt[:, None, None] * torch.cos(2 * math.pi * phase)
    if creases is not None:
        bend = bend - creases[1][:, 1]
    cosine = lambert + bend * (unit * lit).sum(1)
    norm = 1 + bend * bend
    if creases is not None:
        across = creases[1][:, 0]
        cosine = cosine - across * (torch.cross(unit, normals, dim=1) * lit).sum(1)
        norm = norm + across * across
    return torch.where(length > 1e-6, cosine / torch.sqrt(norm), lambert)


def fold_phases(
    arc: torch.Tensor, scale_px: torch.Tensor, period_px: torch.Tensor, angle_deg: torch.Tensor,
    tile: int,
) -> torch.Tensor:  # fmt: skip
    """The pleats' fold phase ``(n, h, w)`` at surface coordinates ``arc`` ``(n, 2, h, w)``:
    :data:`maskgen.appearance.PLEATS_PER_TILE` per tile along the tile's second axis, as
    :func:`maskgen.fabric.surface_tile_map` lays it."""
    k = (tile / period_px.to(arc).clamp_min(1e-3) * scale_px.to(arc))[:, None, None]
    theta = torch.deg2rad(angle_deg.to(arc))[:, None, None]
    v = (-torch.sin(theta) * arc[:, 0] + torch.cos(theta) * arc[:, 1]) * k
    return v * (PLEATS_PER_TILE / tile)


def contact_shadow_batch(cover: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """:func:`maskgen.fabric.contact_shadow` of every sample: the band ``(n, h, w)`` just
    outside the coverages ``cover`` (before the soft edge)."""
    sigma = (fabric.SHADOW_SIGMA * unit.to(cover)).clamp_min(0.5)
    spread = soften_batch(cover, sigma)
    return (2.0 * (spread - cover)).clamp(0.0, 1.0) * (1.0 - cover)
