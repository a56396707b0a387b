"""Landmark validation: reject malformed and implausible landmark sets with a clear message.

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import validate_landmarks, aligned_landmarks
    >>> validate_landmarks(aligned_landmarks(), (112, 112)).shape
    (68, 2)
"""

from __future__ import annotations

import numpy as np

from maskgen.landmarks.conventions import JAW, LEFT_EYE, NOSE_TIP, RIGHT_EYE


def validate_landmarks(
    landmarks: np.ndarray,
    image_shape: tuple[int, ...] | None = None,
    *,
    check_plausible: bool = True,
) -> np.ndarray:
    """Return ``landmarks`` as ``float32`` (68, 2) or (5, 2), or raise ``ValueError``.

    Checks: shape, finite values, at least one point inside the image (when its shape is
    given) and, for 68 points, that the set looks like a face (:func:`plausibility_problem`).
    """
    try:
        lm = np.asarray(landmarks, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"landmarks are not numeric: {exc}") from exc
    if lm.ndim != 2 or lm.shape not in ((68, 2), (5, 2)):
        raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        bad = np.flatnonzero(~np.isfinite(lm).all(axis=1)).tolist()
        raise ValueError(f"landmarks contain NaN or inf at point indices {bad}")
    if image_shape is not None:
        h, w = int(image_shape[0]), int(image_shape[1])
        inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
        if not inside.any():
            raise ValueError(
                f"all {len(lm)} landmarks lie outside the {w}×{h} image "
                f"(x in [{lm[:, 0].min():.1f}, {lm[:, 0].max():.1f}], "
                f"y in [{lm[:, 1].min():.1f}, {lm[:, 1].max():.1f}])"
            )
    if check_plausible:
        problem = plausibility_problem(lm)
        if problem:
            raise ValueError(f"implausible landmark set: {problem}")
    return lm


def plausibility_problem(lm: np.ndarray) -> str | None:
    """Describe why a landmark set cannot be a face, or return ``None`` if it can.

    Guards against degenerate warps (collapsed or exploded point sets) and non-faces: the
    eyes must be apart, the mouth below the eyes relative to the eye line, the nose between
    them, and, for 68 points, the jaw must enclose the mouth horizontally.
    """
    if len(lm) == 5:
        eye_l, eye_r, nose, mouth_l, mouth_r = lm
    else:
        eye_l, eye_r = lm[RIGHT_EYE].mean(0), lm[LEFT_EYE].mean(0)
        nose = lm[NOSE_TIP]
        mouth_l, mouth_r = lm[48], lm[54]
    eye_vec = eye_r - eye_l
    iod = float(np.hypot(*eye_vec))
    if iod < 1.0:
        return f"the eyes are {iod:.2f} px apart (collapsed point set)"
    axis_x = eye_vec / iod
    axis_y = np.array([-axis_x[1], axis_x[0]])  # image "down" when the face is upright
    eye_mid = (eye_l + eye_r) / 2
    mouth_mid = (mouth_l + mouth_r) / 2
    mouth_drop = float((mouth_mid - eye_mid) @ axis_y) / iod
    if not 0.4 < mouth_drop < 3.0:
        return f"mouth is {mouth_drop:.2f} inter-eye distances below the eye line (expected 0.4–3)"
    nose_drop = float((nose - eye_mid) @ axis_y) / iod
    if not 0.0 < nose_drop < mouth_drop:
        return "the nose tip is not between the eye line and the mouth"
    mouth_width = float(np.hypot(*(mouth_r - mouth_l))) / iod
    if not 0.2 < mouth_width < 3.0:
        return f"mouth width is {mouth_width:.2f} inter-eye distances (expected 0.2–3)"
    if len(lm) == 68:
        jaw_x = (lm[JAW] - eye_mid) @ axis_x / iod
        span = float(jaw_x.max() - jaw_x.min())
        if not 0.8 < span < 6.0:
            return f"jaw spans {span:.2f} inter-eye distances (expected 0.8–6)"
    return None
