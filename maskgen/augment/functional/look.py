"""The photo's own look on the batched path: the CPU renderer's noise, blur, colour match
and JPEG compression.

The looks are measured on the host with :func:`maskgen.photo.photo_look` (the same sampled
estimators, so both paths give a draw the same look; a CUDA batch is copied to the host for
it, once per call); the colours are matched before painting, the blur and the noise are
applied to the painted batch on its own device, with :mod:`maskgen.photo`'s noise tile and
offsets, and the compression box by box on the device
(:func:`maskgen.augment.functional.jpeg.jpeg_roundtrip`, the CPU path's tables and grid).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from maskgen.augment.functional.geometry import BatchGeometry
from maskgen.augment.functional.jpeg import jpeg_roundtrip
from maskgen.jpeg import mcu_box, noise_survival
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
    keys = [k for k in ("noise", "blur", "color_match", "compression") if k in params]
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
    compression = _values(params, "compression", len(wanted))
    return [
        photo_look(host[i], face_region(origin[i], ax[i], float(unit[i]), H, W), 1.0,
                   jpeg=compression[i] > 0)
        if want else None
        for i, want in enumerate(wanted)
    ]  # fmt: skip


def _values(params: dict[str, torch.Tensor], key: str, n: int) -> list[float]:
    """A per-sample scalar of the draws as host floats (zeros where the params lack it)."""
    return params[key].cpu().tolist() if key in params else [0.0] * n


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


def _batched_blur(out: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Each sample blurred by its own σ (0: left as it is) in one grouped, separable
    convolution: per-sample kernels of :func:`maskgen.photo.blur_kernel_size` taps, zero-padded
    to the largest, reflected at the frame's border."""
    B, C, H, W = out.shape
    size = max(blur_kernel_size(s) for s in sigmas if s > 0)
    size = min(size, 2 * ((min(H, W) - 1) // 2) + 1)  # reflection needs a smaller pad
    r = size // 2
    kernels = torch.zeros(B, size, dtype=torch.float32)
    for i, sigma in enumerate(sigmas):
        if sigma > 0:
            k = _gaussian(sigma)
            k = k[max(0, (k.numel() - size) // 2) : k.numel() - max(0, (k.numel() - size) // 2)]
            kernels[i, r - k.numel() // 2 : r + k.numel() // 2 + 1] = k / k.sum()
        else:
            kernels[i, r] = 1.0
    k = kernels.to(out.device, out.dtype).repeat_interleave(C, 0)  # (B·C, size)
    x = out.reshape(1, B * C, H, W)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(B * C, 1, 1, size), groups=B * C)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(B * C, 1, size, 1), groups=B * C)
    return x.view(B, C, H, W)


def apply_look(
    out: torch.Tensor,
    alpha: torch.Tensor,
    geometry: BatchGeometry,
    params: dict[str, torch.Tensor],
    looks: list[PhotoLook | None],
    per_sample: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur each painted sample as its photo is blurred, then give it the photo's noise
    under the mask (the CPU renderer's order and formulas, the noise cut from the same tile
    at the same offsets of its box), within the occlusion maps, for the whole batch at once;
    returns the pixels and the (unchanged) maps.

    ``out`` ``(B, 3, H, W)`` in [0, 1]; ``alpha`` ``(B, 1, H, W)`` the occlusion maps
    (opacity applied). On an accelerator the blur runs over whole frames, where the CPU
    renderer blurs the mask's box: they differ only within a few pixels of the box's edge;
    on the CPU it runs box by box (``per_sample``: force either way).
    """
    if all(look is None for look in looks):
        return out, alpha
    if per_sample or (per_sample is None and out.device.type == "cpu"):
        return _look_per_sample(out, alpha, geometry, params, looks)
    B, _, H, W = out.shape
    device = out.device
    boxes = geometry.box.detach().cpu().long().tolist()
    opacity = params["opacity"].detach().cpu().double().clamp_min(1e-6)
    blur = params["blur"].cpu().tolist()
    noise = params["noise"].cpu().tolist()
    seeds = params["texture_seed"].cpu().tolist()
    sigmas, spreads = [0.0] * B, [0.0] * B
    for i, look in enumerate(looks):
        x0, y0, x1, y1 = boxes[i]
        if look is None or x1 <= x0 or y1 <= y0:
            continue
        if blur[i] * look.blur >= MIN_BLUR:
            sigmas[i] = blur[i] * look.blur
        if noise[i] * look.noise >= MIN_NOISE:
            spreads[i] = noise[i] * look.noise / 255.0
    cover = alpha / opacity.to(device, alpha.dtype)[:, None, None, None]  # before opacity
    if any(sigmas):
        blurred = _batched_blur(out, sigmas)
        has_blur = torch.tensor([s > 0 for s in sigmas], device=device)[:, None, None, None]
        reach = ((cover >= REACH_FLOOR) & has_blur).to(out.dtype)
        out = out + reach * (blurred - out)
    if any(spreads):
        tile = torch.from_numpy(noise_tile()).to(device, out.dtype)
        n = tile.shape[0]
        starts = [noise_offsets(int(seeds[i]), y1 - y0, x1 - x0)
                  for i, (x0, y0, x1, y1) in enumerate(boxes)]  # fmt: skip
        origin = torch.tensor([[b[1], b[0]] for b in boxes], device=device)  # (y0, x0)
        offset = torch.tensor(starts, device=device)
        ys = (offset[:, :1] + torch.arange(H, device=device)[None] - origin[:, :1]) % n
        xs = (offset[:, 1:] + torch.arange(W, device=device)[None] - origin[:, 1:]) % n
        grain = tile[ys[:, :, None], xs[:, None, :]]  # (B, H, W), each box's own cut
        spread = torch.tensor(spreads, device=device, dtype=out.dtype)[:, None, None, None]
        out = out + (alpha * spread * grain[:, None]).to(out.dtype)
    out = out.clamp(0.0, 1.0)
    if _compressed(params, looks):
        samples = list(out.unbind(0))
        _compress_samples(samples, alpha, geometry, params, looks)
        out = torch.stack(samples)
    return out, alpha


def _compressed(params: dict[str, torch.Tensor], looks: list[PhotoLook | None]) -> list[bool]:
    """Which samples get their photo's JPEG compression (none: an empty list)."""
    strength = _values(params, "compression", len(looks))
    wanted = [look is not None and look.jpeg is not None and strength[i] > 0
              for i, look in enumerate(looks)]  # fmt: skip
    return wanted if any(wanted) else []


def _box_noise(
    roi: torch.Tensor, cover: torch.Tensor, spread: float, seed: int, tile: torch.Tensor
) -> torch.Tensor:
    """``roi`` (C, h, w) plus the draw's noise over its box: the tile cut at
    :func:`maskgen.photo.noise_offsets` of ``seed``, times ``spread`` and ``cover``."""
    h, w = roi.shape[1:]
    oy, ox = noise_offsets(int(seed), h, w)
    n = tile.shape[0]
    rows = (oy + torch.arange(h, device=roi.device)) % n
    cols = (ox + torch.arange(w, device=roi.device)) % n
    return roi + (cover * spread * tile[rows][:, cols])[None]


def _compress_samples(
    samples: list[torch.Tensor],
    alpha: torch.Tensor,
    geometry: BatchGeometry,
    params: dict[str, torch.Tensor],
    looks: list[PhotoLook | None],
) -> None:
    """The CPU renderer's compression step (``maskgen.render._codec_pixels``, then the noise
    pass) for each sample that wants it, in place in ``samples``: the mask's box, widened to
    whole MCUs of the photo's grid (:func:`maskgen.jpeg.mcu_box`), through
    :func:`jpeg_roundtrip` at the photo's scale times ``compression``, taken wherever the
    mask reaches, as the blur is; then the noise the compression took away, from the draw's
    texture seed + 1."""
    strength = _values(params, "compression", len(looks))
    noise = _values(params, "noise", len(looks))
    opacity = _values(params, "opacity", len(looks))
    seeds = params["texture_seed"].cpu().tolist()
    boxes = geometry.box.detach().cpu().long().tolist()
    tile = None
    for i, wanted in enumerate(_compressed(params, looks)):
        look = looks[i]
        x0, y0, x1, y1 = boxes[i]
        if not wanted or look is None or look.jpeg is None or x1 <= x0 or y1 <= y0:
            continue
        frame = samples[i]
        (gx0, gy0, gx1, gy1), start = mcu_box((x0, y0, x1, y1), look.jpeg.phase,
                                              frame.shape[1], frame.shape[2])  # fmt: skip
        scale = look.jpeg.scale * strength[i]
        decoded = jpeg_roundtrip(frame[:, gy0:gy1, gx0:gx1], scale, start)
        roi = frame[:, y0:y1, x0:x1]
        a = alpha[i, 0, y0:y1, x0:x1].to(roi.dtype)  # opacity applied
        reach = (a / max(opacity[i], 1e-6) >= REACH_FLOOR).to(roi.dtype)
        roi = roi + reach * (decoded[:, y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0] - roi)
        spread = noise[i] * look.noise / 255.0
        if spread >= MIN_NOISE / 255.0:
            if tile is None:
                tile = torch.from_numpy(noise_tile()).to(frame.device, frame.dtype)
            kept = noise_survival(scale, noise[i] * look.noise)
            roi = _box_noise(roi, a, spread * (1 - kept * kept) ** 0.5, seeds[i] + 1, tile)
        frame = frame.clone()
        frame[:, y0:y1, x0:x1] = roi.clamp(0.0, 1.0)
        samples[i] = frame


def _look_per_sample(
    out: torch.Tensor,
    alpha: torch.Tensor,
    geometry: BatchGeometry,
    params: dict[str, torch.Tensor],
    looks: list[PhotoLook | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_look` sample by sample over each mask's box, as the CPU renderer does
    (cheaper on the CPU, where a grouped convolution over whole frames costs more)."""
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
            roi = _box_noise(roi, a * opacity[i], spread, seeds[i], tile)
        sample = samples[i].clone()
        sample[:, y0:y1, x0:x1] = roi.clamp(0.0, 1.0)
        samples[i] = sample
    if _compressed(params, looks):
        _compress_samples(samples, alpha, geometry, params, looks)
    return torch.stack(samples), alpha
