"""Facial landmark conventions, the aligned-crop layout, validation and detector backends."""

from maskgen.landmarks.aligned import (
    aligned_landmarks,
    canonical_68,
    landmarks_from_five,
    perturb_shape,
)
from maskgen.landmarks.conventions import (
    ARCFACE_112,
    ARCFACE_SIZE,
    apply_affine,
    similarity_transform,
    to_five,
)
from maskgen.landmarks.mirror import MIRROR_5, MIRROR_68, mirror_landmarks
from maskgen.landmarks.validation import plausibility_problem, validate_landmarks

__all__ = [
    "ARCFACE_112",
    "ARCFACE_SIZE",
    "MIRROR_5",
    "MIRROR_68",
    "aligned_landmarks",
    "apply_affine",
    "canonical_68",
    "landmarks_from_five",
    "mirror_landmarks",
    "perturb_shape",
    "plausibility_problem",
    "similarity_transform",
    "to_five",
    "validate_landmarks",
]
