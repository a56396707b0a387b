"""distill: mask-invariant face recognition by teacher-student ElasticFace distillation.

The public API: :func:`create_backbone` (timm-style registry: iresnet18/34/50/100,
mobilefacenet, tiny), :func:`load_backbone` (a checkpoint's backbone), :func:`train` (the
teacher and student stages of ``distill train``) and :func:`evaluate_models` (NM-NM, M-NM and
M-M scores of ``distill eval``). Names are loaded on first use.

Example:
    >>> from distill import create_backbone
    >>> create_backbone("tiny", embedding_size=8).__class__.__name__
    'TinyFaceNet'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_backbone": "distill.backbones",
    "load_backbone": "distill.checkpoint",
    "train": "distill.training",
    "evaluate_models": "distill.eval",
    "load_config": "distill.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
