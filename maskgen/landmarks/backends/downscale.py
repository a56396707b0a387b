""":class:`Downscaled`: detect on a smaller copy of big images, landmarks at full size.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks.backends.aligned import AlignedLayout
    >>> big = np.zeros((400, 200, 3), np.uint8)  # detected at 200×100, boxes scaled back
    >>> Downscaled(AlignedLayout(), max_side=200).detect(big)[0].box
    (0.0, 0.0, 200.0, 400.0)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from maskgen.landmarks.backends.base import Face


class Downscaled:
    """Detect on a copy of the image whose longer side is at most ``max_side``.

    Boxes are scaled back; when the inner backend can place landmarks inside a box
    (``landmarks_in_box``), they are recomputed on the full-resolution image.
    """

    def __init__(self, inner: Any, max_side: int = 800) -> None:
        self.inner = inner
        self.max_side = int(max_side)
        self.name: str = inner.name

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        import cv2  # here, not at import: importing maskgen.landmarks stays cheap

        h, w = image.shape[:2]
        factor = max(h, w) / self.max_side if self.max_side > 0 else 1.0
        if factor <= 1.0:
            return self.inner.detect(image, key)
        small = cv2.resize(
            image, (max(1, round(w / factor)), max(1, round(h / factor))),
            interpolation=cv2.INTER_AREA,
        )  # fmt: skip
        faces = [f.scaled(factor) for f in self.inner.detect(small, key)]
        refine = getattr(self.inner, "landmarks_in_box", None)
        if refine is None:
            return faces
        return [replace(f, landmarks=refine(image, f.box)) for f in faces]
