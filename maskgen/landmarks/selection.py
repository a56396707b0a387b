"""Face selection: which detected faces are worth masking.

:func:`select_faces` applies the minimum face size, the landmark plausibility and
skin-likeness checks (:func:`face_problem`; they reject false detections such as the
astronaut's badge) and the all/largest choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maskgen.landmarks.backends.base import Face
from maskgen.landmarks.validation import plausibility_problem

#: Skin-likeness: the YCrCb chroma box of Chai & Ngan (1999), which holds light to dark skin.
SKIN_CR = (133.0, 173.0)
SKIN_CB = (77.0, 127.0)
#: Below this mean chroma (distance from grey in Cr/Cb) an image counts as colourless.
ACHROMATIC = 4.0


#: Backends that place a known layout on aligned crops (or read given landmarks) rather than
#: detect faces: their faces get no skin check (a grey crop would fail it).
LAYOUT_BACKENDS: tuple[str, ...] = ("aligned", "aligned-fit", "file")


def are_detections(backend: str, faces: Sequence[Face]) -> bool:
    """Whether ``faces`` from backend ``backend`` are detections (to be skin-checked) rather
    than a layout: not a :data:`LAYOUT_BACKENDS` backend, and no face that comes from the
    aligned layout or an aligned fit (e.g. read back from a landmark cache).

    >>> are_detections("dlib", []), are_detections("aligned-fit", [])
    (True, False)
    """
    if backend in LAYOUT_BACKENDS:
        return False
    return not (faces and (faces[0].backend == "aligned" or faces[0].fit))


def skin_fraction(image: np.ndarray, landmarks: np.ndarray) -> float | None:
    """Fraction of skin-coloured pixels inside the hull of a face's landmarks.

    A real face is mostly skin even when it already wears a mask (about half the hull);
    a false detection on a badge or a print is not.

    Returns ``None`` when the region has (almost) no colour (grey photos), where skin
    cannot be told apart from anything else.

    Example:
        >>> import numpy as np
        >>> from maskgen.landmarks import aligned_landmarks
        >>> skin = np.full((112, 112, 3), (200, 150, 120), np.uint8)
        >>> skin_fraction(skin, aligned_landmarks())
        1.0
        >>> skin_fraction(np.full((112, 112, 3), 128, np.uint8), aligned_landmarks()) is None
        True
    """
    import cv2  # here, not at import: importing maskgen.landmarks stays cheap

    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    x, y, w, h = cv2.boundingRect(hull)
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return None
    roi = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull - np.array([x0, y0], np.int32), 1)
    ycc = cv2.cvtColor(roi, cv2.COLOR_RGB2YCrCb)[mask > 0].astype(np.float32)
    if len(ycc) == 0:
        return None
    cr, cb = ycc[:, 1], ycc[:, 2]
    if float(np.mean(np.hypot(cr - 128, cb - 128))) < ACHROMATIC:
        return None
    skin = (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    return float(skin.mean())


def face_problem(
    image: np.ndarray,
    face: Face,
    *,
    min_face: float = 0.0,
    min_skin: float = 0.15,
    min_score_gray: float = 0.1,
    weak_score: float = 0.5,
    weak_min_skin: float = 0.4,
) -> str | None:
    """Why ``face`` should not be masked, or ``None``.

    Checks the minimum size, the landmark plausibility
    (:func:`maskgen.landmarks.plausibility_problem`) and, for detections (``min_skin > 0``),
    that the face looks like skin — false detections on badges, prints and logos do not.
    A weak detection (score below ``weak_score``) must be more skin-like
    (``weak_min_skin``); in colourless images the score must reach ``min_score_gray``.
    """
    if face.size < min_face:
        return f"face too small ({face.size:.0f} px < --min-face {min_face:.0f} px)"
    problem = plausibility_problem(face.landmarks)
    if problem:
        return f"implausible landmarks: {problem}"
    if min_skin > 0:
        skin = skin_fraction(image, face.landmarks)
        if skin is None:
            if face.score < min_score_gray:
                return (
                    f"weak detection ({face.score:.2f} < {min_score_gray}) in a colourless "
                    "region; likely not a face"
                )
        elif skin < (weak_min_skin if face.score < weak_score else min_skin):
            return f"not skin-like ({skin:.0%} skin-coloured pixels); likely not a face"
    return None


def select_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    *,
    mode: str = "all",
    min_face: float = 0.0,
    check_skin: bool = True,
) -> tuple[list[Face], list[str]]:
    """Keep the faces worth masking; returns ``(kept, reasons for the rejected ones)``.

    ``mode``: ``"all"`` keeps every good face (largest first), ``"largest"`` only the
    largest good one.

    Example:
        >>> import numpy as np
        >>> from maskgen.landmarks import aligned_landmarks
        >>> face = Face((0, 0, 112, 112), aligned_landmarks())
        >>> kept, why = select_faces(np.zeros((112, 112, 3), np.uint8), [face], min_face=200)
        >>> len(kept), why
        (0, ['face too small (112 px < --min-face 200 px)'])
    """
    if mode not in ("all", "largest"):
        raise ValueError(f"faces mode must be 'all' or 'largest', got {mode!r}")
    kept, reasons = [], []
    for face in sorted(faces, key=lambda f: -f.box_area):
        why = face_problem(image, face, min_face=min_face, min_skin=0.15 if check_skin else 0.0)
        if why is None:
            kept.append(face)
        else:
            reasons.append(why)
    return (kept[:1] if mode == "largest" else kept), reasons
