"""Training data for ``distill``: face sources, masked pairs, batching and verification packs.

A *source* is a map-style dataset whose item ``i`` is ``(image, label, landmarks)``: an
H×W×3 ``uint8`` RGB aligned crop, an integer identity and ``float32`` (68, 2) landmarks (the
same item protocol as :class:`maskgen.synthetic.SyntheticFaces`). Three kinds:

* :class:`SyntheticSource`: built-in identities from :mod:`maskgen.synthetic`, rendered on the
  fly or cached (in memory or as an ``.npz`` file);
* :class:`ImageFolderSource`: ``root/<identity>/<image>`` aligned 112×112 crops;
* :class:`RecordIOSource`: an insightface ``train.rec`` / ``train.idx`` pair (pure Python).

Aligned crops without their own landmarks get the canonical ArcFace-frame layout
(:func:`maskgen.landmarks.aligned_landmarks`).

:class:`maskgen.augment.MaskedPairs` wraps a source and returns ``(masked, clean, label,
was_masked)``: the clean image is never modified (the teacher must see the clean face of the
same sample), and with a seed every draw depends on ``(seed, epoch, index)`` only, so the
result does not depend on the number of workers or processes.

:class:`TrainDataset` adds the random horizontal flip (the same for both views) and returns
``uint8`` C×H×W tensors; :func:`normalize` maps them to ``[-1, 1]`` on the training device.
:class:`GlobalBatchSampler` splits each *global* batch over the processes of a distributed
run, so the sequence of global batches is the same for any number of processes.

Example:
    >>> src = SyntheticSource(2, 2, seed=0, cache="none")
    >>> from maskgen.augment import MaskedPairs
    >>> pairs = MaskedPairs(src, p=1.0, seed=0)
    >>> masked, clean, label, was_masked = pairs[1]
    >>> masked.shape, label, was_masked, bool((masked != clean).any())
    ((112, 112, 3), 0, True, True)
    >>> bool((clean == src[1][0]).all())  # the clean view is untouched
    True
    >>> x = TrainDataset(pairs, flip=True, seed=0)[1]
    >>> x[0].dtype, tuple(x[0].shape), float(normalize(x[1]).min()) >= -1.0
    (torch.uint8, (3, 112, 112), True)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from maskgen.io import (
    ImageReadError,
    RecordIOError,
    RecordSet,
    atomic_open,
    encode_image,
    iter_image_files,
    read_image,
    save_bin,
)
from maskgen.landmarks import aligned_landmarks, mirror_landmarks
from maskgen.synthetic import SyntheticFaces, Variation

__all__ = [
    "DatasetError",
    "FaceSource",
    "GlobalBatchSampler",
    "ImageFolderSource",
    "RecordIOSource",
    "SyntheticSource",
    "TrainDataset",
    "build_synthetic_pack",
    "normalize",
    "open_source",
    "pack_landmarks_path",
]

IMAGE_SIZE = 112


class DatasetError(ValueError):
    """A missing, empty or unreadable dataset (the message names the path and the problem)."""


class FaceSource(Protocol):
    """Map-style face dataset: ``source[i] -> (image_rgb_uint8, label, landmarks_68x2)``."""

    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]: ...


def _canonical_landmarks() -> np.ndarray:
    return aligned_landmarks(IMAGE_SIZE).astype(np.float32)


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DatasetError(
            f"{where}: expected an aligned {IMAGE_SIZE}×{IMAGE_SIZE} RGB crop, "
            f"got shape {image.shape}"
        )
    return image


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


class SyntheticSource:
    """Built-in synthetic identities (aligned 112×112), optionally cached.

    Args:
        num_identities: identities (labels ``0 .. num_identities - 1``).
        images_per_identity: images per identity.
        seed: identity seed (another seed gives other identities).
        cache: ``none`` (render every access, ~2 ms each), ``memory`` (render all once) or
            ``disk`` (like ``memory`` and saved to / reused from ``cache_path``).
        cache_path: the ``.npz`` file for ``cache="disk"``.
        variation: the within-identity spread (:class:`maskgen.synthetic.Variation` or its
            dict; ``None``: the generator's built-in one).
    """

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        seed: int = 0,
        cache: str = "memory",
        cache_path: str | os.PathLike[str] | None = None,
        variation: Variation | dict[str, Any] | None = None,
    ) -> None:
        if cache not in ("none", "memory", "disk"):
            raise ValueError(f"cache must be none, memory or disk, got {cache!r}")
        self.faces = SyntheticFaces(
            num_identities, images_per_identity, seed=seed, variation=variation
        )
        self.num_classes = int(num_identities)
        self.images: np.ndarray | None = None
        self.landmarks: np.ndarray | None = None
        if cache == "disk":
            if cache_path is None:
                raise ValueError("cache='disk' needs a cache_path")
            self._load_or_build(Path(cache_path))
        elif cache == "memory":
            self.images, self.landmarks = self._render_all()

    def _render_all(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.faces)
        images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        landmarks = np.empty((n, 68, 2), np.float32)
        for i in range(n):
            images[i], _, landmarks[i] = self.faces[i]
        return images, landmarks

    def _load_or_build(self, path: Path) -> None:
        key = {
            "n": self.faces.num_identities,
            "k": self.faces.images_per_identity,
            "seed": self.faces.seed,
        }
        if not self.faces.variation.is_default():
            key["variation"] = self.faces.variation.to_dict()
        if path.is_file():
            try:
                with np.load(path) as z:
                    if json.loads(str(z["key"])) == key:
                        self.images, self.landmarks = z["images"], z["landmarks"]
                        return
            except (OSError, ValueError, KeyError):
                pass  # stale or damaged cache: rebuild it
        self.images, self.landmarks = self._render_all()
        with atomic_open(path, "wb") as f:
            np.savez(f, images=self.images, landmarks=self.landmarks, key=json.dumps(key))

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        i = int(index)
        label = i // self.faces.images_per_identity
        if self.images is not None and self.landmarks is not None:
            return self.images[i], label, self.landmarks[i]
        image, label, lm = self.faces[i]
        return image, label, lm


class ImageFolderSource:
    """``root/<identity>/<image>``: one sub-directory per identity (sorted names → labels).

    Raises:
        DatasetError: if ``root`` is missing, not a directory or holds no images.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        if not self.root.is_dir():
            raise DatasetError(f"dataset path {self.root} is not a directory")
        classes = sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        files: list[Path] = []
        labels: list[int] = []
        names: list[str] = []
        for name in classes:
            found = list(iter_image_files(self.root / name))
            if found:
                labels += [len(names)] * len(found)
                names.append(name)
                files += found
        if not files:
            raise DatasetError(
                f"dataset folder {self.root} holds no images in identity sub-directories "
                "(expected root/<identity>/<image>.jpg|png)"
            )
        self.files = files
        self.labels = np.asarray(labels, np.int64)
        self.classes = names
        self.num_classes = len(names)
        self._landmarks = _canonical_landmarks()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        path = self.files[int(index)]
        try:
            image = read_image(path)
        except (ImageReadError, OSError) as exc:
            raise DatasetError(f"cannot read training image {path}: {exc}") from exc
        return _check_image(image, str(path)), int(self.labels[index]), self._landmarks


class RecordIOSource:
    """An insightface RecordIO training set (``train.rec`` + ``train.idx``).

    Args:
        path: the ``.rec`` file, or a directory holding ``train.rec``.

    Raises:
        DatasetError: if the files are missing or the header record disagrees with the
            records (the message comes from :class:`maskgen.io.RecordSet`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        rec = p / "train.rec" if p.is_dir() else p
        if not rec.is_file():
            raise DatasetError(f"RecordIO file {rec} does not exist")
        try:
            self.records = RecordSet(rec)
        except (RecordIOError, OSError) as exc:
            raise DatasetError(f"unreadable RecordIO dataset {rec}: {exc}") from exc
        if len(self.records) == 0:
            raise DatasetError(f"RecordIO dataset {rec} holds no image records")
        if self.records.num_classes is not None:
            self.num_classes = int(self.records.num_classes)
        else:  # no identity records: read every header once
            top = -1
            for key in self.records.image_keys:
                header = self.records.reader.read_header(int(key))
                label = np.asarray(header.label, np.float64).ravel()
                top = max(top, int(label[0]) if label.size else -1)
            self.num_classes = top + 1
        self._landmarks = _canonical_landmarks()
        self.path = rec

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        try:
            image, label = self.records[int(index)]
        except (RecordIOError, ImageReadError) as exc:
            raise DatasetError(f"{self.path}: cannot read image record {index}: {exc}") from exc
        if not 0 <= label < self.num_classes:
            raise DatasetError(
                f"{self.path}: record {index} has label {label} outside [0, {self.num_classes})"
            )
        return _check_image(image, f"{self.path} [record {index}]"), int(label), self._landmarks


def open_source(data: Any, cache_dir: str | os.PathLike[str] | None = None) -> FaceSource:
    """Build the source described by a :class:`distill.config.DataConfig`."""
    if data.source == "synthetic":
        cache_path = None
        if data.cache == "disk":
            if cache_dir is None:
                raise ValueError("data.cache = 'disk' needs a cache directory")
            name = f"synthetic_{data.num_identities}x{data.images_per_identity}_s{data.seed}"
            variation = Variation.from_dict(data.variation)
            if not variation.is_default():  # the key inside the file is checked as well
                text = json.dumps(variation.to_dict(), sort_keys=True)
                name += "_v" + hashlib.sha256(text.encode()).hexdigest()[:8]
            cache_path = Path(cache_dir) / f"{name}.npz"
        return SyntheticSource(
            data.num_identities,
            data.images_per_identity,
            data.seed,
            data.cache,
            cache_path,
            variation=data.variation,
        )
    if data.source == "folder":
        source: ImageFolderSource | RecordIOSource = ImageFolderSource(data.path)
    elif data.source == "recordio":
        source = RecordIOSource(data.path)
    else:
        raise DatasetError(f"unknown data.source {data.source!r}")
    if data.landmarks:
        return CachedLandmarksSource(source, data.landmarks)
    return source


class CachedLandmarksSource:
    """A ``folder``/``recordio`` source whose items carry their landmarks from a cache made
    by ``maskgen landmarks`` (:class:`maskgen.landmarks.LandmarkCache`), matched by key.

    Raises:
        DatasetError: the cache cannot be read, or holds no landmarks for some items (the
            count and the first keys are named).
    """

    def __init__(self, source: ImageFolderSource | RecordIOSource, cache: str) -> None:
        from maskgen.landmarks import LandmarkCache, LandmarkCacheError

        path = cache[len("cache:") :] if cache.startswith("cache:") else cache
        try:
            self.cache = LandmarkCache(path)
        except LandmarkCacheError as exc:
            raise DatasetError(f"data.landmarks: {exc}") from exc
        self.source = source
        self.num_classes = source.num_classes
        rows, missing = [], []
        for key in self._keys(source):
            i = self.cache.index_of(key)
            entry = None if i is None else self.cache.at(i)
            if entry is None or entry.landmarks is None:
                missing.append(f"{key} ({'not in the cache' if entry is None else entry.status})")
            rows.append(i)
        if missing:
            raise DatasetError(
                f"data.landmarks: {len(missing)} of {len(rows)} training images have no "
                f"landmarks in {path}: {', '.join(missing[:3])}"
                f"{' …' if len(missing) > 3 else ''}; refit them or leave them out"
            )
        self.rows = np.asarray(rows, np.int64)

    @staticmethod
    def _keys(source: ImageFolderSource | RecordIOSource) -> list[str]:
        """The keys ``maskgen landmarks`` gives the source's items, in the source's order."""
        if isinstance(source, RecordIOSource):
            return [str(k) for k in source.records.image_keys.tolist()]
        return [p.relative_to(source.root).as_posix() for p in source.files]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        image, label, _ = self.source[index]
        return image, label, np.asarray(self.cache.landmarks[self.rows[index]], np.float32)


# ----------------------------------------------------------------------------------------------
# Masked pairs and the training dataset
# ----------------------------------------------------------------------------------------------


def _chw(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class TrainDataset(Dataset):
    """Training items ``(student_view, teacher_view, label, was_masked, landmarks, index)``.

    Views are ``uint8`` 3×H×W tensors (flipped together); ``landmarks`` (68×2 ``float32``)
    belong to the (possibly flipped) image, for masking on the device; ``index`` is the
    item's index, the key of its mask draw on the device (as in the workers'
    :class:`maskgen.augment.MaskedPairs`).

    Args:
        base: masked pairs (4-tuples) or a plain source (3-tuples: both views are the clean
            image and ``was_masked`` is False).
        flip: random horizontal flip with p = 0.5.
        seed: seed of the flips (a flip depends on ``(seed, epoch, index)``).
    """

    def __init__(self, base: Any, flip: bool = True, seed: int = 0) -> None:
        self.base = base
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (for the flips and the wrapped masked pairs)."""
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int, bool, Tensor, int]:
        item = self.base[index]
        if len(item) == 4:  # masked pairs: landmarks are not needed any more
            student, teacher, label, was_masked = item
            landmarks = _NO_LANDMARKS
        else:
            teacher, label, landmarks = item
            student, was_masked = teacher, False
        student, teacher = np.asarray(student), np.asarray(teacher)
        landmarks = np.asarray(landmarks, np.float32)
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 0x666C6970])
        if self.flip and rng.random() < 0.5:
            same = teacher is student
            student = student[:, ::-1]
            teacher = student if same else teacher[:, ::-1]
            landmarks = mirror_landmarks(landmarks, student.shape[1])
        s = _chw(student)
        t = s if teacher is student else _chw(teacher)
        return s, t, int(label), bool(was_masked), torch.from_numpy(landmarks), int(index)


#: masked pairs carry no landmarks (they are only needed for masking on the device).
_NO_LANDMARKS = np.zeros((68, 2), np.float32)


def normalize(images: Tensor) -> Tensor:
    """``uint8`` (0..255) or float ``[0, 1]`` images → float ``[-1, 1]`` model input.

    >>> normalize(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
    [-1.0, 1.0]
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (x - 0.5) / 0.5


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-process batches cut from a seeded sequence of *global* batches.

    Each epoch permutes the ``n`` indices with ``(seed, epoch)``, cuts full global batches
    (the incomplete tail is dropped) and gives process ``rank`` its contiguous share of each.

    >>> s = GlobalBatchSampler(10, global_batch=4, rank=1, world_size=2, seed=0)
    >>> len(s), [len(b) for b in s]
    (2, [2, 2])
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        max_steps: int = 0,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"the global batch size {global_batch} is not divisible by the number of "
                f"processes {world_size}"
            )
        if n < global_batch:
            raise DatasetError(
                f"the dataset has {n} images, fewer than one global batch ({global_batch})"
            )
        self.n, self.global_batch = int(n), int(global_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed = int(seed)
        self.max_steps = int(max_steps)
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch."""
        steps = self.n // self.global_batch
        return min(steps, self.max_steps) if self.max_steps > 0 else steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Use the permutation of ``epoch`` and skip its first ``start_step`` batches."""
        self.epoch, self.start_step = int(epoch), int(start_step)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[list[int]]:
        perm = np.random.default_rng([self.seed, self.epoch, 0x73616D70]).permutation(self.n)
        per = self.global_batch // self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            batch = perm[step * self.global_batch : (step + 1) * self.global_batch]
            yield batch[self.rank * per : (self.rank + 1) * per].tolist()


# ----------------------------------------------------------------------------------------------
# Verification pack for the demo
# ----------------------------------------------------------------------------------------------


def pack_landmarks_path(pack: str | os.PathLike[str]) -> Path:
    """Sidecar file with the (2N, 68, 2) landmarks of a built pack: ``x.bin`` → ``x.landmarks.npy``.

    >>> pack_landmarks_path("eval/pack.bin").as_posix()
    'eval/pack.landmarks.npy'
    """
    p = Path(pack)
    return p.with_name(p.stem + ".landmarks.npy")


def build_synthetic_pack(
    path: str | os.PathLike[str],
    num_identities: int = 100,
    images_per_identity: int = 8,
    num_pairs: int = 600,
    seed: int = 9001,
    variation: Variation | dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write an insightface ``.bin`` pack of held-out synthetic identities.

    Pair ``k`` is images ``2k`` and ``2k + 1``; even ``k`` are genuine pairs (two different
    images of one identity), odd ``k`` impostor pairs, so every contiguous fold is balanced.
    Everything depends on ``seed`` only (a seed other than the training seed gives identities
    that were not trained on). Images are stored as PNG (lossless); their exact landmarks go
    to :func:`pack_landmarks_path`. Returns the pack path and a small summary dict (with a
    SHA-256 of the pack). ``variation`` is the within-identity spread of the images (as for
    training, :class:`maskgen.synthetic.Variation`; ``None``: the built-in one).
    """
    if num_pairs < 2 or images_per_identity < 2 or num_identities < 2:
        raise ValueError("need at least 2 pairs, 2 identities and 2 images per identity")
    faces = SyntheticFaces(num_identities, images_per_identity, seed=seed, variation=variation)
    rng = np.random.default_rng([seed, 0x7061636B])
    indices: list[int] = []
    issame: list[bool] = []
    k_img = images_per_identity
    for k in range(num_pairs):
        if k % 2 == 0:
            ident = int(rng.integers(num_identities))
            a, b = rng.choice(k_img, size=2, replace=False)
            indices += [ident * k_img + int(a), ident * k_img + int(b)]
            issame.append(True)
        else:
            ia, ib = rng.choice(num_identities, size=2, replace=False)
            indices += [int(ia) * k_img + int(rng.integers(k_img)),
                        int(ib) * k_img + int(rng.integers(k_img))]  # fmt: skip
            issame.append(False)
    cache: dict[int, tuple[bytes, np.ndarray]] = {}
    encoded: list[bytes] = []
    landmarks = np.empty((len(indices), 68, 2), np.float32)
    for j, idx in enumerate(indices):
        if idx not in cache:
            image, _, lm = faces[idx]
            cache[idx] = (encode_image(image, ".png"), lm)
        encoded.append(cache[idx][0])
        landmarks[j] = cache[idx][1]
    out = save_bin(path, encoded, issame)
    with atomic_open(pack_landmarks_path(out), "wb") as f:
        np.save(f, landmarks)
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
    summary = {
        "path": str(out),
        "num_pairs": num_pairs,
        "num_identities": num_identities,
        "images_per_identity": images_per_identity,
        "seed": seed,
        "variation": faces.variation.to_dict(),
        "sha256": digest,
    }
    return out, summary
