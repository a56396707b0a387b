"""Batched painting on the tensor's device: lighting, textures, details and blending.

The functional core of :class:`maskgen.augment.RandomFaceMask`, in the manner of
:mod:`maskgen.paint` for one image: face lighting measured on the same grid and cells and
clipped to the same :data:`maskgen.paint.LIGHT_RANGE`, the procedural texture tiles of
:mod:`maskgen.appearance` placed in the face frame, the details (seam, valve, ear loops) in
the CPU renderer's tones, soft edges and opacity, blended over the band of rows and columns
that any mask of the batch touches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from maskgen import appearance as app
from maskgen import fabric as fabric_
from maskgen.augment._memory import empty_like_large
from maskgen.augment.functional.fabric import (
    contact_shadow_batch,
    crease_slopes_batch,
    fabric_relief_batch,
    fold_phases,
    light_directions,
    surface_fields,
    surface_maps_batch,
)
from maskgen.augment.functional.geometry import LAYERS, BatchGeometry
from maskgen.augment.functional.raster import (
    AA_OFFSET,
    offset_polygons,
    rasterize_polygons,
    soften_batch,
)
from maskgen.paint import _RIDGE, FEATURE_TRIM, LIGHT_RANGE, PLANE_GRID
from maskgen.render import SEAM_TONE, VALVE_TONE

__all__ = ["CPU_CHUNK", "face_lighting_batch", "mask_batch", "texture_fields"]

_LUMA = (0.299, 0.587, 0.114)
_SEAM, _VALVE, _RIM, _LOOPS = range(len(LAYERS))
#: Samples per chunk of the per-pixel work on the CPU (bounds the temporaries of big batches).
CPU_CHUNK = 128


def _cell_matrix(
    start: torch.Tensor, size: torch.Tensor, cells: torch.Tensor, n: int
) -> torch.Tensor:
    """``(B, 6, n)`` weights of the lighting cells over pixels ``[start, start+size)``, exactly
    as :func:`maskgen.paint.lighting_ratio` measures them: integer cell bounds
    ``[i·size // cells, (i+1)·size // cells)`` sampled every second pixel."""
    device = start.device
    j = torch.arange(6, device=device)[None, :, None]
    size_, cells_ = size.long()[:, None, None], cells.long().clamp_min(1)[:, None, None]
    lo = torch.minimum(j * size_ // cells_, (size_ - 1).clamp_min(0))
    hi = torch.maximum((j + 1) * size_ // cells_, lo + 1)
    px = torch.arange(n, device=device)[None, None] - start.long()[:, None, None]
    inside = (px >= lo) & (px < hi) & ((px - lo) % 2 == 0) & (j < cells_)
    w = inside.to(torch.float32)
    return w / w.sum(2, keepdim=True).clamp_min(1)


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


def _plane_light(
    lum: torch.Tensor,
    cells: torch.Tensor,
    small_a: torch.Tensor,
    ay: torch.Tensor,
    ax: torch.Tensor,
    grid: tuple[torch.Tensor, torch.Tensor],
    size: tuple[torch.Tensor, torch.Tensor],
    start: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lighting model 2 (:data:`maskgen.paint.LIGHTING_MODELS`): the cells' luminance without
    their dark features, a weighted plane through it, and that plane over the window's
    pixels; returns the plane ``(B, h, w)`` and the cells' weighted mean ``(B,)``.

    ``lum`` ``(B, h, w)`` window luminance; ``cells`` ``(B, 6, 6)`` plain cell means;
    ``small_a`` their coverage weights; ``ay``/``ax`` the cells' sampling weights over the
    window's rows/columns; ``grid`` (rows, cols), ``size`` (h, w) and ``start`` (y0, x0) of
    each ROI within the window.
    """
    ay_in, ax_in = (ay > 0).to(lum.dtype), (ax > 0).to(lum.dtype)
    floor = ay_in.transpose(1, 2) @ (FEATURE_TRIM * cells) @ ax_in  # each pixel's cell's
    keep = (lum >= floor).to(lum.dtype)
    kept = ay_in @ keep @ ax_in.transpose(1, 2)
    trimmed = torch.where(
        kept > 0, (ay_in @ (lum * keep) @ ax_in.transpose(1, 2)) / kept.clamp_min(1), cells
    )
    rows, cols = grid
    k = torch.arange(6, device=lum.device, dtype=lum.dtype)
    yc = (2 * k[None] + 1) / rows[:, None] - 1  # (B, 6) cell centres in [-1, 1]
    xc = (2 * k[None] + 1) / cols[:, None] - 1
    ones = torch.ones_like(cells)
    feats = torch.stack(
        [ones, xc[:, None, :].expand_as(cells), yc[:, :, None].expand_as(cells)], -1
    )
    w = small_a[..., None]
    normal = (feats * w).flatten(1, 2).transpose(1, 2) @ feats.flatten(1, 2)  # (B, 3, 3)
    ridge = _RIDGE * normal[:, 0, 0]
    normal = normal + torch.diag_embed(torch.stack([torch.zeros_like(ridge), ridge, ridge], 1))
    rhs = ((feats * w).flatten(1, 2) * trimmed.flatten(1)[..., None]).sum(1)
    normal = torch.where(normal[:, :1, :1] > 1e-9, normal, torch.eye(3, device=lum.device))
    coef = torch.linalg.solve(normal.double(), rhs.double()[..., None])[..., 0].to(lum.dtype)
    mean = (trimmed * small_a).sum((1, 2)) / small_a.sum((1, 2)).clamp_min(1e-6)
    # The CPU evaluates the plane on a grid of at most PLANE_GRID per side and upsamples it
    # linearly, clamped at the outer centres: the same plane at the clamped coordinate.
    h, w = size
    y0, x0 = start
    out_r = torch.clamp(h, max=PLANE_GRID).clamp_min(1)
    out_c = torch.clamp(w, max=PLANE_GRID).clamp_min(1)
    py = torch.arange(lum.shape[1], device=lum.device, dtype=lum.dtype)[None] - y0[:, None]
    px = torch.arange(lum.shape[2], device=lum.device, dtype=lum.dtype)[None] - x0[:, None]
    sy = ((py + 0.5) * (out_r / h.clamp_min(1))[:, None] - 0.5).clamp_min(0)
    sy = torch.minimum(sy, (out_r - 1)[:, None])
    sx = ((px + 0.5) * (out_c / w.clamp_min(1))[:, None] - 0.5).clamp_min(0)
    sx = torch.minimum(sx, (out_c - 1)[:, None])
    yn, xn = (2 * sy + 1) / out_r[:, None] - 1, (2 * sx + 1) / out_c[:, None] - 1
    plane = (
        coef[:, 0, None, None]
        + coef[:, 1, None, None] * xn[:, None]
        + coef[:, 2, None, None] * yn[:, :, None]
    )
    return plane, mean


def face_lighting_batch(
    images: torch.Tensor,
    coverage: torch.Tensor,
    box: torch.Tensor,
    strength: torch.Tensor,
    window: tuple[int, int, int, int] | None = None,
    model: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched face lighting over per-sample ROIs: :func:`maskgen.paint.lighting_ratio`'s grid,
    cells, statistic and :data:`maskgen.paint.LIGHT_RANGE`, upsampled bilinearly over the box.

    Args:
        images: ``(B, 3, H, W)`` whole frames; box: ``(B, 4)`` ROIs (x0, y0, x1, y1) in frame
            pixels; strength: ``(B,)`` shading strength (0: no shading).
        coverage: occlusion maps (soft edges, opacity) of the ``window`` ``(x0, y0, x1, y1)``
            of the frames (default: whole frames), ``(B, h, w)``.
        model: ``(B,)`` lighting model per sample (:data:`maskgen.paint.LIGHTING_MODELS`;
            default: all the current one).

    Returns:
        ``(B, 1, h, w)`` float32 factor around 1 over ``window`` (meaningful inside each ROI).
    """
    B, C, H, W = images.shape
    wx0, wy0, wx1, wy1 = (0, 0, W, H) if window is None else window
    box = box.to(torch.float32)
    x0, y0, w, h = box[:, 0], box[:, 1], box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    gw = torch.clamp(torch.div(w, 6, rounding_mode="floor"), 2, 6)
    gh = torch.clamp(torch.div(h, 6, rounding_mode="floor"), 2, 6)
    ax_, ay_ = _cell_matrix(x0, w, gw, W), _cell_matrix(y0, h, gh, H)
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
    ratio = ratio.clamp(*LIGHT_RANGE) ** strength[:, None, None]
    ratio = torch.where(ok[:, None, None], ratio, torch.ones_like(ratio))
    ux = _linear_matrix(x0 - wx0, w, gw, wx1 - wx0)
    uy = _linear_matrix(y0 - wy0, h, gh, wy1 - wy0)
    cells_light = (uy @ (ratio @ ux.transpose(1, 2)))[:, None]
    planar = torch.ones(B, dtype=torch.bool, device=images.device) if model is None else model >= 2
    if not bool(planar.any()):
        return cells_light
    lum = (images[:, :, wy0:wy1, wx0:wx1].to(torch.float32) * luma[None, :, None, None]).sum(1)
    plane, pmean = _plane_light(lum, small, small_a, ay_w, ax_[:, :, wx0:wx1], (gh, gw),
                                (h, w), (y0 - wy0, x0 - wx0))  # fmt: skip
    ok2 = (pmean > 1e-6) & (strength != 0)
    light2 = plane / torch.where(ok2, pmean, torch.ones_like(pmean))[:, None, None]
    light2 = light2.clamp(*LIGHT_RANGE) ** strength[:, None, None]
    light2 = torch.where(ok2[:, None, None], light2, torch.ones_like(light2))[:, None]
    return torch.where(planar[:, None, None, None], light2, cells_light)


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
    geometry: BatchGeometry,
    params: dict[str, torch.Tensor],
    *,
    tiles: torch.Tensor | None = None,
    subsamples: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one mask per image: the functional core of :class:`maskgen.augment.RandomFaceMask`.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1]; never modified.
        geometry: the outlines of the draws
            (:func:`maskgen.augment.functional.batch_geometry`).
        params: per-sample tensors of length ``B`` (see :func:`maskgen.augment.draws_to_params`):
            ``color``, ``secondary_color``, ``strap_color`` (0–255), ``texture``,
            ``texture_scale``, ``texture_angle``, ``shading``, ``edge_softness``, ``opacity``;
            with ``tiles``, ``tile`` indexes its first axis.
        tiles: ``(K, 2, T, T)`` texture tiles (mix, shade); ``None``: untextured.
        subsamples: vertical supersampling of the rasteriser.

    Returns:
        The masked images (same dtype, differentiable w.r.t. ``images``) and the occlusion maps
        ``(B, 1, H, W)`` float32.

    All per-pixel work is done on the band of rows and columns that any mask of the batch
    touches; textures only for the textured samples. Without gradients to ``images`` the masks
    are blended straight into the output (on the CPU by chunks of :data:`CPU_CHUNK` samples);
    with them, by differentiable ops (``d out / d images = 1 - alpha``).

    Example:
        >>> import torch
        >>> from maskgen.augment import draws_to_params
        >>> from maskgen.augment.functional import batch_geometry
        >>> from maskgen.landmarks import aligned_landmarks
        >>> from maskgen.render import MaskParams
        >>> draws = [MaskParams(color=(0, 0, 255))]
        >>> g = batch_geometry(aligned_landmarks()[None], draws, 112, 112)
        >>> out, alpha = mask_batch(torch.full((1, 3, 112, 112), 0.5), g, draws_to_params(draws))
        >>> [round(float(v), 2) for v in out[0, :, 100, 56]], float(alpha[0, 0, 0, 0])
        ([0.0, 0.0, 1.0], 0.0)
    """
    B, _, H, W = images.shape
    device = images.device

    def p(name: str) -> torch.Tensor:
        return params[name].to(device)

    g = geometry
    polygon = offset_polygons(g.polygon.to(device), AA_OFFSET)
    sigma = p("edge_softness").float() * g.unit
    box = g.box.to(device)
    drawn = g.drawn.to(device)
    band = torch.stack([(box[:, 0] - 1).clamp_min(0), (box[:, 1] - 1).clamp_min(0),
                        (box[:, 2] + 1).clamp_max(W), (box[:, 3] + 1).clamp_max(H)], 1)  # fmt: skip
    shading = p("shading").float() * drawn
    texture = p("texture").long()
    textured = (texture > 0 if tiles is not None and "tile" in params else texture < 0) & drawn
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
    details = g.details.to(device)
    draw = {
        "polygon": polygon - shift,
        "sigma": sigma,
        "unit": g.unit.to(device).float(),
        "opacity": p("opacity").float() * drawn,
        "box": box,
        "shading": shading,
        "lighting": p("lighting").long() if "lighting" in params else torch.full_like(texture, 2),
        "textured": textured,
        "two_tone": two_tone,
        "origin": g.origin.to(device) - shift,
        "ax": g.ax.to(device),
        "period": p("texture_scale").float() * g.unit,
        "angle": p("texture_angle").float(),
        "tile": p("tile").long() if "tile" in params else texture,
        "primary": p("color").float() / 255.0,
        "secondary": p("secondary_color").float() / 255.0,
        "strap": p("strap_color").float() / 255.0,
    }
    window = (x0, y0, x1, y1)
    draw.update(_fabric_draws(g, params, textured, drawn, window, device))
    flags = (n_two > 0, n_shaded > 0)
    owner = g.owner.to(device)
    band = (y1 - y0, x1 - x0)
    if grad:
        layers = _detail_layers(g, details - shift, owner, 0, B, band, subsamples)
        band_out, alpha = _draw_band(images, draw, window, int(stats[6]), flags, tiles,
                                     subsamples, layers)  # fmt: skip
        out = _paste(images, band_out, x0, y0, x1, y1)
    else:
        out = _frame(images, x0, y0, x1, y1)
        alphas = []
        for i, s in enumerate(starts):
            part = {k: v[s : s + chunk] for k, v in draw.items()}
            layers = _detail_layers(g, details - shift, owner, s, min(B, s + chunk), band,
                                    subsamples)  # fmt: skip
            target = out[s : s + chunk, :, y0:y1, x0:x1]
            alphas.append(
                _draw_band(images[s : s + chunk], part, window, int(stats[6 + i]), flags, tiles,
                           subsamples, layers, target)[1]
            )  # fmt: skip
        alpha = alphas[0] if len(alphas) == 1 else torch.cat(alphas)
    alpha_full = F.pad(alpha[:, None], (x0, W - x1, y0, H - y1))
    return out, alpha_full


def _fabric_draws(
    g: BatchGeometry, params: dict[str, torch.Tensor], textured: torch.Tensor,
    drawn: torch.Tensor, window: tuple[int, int, int, int], device: torch.device,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The posed surface's per-sample draw tensors: its maps over the window (host-rasterised,
    only for samples whose texture or fabric shading uses them), scale, fabric strength,
    contact-shadow depth and the creases (their depth, and the lines the CPU renderer's
    :func:`maskgen.fabric.crease_lines` lays for the samples with fabric shading)."""
    B = len(drawn)
    zeros = torch.zeros(B, device=device)
    strength = params["fabric"].to(device).float() * drawn if "fabric" in params else zeros
    shadow = params["contact_shadow"].to(device).float() * drawn if "contact_shadow" in params \
        else zeros  # fmt: skip
    opacity = params["opacity"].to(device).float()
    outlines = g.outlines or (None,) * B
    posed = [o is not None and o.posed is not None for o in outlines]
    wanted = ((textured | (strength > 0)).cpu().tolist()) if any(posed) else [False] * B
    rows = [i for i in range(B) if posed[i] and wanted[i]]
    relief = [app.TEXTURE_RELIEF.get(app.TEXTURES[int(t)], 0.0)
              for t in params["texture"].tolist()]  # fmt: skip
    out = {
        "fabric": strength,
        "shadow_depth": shadow * float(fabric_.SHADOW_DEPTH) * opacity,
        "surfaced": torch.zeros(B, dtype=torch.bool, device=device),
        "scale": torch.ones(B, device=device),
        "relief": torch.tensor(relief, device=device, dtype=torch.float32).reshape(B),
        "down": torch.tensor([[0.0, 1.0, 0.0]] * B, device=device).reshape(B, 3),
    }
    if rows:
        h, w = window[3] - window[1], window[2] - window[0]
        maps = torch.zeros(B, 5, h, w, device=device)
        index = torch.tensor(rows, device=device)
        maps.index_copy_(0, index, surface_maps_batch(outlines, rows, window, device))
        out["maps"] = maps
        out["surfaced"][index] = True
        posed_faces = [outlines[i].posed for i in rows]  # type: ignore[union-attr]
        scale = [f.scale for f in posed_faces]  # type: ignore[union-attr]
        out["scale"][index] = torch.tensor(scale, device=device, dtype=torch.float32)
        down = np.stack([f.rotation[:, 1] for f in posed_faces])  # type: ignore[union-attr]
        out["down"][index] = torch.from_numpy(down).to(device, torch.float32)
        creases = params["creases"].to(device).float() * drawn if "creases" in params else zeros
        creased = [i for i, c in zip(rows, (creases[rows] * strength[rows]).tolist(),
                                     strict=True) if c > 0]  # fmt: skip
        if creased:
            seeds = params["texture_seed"].tolist()
            lines = np.zeros((B, fabric_.MAX_CREASES, fabric_.CREASE_FIELDS), np.float32)
            for i in creased:
                surface = outlines[i].surface()  # type: ignore[union-attr]
                lines[i] = fabric_.crease_lines(seeds[i], surface)
            out["creases"] = creases
            out["crease_lines"] = torch.from_numpy(lines).to(device)
    return out


class _Details(NamedTuple):
    """Detail coverages of the samples of a chunk that have details: ``rows`` ``(k,)`` their
    positions in the chunk, ``layers`` ``(k, len(LAYERS), h, w)``."""

    rows: torch.Tensor
    layers: torch.Tensor


def _detail_layers(
    g: BatchGeometry,
    details: torch.Tensor,
    owner: torch.Tensor,
    start: int,
    stop: int,
    band: tuple[int, int],
    subsamples: int,
) -> _Details | None:
    """The details of samples ``[start, stop)`` over the band (``None`` if they have none).

    Which samples have details is known on the host (:attr:`BatchGeometry.detail_offsets`),
    so the chunk's polygons are a slice and no work is spent on samples without details."""
    lo, hi = g.detail_offsets[start], g.detail_offsets[stop]
    if hi == lo:
        return None
    offsets = g.detail_offsets[start : stop + 1]
    rows = [i for i in range(stop - start) if offsets[i + 1] > offsets[i]]
    position = [0] * (stop - start)
    for k, i in enumerate(rows):
        position[i] = k
    device = details.device
    slot = torch.tensor(position, device=device)[owner[lo:hi] // len(LAYERS) - start]
    target = slot * len(LAYERS) + owner[lo:hi] % len(LAYERS)
    layers = rasterize_polygons(details[lo:hi], *band, subsamples, owner=target,
                                outputs=len(rows) * len(LAYERS))  # fmt: skip
    layers = layers.view(len(rows), len(LAYERS), *band)
    return _Details(torch.tensor(rows, device=device), layers)


def _detail_weights(
    layers: torch.Tensor, bare_loops: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The details laid in order (seam, valve, rim in tones of the primary colour, then the
    bare ear loops in the strap colour) as one blend per channel: ``colour · keep +
    primary · tone + strap · loop`` equals the four successive lerps, computed once for all
    channels instead of four times per channel."""
    seam, valve, rim = layers[:, _SEAM], layers[:, _VALVE], layers[:, _RIM]
    after_rim = 1 - bare_loops
    after_valve = (1 - rim) * after_rim
    after_seam = (1 - valve) * after_valve
    tone = (
        SEAM_TONE * seam * after_seam
        + VALVE_TONE * valve * after_valve
        + SEAM_TONE * rim * after_rim
    )
    return (1 - seam) * after_seam, tone, bare_loops


def _draw_band(
    images: torch.Tensor,
    q: dict[str, torch.Tensor],
    window: tuple[int, int, int, int],
    n_tex: int,
    flags: tuple[bool, bool],
    tiles: torch.Tensor | None,
    subsamples: int,
    details: _Details | None,
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
    fill = rasterize_polygons(q["polygon"], h, w, subsamples)
    alpha = fill
    bare_loops = None
    if details is not None:
        rows, loops = details.rows, details.layers[:, _LOOPS]
        under = fill.index_select(0, rows)
        # Loops show in the strap colour where the mask does not cover them (CPU: binary).
        bare_loops = ((loops > 0) & (under < 1)).to(fill.dtype)
        alpha = fill.index_copy(0, rows, torch.maximum(under, loops))
    darken = None
    if "shadow_depth" in q and bool((q["shadow_depth"] > 0).any()):
        band = contact_shadow_batch(alpha, q["unit"])
        darken = 1.0 - q["shadow_depth"][:, None, None] * band
    alpha = soften_batch(alpha, q["sigma"])
    alpha = alpha.mul_(q["opacity"][:, None, None])  # (B, h, w), owned
    crop = images[:, :, y0:y1, x0:x1]

    # Shade factor (B, h, w): face lighting times the textures' shade channel.
    shade: torch.Tensor | None = None
    if any_shaded:
        shade = face_lighting_batch(
            images.detach(), alpha, q["box"], q["shading"], window, q["lighting"]
        )[:, 0]
    mix: torch.Tensor | None = None
    surfaced = q.get("surfaced")
    if n_tex and tiles is not None:
        # The textured samples first (stable), without a host sync.
        sub = torch.sort((~q["textured"]).to(torch.uint8), stable=True).indices[:n_tex]
        # Only the tiles this chunk uses go into the atlas (the bank grows to every texture
        # variant the spec draws; laying all of them out per call would dominate).
        used, index = torch.unique(q["tile"][sub], return_inverse=True)
        field = texture_fields(
            tiles.to(device)[used], q["origin"][sub], q["ax"][sub], q["period"][sub],
            q["angle"][sub], h, w, index=index,
        )  # fmt: skip
        if "maps" in q and surfaced is not None and bool(surfaced[sub].any()):
            # Posed samples: the tile laid in surface coordinates instead of the image plane.
            on = surfaced[sub]
            rows_s = sub[on]
            field[on] = surface_fields(
                tiles.to(device)[used], q["maps"][rows_s, :2], q["scale"][rows_s],
                q["period"][rows_s], q["angle"][rows_s], index[on],
            )  # fmt: skip
        if shade is None:
            shade = torch.ones(B, h, w, device=device)
        shade.index_copy_(0, sub, shade.index_select(0, sub).mul_(field[:, 1]))
        if any_two:
            mix = torch.zeros(B, h, w, device=device)
            mix.index_copy_(0, sub, field[:, 0] * q["two_tone"][sub, None, None])
    if "maps" in q and surfaced is not None:
        lit = torch.nonzero(surfaced & (q["fabric"] > 0)).flatten()
        if lit.numel():
            light = light_directions(crop.index_select(0, lit).detach(), alpha[lit], q["ax"][lit])
            folds = None
            if tiles is not None and bool((q["relief"][lit] > 0).any()):
                phase = fold_phases(q["maps"][lit, :2], q["scale"][lit], q["period"][lit],
                                    q["angle"][lit], tiles.shape[-1])  # fmt: skip
                tilt = q["relief"][lit] * q["textured"][lit]
                folds = (tilt, q["down"][lit], phase)
            creases = None
            if "crease_lines" in q and bool((q["creases"][lit] > 0).any()):
                slope = crease_slopes_batch(q["maps"][lit, :2], q["crease_lines"][lit],
                                            q["creases"][lit])  # fmt: skip
                creases = (q["down"][lit], slope)
            relief = fabric_relief_batch(q["maps"][lit, 2:], alpha[lit], light, q["fabric"][lit],
                                         folds, creases)  # fmt: skip
            if shade is None:
                shade = torch.ones(B, h, w, device=device)
            shade.index_copy_(0, lit, shade.index_select(0, lit).mul_(relief))
    primary, secondary = q["primary"], q["secondary"]
    dtype = images.dtype
    alpha_x = alpha.to(dtype)

    strap = q["strap"]
    over = None if details is None else _detail_weights(details.layers, bare_loops)

    def plane(c: int) -> torch.Tensor:
        """Mask colour of channel ``c`` over the band, ``(B, h, w)``, clamped to [0, 1]."""
        pc = primary[:, c, None, None]
        if mix is not None:
            v = torch.addcmul(pc, mix, (secondary[:, c] - primary[:, c])[:, None, None])
            if shade is not None:
                v.mul_(shade)
        elif shade is not None:
            v = shade * pc
        elif details is None:
            return pc.clamp(0.0, 1.0).to(dtype).expand(B, h, w)
        else:
            v = pc.expand(B, h, w)
        if over is not None:  # the flat-coloured details, in order, over the shaded colour
            rows, (keep, tone, loop) = details.rows, over  # type: ignore[union-attr]
            sub = v.index_select(0, rows) * keep
            sub.addcmul_(pc.index_select(0, rows), tone)
            sub.addcmul_(strap[:, c, None, None].index_select(0, rows), loop)
            v = v.index_copy(0, rows, sub)
        return v.clamp(0.0, 1.0).to(dtype)  # unit range (the CPU path saturates too)

    if target is None:
        colour = torch.stack([plane(c) for c in range(images.shape[1])], 1)
        out = torch.lerp(crop, colour, alpha_x[:, None])
        if darken is not None:  # the contact shadow on the skin around the mask
            out = out * darken[:, None].to(dtype)
        return out, alpha
    for c in range(images.shape[1]):  # one colour plane at a time, any memory layout
        torch.lerp(crop[:, c], plane(c), alpha_x, out=target[:, c])
        if darken is not None:
            target[:, c].mul_(darken.to(dtype))
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
