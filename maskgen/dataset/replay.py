"""Replay: re-render a manifest record on its clean input image (all its faces)."""

from __future__ import annotations

from typing import Any

import numpy as np

from maskgen.render import MaskParams, render

__all__ = ["replay_record"]


def replay_record(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Re-render one manifest record (all its faces) on its clean input image.

    Example:
        >>> import numpy as np
        >>> replay_record(np.zeros((4, 4, 3), np.uint8), {"faces": [], "params": None}).shape
        (4, 4, 3)
    """
    faces = record.get("faces")
    if faces is None:
        faces = [{"landmarks": record["landmarks"], "params": record["params"]}]
    out = image
    for face in faces:
        if face.get("params") is not None:
            params = MaskParams.from_dict(face["params"])
            out = render(out, np.asarray(face["landmarks"], np.float32), params).image
    return out
