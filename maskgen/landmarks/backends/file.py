"""The ``file`` backend: landmarks or face boxes the user already has, one file per image.

Annotations are ``.npy``, ``.json`` or 300-W ``.pts`` files (:func:`load_annotation`);
boxes get their 68 points from a predictor (default dlib's shape predictor).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.landmarks.aligned import landmarks_from_five
from maskgen.landmarks.backends.base import Backend, Face, box_of, register_backend
from maskgen.landmarks.backends.dlib import DlibDetector
from maskgen.landmarks.validation import validate_landmarks


def read_pts(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 300-W ``.pts`` file (``version: 1``, ``n_points: N``, ``{ x y ... }``).

    300-W coordinates are 1-based (Matlab); they are converted to 0-based pixels.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.pts"
        >>> _ = p.write_text("version: 1\\nn_points: 2\\n{\\n1 2\\n3.5 4\\n}\\n")
        >>> read_pts(p).tolist()
        [[0.0, 1.0], [2.5, 3.0]]
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if "{" not in text or "}" not in text:
        raise ValueError(f"{path}: not a 300-W .pts file (no '{{ ... }}' block)")
    body = text[text.index("{") + 1 : text.rindex("}")]
    values = np.array(body.split(), dtype=np.float64)
    if values.size % 2:
        raise ValueError(f"{path}: odd number of coordinates ({values.size})")
    return (values.reshape(-1, 2) - 1.0).astype(np.float32)


def _faces_from_array(arr: np.ndarray, source: str) -> list[np.ndarray]:
    """Split an array into per-face landmark sets (N, 2) or boxes (4,)."""
    if arr.ndim == 1 and arr.shape[0] == 4:
        return [arr]
    if arr.ndim == 2 and arr.shape[1] == 4:
        return list(arr)
    if arr.ndim == 2 and arr.shape in ((68, 2), (5, 2)):
        return [arr]
    if arr.ndim == 3 and arr.shape[1:] in ((68, 2), (5, 2)):
        return list(arr)
    raise ValueError(
        f"{source}: expected landmarks (68, 2) / (5, 2) / (F, 68, 2) or boxes (4,) / (F, 4), "
        f"got shape {arr.shape}"
    )


def _json_faces(data: Any, source: str) -> list[np.ndarray]:
    if isinstance(data, dict) and "faces" in data:
        data = data["faces"]
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        out = []
        for face in data:
            value = face.get("landmarks", face.get("box"))
            if value is None:
                raise ValueError(f"{source}: a face entry needs 'landmarks' or 'box'")
            out += _faces_from_array(np.asarray(value, np.float32), source)
        return out
    return _faces_from_array(np.asarray(data, np.float32), source)


def load_annotation(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Read landmarks or boxes from ``.npy``, ``.json`` or ``.pts``; one array per face.

    Landmarks are (68, 2) or (5, 2) pixel (x, y); boxes are (x0, y0, x1, y1). JSON may be
    a bare array, ``{"landmarks": ...}``, ``{"box": ...}`` or ``{"faces": [...]}``.

    Example:
        >>> import tempfile, pathlib, json
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text(json.dumps({"faces": [{"box": [1, 2, 30, 40]}]}))
        >>> [a.tolist() for a in load_annotation(p)]
        [[1.0, 2.0, 30.0, 40.0]]
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        return _faces_from_array(np.asarray(arr, np.float32), str(p))
    if suffix == ".json":
        return _json_faces(json.loads(p.read_text(encoding="utf-8")), str(p))
    if suffix == ".pts":
        return _faces_from_array(read_pts(p), str(p))
    raise ValueError(f"{p}: unsupported annotation format (use .npy, .json or .pts)")


class FileLandmarks:
    """Landmarks or boxes the user already has, one file per image under ``root``.

    The annotation of item ``a/b.jpg`` is ``root/a/b.npy`` (or ``.json`` / ``.pts``, or the
    full name plus that suffix, e.g. ``a/b.jpg.npy``). Landmarks are used as given (5 points
    are expanded to 68 through the aligned layout); for boxes the ``predictor`` (default
    dlib's 68-point shape predictor) runs inside each box.
    """

    name = "file"
    SUFFIXES = (".npy", ".json", ".pts")

    def __init__(self, root: str | os.PathLike[str], predictor: Any = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"--landmarks-dir {self.root}: not a directory")
        self._predictor = predictor

    def annotation_path(self, key: str) -> Path | None:
        """The annotation file of item ``key``, or ``None``."""
        base = self.root / key
        for candidate in (base.with_suffix(s) for s in self.SUFFIXES):
            if candidate.is_file():
                return candidate
        for suffix in self.SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                return candidate
        return None

    def predictor(self) -> Any:
        if self._predictor is None:
            self._predictor = DlibDetector(upsample=0)
        return self._predictor

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        if key is None:
            raise ValueError("the 'file' landmark backend needs the item key")
        path = self.annotation_path(key)
        if path is None:
            raise FileNotFoundError(
                f"no landmark file for {key} under {self.root} (looked for "
                + ", ".join(Path(key).with_suffix(s).as_posix() for s in self.SUFFIXES)
                + ")"
            )
        faces = []
        for arr in load_annotation(path):
            if arr.shape == (4,):
                box = tuple(float(v) for v in arr)
                lm = self.predictor().landmarks_in_box(image, box)
                faces.append(Face(box, lm, 1.0, "file-box"))  # type: ignore[arg-type]
            else:
                lm = landmarks_from_five(arr) if len(arr) == 5 else arr.astype(np.float32)
                try:  # a bad annotation fails its item, naming the file
                    validate_landmarks(lm, image.shape[:2], check_plausible=False)
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from None
                faces.append(Face(box_of(lm), lm, 1.0, self.name))
        return faces


@register_backend("file")
def create_file(*, landmarks_dir: str | os.PathLike[str] | None = None) -> Backend:
    """:class:`FileLandmarks` reading the annotations under ``landmarks_dir``."""
    if landmarks_dir is None:
        raise ValueError("--landmarks file needs --landmarks-dir")
    return FileLandmarks(landmarks_dir)
