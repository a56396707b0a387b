"""Landmark backends behind one interface: an RGB ``uint8`` image → a list of :class:`Face`.

Backends (:func:`create_backend` builds them by name):

* ``face_alignment`` — face-alignment's 2D FAN (68 points) on boxes from its S3FD detector
  (or from dlib's HOG detector); batched, on CUDA when present. Weights are never downloaded
  implicitly: they are read from the torch hub cache (where face-alignment itself stores
  them) or from a path or URL the user gives (:class:`FaceAlignmentWeightsError` says where).
* ``dlib`` / ``dlib-cnn`` — dlib's HOG (or CNN "mmod") detector + the 68-point shape
  predictor shipped by the PyPI package ``face_recognition_models`` (offline).
* ``aligned`` — crops already aligned to the ArcFace template: no detector, the canonical
  68-point layout scaled to the crop (:class:`AlignedLayout`).
* ``file`` — landmarks or face boxes the user already has (:class:`FileLandmarks`).
* ``auto`` — face_alignment when its weights load, else dlib; 112×112 inputs use ``aligned``.

Every backend's ``detect(image, key=None)`` returns faces in the image's pixels; ``key`` is
the item's name (used by ``file`` only). :class:`Downscaled` runs detection on a smaller copy
of big images and refines the landmarks at full resolution. :func:`select_faces` applies
the minimum face size, the plausibility and skin-likeness checks and the all/largest choice.

Example:
    >>> import numpy as np
    >>> backend = create_backend("aligned")
    >>> faces = backend.detect(np.zeros((112, 112, 3), np.uint8))
    >>> len(faces), faces[0].landmarks.shape, faces[0].backend
    (1, (68, 2), 'aligned')
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from maskgen.landmarks.aligned import aligned_landmarks, landmarks_from_five
from maskgen.landmarks.conventions import ARCFACE_SIZE
from maskgen.landmarks.validation import plausibility_problem

Box = tuple[float, float, float, float]

#: face-alignment 1.5.0 file names (the basenames of its download URLs) in the hub cache.
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/" + FAN_FILE
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/" + S3FD_FILE

BACKENDS = ("auto", "face_alignment", "dlib", "dlib-cnn", "aligned", "file")


@dataclass(frozen=True)
class Face:
    """One face: ``box`` is (x0, y0, x1, y1) in pixels, ``landmarks`` (68, 2) float32.

    ``score`` is the detector's confidence (dlib HOG: the SVM margin; 1.0 when unknown) and
    ``backend`` names what produced the face.

    Example:
        >>> import numpy as np
        >>> Face((0.0, 0.0, 10.0, 20.0), np.zeros((68, 2), np.float32)).box_area
        200.0
    """

    box: Box
    landmarks: np.ndarray
    score: float = 1.0
    backend: str = ""

    @property
    def box_area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def size(self) -> float:
        """Face size in pixels: the shorter side of the box."""
        x0, y0, x1, y1 = self.box
        return max(0.0, min(x1 - x0, y1 - y0))

    def scaled(self, factor: float) -> Face:
        """The same face in an image ``factor`` times larger."""
        box = tuple(float(v) * factor for v in self.box)
        lm = (self.landmarks * np.float32(factor)).astype(np.float32)
        return replace(self, box=box, landmarks=lm)  # type: ignore[arg-type]


class Backend(Protocol):
    """What every landmark backend provides."""

    name: str

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]: ...


def box_of(landmarks: np.ndarray) -> Box:
    """Bounding box of a landmark set.

    Example:
        >>> import numpy as np
        >>> box_of(np.array([[1, 2], [5, 3]], np.float32))
        (1.0, 2.0, 5.0, 3.0)
    """
    lo, hi = np.min(landmarks, axis=0), np.max(landmarks, axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# --------------------------------------------------------------------------------------------
# dlib
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# face-alignment (FAN)
# --------------------------------------------------------------------------------------------


class FaceAlignmentWeightsError(RuntimeError):
    """face-alignment's model files are missing or unreadable; the message says what to do."""


def hub_checkpoints_dir() -> Path:
    """Where face-alignment (through torch hub) caches its model files.

    ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``).
    """
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str) -> Path:
    """Fetch a user-given URL into the hub cache (only on explicit request)."""
    import torch.hub

    target = hub_checkpoints_dir() / os.path.basename(url.split("?")[0])
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as exc:
            raise FaceAlignmentWeightsError(f"could not download {url}: {exc}") from exc
    return target


def resolve_weights(given: str | os.PathLike[str] | None, file_name: str, what: str) -> Path:
    """Path of a face-alignment model file: ``given`` (path or URL) or the hub cache.

    Raises :class:`FaceAlignmentWeightsError` with instructions when it is not there.
    """
    if given is not None and str(given).startswith(("http://", "https://")):
        return _download(str(given))
    path = Path(given) if given is not None else hub_checkpoints_dir() / file_name
    if path.is_file():
        return path
    url = FAN_URL if file_name == FAN_FILE else S3FD_URL
    raise FaceAlignmentWeightsError(
        f"face-alignment's {what} weights were not found at {path}. face-alignment looks for "
        f"them in the torch hub cache ($TORCH_HOME/hub/checkpoints, here "
        f"{hub_checkpoints_dir()}) under the name {file_name}. Provide them by copying the "
        f"file there (download {url} on a machine with internet access), or pass a path or "
        f"URL (--fa-weights / --fa-detector-weights). maskgen never downloads them on its own. "
        f"'--landmarks dlib' works offline."
    )


def _load_fan(path: Path, device: str) -> Any:
    """Load a FAN: a TorchScript archive, or a face-alignment state dict (any module count)."""
    import torch

    try:
        if _is_torchscript(path):
            net = torch.jit.load(str(path), map_location=device)
        else:
            from face_alignment.models import FAN

            state = torch.load(str(path), map_location=device, weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            modules = sum(1 for k in state if re.fullmatch(r"l\d+\.weight", k))
            net = FAN(max(modules, 1))
            net.load_state_dict(state)
            net.to(device)
    except FaceAlignmentWeightsError:
        raise
    except Exception as exc:
        raise FaceAlignmentWeightsError(
            f"{path}: not a usable face-alignment 2D-FAN model ({type(exc).__name__}: {exc}). "
            f"Replace it with {FAN_FILE} from {FAN_URL}, or use '--landmarks dlib' (offline)."
        ) from exc
    net.eval()
    return net


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in zf.namelist())


def _fan_center_scale(box: Box) -> tuple[np.ndarray, float]:
    """face-alignment's crop centre and scale for a detector box."""
    from face_alignment.utils import CENTER_Y_OFFSET, REFERENCE_SCALE

    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - (y1 - y0) * CENTER_Y_OFFSET])
    return center, (x1 - x0 + y1 - y0) / REFERENCE_SCALE


def heatmap_points(heat: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    """Decode FAN heatmaps (68×R×R) to image points for a crop of ``center``/``scale``.

    The peak is moved a quarter pixel towards its larger neighbour, as face-alignment does,
    and mapped back through the crop frame (side ``200 * scale`` pixels around ``center``);
    unlike face-alignment the result is not rounded to whole pixels.

    Example:
        >>> import numpy as np
        >>> heat = np.zeros((68, 64, 64), np.float32); heat[:, 31, 31] = 1
        >>> heatmap_points(heat, np.array([100.0, 50.0]), 0.64)[0].tolist()
        [99.0, 49.0]
    """
    n, rows, cols = heat.shape
    flat = heat.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, cols)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    idx = np.arange(n)
    inner = (xs > 0) & (xs < cols - 1) & (ys > 0) & (ys < rows - 1)
    i, x, y = idx[inner], xs[inner], ys[inner]
    pts[i, 0] += 0.25 * np.sign(heat[i, y, x + 1] - heat[i, y, x - 1])
    pts[i, 1] += 0.25 * np.sign(heat[i, y + 1, x] - heat[i, y - 1, x])
    side = 200.0 * scale
    return ((pts + 0.5) * side / cols + np.asarray(center) - side / 2).astype(np.float32)


class FaceAlignmentDetector:
    """face-alignment's 2D FAN on face boxes from S3FD (``detector="sfd"``) or dlib HOG.

    Args:
        weights: FAN weights (path or URL); default ``<hub cache>/2DFAN4-11f355bf06.pth.tar``.
            A face-alignment state dict (any number of hourglass modules) or a TorchScript
            module mapping B×3×256×256 crops in [0, 1] to B×68×64×64 heatmaps.
        detector: ``"sfd"`` (face-alignment's S3FD) or ``"dlib"`` (HOG boxes, offline).
        detector_weights: S3FD weights (path or URL); default the hub cache.
        device: ``"cuda"`` when available, else ``"cpu"``.
        batch_size: face crops per FAN forward pass.
        flip_input: also run the mirrored crop and average (face-alignment's default).
    """

    name = "face_alignment"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        detector: str = "sfd",
        detector_weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 16,
        flip_input: bool = True,
        sfd_threshold: float = 0.5,
    ) -> None:
        import torch

        if detector not in ("sfd", "dlib"):
            raise ValueError(f"detector must be 'sfd' or 'dlib', got {detector!r}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.flip_input = flip_input
        fan_path = resolve_weights(weights, FAN_FILE, "2D-FAN landmark")
        sfd_path = None
        if detector == "sfd":
            sfd_path = resolve_weights(detector_weights, S3FD_FILE, "S3FD face detector")
        self.net = _load_fan(fan_path, self.device)
        self.detector_name = detector
        if detector == "sfd":
            from face_alignment.detection.sfd import FaceDetector as SfdDetector

            try:
                self._sfd = SfdDetector(self.device, path_to_detector=str(sfd_path))
            except Exception as exc:
                raise FaceAlignmentWeightsError(
                    f"{sfd_path}: not usable S3FD weights ({type(exc).__name__}: {exc}); "
                    f"replace it with {S3FD_FILE} from {S3FD_URL} or use '--landmarks dlib'"
                ) from exc
            self._sfd.filter_threshold = sfd_threshold
        else:
            self._dlib = DlibDetector(upsample=1)

    def boxes(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """Face boxes and scores from the configured detector."""
        if self.detector_name == "dlib":
            return self._dlib.boxes(image)
        found = self._sfd.detect_from_image(np.ascontiguousarray(image[..., ::-1]))  # BGR
        return [(tuple(float(v) for v in d[:4]), float(d[4])) for d in found]  # type: ignore[misc]

    def landmarks_in_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[Box]) -> np.ndarray:
        """Run FAN on one box per entry (``images[i]``, ``boxes[i]``); returns (N, 68, 2)."""
        import torch
        from face_alignment.utils import crop, flip

        out = np.zeros((len(boxes), 68, 2), np.float32)
        for start in range(0, len(boxes), self.batch_size):
            part = range(start, min(start + self.batch_size, len(boxes)))
            frames = [_fan_center_scale(boxes[i]) for i in part]
            crops = np.stack(
                [
                    crop(images[i], c, s).transpose(2, 0, 1)
                    for i, (c, s) in zip(part, frames, strict=True)
                ]
            ).astype(np.float32) / np.float32(255)
            with torch.no_grad():
                inp = torch.from_numpy(crops).to(self.device)
                heat = self._heatmaps(inp)
                if self.flip_input:
                    heat = heat + flip(self._heatmaps(flip(inp)), is_label=True)
            heat_np = heat.float().cpu().numpy()
            for j, (i, (center, scale)) in enumerate(zip(part, frames, strict=True)):
                out[i] = heatmap_points(heat_np[j], center, scale)
        return out

    def _heatmaps(self, inp: Any) -> Any:
        heat = self.net(inp)
        return heat[-1] if isinstance(heat, (list, tuple)) else heat

    def landmarks_in_box(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Run FAN inside one given face box."""
        return self.landmarks_in_boxes([image], [box])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect the faces of several images; FAN runs batched over all their boxes."""
        found = [self.boxes(img) for img in images]
        flat = [(i, box, score) for i, boxes in enumerate(found) for box, score in boxes]
        lms = self.landmarks_in_boxes([images[i] for i, _, _ in flat], [b for _, b, _ in flat])
        faces: list[list[Face]] = [[] for _ in images]
        for (i, box, score), lm in zip(flat, lms, strict=True):
            faces[i].append(Face(box, lm, score, self.name))
        return faces

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        """Detect all faces of one RGB ``uint8`` image."""
        return self.detect_batch([image])[0]


# --------------------------------------------------------------------------------------------
# aligned crops and user-given landmarks
# --------------------------------------------------------------------------------------------


class AlignedLayout:
    """Crops already aligned to the ArcFace template: the canonical 68 points, no detector.

    Example:
        >>> import numpy as np
        >>> face = AlignedLayout().detect(np.zeros((224, 224, 3), np.uint8))[0]
        >>> face.box, round(float(face.landmarks[30, 0]))
        ((0.0, 0.0, 224.0, 224.0), 112)
    """

    name = "aligned"

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        h, w = image.shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), aligned_landmarks((h, w)), 1.0, self.name)]


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
                faces.append(Face(box_of(lm), lm, 1.0, self.name))
        return faces


# --------------------------------------------------------------------------------------------
# wrappers: downscaling, auto, face selection
# --------------------------------------------------------------------------------------------


class Downscaled:
    """Detect on a copy of the image whose longer side is at most ``max_side``.

    Boxes are scaled back; when the inner backend can place landmarks inside a box
    (``landmarks_in_box``), they are recomputed on the full-resolution image.
    """

    def __init__(self, inner: Any, max_side: int = 800) -> None:
        self.inner = inner
        self.max_side = int(max_side)
        self.name = inner.name

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        h, w = image.shape[:2]
        factor = max(h, w) / self.max_side if self.max_side > 0 else 1.0
        if factor <= 1.0:
            return self.inner.detect(image, key)
        small = cv2.resize(
            image, (max(1, round(w / factor)), max(1, round(h / factor))),
            interpolation=cv2.INTER_AREA,
        )  # fmt: skip
        faces = [f.scaled(factor) for f in self.inner.detect(small, key)]
        refine = getattr(self.inner, "landmarks_in_box", None)
        if refine is None:
            return faces
        return [replace(f, landmarks=refine(image, f.box)) for f in faces]


class AutoBackend:
    """``primary`` for ordinary images, the aligned layout for 112×112 crops."""

    def __init__(self, primary: Any) -> None:
        self.primary = primary
        self.aligned = AlignedLayout()
        self.name = f"auto({primary.name})"

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        if image.shape[:2] == (ARCFACE_SIZE, ARCFACE_SIZE):
            return self.aligned.detect(image, key)
        return self.primary.detect(image, key)


def create_backend(
    name: str = "auto",
    *,
    fa_weights: str | os.PathLike[str] | None = None,
    fa_detector: str = "sfd",
    fa_detector_weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    landmarks_dir: str | os.PathLike[str] | None = None,
    upsample: int = 1,
    detect_max_side: int = 800,
) -> Any:
    """Build a landmark backend by name (see :data:`BACKENDS`).

    ``auto`` uses face_alignment when its weights load (without any download), else dlib,
    and the aligned layout for 112×112 images. Detector backends are wrapped in
    :class:`Downscaled` (``detect_max_side``; 0 disables).

    Example:
        >>> create_backend("dlib").name
        'dlib'
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown landmark backend {name!r}; choose from {BACKENDS}")
    if name == "aligned":
        return AlignedLayout()
    if name == "file":
        if landmarks_dir is None:
            raise ValueError("--landmarks file needs --landmarks-dir")
        return FileLandmarks(landmarks_dir)
    if name in ("dlib", "dlib-cnn"):
        return Downscaled(DlibDetector(upsample, cnn=name == "dlib-cnn"), detect_max_side)
    fa_kwargs = {"detector": fa_detector, "detector_weights": fa_detector_weights}
    if name == "face_alignment":
        fa = FaceAlignmentDetector(fa_weights, device=device, **fa_kwargs)  # type: ignore[arg-type]
        return Downscaled(fa, detect_max_side)
    try:
        fa = FaceAlignmentDetector(fa_weights, device=device, **fa_kwargs)  # type: ignore[arg-type]
        primary: Any = Downscaled(fa, detect_max_side)
    except FaceAlignmentWeightsError:
        primary = Downscaled(DlibDetector(upsample), detect_max_side)
    return AutoBackend(primary)


#: Skin-likeness: the YCrCb chroma box of Chai & Ngan (1999), which holds light to dark skin.
SKIN_CR = (133.0, 173.0)
SKIN_CB = (77.0, 127.0)
#: Below this mean chroma (distance from grey in Cr/Cb) an image counts as colourless.
ACHROMATIC = 4.0


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
