"""Landmarks that come back from another library's geometric augmentations.

albumentations, torchvision and kornia move keypoints with the image, but a flip (or any
reflection) keeps their indices: after a horizontal flip point 36, the outer corner of the
image-left eye, lies at the image-right eye. :func:`semantic_order` detects a reflected set by
its handedness (a reflection turns the eye line → mouth triangle the other way; rotations,
scaling and shifts do not) and restores the semantic order with the mirror permutation
(:data:`maskgen.landmarks.MIRROR_68` / :data:`~maskgen.landmarks.MIRROR_5`). Sets already in
semantic order are returned unchanged, so this is safe on every landmark set.

Example:
    >>> from maskgen.landmarks import aligned_landmarks, mirror_landmarks
    >>> lm = aligned_landmarks()
    >>> flipped = lm.copy(); flipped[:, 0] = 112 - flipped[:, 0]  # indices kept, as after a flip
    >>> bool(np.allclose(semantic_order(flipped), mirror_landmarks(lm, 112)))
    True
    >>> bool(np.array_equal(semantic_order(lm), lm))
    True
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

from maskgen.landmarks import MIRROR_5, MIRROR_68

__all__ = ["handedness", "semantic_order"]

T = TypeVar("T", np.ndarray, torch.Tensor)


def _features(lm: Any) -> tuple[Any, Any, Any]:
    """Image-left eye, image-right eye and mouth centre of ``(..., 68|5, 2)`` landmarks."""
    if lm.shape[-2] == 68:
        return lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2), lm[..., 48:60, :].mean(-2)
    return lm[..., 0, :], lm[..., 1, :], (lm[..., 3, :] + lm[..., 4, :]) / 2


def handedness(landmarks: T) -> T:
    """Signed area of (image-left eye, image-right eye, mouth): positive for a set in semantic
    order, negative for a reflected one; shape ``landmarks.shape[:-2]``."""
    left, right, mouth = _features(landmarks)
    eye = right - left
    down = mouth - (left + right) / 2
    return eye[..., 0] * down[..., 1] - eye[..., 1] * down[..., 0]


def semantic_order(landmarks: T) -> T:
    """``(..., 68|5, 2)`` landmarks (numpy or torch) in semantic order: reflected sets are
    re-indexed with the mirror permutation, the others returned as they are."""
    n = landmarks.shape[-2]
    if landmarks.ndim < 2 or n not in (68, 5) or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (..., 68|5, 2), got {tuple(landmarks.shape)}")
    perm = MIRROR_68 if n == 68 else MIRROR_5
    reflected = handedness(landmarks) < 0
    if torch.is_tensor(landmarks):  # no host sync: a select over the whole batch
        index = torch.as_tensor(perm, device=landmarks.device)
        return torch.where(reflected[..., None, None], landmarks[..., index, :], landmarks)
    if landmarks.size == 0 or not bool(np.any(reflected)):
        return landmarks
    return np.where(reflected[..., None, None], landmarks[..., perm, :], landmarks)
