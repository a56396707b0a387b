"""Online masking: a per-sample transform for ``DataLoader`` workers and a batched kornia
augmentation that masks a whole batch on its device.

- :class:`MaskFace`: numpy / PIL / ``C×H×W`` tensor in, same type out (CPU renderer, every
  appearance option, straps and valves included).
- :class:`MaskedPairs`: wraps a map-style dataset into ``(masked, clean, label, was_masked)``
  for teacher-student training; the clean image is never touched by masking.
- :class:`RandomFaceMask`: ``kornia.augmentation`` subclass, ``B×3×H×W`` on any device; the
  same draws (:mod:`maskgen.seeding`) and outlines (:func:`maskgen.render.mask_geometry`) as
  the CPU renderer, rasterised and painted by :mod:`maskgen.augment.functional`.

Both take the landmarks that geometric augmentations before them moved: ``MaskFace`` in
albumentations and torchvision v2 pipelines (:mod:`maskgen.augment.compat`, neither library
imported), ``RandomFaceMask`` from ``AugmentationSequential``'s ``keypoints``; flipped sets are
put back in semantic order (:mod:`maskgen.augment.keypoints`).

Example:
    >>> import numpy as np
    >>> from maskgen.augment import MaskFace
    >>> out = MaskFace(p=1.0)(np.full((112, 112, 3), 128, np.uint8), rng=np.random.default_rng(0))
    >>> out.shape, out.dtype.name
    ((112, 112, 3), 'uint8')
"""

from maskgen.augment.batched import RandomFaceMask
from maskgen.augment.draws import draws_to_params, params_to_draws, sample_batch
from maskgen.augment.transform import MaskedPairs, MaskFace

__all__ = [
    "MaskFace",
    "MaskedPairs",
    "RandomFaceMask",
    "draws_to_params",
    "params_to_draws",
    "sample_batch",
]
