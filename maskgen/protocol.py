"""Masked-face evaluation protocols: pair semantics, per-image draws and the protocol file.

One module for both ``maskgen render lfw.bin out.bin --protocol m-nm`` and ``distill eval``.
A verification set holds 2N images; pair ``k`` is images ``2k`` and ``2k + 1``.

* ``nm-nm``: no image is masked;
* ``m-nm``: in **every** pair the second image is masked and the first stays clean;
* ``m-m``: both images of every pair are masked, each with its own draw.

Image ``i`` is keyed ``f"{i:06d}"`` (the key ``maskgen render`` gives the images of a
``.bin``) and drawn by :func:`maskgen.seeding.draw_item` with the decision forced by the
protocol, so a pack rendered with ``--protocol m-nm --seed S`` holds exactly the masks that
``distill eval --protocols m-nm --seed S`` scores, and the masked images of M-NM are those of
M-M (only the first image of each pair differs). Aligned packs are masked on
:func:`protocol_landmarks`, the canonical layout as the manifest stores it.

Every draw is written to a *protocol file* (:class:`EvalProtocol`, JSON) that both tools read
and write, so every model is scored on identical images and a reused file reproduces them.

Example:
    >>> parse_protocols("m-m, NM-NM")
    ('nm-nm', 'm-m')
    >>> [d is None for d in protocol_draws("m-nm", num_images=4, seed=0)]
    [True, False, True, False]
    >>> protocol_draws("m-nm", 4, seed=0)[1] == protocol_draws("m-m", 4, seed=0)[1]
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from maskgen.io import atomic_write_text
from maskgen.landmarks import aligned_landmarks, quantise
from maskgen.render import MaskParams, MaskSpec
from maskgen.seeding import draw_item

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_FORMAT",
    "DatasetProtocol",
    "EvalProtocol",
    "ProtocolFileError",
    "dataset_sha256",
    "image_key",
    "parse_protocols",
    "protocol_draws",
    "protocol_label",
    "protocol_landmarks",
    "protocol_masks",
    "protocol_path",
]

#: The three protocols, in canonical order.
PROTOCOLS: tuple[str, ...] = ("nm-nm", "m-nm", "m-m")
_LABELS = {"nm-nm": "NM-NM", "m-nm": "M-NM", "m-m": "M-M"}
PROTOCOL_FORMAT = "distill-eval-protocol"


class ProtocolFileError(ValueError):
    """A protocol file that is malformed or does not match the data being evaluated."""


class PairSet(Protocol):
    """What a verification set offers: 2N images, N flags and where it came from."""

    path: Any
    issame: Any

    @property
    def num_images(self) -> int: ...

    @property
    def num_pairs(self) -> int: ...


def protocol_label(protocol: str) -> str:
    """``"m-nm"`` → ``"M-NM"``."""
    return _LABELS[protocol]


def image_key(index: int) -> str:
    """The key of image ``index`` of a pair set (as ``maskgen render`` keys a ``.bin``).

    >>> image_key(41)
    '000041'
    """
    return f"{int(index):06d}"


def protocol_masks(protocol: str, index: int) -> bool:
    """Whether image ``index`` is masked under ``protocol``.

    >>> [protocol_masks("m-nm", i) for i in range(4)]
    [False, True, False, True]
    """
    (name,) = parse_protocols([protocol])
    return name == "m-m" or (name == "m-nm" and index % 2 == 1)


def protocol_landmarks(shape: tuple[int, ...]) -> np.ndarray:
    """Landmarks of an aligned image of ``shape``: the canonical layout at 0.01 px, exactly
    what ``maskgen render --landmarks aligned`` draws on and stores in its manifest."""
    return quantise(aligned_landmarks((int(shape[0]), int(shape[1]))))


def protocol_path(output: str | os.PathLike[str]) -> Path:
    """The protocol file written beside a ``.bin`` output: ``<name>.protocol.json``.

    Example:
        >>> protocol_path("out/lfw_mnm.bin").as_posix()
        'out/lfw_mnm.protocol.json'
    """
    out = Path(output)
    return out.with_name(out.stem + ".protocol.json")


def dataset_sha256(dataset: PairSet) -> str:
    """SHA-256 identifying a set: of the ``.bin`` file, or of the pairs file's bytes.

    An in-memory pack (no ``path``) is hashed over its images and flags.
    """
    h = hashlib.sha256()
    if dataset.path is not None and Path(dataset.path).is_file():
        with open(dataset.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if hasattr(dataset, "images"):
        for img in dataset.images:
            h.update(len(img).to_bytes(8, "little"))
            h.update(img)
    else:
        for p in dataset.paths:
            h.update(str(p).encode() + b"\0")
    h.update(bytes(int(f) for f in dataset.issame))
    return h.hexdigest()


def parse_protocols(text: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise ``"nm-nm,m-nm"`` (or a list) to canonical names in canonical order.

    >>> parse_protocols(["M-NM", "nm_nm"])
    ('nm-nm', 'm-nm')
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = set()
    for item in items:
        name = item.strip().lower().replace("_", "-")
        if not name:
            continue
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {item!r}; choose from {', '.join(PROTOCOLS)}")
        wanted.add(name)
    if not wanted:
        raise ValueError("no protocol given")
    return tuple(p for p in PROTOCOLS if p in wanted)


def protocol_draws(
    protocol: str, num_images: int, seed: int, spec: MaskSpec | None = None
) -> list[MaskParams | None]:
    """One :class:`MaskParams` or ``None`` (clean) per image of a 2N-image set.

    ``nm-nm``: all ``None``; ``m-nm``: odd images (the second of each pair) masked;
    ``m-m``: every image masked. Image ``i`` is output :func:`image_key` ``(i)`` of run
    ``seed`` (:func:`maskgen.seeding.draw_item`), so a draw depends only on (seed, image) and
    is the draw ``maskgen render --protocol`` makes for that image.

    >>> a, b = protocol_draws("m-m", 2, seed=3)
    >>> a != b, protocol_draws("m-m", 2, seed=3)[1] == b
    (True, True)
    """
    (name,) = parse_protocols([protocol])
    if num_images % 2:
        raise ValueError(f"a pair set holds an even number of images, got {num_images}")
    if name == "nm-nm":
        return [None] * num_images
    spec = spec or MaskSpec()
    draws: list[MaskParams | None] = []
    for i in range(num_images):
        if protocol_masks(name, i):
            draws.append(draw_item(spec, int(seed), image_key(i), masked=True).params[0])
        else:
            draws.append(None)
    return draws


@dataclass
class DatasetProtocol:
    """The protocol draws of one set: what was masked, how, and on which landmarks.

    ``landmarks`` is ``"aligned"`` (the ArcFace-aligned layout, scaled to the image) or the
    name of the detector backend; for a detector, ``points`` holds the detected (68, 2)
    landmarks of every image (``None`` where no face was found), so a reused protocol file
    needs no detector and gives identical images.

    ``images_sha256`` maps a protocol to the SHA-256 of its masked model inputs (filled by the
    first evaluation); a later evaluation that renders different pixels from the same draws
    (e.g. after a renderer change) warns that its numbers are not comparable.
    """

    source: str
    sha256: str
    num_images: int
    num_pairs: int
    landmarks: str
    draws: dict[str, list[MaskParams | None]]
    points: list[np.ndarray | None] | None = None
    images_sha256: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "num_images": self.num_images,
            "num_pairs": self.num_pairs,
            "landmarks": self.landmarks,
            "landmark_points": None
            if self.points is None
            else [None if p is None else np.asarray(p, np.float32).tolist() for p in self.points],
            "protocols": {
                name: [None if d is None else d.to_dict() for d in draws]
                for name, draws in self.draws.items()
            },
            "masked_images_sha256": dict(self.images_sha256),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> DatasetProtocol:
        try:
            n = int(data["num_images"])
            draws: dict[str, list[MaskParams | None]] = {}
            for name, items in data["protocols"].items():
                (canon,) = parse_protocols([name])
                if len(items) != n:
                    raise ValueError(f"protocol {name}: {len(items)} entries for {n} images")
                draws[canon] = [None if d is None else MaskParams.from_dict(d) for d in items]
            raw_points = data.get("landmark_points")
            points = None
            if raw_points is not None:
                if len(raw_points) != n:
                    raise ValueError(f"landmark_points: {len(raw_points)} entries for {n} images")
                points = [None if p is None else np.asarray(p, np.float32) for p in raw_points]
            return cls(
                source=str(data["source"]),
                sha256=str(data["sha256"]),
                num_images=n,
                num_pairs=int(data["num_pairs"]),
                landmarks=str(data["landmarks"]),
                draws=draws,
                points=points,
                images_sha256={
                    str(k): str(v) for k, v in (data.get("masked_images_sha256") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolFileError(f"{where}: malformed dataset entry: {exc}") from exc


@dataclass
class EvalProtocol:
    """All the mask draws of an evaluation, per dataset and protocol (the protocol file)."""

    seed: int
    datasets: dict[str, DatasetProtocol] = field(default_factory=dict)
    mask_spec: dict[str, Any] = field(default_factory=lambda: MaskSpec().to_dict())
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROTOCOL_FORMAT,
            "version": 1,
            "seed": self.seed,
            "mask_spec": self.mask_spec,
            "datasets": {name: d.to_dict() for name, d in self.datasets.items()},
        }

    def to_json(self) -> str:
        """JSON text with one line per image entry (readable and diff-friendly)."""
        compact: list[str] = []

        def squash(obj: Any) -> Any:
            # Per-image entries are replaced by placeholders, then re-inserted compactly.
            compact.append(json.dumps(obj, sort_keys=True, separators=(",", ":")))
            return f"@@{len(compact) - 1}@@"

        data = self.to_dict()
        data["mask_spec"] = {k: squash(v) for k, v in data["mask_spec"].items()}
        for d in data["datasets"].values():
            d["protocols"] = {k: [squash(x) for x in v] for k, v in d["protocols"].items()}
            if d["landmark_points"] is not None:
                d["landmark_points"] = [squash(x) for x in d["landmark_points"]]
        text = json.dumps(data, indent=1)
        return re.sub(r'"@@(\d+)@@"', lambda m: compact[int(m.group(1))], text) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the protocol file atomically and return its path."""
        out = atomic_write_text(path, self.to_json())
        self.path = out
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalProtocol:
        """Read a protocol file (:class:`ProtocolFileError` if it is not a valid one)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolFileError(f"{p}: not a readable JSON protocol file: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != PROTOCOL_FORMAT:
            raise ProtocolFileError(
                f"{p}: not a distill protocol file (format != {PROTOCOL_FORMAT!r})"
            )
        if data.get("version") != 1:
            raise ProtocolFileError(
                f"{p}: unsupported protocol file version {data.get('version')!r}"
            )
        try:
            datasets = {
                str(name): DatasetProtocol.from_dict(d, f"{p} [{name}]")
                for name, d in data["datasets"].items()
            }
            return cls(
                seed=int(data["seed"]),
                datasets=datasets,
                mask_spec=dict(data.get("mask_spec") or {}),
                path=p,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ProtocolFileError):
                raise
            raise ProtocolFileError(f"{p}: malformed protocol file: {exc}") from exc

    def check(
        self, name: str, dataset: PairSet, protocols: Sequence[str], sha256: str
    ) -> DatasetProtocol:
        """Return the entry for ``name`` after checking it describes ``dataset``."""
        where = str(self.path) if self.path else "protocol"
        entry = self.datasets.get(name)
        if entry is None:
            raise ProtocolFileError(
                f"{where}: no dataset {name!r} "
                f"(it has: {', '.join(sorted(self.datasets)) or 'none'})"
            )
        if entry.sha256 != sha256:
            raise ProtocolFileError(
                f"{where}: dataset {name!r} was drawn for a different file ({entry.source}, "
                f"sha256 {entry.sha256[:12]}…) than the one given (sha256 {sha256[:12]}…)"
            )
        if entry.num_images != dataset.num_images:
            raise ProtocolFileError(
                f"{where}: dataset {name!r} has {entry.num_images} images in the protocol file "
                f"but {dataset.num_images} in the data"
            )
        absent = [p for p in protocols if p not in entry.draws]
        if absent:
            raise ProtocolFileError(
                f"{where}: dataset {name!r} has no draws for protocol(s) {', '.join(absent)}"
            )
        return entry
