"""Small, CPU-friendly backbones: MobileFaceNet (Chen et al., 2018) and ``tiny``.

MobileFaceNet is a MobileNetV2-style network for 112×112 faces: a stride-2 conv3×3 stem, a
depthwise conv3×3, a series of inverted-residual bottlenecks (1×1 expansion → depthwise 3×3 →
linear 1×1 projection, residual when the shape is unchanged), a 1×1 conv to 512 channels and a
*global depthwise convolution* (GDC: a linear 7×7 depthwise conv) instead of global average
pooling, followed by a linear layer to the embedding and BatchNorm1d. Activations are PReLU.

``mobilefacenet`` uses the bottleneck table of the paper (~1.2M parameters with a 512-d
embedding, ~1.0M with the paper's 128-d one).

``tiny`` (:class:`TinyFaceNet`) is a plain 4-stage CNN for tests and demos: four stride-2
conv3×3-BN-PReLU stages (16/32/64/128 channels, 112 → 7) with one residual block after the last
two, and the IResNet head (BN2d → dropout → flatten → FC → BN1d). Depthwise convolutions and
high-resolution layers are what make MobileFaceNet slow to *train* on a CPU, so ``tiny`` avoids
both; it trains at a few hundred images per second on two CPU cores
(see ``benchmarks/bench_backbones.py``). It is far less accurate than the other backbones.

Example:
    >>> import torch
    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny").eval()
    >>> net(torch.zeros(1, 3, 112, 112)).shape
    torch.Size([1, 512])
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .init import init_weights
from .registry import register_backbone

__all__ = ["Bottleneck", "MobileFaceNet", "TinyFaceNet", "mobilefacenet", "tiny"]

#: (expansion t, output channels c, repeats n, first stride s) — Table 1 of the paper.
MOBILEFACENET_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def _conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    padding: int | None = None,
) -> nn.Sequential:
    """conv (no bias, "same" padding by default) → BN (→ PReLU when ``act``)."""
    pad = kernel // 2 if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.PReLU(out_ch))
    return nn.Sequential(*layers)


def _scaled(channels: int, width: float) -> int:
    """Scale a channel count by ``width`` and round to a multiple of 8 (at least 8)."""
    return max(8, int(channels * width + 4) // 8 * 8)


class Bottleneck(nn.Module):
    """Inverted residual: 1×1 expand → depthwise 3×3 (stride) → linear 1×1 project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(
            _conv_bn(in_ch, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            _conv_bn(hidden, out_ch, 1, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet with configurable width, bottleneck table and GDC width.

    Args:
        embedding_size: output embedding dimension.
        settings: bottleneck table ``(t, c, n, s)``; channels are multiplied by ``width``.
        width: channel multiplier applied to the stem and the bottlenecks.
        stem_channels: stem width before the multiplier.
        gdc_channels: channels of the last 1×1 conv and of the global depthwise conv.
        dropout: dropout probability before the final linear layer.
    """

    input_size: tuple[int, int] = (112, 112)

    def __init__(
        self,
        embedding_size: int = 512,
        settings: Sequence[tuple[int, int, int, int]] = MOBILEFACENET_SETTINGS,
        width: float = 1.0,
        stem_channels: int = 64,
        gdc_channels: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.embedding_size = int(embedding_size)
        stem = _scaled(stem_channels, width)
        layers: list[nn.Module] = [
            _conv_bn(3, stem, 3, stride=2),
            _conv_bn(stem, stem, 3, groups=stem),
        ]
        in_ch = stem
        downsamples = 1
        for expansion, channels, repeats, stride in settings:
            out_ch = _scaled(channels, width)
            for i in range(repeats):
                layers.append(Bottleneck(in_ch, out_ch, stride if i == 0 else 1, expansion))
                in_ch = out_ch
            downsamples += stride == 2
        spatial = self.input_size[0] // 2**downsamples
        if spatial * 2**downsamples != self.input_size[0]:
            raise ValueError("the bottleneck table must downsample 112 by a power of two")
        layers.append(_conv_bn(in_ch, gdc_channels, 1))
        self.body = nn.Sequential(*layers)
        # Global depthwise conv: one linear spatial filter per channel, no activation.
        self.gdc = _conv_bn(
            gdc_channels, gdc_channels, spatial, groups=gdc_channels, act=False, padding=0
        )
        self.dropout = nn.Dropout(p=dropout)
        self.linear = nn.Linear(gdc_channels, self.embedding_size, bias=False)
        self.features = nn.BatchNorm1d(self.embedding_size)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``B×3×112×112`` images in ``[-1, 1]`` to ``B×embedding_size`` embeddings."""
        x = self.gdc(self.body(x)).flatten(1)
        return self.features(self.linear(self.dropout(x)))


class _ResidualBlock(nn.Module):
    """conv3×3-BN-PReLU-conv3×3-BN plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, channels, 3),
            _conv_bn(channels, channels, 3, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TinyFaceNet(nn.Module):
    """A very small 4-stage CNN for CPU tests and demos.

    Args:
        embedding_size: output embedding dimension.
        widths: channels of the four stride-2 stages (112 → 56 → 28 → 14 → 7).
        blocks: residual blocks after each stage.
        dropout: dropout probability before the FC layer.
    """

    input_size: tuple[int, int] = (112, 112)

    def __init__(
        self,
        embedding_size: int = 512,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (0, 0, 1, 1),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError("widths and blocks must have one entry per stage (4)")
        self.embedding_size = int(embedding_size)
        layers: list[nn.Module] = []
        in_ch = 3
        for width, n_blocks in zip(widths, blocks, strict=True):
            layers.append(_conv_bn(in_ch, width, 3, stride=2))
            layers += [_ResidualBlock(width) for _ in range(n_blocks)]
            in_ch = width
        self.body = nn.Sequential(*layers)
        spatial = self.input_size[0] // 16
        self.bn = nn.BatchNorm2d(in_ch)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * spatial * spatial, self.embedding_size)
        self.features = nn.BatchNorm1d(self.embedding_size)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``B×3×112×112`` images in ``[-1, 1]`` to ``B×embedding_size`` embeddings."""
        x = self.dropout(self.bn(self.body(x))).flatten(1)
        return self.features(self.fc(x))


@register_backbone
def mobilefacenet(embedding_size: int = 512, **kwargs: object) -> MobileFaceNet:
    """MobileFaceNet with the paper's bottleneck table (~1.2M parameters at 512-d)."""
    return MobileFaceNet(embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]


@register_backbone
def tiny(embedding_size: int = 512, **kwargs: object) -> TinyFaceNet:
    """Very small 4-stage CNN for CPU tests and demos (~3.7M parameters at 512-d)."""
    return TinyFaceNet(embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]
