"""The photo's JPEG compression on the batched path: baseline JPEG's lossy steps in torch.

The CPU renderer passes a mask's box through OpenCV's encoder and decoder
(:func:`maskgen.jpeg.compress`); here the same box goes through what those do to pixels,
on the sample's device: JFIF YCbCr, 4:2:0 chroma (2×2 means; libjpeg's "fancy" triangle
upsampling on the way back), the orthonormal 8×8 DCT, quantisation with the IJG tables of
the photo's scale (:func:`maskgen.jpeg.tables`, the same as the CPU path's), and back. The
rounding of the coefficients passes gradients straight through.

Example:
    >>> import torch
    >>> flat = torch.full((3, 16, 16), 0.5)
    >>> bool((jpeg_roundtrip(flat, 50.0) - flat).abs().max() < 1 / 255)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from maskgen.jpeg import DCT, MCU, tables

__all__ = ["jpeg_roundtrip"]

_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=torch.float64,
)
_FROM_YCC = torch.linalg.inv(_TO_YCC)


def _quantise(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """A level-shifted plane ``(h, w)`` (sides multiples of 8) through the 8×8 DCT,
    quantised to ``table``'s steps, and back."""
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(1, 2)
    coefficients = dct @ blocks @ dct.T
    steps = coefficients / table
    rounded = steps + (torch.round(steps) - steps).detach()  # straight-through rounding
    restored = dct.T @ (rounded * table) @ dct
    return restored.transpose(1, 2).reshape(h, w)


def _upsample(plane: torch.Tensor) -> torch.Tensor:
    """Twice the size with libjpeg's triangle filter: each output pixel weighs its own
    chroma sample 3/4 and the next one towards it 1/4, per axis."""
    padded = F.pad(plane[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    core = padded[1:-1]
    rows = torch.stack([0.75 * core + 0.25 * padded[:-2], 0.75 * core + 0.25 * padded[2:]], 1)
    rows = rows.reshape(2 * plane.shape[0], plane.shape[1] + 2)
    centre = rows[:, 1:-1]
    cols = torch.stack([0.75 * centre + 0.25 * rows[:, :-2], 0.75 * centre + 0.25 * rows[:, 2:]],
                       -1)  # fmt: skip
    return cols.reshape(rows.shape[0], 2 * plane.shape[1])


def jpeg_roundtrip(
    region: torch.Tensor, scale: float, phase: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """A ``(3, h, w)`` RGB region in [0, 1] as a baseline 4:2:0 JPEG at IJG scale ``scale``
    leaves it; ``phase``: where the grid's 16-pixel MCUs start in the region (the region
    is padded by repeating its edges to whole MCUs, as an encoder pads an image)."""
    _, h, w = region.shape
    top, left = (MCU - phase[0] % MCU) % MCU, (MCU - phase[1] % MCU) % MCU
    bottom, right = (-(top + h)) % MCU, (-(left + w)) % MCU
    x = region.to(torch.float64) * 255.0
    x = F.pad(x[None], (left, right, top, bottom), mode="replicate")[0]
    ycc = torch.einsum("ij,jhw->ihw", _TO_YCC.to(x.device), x)
    luma_table, chroma_table = (torch.from_numpy(t).to(x.device) for t in tables(scale))
    dct = torch.from_numpy(DCT).to(x.device, x.dtype)
    planes = [_quantise(ycc[0] - 128.0, luma_table, dct) + 128.0]
    for c in (1, 2):  # chroma is centred on 0 already
        small = F.avg_pool2d(ycc[c][None, None], 2)[0, 0]
        planes.append(_upsample(_quantise(small, chroma_table, dct)))
    rgb = torch.einsum("ij,jhw->ihw", _FROM_YCC.to(x.device), torch.stack(planes))
    rgb = rgb[:, top : top + h, left : left + w].clamp(0.0, 255.0)
    rgb = rgb + (torch.round(rgb) - rgb).detach()  # the decoder's 8-bit output
    return (rgb / 255.0).to(region.dtype)
