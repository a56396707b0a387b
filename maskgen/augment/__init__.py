"""Online masking: a per-sample transform for ``DataLoader`` workers and a batched kornia
augmentation that masks a whole batch on its device.

- :class:`MaskFace`: numpy / PIL / ``C×H×W`` tensor in, same type out (CPU renderer, every
  appearance option, straps and valves included).
- :class:`MaskedPairs`: wraps a map-style dataset into ``(masked, clean, label, was_masked)``
  for teacher-student training; the clean image is never touched by masking.
- :class:`RandomFaceMask`: ``kornia.augmentation`` subclass, ``B×3×H×W`` on any device.

Example:
    >>> import numpy as np
    >>> from maskgen.augment import MaskFace
    >>> out = MaskFace(p=1.0)(np.full((112, 112, 3), 128, np.uint8), rng=np.random.default_rng(0))
    >>> out.shape, out.dtype.name
    ((112, 112, 3), 'uint8')
"""

from maskgen.augment.batched import (
    FaceMaskGenerator,
    RandomFaceMask,
    batch_outlines,
    mask_batch,
    rasterize_polygons,
)
from maskgen.augment.transform import MaskedPairs, MaskFace

__all__ = [
    "FaceMaskGenerator",
    "MaskFace",
    "MaskedPairs",
    "RandomFaceMask",
    "batch_outlines",
    "mask_batch",
    "rasterize_polygons",
]
