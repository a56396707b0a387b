"""Face-recognition backbones behind a timm-style registry.

Importing this package registers ``iresnet18``, ``iresnet34``, ``iresnet50``, ``iresnet100``,
``mobilefacenet`` and ``tiny``. Every backbone maps ``B×3×112×112`` images normalised to
``[-1, 1]`` to ``B×embedding_size`` embeddings and exposes ``embedding_size`` and
``input_size = (112, 112)``. :func:`infer_arch` tells the architecture of a plain state dict
(insightface / ElasticFace IResNet weights) from its keys.

Example:
    >>> import torch
    >>> from distill.backbones import create_backbone, list_backbones
    >>> list_backbones()
    ['iresnet100', 'iresnet18', 'iresnet34', 'iresnet50', 'mobilefacenet', 'tiny']
    >>> net = create_backbone("tiny", embedding_size=128).eval()
    >>> (net.embedding_size, net.input_size, tuple(net(torch.zeros(1, 3, 112, 112)).shape))
    (128, (112, 112), (1, 128))
"""

from . import iresnet, mobilefacenet
from .infer import ArchInferenceError, infer_arch
from .iresnet import IResNet
from .mobilefacenet import MobileFaceNet, TinyFaceNet
from .registry import create_backbone, list_backbones, register_backbone

__all__ = [
    "ArchInferenceError",
    "IResNet",
    "MobileFaceNet",
    "TinyFaceNet",
    "create_backbone",
    "infer_arch",
    "iresnet",
    "list_backbones",
    "mobilefacenet",
    "register_backbone",
]
