"""The ``face_alignment`` backend: face-alignment's 2D FAN (68 points) on detector boxes.

Boxes come from face-alignment's S3FD detector (or from dlib's HOG detector); FAN runs
batched, on CUDA when present. Weights are never downloaded implicitly: they are read from
the torch hub cache (where face-alignment itself stores them) or from a path or URL the
user gives (:class:`FaceAlignmentWeightsError` says where). torch and face_alignment are
imported when a detector is built, not when this module is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.landmarks.backends.base import Backend, Box, Face, register_backend
from maskgen.landmarks.backends.dlib import DlibDetector
from maskgen.landmarks.backends.downscale import Downscaled

#: face-alignment 1.5.0 file names (the basenames of its download URLs) in the hub cache.
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_FILE = "s3fd-619a316812.pth"
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/" + FAN_FILE
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/" + S3FD_FILE


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


@register_backend("face_alignment")
def create_face_alignment(
    *,
    fa_weights: str | os.PathLike[str] | None = None,
    fa_detector: str = "sfd",
    fa_detector_weights: str | os.PathLike[str] | None = None,
    device: str | None = None,
    detect_max_side: int = 800,
) -> Backend:
    """face-alignment's FAN (:class:`FaceAlignmentDetector`) on downscaled big images.

    Raises :class:`FaceAlignmentWeightsError` when the weights are missing or unusable.
    """
    fa = FaceAlignmentDetector(
        fa_weights, detector=fa_detector, detector_weights=fa_detector_weights, device=device
    )
    return Downscaled(fa, detect_max_side)
