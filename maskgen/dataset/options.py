"""Run options of ``maskgen render``: :class:`RenderOptions`, output kinds, shards, block sizes.

Everything here is decided before the first item is rendered and stored in ``run.json``; a
resumed run must use the same options.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskgen.io import IMAGE_EXTENSIONS
from maskgen.render import MaskSpec

__all__ = [
    "FOLDER_BLOCK",
    "PACKED_BLOCK",
    "PROTOCOLS",
    "TAR_BLOCK",
    "RenderOptions",
    "default_max_pixels",
    "meta_dir",
    "output_kind",
    "parse_shard",
]

#: The evaluation protocols a rendered ``.bin`` can follow (NM-NM needs no rendering).
PROTOCOLS = ("m-m", "m-nm")

#: Default items per block for folder outputs: each item is a file of its own, often a large
#: photo, so blocks stay small for even load and little lost work on a kill.
FOLDER_BLOCK = 64
#: Default items per block for ``.rec``/``.bin`` outputs: items are small crops, and every
#: block ends with an fsynced part file (about 3 ms), so blocks are larger.
PACKED_BLOCK = 1024
#: Default samples per block for ``.tar`` outputs: a block's input and output bytes are held
#: at once, and webdataset shards often hold full-size photos.
TAR_BLOCK = 256


#: Bytes a worker holds per pixel of an image it renders (decoded RGB, a painted copy, the
#: float occlusion map, detection and encoding buffers), for :func:`default_max_pixels`.
BYTES_PER_PIXEL = 24
#: OpenCV refuses to decode more pixels than this by default (``OPENCV_IO_MAX_IMAGE_PIXELS``).
OPENCV_MAX_PIXELS = 1 << 30


def default_max_pixels(workers: int | None) -> int:
    """The default pixel limit: a worker's share of the physical memory over
    :data:`BYTES_PER_PIXEL`, at most :data:`OPENCV_MAX_PIXELS`, at least 16 MP.

    Example:
        >>> 1 << 24 <= default_max_pixels(4) <= OPENCV_MAX_PIXELS
        True
    """
    n = (os.cpu_count() or 1) if workers is None or workers < 1 else workers
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        memory = 16 << 30
    return int(min(OPENCV_MAX_PIXELS, max(1 << 24, memory // n // BYTES_PER_PIXEL)))


def output_kind(path: str | os.PathLike[str]) -> str:
    """``"bin"``, ``"rec"``, ``"tar"`` or ``"folder"`` from a path's suffix (a folder output
    of ``.tar`` shards is ``"tar"`` too: the runner decides that from the input).

    Example:
        >>> output_kind("lfw.bin"), output_kind("train.rec"), output_kind("out/dir")
        ('bin', 'rec', 'folder')
        >>> output_kind("masked-000000.tar")
        'tar'
    """
    suffix = Path(path).suffix.lower()
    return {".bin": "bin", ".rec": "rec", ".tar": "tar"}.get(suffix, "folder")


def meta_dir(output: str | os.PathLike[str]) -> Path:
    """Folder of the manifest, failure report, progress log and parts: ``<OUTPUT>.maskgen``.

    Example:
        >>> meta_dir("out/lfw.bin").as_posix()
        'out/lfw.bin.maskgen'
    """
    out = Path(output)
    return out.parent / (out.name + ".maskgen")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0 ≤ i < n).

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class RenderOptions:
    """Everything that decides the output files (stored in ``run.json``).

    Attributes:
        spec: what masks may be drawn.
        p: probability that an output is masked (else the clean input is written).
        variants: outputs per input image (folders and ``.rec`` only).
        seed: global seed; each output's draws derive from it and the item's key.
        landmarks: backend name (:func:`maskgen.landmarks.available_backends`).
        landmarks_dir: annotation folder for ``landmarks="file"``.
        fa_weights, fa_detector, fa_detector_weights: face-alignment model files/detector.
        faces: ``"all"`` or ``"largest"``.
        min_face: minimum face size (shorter box side, pixels).
        save_occlusion: also write the occlusion maps (PNG) under ``<meta>/occlusion``.
        format: output image format (``"png"``, ``"jpg"`` …); default: the input's for
            folders, ``jpg`` inside ``.rec``/``.bin`` (unmasked images keep their bytes).
        quality: JPEG/WebP quality.
        protocol: for ``.bin`` output, ``"m-m"`` (all masked) or ``"m-nm"`` (the second
            image of every pair masked, the first clean).
        block_size: items per task (and per part file); 0 = automatic:
            :data:`FOLDER_BLOCK` for folder outputs, :data:`PACKED_BLOCK` for ``.rec``/``.bin``.
        detect_max_side: detection runs on a copy at most this large (0 = full size).

    Example:
        >>> RenderOptions(format="PNG").format
        '.png'
    """

    spec: MaskSpec = field(default_factory=MaskSpec)
    p: float = 1.0
    variants: int = 1
    seed: int = 0
    landmarks: str = "auto"
    landmarks_dir: str | None = None
    fa_weights: str | None = None
    fa_detector: str = "sfd"
    fa_detector_weights: str | None = None
    faces: str = "all"
    min_face: float = 0.0
    save_occlusion: bool = False
    format: str | None = None
    quality: int = 95
    protocol: str | None = None
    block_size: int = 0
    detect_max_side: int = 800

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"--p must be in [0, 1], got {self.p}")
        if self.variants < 1:
            raise ValueError(f"--variants must be at least 1, got {self.variants}")
        if self.faces not in ("all", "largest"):
            raise ValueError(f"--faces must be 'all' or 'largest', got {self.faces!r}")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.format is not None:
            ext = "." + self.format.lower().lstrip(".")
            if ext not in IMAGE_EXTENSIONS:
                raise ValueError(
                    f"--format {self.format!r}: choose from {sorted(IMAGE_EXTENSIONS)}"
                )
            object.__setattr__(self, "format", ext)
        if self.block_size < 0:
            raise ValueError(f"block_size must be 0 (automatic) or more, got {self.block_size}")

    def to_dict(self) -> dict[str, Any]:
        """The options as ``run.json`` stores them (the spec as :meth:`MaskSpec.to_dict`)."""
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    def backend_config(self) -> dict[str, Any]:
        """The landmark backend's name and settings (what
        :meth:`maskgen.dataset.state.WorkerState.backend` creates it from)."""
        return {
            "name": self.landmarks,
            "landmarks_dir": self.landmarks_dir,
            "fa_weights": self.fa_weights,
            "fa_detector": self.fa_detector,
            "fa_detector_weights": self.fa_detector_weights,
            "detect_max_side": self.detect_max_side,
        }
