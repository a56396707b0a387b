"""The ``aligned`` backend: crops already aligned to the ArcFace template, no detector.

The landmarks are the canonical 68-point layout (:mod:`maskgen.landmarks.aligned`) scaled
to the crop.
"""

from __future__ import annotations

import numpy as np

from maskgen.landmarks.aligned import aligned_landmarks
from maskgen.landmarks.backends.base import Backend, Face, register_backend


class AlignedLayout:
    """Crops already aligned to the ArcFace template: the canonical 68 points, no detector.

    Example:
        >>> import numpy as np
        >>> face = AlignedLayout().detect(np.zeros((224, 224, 3), np.uint8))[0]
        >>> face.box, round(float(face.landmarks[30, 0]))
        ((0.0, 0.0, 224.0, 224.0), 112)
    """

    name = "aligned"

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        h, w = image.shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), aligned_landmarks((h, w)), 1.0, self.name)]


@register_backend("aligned")
def create_aligned() -> Backend:
    """The aligned layout; it takes no options."""
    return AlignedLayout()
