"""Replay: re-render a manifest record on its clean input image (all its faces)."""

from __future__ import annotations

from typing import Any

import numpy as np

from maskgen.jpeg import jpeg_from_entry
from maskgen.render import MaskParams, render

__all__ = ["replay_record"]


def replay_record(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Re-render one manifest record (all its faces) on its clean input image, with the
    JPEG compression the record says its file had (``"jpeg"``; else read from the pixels).

    Example:
        >>> import numpy as np
        >>> replay_record(np.zeros((4, 4, 3), np.uint8), {"faces": [], "params": None}).shape
        (4, 4, 3)
    """
    faces = record.get("faces")
    if faces is None:
        faces = [{"landmarks": record["landmarks"], "params": record["params"]}]
    jpeg = jpeg_from_entry(record["jpeg"]) if "jpeg" in record else True
    out = image
    for face in faces:
        if face.get("params") is not None:
            params = MaskParams.from_dict(face["params"])
            lm = np.asarray(face["landmarks"], np.float32)
            out = render(out, lm, params, jpeg=jpeg).image
    return out
