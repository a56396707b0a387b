"""Landmarks and model inputs: the 112×112 crop a model sees for (image index, mask draw).

The landmark source of a set is resolved once (``aligned`` for ``.bin`` packs and 112×112
crops, else a detector backend or a custom function), detected landmarks are stored in the
protocol entry (:func:`_build_entry`), and :class:`_Materialiser` turns (image index, draw)
into the masked, aligned model input, deterministically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from distill.eval.pairs import PairsSet
from maskgen.io import BinPack, ImageReadError
from maskgen.jpeg import JpegGrid, grid_of_file
from maskgen.landmarks import ARCFACE_112, similarity_transform, to_five
from maskgen.protocol import DatasetProtocol, protocol_draws, protocol_landmarks
from maskgen.protocol import image_key as image_key_of_pack
from maskgen.render import MaskParams, MaskSpec, render

__all__ = ["INPUT_SIZE", "LandmarkFn"]

INPUT_SIZE = 112

#: A landmark function: RGB image → (68, 2) or (5, 2) landmarks, or ``None`` (no face).
LandmarkFn = Callable[[np.ndarray], np.ndarray | None]


def _create_detector(name: str) -> LandmarkFn:
    """Landmark function of a detector backend: largest face's landmarks, or ``None``."""
    from maskgen.landmarks import create_backend

    backend = create_backend(name)

    def detect(image: np.ndarray, key: str | None = None) -> np.ndarray | None:
        faces = backend.detect(image, key)
        if not faces:
            return None
        return np.asarray(max(faces, key=lambda f: f.box_area).landmarks, np.float32)

    return detect


def _resolve_landmarks(dataset: BinPack | PairsSet, landmarks: str | LandmarkFn) -> str:
    """Name of the landmark source for a set (``auto``: aligned for packs and 112×112 crops)."""
    if callable(landmarks):
        return getattr(landmarks, "__name__", "custom")
    if landmarks != "auto":
        return landmarks
    if isinstance(dataset, BinPack):
        return "aligned"
    for i in range(dataset.num_images):
        try:
            shape = dataset.decode(i).shape
        except (ImageReadError, OSError):
            continue
        return "aligned" if shape[:2] == (INPUT_SIZE, INPUT_SIZE) else "dlib"
    return "aligned"


def _to_model_input(image: np.ndarray, lm: np.ndarray | None, aligned: bool) -> np.ndarray:
    """112×112 RGB crop: resized aligned crop, or similarity-aligned from the landmarks.

    >>> _to_model_input(np.zeros((224, 224, 3), np.uint8), None, aligned=True).shape
    (112, 112, 3)
    """
    if aligned:
        if image.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
            return image
        interp = cv2.INTER_AREA if image.shape[0] > INPUT_SIZE else cv2.INTER_LINEAR
        return cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
    five = to_five(lm) if lm is not None and len(lm) == 68 else lm
    M = similarity_transform(np.asarray(five, np.float32), ARCFACE_112)
    return cv2.warpAffine(image, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)


class _ImageError(Exception):
    """An image that cannot be produced for a protocol (the message is the reason)."""


class _Materialiser:
    """Produces the model input of (image index, draw) for one set, deterministically."""

    def __init__(
        self, dataset: BinPack | PairsSet, entry: DatasetProtocol, fn: LandmarkFn | None
    ) -> None:
        self.dataset = dataset
        self.entry = entry
        self.aligned = entry.landmarks == "aligned"
        self.fn = fn  # only for custom callables without stored points

    def landmarks(self, i: int, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of image ``i``: the aligned layout, the stored points, or ``fn(image)``."""
        if self.aligned:
            return protocol_landmarks(image.shape)
        if self.entry.points is not None:
            return self.entry.points[i]
        return None if self.fn is None else self.fn(image)

    def masked_image(self, i: int, params: MaskParams | None) -> np.ndarray:
        """The full-size image ``i`` with the draw applied (no resizing/alignment)."""
        try:
            image = self.dataset.decode(i)
        except (ImageReadError, OSError) as exc:
            raise _ImageError(f"unreadable image: {exc}") from exc
        if params is None:
            return image
        lm = self.landmarks(i, image)
        if lm is None:
            raise _ImageError("no face landmarks (nothing to mask)")
        jpeg: JpegGrid | bool = True
        if params.compression > 0:  # the compression the file says, as maskgen render reads it
            jpeg = grid_of_file(self._file_head(i), image) or False
        try:
            return render(image, lm, params, jpeg=jpeg).image
        except ValueError as exc:
            raise _ImageError(f"mask rendering failed: {exc}") from exc

    def _file_head(self, i: int) -> bytes:
        """The first bytes of image ``i``'s file (enough for a JPEG header)."""
        if isinstance(self.dataset, BinPack):
            return self.dataset.images[i][:65536]
        with open(self.dataset.paths[i], "rb") as fh:
            return fh.read(65536)

    def __call__(self, i: int, params: MaskParams | None) -> np.ndarray:
        image = self.masked_image(i, params)
        lm = None if self.aligned else self.landmarks(i, image)
        if not self.aligned and lm is None:
            raise _ImageError("no face landmarks (cannot align)")
        return _to_model_input(image, lm, self.aligned)


def image_key(dataset: BinPack | PairsSet, i: int) -> str:
    """The key ``maskgen render`` and ``maskgen landmarks`` give image ``i`` of a set: its
    index (``000017``) in a ``.bin`` pack, its path in a pairs set (a landmark cache made
    on the image folder resolves it against that folder)."""
    return str(dataset.paths[i]) if isinstance(dataset, PairsSet) else image_key_of_pack(i)


def _detect_all(
    name: str,
    dataset: BinPack | PairsSet,
    fn: Callable[..., np.ndarray | None],
    progress: bool = True,
    keyed: bool = False,
) -> list[np.ndarray | None]:
    """Landmarks of every image of a set (``None`` for unreadable images or no face);
    ``keyed``: ``fn`` also takes the image's key (:func:`image_key`)."""
    points: list[np.ndarray | None] = []
    bar = tqdm(range(dataset.num_images), desc=f"{name}: landmarks", leave=False,
               disable=not progress)  # fmt: skip
    for i in bar:
        try:
            image = dataset.decode(i)
            points.append(fn(image, image_key(dataset, i)) if keyed else fn(image))
        except (ImageReadError, OSError):
            points.append(None)
    return points


def _build_entry(
    name: str,
    dataset: BinPack | PairsSet,
    protocols: Sequence[str],
    seed: int,
    spec: MaskSpec,
    landmarks: str | LandmarkFn,
    sha256: str,
    progress: bool = True,
) -> DatasetProtocol:
    """A new protocol entry for a set: its landmark source (and points) and fresh draws."""
    source = _resolve_landmarks(dataset, landmarks)
    points = None
    if source != "aligned":
        if callable(landmarks):
            points = _detect_all(name, dataset, landmarks, progress)
        else:
            points = _detect_all(name, dataset, _create_detector(source), progress, keyed=True)
    return DatasetProtocol(
        source=str(dataset.path) if dataset.path is not None else name,
        sha256=sha256,
        num_images=dataset.num_images,
        num_pairs=dataset.num_pairs,
        landmarks=source,
        draws={p: protocol_draws(p, dataset.num_images, seed, spec) for p in protocols},
        points=points,
    )
