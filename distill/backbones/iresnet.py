"""Improved ResNet (IResNet) backbones as used by ArcFace and ElasticFace.

Layout (for a 3×112×112 input normalised to ``[-1, 1]``):

* stem: conv3×3 (3→64, stride 1) → BN → PReLU;
* four stages of pre-activation "improved" basic blocks with 64/128/256/512 channels, each
  stage halving the resolution (112 → 56 → 28 → 14 → 7). A block computes
  ``BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN`` and adds the shortcut (identity, or
  conv1×1(stride) → BN on the first block of a stage); there is no activation after the sum;
* head: BN2d → dropout → flatten → FC(512·7·7 → embedding) → BN1d ("features").

The sub-module names follow the insightface ``arcface_torch`` layout (``conv1``, ``bn1``,
``prelu``, ``layer1``…``layer4``, ``bn2``, ``dropout``, ``fc``, ``features``), so that public
IResNet checkpoints trained with insightface/ElasticFace load with ``load_state_dict``. As in
those models the scale of the final ``features`` BatchNorm is fixed to 1 (only its shift is
trained) unless ``freeze_features_scale=False``.

Example:
    >>> import torch
    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("iresnet18", embedding_size=128).eval()
    >>> net(torch.zeros(1, 3, 112, 112)).shape
    torch.Size([1, 128])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .init import init_weights
from .registry import register_backbone

__all__ = ["IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]

_BN_EPS = 1e-5
_STAGE_WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
    """Pre-activation residual block ``BN-conv3x3-BN-PReLU-conv3x3(stride)-BN`` + shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels, eps=_BN_EPS),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet for 112×112 face crops.

    Args:
        layers: number of blocks in each of the four stages.
        embedding_size: output embedding dimension.
        dropout: dropout probability before the FC layer (0 disables it).
        freeze_features_scale: keep the final BatchNorm1d scale fixed at 1 (insightface
            convention); its shift is still learned.
        zero_init_residual: initialise the last BN of every block to zero so that each block
            starts as the identity (helps very deep nets; off by default).
    """

    input_size: tuple[int, int] = (112, 112)

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        freeze_features_scale: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {list(layers)}")
        self.embedding_size = int(embedding_size)
        self.layers_config = tuple(int(n) for n in layers)

        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        stages = []
        for width, n_blocks in zip(_STAGE_WIDTHS, self.layers_config, strict=True):
            blocks = [IBasicBlock(in_channels, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        spatial = self.input_size[0] // 16
        self.bn2 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels * spatial * spatial, self.embedding_size)
        self.features = nn.BatchNorm1d(self.embedding_size, eps=_BN_EPS)

        self._init_weights(zero_init_residual)
        if freeze_features_scale:
            self.features.weight.requires_grad_(False)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_weights(self)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, IBasicBlock):
                    nn.init.zeros_(module.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``B×3×112×112`` images in ``[-1, 1]`` to ``B×embedding_size`` embeddings."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        x = self.fc(torch.flatten(x, 1))
        return self.features(x)


@register_backbone
def iresnet18(embedding_size: int = 512, **kwargs: object) -> IResNet:
    """IResNet-18: stages [2, 2, 2, 2] (~24M parameters with a 512-d embedding)."""
    return IResNet([2, 2, 2, 2], embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]


@register_backbone
def iresnet34(embedding_size: int = 512, **kwargs: object) -> IResNet:
    """IResNet-34: stages [3, 4, 6, 3] (~34M parameters with a 512-d embedding)."""
    return IResNet([3, 4, 6, 3], embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]


@register_backbone
def iresnet50(embedding_size: int = 512, **kwargs: object) -> IResNet:
    """IResNet-50: stages [3, 4, 14, 3] (~43.6M parameters with a 512-d embedding)."""
    return IResNet([3, 4, 14, 3], embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]


@register_backbone
def iresnet100(embedding_size: int = 512, **kwargs: object) -> IResNet:
    """IResNet-100: stages [3, 13, 30, 3] (~65M parameters with a 512-d embedding)."""
    return IResNet([3, 13, 30, 3], embedding_size=embedding_size, **kwargs)  # type: ignore[arg-type]
