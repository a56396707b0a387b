"""Facial landmark conventions, the aligned-crop layout, validation, detector backends and
face selection.

Backends are built by name from a registry (:mod:`maskgen.landmarks.backends`); dlib,
torch and face_alignment load only when a backend needing them is created.

Example:
    >>> from maskgen.landmarks import available_backends, create_backend
    >>> "dlib" in available_backends(), create_backend("aligned").name
    (True, 'aligned')
"""

from maskgen.landmarks.aligned import (
    aligned_landmarks,
    canonical_68,
    landmarks_from_five,
    perturb_shape,
)
from maskgen.landmarks.backends import (
    AlignedFit,
    AlignedLayout,
    AutoBackend,
    Backend,
    BackendFactory,
    DlibDetector,
    Downscaled,
    Face,
    FaceAlignmentDetector,
    FaceAlignmentWeightsError,
    FileLandmarks,
    available_backends,
    box_of,
    create_backend,
    load_annotation,
    read_pts,
    register_backend,
    unregister_backend,
)
from maskgen.landmarks.cache import LandmarkCache, LandmarkCacheError, WithLandmarks
from maskgen.landmarks.conventions import (
    ARCFACE_112,
    ARCFACE_SIZE,
    apply_affine,
    quantise,
    similarity_transform,
    to_five,
)
from maskgen.landmarks.mirror import MIRROR_5, MIRROR_68, mirror_landmarks
from maskgen.landmarks.pose import HeadPose, head_pose
from maskgen.landmarks.selection import face_problem, select_faces, skin_fraction
from maskgen.landmarks.validation import plausibility_problem, validate_landmarks

__all__ = [
    "ARCFACE_112",
    "ARCFACE_SIZE",
    "MIRROR_5",
    "MIRROR_68",
    "AlignedFit",
    "AlignedLayout",
    "AutoBackend",
    "Backend",
    "BackendFactory",
    "DlibDetector",
    "Downscaled",
    "Face",
    "FaceAlignmentDetector",
    "FaceAlignmentWeightsError",
    "FileLandmarks",
    "HeadPose",
    "LandmarkCache",
    "LandmarkCacheError",
    "WithLandmarks",
    "aligned_landmarks",
    "apply_affine",
    "available_backends",
    "box_of",
    "canonical_68",
    "create_backend",
    "face_problem",
    "head_pose",
    "landmarks_from_five",
    "load_annotation",
    "mirror_landmarks",
    "perturb_shape",
    "plausibility_problem",
    "quantise",
    "read_pts",
    "register_backend",
    "select_faces",
    "similarity_transform",
    "skin_fraction",
    "to_five",
    "unregister_backend",
    "validate_landmarks",
]
