"""The ``auto`` backend: face_alignment when its weights load, else dlib; 112×112 crops
use the aligned layout.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks.backends.aligned import AlignedLayout
    >>> auto = AutoBackend(AlignedLayout())
    >>> auto.name, auto.detect(np.zeros((112, 112, 3), np.uint8))[0].backend
    ('auto(aligned)', 'aligned')
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from maskgen.landmarks.backends.aligned import AlignedLayout
from maskgen.landmarks.backends.base import Backend, Face, register_backend
from maskgen.landmarks.backends.dlib import DlibDetector
from maskgen.landmarks.backends.downscale import Downscaled
from maskgen.landmarks.backends.fan import FaceAlignmentDetector, FaceAlignmentWeightsError
from maskgen.landmarks.conventions import ARCFACE_SIZE


class AutoBackend:
    """``primary`` for ordinary images, the aligned layout for 112×112 crops."""

    def __init__(self, primary: Any) -> None:
        self.primary = primary
        self.aligned = AlignedLayout()
        self.name = f"auto({primary.name})"

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        if image.shape[:2] == (ARCFACE_SIZE, ARCFACE_SIZE):
            return self.aligned.detect(image, key)
        return self.primary.detect(image, key)


@register_backend("auto")
def create_auto(
    *,
    fa_weights: str | os.PathLike[str] | None = None,
    fa_detector: str = "sfd",
    fa_detector_weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    upsample: int = 1,
    detect_max_side: int = 800,
) -> Backend:
    """face_alignment when its weights load (without any download), else dlib's HOG.

    Either runs on images downscaled to ``detect_max_side``; 112×112 images use the
    aligned layout.
    """
    try:
        fa = FaceAlignmentDetector(
            fa_weights, detector=fa_detector, detector_weights=fa_detector_weights, device=device
        )
        primary: Backend = Downscaled(fa, detect_max_side)
    except FaceAlignmentWeightsError:
        primary = Downscaled(DlibDetector(upsample), detect_max_side)
    return AutoBackend(primary)
