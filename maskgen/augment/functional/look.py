"""The photo's own look on the batched path: the CPU renderer's noise, blur and colour match.

The looks are measured on the host with :func:`maskgen.photo.photo_look` (the same sampled
estimators, so both paths give a draw the same look; a CUDA batch is copied to the host for
it, once per call); the colours are matched before painting, the blur and the noise are
applied to the painted batch on its own device, with :mod:`maskgen.photo`'s noise tile and
offsets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from maskgen.augment.functional.geometry import BatchGeometry
from maskgen.photo import (
    MIN_BLUR,
    MIN_NOISE,
    REACH_FLOOR,
    PhotoLook,
    blur_kernel_size,
    face_region,
    match_colours,
    noise_offsets,
    noise_tile,
    photo_look,
)

__all__ = ["apply_look", "match_look_colours", "measure_looks"]

_COLOURS = ("color", "secondary_color", "strap_color")


def _wants_look(params: dict[str, torch.Tensor]) -> torch.Tensor:
    keys = [k for k in ("noise", "blur", "color_match") if k in params]
    if not keys:
        return torch.zeros(params["family"].shape[0], dtype=torch.bool)
    return torch.stack([params[k].cpu() > 0 for k in keys]).any(0)


def measure_looks(
    images: torch.Tensor, geometry: BatchGeometry, params: dict[str, torch.Tensor]
) -> list[PhotoLook | None]:
    """Each sample's :class:`~maskgen.photo.PhotoLook` (``None`` where its draw wants none or
    no mask is drawn), measured on a host copy of the batch (values in [0, 1])."""
    wanted = (_wants_look(params) & geometry.drawn.cpu()).tolist()
    if not any(wanted):
        return [None] * len(wanted)
    host = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
    origin, ax, unit = (
        t.detach().cpu().numpy() for t in (geometry.origin, geometry.ax, geometry.unit)
    )
    H, W = host.shape[1:3]
    return [
        photo_look(host[i], face_region(origin[i], ax[i], float(unit[i]), H, W), 1.0)
        if want else None
        for i, want in enumerate(wanted)
    ]  # fmt: skip


def match_look_colours(
    params: dict[str, torch.Tensor], looks: list[PhotoLook | None]
) -> dict[str, torch.Tensor]:
    """The params with each sample's colours given its photo's cast and colourlessness (a
    copy; ``color_match`` of each draw)."""
    if all(look is None for look in looks) or "color_match" not in params:
        return params
    out = dict(params)
    strength = params["color_match"].cpu().tolist()
    for key in _COLOURS:
        colours = params[key].detach().cpu().numpy().astype(np.float32).copy()
        for i, look in enumerate(looks):
            if look is not None and strength[i] > 0:
                colours[i] = match_colours(colours[i], look, strength[i])
        out[key] = torch.from_numpy(colours).to(params[key])
    return out


def _gaussian(sigma: float) -> torch.Tensor:
    """The CPU renderer's Gaussian kernel (:func:`maskgen.photo.blur_kernel_size` taps)."""
    size = blur_kernel_size(sigma)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).to(torch.float32)


def _blur(plane: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, h, w)`` with OpenCV's default border (reflect 101)."""
    k = _gaussian(sigma).to(plane.device, plane.dtype)
    r = k.numel() // 2
    c = plane.shape[0]
    x = plane[None]
    pad_w, pad_h = min(r, plane.shape[2] - 1), min(r, plane.shape[1] - 1)
    x = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x
    kw = k[max(0, r - pad_w) : k.numel() - max(0, r - pad_w)]
    x = F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else x
    kh = k[max(0, r - pad_h) : k.numel() - max(0, r - pad_h)]
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def apply_look(
    out: torch.Tensor,
    alpha: torch.Tensor,
    geometry: BatchGeometry,
    params: dict[str, torch.Tensor],
    looks: list[PhotoLook | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur each painted sample as its photo is blurred, then give it the photo's noise
    under the mask, over its box (the CPU renderer's order and formulas), within the
    occlusion maps; returns the pixels and the (unchanged) maps.

    ``out`` ``(B, 3, H, W)`` in [0, 1]; ``alpha`` ``(B, 1, H, W)`` the occlusion maps
    (opacity applied).
    """
    if all(look is None for look in looks):
        return out, alpha
    boxes = geometry.box.detach().cpu().tolist()
    blur, noise = params["blur"].cpu().tolist(), params["noise"].cpu().tolist()
    opacity = params["opacity"].cpu().tolist()
    seeds = params["texture_seed"].cpu().tolist()
    tile = None
    samples = list(out.unbind(0))
    for i, look in enumerate(looks):
        if look is None:
            continue
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        if x1 <= x0 or y1 <= y0:
            continue
        roi = samples[i][:, y0:y1, x0:x1]
        a = alpha[i, 0, y0:y1, x0:x1] / max(opacity[i], 1e-6)  # the map before opacity
        sigma = blur[i] * look.blur
        if sigma >= MIN_BLUR:  # the blurred picture wherever the mask reaches
            reach = (a >= REACH_FLOOR).to(roi.dtype)
            roi = roi + reach[None] * (_blur(roi, sigma) - roi)
        spread = noise[i] * look.noise / 255.0
        if spread >= MIN_NOISE / 255.0:
            if tile is None:
                tile = torch.from_numpy(noise_tile()).to(out.device, out.dtype)
            h, w = y1 - y0, x1 - x0
            oy, ox = noise_offsets(int(seeds[i]), h, w)
            n = tile.shape[0]
            rows = (oy + torch.arange(h, device=out.device)) % n
            cols = (ox + torch.arange(w, device=out.device)) % n
            grain = tile[rows][:, cols]
            roi = roi + (a * opacity[i] * spread * grain)[None]
        sample = samples[i].clone()
        sample[:, y0:y1, x0:x1] = roi.clamp(0.0, 1.0)
        samples[i] = sample
    return torch.stack(samples), alpha
