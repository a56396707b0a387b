"""The canonical 68-point layout of a 112×112 ArcFace-aligned crop.

Aligned datasets (MS1MV2, LFW-style ``.bin`` packs) need no detector: their faces already sit
on the ArcFace template, so the canonical layout (``templates/aligned_68.json``, derived from
real dlib detections by ``scripts/derive_aligned_68.py``) is mapped onto each face by the
similarity transform from its 5 points, optionally with a small shape perturbation.

Example:
    >>> from maskgen.landmarks import aligned_landmarks
    >>> lm = aligned_landmarks()
    >>> lm.shape, lm.dtype.name
    ((68, 2), 'float32')
    >>> aligned_landmarks(size=224)[30].round() .tolist() == (lm[30] * 2).round().tolist()
    True
"""

from __future__ import annotations

import numpy as np

from maskgen._assets import asset_json
from maskgen.landmarks.conventions import (
    ARCFACE_112,
    ARCFACE_SIZE,
    CHIN,
    JAW,
    apply_affine,
    similarity_transform,
)

# Read when the module is imported rather than on first use, and twice: TorchDynamo
# (``torch.compile``) fails on ``setflags`` in a traced first use, and makes every read-only
# array it traces writeable. aligned_landmarks reads the private twin, which is never written,
# so the read-only array handed out by canonical_68 stays out of compiled code.
_POINTS_68 = np.asarray(asset_json("aligned_68.json")["points"], dtype=np.float32)
_CANONICAL_68 = _POINTS_68.copy()
_CANONICAL_68.setflags(write=False)


def canonical_68() -> np.ndarray:
    """The stored canonical layout in the 112×112 ArcFace frame (read-only array)."""
    return _CANONICAL_68


def perturb_shape(
    landmarks: np.ndarray, face_width: float = 1.0, chin_length: float = 1.0
) -> np.ndarray:
    """Scale the jaw outward (``face_width``) and the chin downward (``chin_length``).

    Works in the face's own frame (eye line = x axis), so it is valid for any roll.
    Only jaw points move; eyes, nose and mouth keep their place.
    """
    lm = np.asarray(landmarks, dtype=np.float32).copy()
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    ax = (eye_r - eye_l) / max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
    ay = np.array([-ax[1], ax[0]], dtype=np.float32)
    centre = lm[27:36].mean(0)
    jaw = lm[JAW] - centre
    u, v = jaw @ ax, jaw @ ay
    # The chin stretch fades in towards the chin so the jaw stays smooth near the ears.
    v_min = float(v.min())
    weight = np.clip((v - v_min) / max(float(v[CHIN] - v_min), 1e-6), 0, 1) ** 2
    v = v * (1 + (chin_length - 1) * weight)
    lm[JAW] = centre + np.outer(u * face_width, ax) + np.outer(v, ay)
    return lm


def aligned_landmarks(
    size: int | tuple[int, int] = ARCFACE_SIZE,
    five_points: np.ndarray | None = None,
    *,
    face_width: float = 1.0,
    chin_length: float = 1.0,
) -> np.ndarray:
    """68 landmarks for an aligned crop.

    Args:
        size: crop size; the ArcFace frame is scaled from 112 (an int or (height, width)).
        five_points: the face's own 5 points, if known; the canonical layout is mapped onto
            them by a similarity transform. Default: the ArcFace template.
        face_width, chin_length: shape perturbation factors (1 = none), e.g. 0.9–1.1.
    """
    lm = _POINTS_68
    if five_points is not None:
        M = similarity_transform(ARCFACE_112, np.asarray(five_points, dtype=np.float32))
        lm = apply_affine(lm, M)
    else:
        w = size[1] if isinstance(size, tuple) else size
        lm = lm * np.float32(w / ARCFACE_SIZE)
    if face_width != 1.0 or chin_length != 1.0:
        lm = perturb_shape(lm, face_width, chin_length)
    return np.ascontiguousarray(lm, dtype=np.float32)


def landmarks_from_five(five_points: np.ndarray) -> np.ndarray:
    """Expand 5 ArcFace-order points to 68 through the canonical layout."""
    return aligned_landmarks(five_points=five_points)
