"""Landmark backends behind one interface: an RGB ``uint8`` image → a list of :class:`Face`.

Each backend module registers its backends (:func:`register_backend`, in :mod:`.base`);
:func:`create_backend` builds one by name (:func:`available_backends` lists them):

* ``face_alignment`` (:mod:`.fan`) — face-alignment's 2D FAN (68 points) on boxes from its
  S3FD detector (or from dlib's HOG detector); batched, on CUDA when present. Weights are
  never downloaded implicitly (:class:`FaceAlignmentWeightsError` says where to put them).
* ``dlib`` / ``dlib-cnn`` (:mod:`.dlib`) — dlib's HOG (or CNN "mmod") detector + the
  68-point shape predictor shipped by the PyPI package ``face_recognition_models`` (offline).
* ``aligned`` (:mod:`.aligned`) — crops already aligned to the ArcFace template: no
  detector, the canonical 68-point layout scaled to the crop (:class:`AlignedLayout`).
* ``aligned-fit`` (:mod:`.aligned_fit`) — the same crops with each face's own 68 points:
  dlib's predictor inside the box the template implies, checked, falling back to the
  canonical layout with a reason (:class:`AlignedFit`).
* ``file`` (:mod:`.file`) — landmarks or face boxes the user already has
  (:class:`FileLandmarks`).
* ``auto`` (:mod:`.auto`) — face_alignment when its weights load, else dlib; 112×112 inputs
  use ``aligned``.

Every backend's ``detect(image, key=None)`` returns faces in the image's pixels; ``key`` is
the item's name (used by ``file`` only). :class:`Downscaled` (:mod:`.downscale`) runs
detection on a smaller copy of big images and refines the landmarks at full resolution.
Face selection lives in :mod:`maskgen.landmarks.selection`. dlib, torch and face_alignment
are imported only when a backend that needs them is built.

Example:
    >>> import numpy as np
    >>> backend = create_backend("aligned")
    >>> faces = backend.detect(np.zeros((112, 112, 3), np.uint8))
    >>> len(faces), faces[0].landmarks.shape, faces[0].backend
    (1, (68, 2), 'aligned')
"""

from maskgen.landmarks.backends.aligned import AlignedLayout
from maskgen.landmarks.backends.aligned_fit import AlignedFit
from maskgen.landmarks.backends.auto import AutoBackend
from maskgen.landmarks.backends.base import (
    Backend,
    BackendFactory,
    Box,
    Face,
    available_backends,
    box_of,
    create_backend,
    register_backend,
    unregister_backend,
)
from maskgen.landmarks.backends.dlib import DlibDetector, face_recognition_models_dir
from maskgen.landmarks.backends.downscale import Downscaled
from maskgen.landmarks.backends.fan import (
    FAN_FILE,
    FAN_URL,
    S3FD_FILE,
    S3FD_URL,
    FaceAlignmentDetector,
    FaceAlignmentWeightsError,
    heatmap_points,
    hub_checkpoints_dir,
    resolve_weights,
)
from maskgen.landmarks.backends.file import FileLandmarks, load_annotation, read_pts

__all__ = [
    "FAN_FILE",
    "FAN_URL",
    "S3FD_FILE",
    "S3FD_URL",
    "AlignedFit",
    "AlignedLayout",
    "AutoBackend",
    "Backend",
    "BackendFactory",
    "Box",
    "DlibDetector",
    "Downscaled",
    "Face",
    "FaceAlignmentDetector",
    "FaceAlignmentWeightsError",
    "FileLandmarks",
    "available_backends",
    "box_of",
    "create_backend",
    "face_recognition_models_dir",
    "heatmap_points",
    "hub_checkpoints_dir",
    "load_annotation",
    "read_pts",
    "register_backend",
    "resolve_weights",
    "unregister_backend",
]
