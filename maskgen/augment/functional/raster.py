"""Batched rasterisation on the tensor's device: outlines → anti-aliased coverage.

The functional core under :class:`maskgen.augment.RandomFaceMask`: closed polygons of a
whole batch (the outlines :func:`maskgen.render.mask_geometry` builds, and the strokes and
discs of their details) become coverage maps with one sparse scanline accumulation, then
soft edges with a per-sample Gaussian.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["AA_OFFSET", "offset_polygons", "rasterize_polygons", "soften_batch"]

#: Outward offset (pixels) of the outlines before exact-area rasterisation: OpenCV's
#: anti-aliased polygon fill (the CPU renderer) adds a one-pixel AA line around the filled
#: interior, which grows the covered area by about this much along the boundary.
AA_OFFSET = 0.6


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
    polygons: torch.Tensor,
    height: int,
    width: int,
    subsamples: int = 4,
    owner: torch.Tensor | None = None,
    outputs: int | None = None,
) -> torch.Tensor:
    """Anti-aliased coverage ``(B, H, W)`` in [0, 1] of closed polygons ``(B, N, 2)``.

    With ``owner`` ``(B,)`` (indices below ``outputs``) several polygons draw into one map:
    ``(outputs, H, W)``, their winding numbers summed (the union, for shapes that overlap).

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
    n_out = B if owner is None else int(outputs if outputs is not None else B)
    if B == 0 or N < 2 or height <= 0 or width <= 0:
        return torch.zeros(n_out, max(height, 0), max(width, 0), device=device)
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
        return torch.zeros(n_out, height, width, device=device)
    # Per edge (gathered once per crossing): its first sub-row minus the rank of its first
    # crossing, start point (x, y in sub-rows), dx per sub-row, signed weight, first row.
    dy = y1 - y0
    step = (x1 - x0) / torch.where(dy == 0, torch.ones_like(dy), dy) / S
    start = torch.cumsum(count, 0) - count
    target = torch.arange(B, device=device) if owner is None else owner.to(device)
    sample = target.repeat_interleave(N)
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
    acc = torch.zeros(n_out * height * stride, device=device, dtype=torch.float32)
    acc.index_add_(0, base, weight - right)
    acc.index_add_(0, base + 1, right)
    return acc.view(n_out, height, stride).cumsum(2)[..., :width].clamp_(0, 1)


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
