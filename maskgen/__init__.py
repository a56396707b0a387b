"""maskgen: landmark-driven synthetic face masks for masked-face recognition research.

The public API, in the order an image meets it:

- :class:`MaskSpec` (what may be drawn) → :class:`MaskParams` (one JSON draw) →
  :func:`render` (pixels and the occlusion map), all in :mod:`maskgen.render`;
- :func:`create_backend` (landmark backends: dlib, face-alignment, aligned, file, auto);
- :func:`render_dataset` (folders, ``.bin`` packs, ``.rec`` sets: ``maskgen render``);
- :class:`MaskFace`, :class:`MaskedPairs` (DataLoader workers) and :class:`RandomFaceMask`
  (a kornia augmentation on the batch's device), in :mod:`maskgen.augment`.

Everything else (the seeding scheme :mod:`maskgen.seeding`, the evaluation protocols
:mod:`maskgen.protocol`, readers and writers :mod:`maskgen.io`) is imported from its module.
Names are loaded on first use, so ``import maskgen`` does not import torch or kornia.

Example:
    >>> import numpy as np
    >>> from maskgen import MaskSpec, render
    >>> from maskgen.landmarks import aligned_landmarks
    >>> params = MaskSpec().sample(np.random.default_rng(0))
    >>> render(np.full((112, 112, 3), 128, np.uint8), aligned_landmarks(), params).image.shape
    (112, 112, 3)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported eagerly: the function ``render`` must shadow the module of the same name (``from
# maskgen.render import ...`` still reaches the module; ``import maskgen.render as m`` does not).
from maskgen.render import MaskParams, MaskSpec, RenderResult, render

_EXPORTS = {
    "create_backend": "maskgen.landmarks",
    "render_dataset": "maskgen.dataset",
    "RenderOptions": "maskgen.dataset",
    "MaskFace": "maskgen.augment",
    "MaskedPairs": "maskgen.augment",
    "RandomFaceMask": "maskgen.augment",
    "register_family": "maskgen.shapes",
    "FamilyGeometry": "maskgen.shapes",
}

__all__ = [
    "FamilyGeometry",
    "MaskFace",
    "MaskParams",
    "MaskSpec",
    "MaskedPairs",
    "RandomFaceMask",
    "RenderOptions",
    "RenderResult",
    "create_backend",
    "register_family",
    "render",
    "render_dataset",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maskgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
