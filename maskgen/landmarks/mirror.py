"""Left/right mirror permutation of the 68-point iBUG layout.

After flipping an image horizontally, ``flipped_landmarks[MIRROR_68]`` restores the
semantic order (point 36 is again the image-left eye corner).

Example:
    >>> from maskgen.landmarks.mirror import MIRROR_68
    >>> int(MIRROR_68[0]), int(MIRROR_68[30]), int(MIRROR_68[36])
    (16, 30, 45)
"""

from __future__ import annotations

import numpy as np


def _mirror_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)]
    pairs += [(17 + i, 26 - i) for i in range(5)]
    pairs += [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
    pairs += [(60, 64), (61, 63), (65, 67)]
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR_68: np.ndarray = _mirror_permutation()
MIRROR_5: np.ndarray = np.array([1, 0, 2, 4, 3])


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image (``x → width - x``), in semantic order."""
    lm = np.asarray(landmarks, dtype=np.float32)
    perm = MIRROR_68 if len(lm) == 68 else MIRROR_5
    out = lm[perm].copy()
    out[:, 0] = width - out[:, 0]
    return out
