"""Landmark validation: reject malformed and implausible landmark sets with a clear message.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import validate_landmarks, aligned_landmarks
    >>> validate_landmarks(aligned_landmarks(), (112, 112)).shape
    (68, 2)
"""

from __future__ import annotations

import numpy as np

from maskgen.landmarks.conventions import JAW, NOSE_TIP


def validate_landmarks(
    landmarks: np.ndarray,
    image_shape: tuple[int, ...] | None = None,
    *,
    check_plausible: bool = True,
) -> np.ndarray:
    """Return ``landmarks`` as ``float32`` (68, 2) or (5, 2), or raise ``ValueError``.

    Checks: shape, finite values, at least one point inside the image (when its shape is
    given) and that the set looks like a face (:func:`plausibility_problem`).
    """
    try:
        lm = np.asarray(landmarks, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"landmarks are not numeric: {exc}") from exc
    if lm.shape not in ((68, 2), (5, 2)):
        raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {lm.shape}")
    (x_min, y_min), (x_max, y_max) = lm.min(axis=0).tolist(), lm.max(axis=0).tolist()
    if not np.isfinite(x_min + y_min + x_max + y_max):
        bad = np.flatnonzero(~np.isfinite(lm).all(axis=1)).tolist()
        raise ValueError(f"landmarks contain NaN or inf at point indices {bad}")
    if image_shape is not None:
        h, w = int(image_shape[0]), int(image_shape[1])
        # Cheap bounding-box test first; the exact per-point test only when it is ambiguous.
        if x_max < 0 or y_max < 0 or x_min >= w or y_min >= h or not _any_inside(lm, w, h):
            raise ValueError(
                f"all {len(lm)} landmarks lie outside the {w}×{h} image "
                f"(x in [{x_min:.1f}, {x_max:.1f}], y in [{y_min:.1f}, {y_max:.1f}])"
            )
    if check_plausible:
        problem = plausibility_problem(lm)
        if problem:
            raise ValueError(f"implausible landmark set: {problem}")
    return lm


def _any_inside(lm: np.ndarray, w: int, h: int) -> bool:
    x, y = lm[:, 0], lm[:, 1]
    return bool(((x >= 0) & (x < w) & (y >= 0) & (y < h)).any())


def plausibility_problem(lm: np.ndarray) -> str | None:
    """Describe why a landmark set cannot be a face, or return ``None`` if it can.

    Guards against degenerate warps (collapsed or exploded point sets) and non-faces: the
    eyes must be apart, the mouth below the eyes relative to the eye line, the nose between
    them, and, for 68 points, the jaw must span a face-like width.
    """
    if len(lm) == 5:
        (elx, ely), (erx, ery), (nx, ny), (m1x, m1y), (m2x, m2y) = lm.tolist()
    else:
        (elx, ely), (erx, ery) = lm[36:48].reshape(2, 6, 2).mean(axis=1).tolist()
        (nx, ny), (m1x, m1y), (m2x, m2y) = lm[[NOSE_TIP, 48, 54]].tolist()
    ex, ey = erx - elx, ery - ely
    iod = (ex * ex + ey * ey) ** 0.5
    if iod < 1.0:
        return f"the eyes are {iod:.2f} px apart (collapsed point set)"
    ax, ay = ex / iod, ey / iod
    cx, cy = (elx + erx) / 2, (ely + ery) / 2
    mouth_drop = (((m1x + m2x) / 2 - cx) * -ay + ((m1y + m2y) / 2 - cy) * ax) / iod
    if not 0.4 < mouth_drop < 3.0:
        return f"mouth is {mouth_drop:.2f} inter-eye distances below the eye line (expected 0.4–3)"
    nose_drop = ((nx - cx) * -ay + (ny - cy) * ax) / iod
    if not 0.0 < nose_drop < mouth_drop:
        return "the nose tip is not between the eye line and the mouth"
    mouth_width = ((m2x - m1x) ** 2 + (m2y - m1y) ** 2) ** 0.5 / iod
    if not 0.2 < mouth_width < 3.0:
        return f"mouth width is {mouth_width:.2f} inter-eye distances (expected 0.2–3)"
    if len(lm) == 68:
        jaw_x = (lm[JAW] @ np.array([ax, ay], np.float32)).tolist()
        span = (max(jaw_x) - min(jaw_x)) / iod
        if not 0.8 < span < 6.0:
            return f"jaw spans {span:.2f} inter-eye distances (expected 0.8–6)"
    return None
