"""Landmark conventions: iBUG-300W 68-point indices, the 5-point ArcFace order, 68 → 5.

All landmark arrays are ``float32`` of shape (68, 2) or (5, 2) holding pixel ``(x, y)``
coordinates in the image they belong to. "Left"/"right" mean image left/right.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import ARCFACE_112, to_five
    >>> ARCFACE_112.shape
    (5, 2)
    >>> to_five(np.zeros((68, 2), np.float32)).shape
    (5, 2)
"""

from __future__ import annotations

import numpy as np

#: Index ranges of the 68-point iBUG-300W layout (end exclusive).
JAW = slice(0, 17)
RIGHT_BROW = slice(17, 22)  # subject's right brow = image left
LEFT_BROW = slice(22, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_BOTTOM = slice(31, 36)  # nostrils / nose base
RIGHT_EYE = slice(36, 42)  # image left
LEFT_EYE = slice(42, 48)  # image right
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
MOUTH = slice(48, 68)

CHIN = 8
NOSE_TOP = 27
NOSE_TIP = 30
NOSE_BASE = 33
MOUTH_LEFT = 48
MOUTH_RIGHT = 54
UPPER_LIP_TOP = 51
LOWER_LIP_BOTTOM = 57

#: Indices of the brows and eyes: never covered by any mask.
UPPER_FACE = np.r_[17:27, 36:48]

#: 112×112 ArcFace alignment template (insightface ``arcface_dst``), 5-point order:
#: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right).
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112


def to_five(landmarks68: np.ndarray) -> np.ndarray:
    """Reduce 68 iBUG points to the 5-point ArcFace order.

    Eyes are the means of points 36–41 and 42–47, the nose is point 30, the mouth corners
    are points 48 and 54.

    Example:
        >>> import numpy as np
        >>> pts = np.arange(136, dtype=np.float32).reshape(68, 2)
        >>> to_five(pts)[2].tolist()
        [60.0, 61.0]
    """
    lm = np.asarray(landmarks68, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"to_five expects a (68, 2) array, got shape {lm.shape}")
    return np.stack(
        [
            lm[RIGHT_EYE].mean(axis=0),
            lm[LEFT_EYE].mean(axis=0),
            lm[NOSE_TIP],
            lm[MOUTH_LEFT],
            lm[MOUTH_RIGHT],
        ]
    ).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama, no reflection) mapping ``src`` onto ``dst``.

    Returns the 2×3 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.

    Example:
        >>> import numpy as np
        >>> src = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
        >>> M = similarity_transform(src, src * 2 + 3)
        >>> np.allclose(M, [[2, 0, 3], [0, 2, 3]], atol=1e-5)
        True
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    M = np.empty((2, 3))
    M[:, :2] = scale * rot
    M[:, 2] = mu_d - M[:, :2] @ mu_s
    return M


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points; returns ``float32``."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def quantise(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks at 0.01 px, as manifests and protocol files store them: rendering uses
    exactly these, so a replay from the stored values gives the same pixels.

    Example:
        >>> import numpy as np
        >>> quantise(np.array([[1.23456, 2.0]], np.float32)).tolist() == [[np.float32(1.23), 2.0]]
        True
    """
    return np.asarray(np.round(landmarks.astype(np.float64), 2).tolist(), np.float32)
