"""Landmark caches: a dataset's landmarks fitted once (``maskgen landmarks``), read every epoch.

A cache is a folder beside the dataset (``ms1m.landmarks/``)::

    meta.json       format, version, the backend, the input, counts, non-fitted reasons
    keys.json       item keys in the dataset's order (folder: relative path, .bin: 000000…,
                    .rec: record key)
    landmarks.npy   (N, 68, 2) float32 pixel landmarks, NaN where an item has none
    status.npy      (N,) uint8: see :data:`STATUS`

A face without landmarks (``no_face``, ``failed``) is marked, never given the canonical
layout: renders record it as a failure, training refuses it up front. ``fallback`` items
(``aligned-fit`` could not fit them) hold the canonical layout and say so.

``--landmarks cache:PATH`` (``create_backend("cache:PATH")``) reads a cache wherever a
backend is used; :class:`WithLandmarks` gives any ``(image, label, …)`` dataset the cached
landmarks for :class:`maskgen.augment.MaskedPairs` and :class:`maskgen.augment.RandomFaceMask`.

Example:
    >>> import tempfile, numpy as np
    >>> from maskgen.landmarks import aligned_landmarks
    >>> folder = tempfile.mkdtemp() + "/x.landmarks"
    >>> _ = write_cache(folder, ["a.png", "b.png"], np.stack([aligned_landmarks()] * 2),
    ...                 np.array([1, 3], np.uint8), {"b.png": "no face found (dlib)"},
    ...                 {"backend": "dlib", "input": "x"})
    >>> cache = LandmarkCache(folder)
    >>> cache.get("a.png").status, cache.get("b.png").status, cache.get("b.png").landmarks
    ('fitted', 'no_face', None)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.landmarks.backends.base import Backend, Face, box_of, register_backend

FORMAT = "maskgen-landmark-cache"
VERSION = 1
#: Status codes of ``status.npy``, by position.
STATUS: tuple[str, ...] = ("missing", "fitted", "fallback", "no_face", "failed")
#: Statuses whose items hold landmarks.
WITH_LANDMARKS = ("fitted", "fallback")
#: The prefix that names a cache wherever a landmark backend is named.
PREFIX = "cache:"


class LandmarkCacheError(ValueError):
    """A cache that cannot be read, or an item it cannot give (one line, naming the path)."""


@dataclass(frozen=True)
class CachedFace:
    """One item of a cache: its status, its landmarks (``None`` without) and the reason
    it has none or fell back (empty when fitted)."""

    status: str
    landmarks: np.ndarray | None
    reason: str = ""


def write_cache(
    path: str | os.PathLike[str],
    keys: Sequence[str],
    landmarks: np.ndarray,
    status: np.ndarray,
    reasons: dict[str, str],
    meta: dict[str, Any],
) -> Path:
    """Write a cache folder atomically (a temporary folder renamed into place; an older cache
    at ``path`` is replaced). Returns the path."""
    out = Path(path)
    landmarks = np.asarray(landmarks, np.float32)
    status = np.asarray(status, np.uint8)
    n = len(keys)
    if landmarks.shape != (n, 68, 2) or status.shape != (n,):
        raise ValueError(f"{out}: {n} keys need (N, 68, 2) landmarks and (N,) statuses")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    np.save(tmp / "landmarks.npy", landmarks)
    np.save(tmp / "status.npy", status)
    (tmp / "keys.json").write_text(json.dumps(list(keys)))
    counts = {name: int((status == code).sum()) for code, name in enumerate(STATUS)}
    full = {"format": FORMAT, "version": VERSION, "items": n, "counts": counts, **meta,
            "reasons": reasons}  # fmt: skip
    (tmp / "meta.json").write_text(json.dumps(full, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


class LandmarkCache:
    """A landmark cache folder, read lazily (the landmarks are memory-mapped).

    Raises:
        LandmarkCacheError: the folder is not a cache of this format, or its files disagree.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise LandmarkCacheError(f"{self.path}: not a landmark cache ({exc})") from exc
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise LandmarkCacheError(
                f"{self.path}: not a {FORMAT} v{VERSION} folder (meta.json says "
                f"{self.meta.get('format')!r} v{self.meta.get('version')!r})"
            )
        try:
            self.keys: list[str] = json.loads((self.path / "keys.json").read_text())
            self.landmarks = np.load(self.path / "landmarks.npy", mmap_mode="r")
            self.status = np.load(self.path / "status.npy")
        except (OSError, ValueError) as exc:
            raise LandmarkCacheError(f"{self.path}: unreadable cache file ({exc})") from exc
        n = len(self.keys)
        if self.landmarks.shape != (n, 68, 2) or self.status.shape != (n,):
            raise LandmarkCacheError(
                f"{self.path}: {n} keys but landmarks {self.landmarks.shape} and statuses "
                f"{self.status.shape}"
            )
        self.reasons: dict[str, str] = self.meta.get("reasons", {})

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def backend(self) -> str:
        """The backend that fitted the landmarks."""
        return str(self.meta.get("backend", ""))

    @cached_property
    def _index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def index_of(self, key: str) -> int | None:
        """Position of ``key`` in the cache (``None``: not in it)."""
        return self._index.get(key)

    def at(self, index: int) -> CachedFace:
        """Item ``index`` (the dataset's order)."""
        status = STATUS[int(self.status[index])]
        key = self.keys[index]
        if status not in WITH_LANDMARKS:
            return CachedFace(status, None, self.reasons.get(key, status))
        return CachedFace(status, np.array(self.landmarks[index]), self.reasons.get(key, ""))

    def get(self, key: str) -> CachedFace | None:
        """Item ``key``, or ``None`` when the cache does not hold it. An absolute path is
        also looked up relative to the folder the cache was fitted on."""
        i = self.index_of(key)
        if i is None and os.path.isabs(key) and self.meta.get("input"):
            try:
                i = self.index_of(Path(key).resolve().relative_to(self.meta["input"]).as_posix())
            except ValueError:
                return None
        return None if i is None else self.at(i)

    def without_landmarks(self) -> list[str]:
        """Keys of the items that hold no landmarks."""
        has = np.isin(self.status, [STATUS.index(s) for s in WITH_LANDMARKS])
        return [self.keys[i] for i in np.flatnonzero(~has)]


class CacheBackend:
    """A landmark cache as a backend: ``detect(image, key)`` gives the item's cached face.

    An item the cache marks ``no_face``/``failed`` has no face; a key the cache does not hold
    is an error naming it (the render records it as that item's failure). A cache keeps one
    face per item (the largest) and no detector scores: a detector's face comes back with
    the landmarks' bounding box and score 1.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.cache = LandmarkCache(path)
        self.name = f"cache({self.cache.backend})"

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        entry = None if key is None else self.cache.get(key)
        if entry is None:
            raise LandmarkCacheError(f"{key}: not in the landmark cache {self.cache.path}")
        if entry.landmarks is None:
            return []
        lm = entry.landmarks
        fit = entry.status if self.cache.backend == "aligned-fit" else ""
        h, w = image.shape[:2]
        box = (0.0, 0.0, float(w), float(h)) if fit else box_of(lm)
        score = 0.0 if entry.status == "fallback" else 1.0  # as aligned-fit scores them
        return [Face(box, lm, score, self.cache.backend, fit=fit, fit_reason=entry.reason)]


@register_backend("cache")
def create_cache(*, cache_path: str | None = None) -> Backend:
    """A landmark cache (``cache:PATH`` names one with its path)."""
    if not cache_path:
        raise ValueError("the cache backend needs a path: --landmarks cache:PATH")
    return CacheBackend(cache_path)


class WithLandmarks:
    """A dataset whose items ``(image, label, …)`` become ``(image, label, landmarks)`` with
    the cached landmarks of item ``i`` (the cache's order is the dataset's).

    Items without landmarks raise :class:`LandmarkCacheError` naming the key.
    """

    def __init__(self, dataset: Any, cache: LandmarkCache | str | os.PathLike[str]) -> None:
        self.dataset = dataset
        self.cache = cache if isinstance(cache, LandmarkCache) else LandmarkCache(cache)
        if len(self.cache) != len(dataset):
            raise LandmarkCacheError(
                f"{self.cache.path}: {len(self.cache)} items, the dataset has {len(dataset)}"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, np.ndarray]:
        image, label = self.dataset[index][:2]
        entry = self.cache.at(int(index))
        if entry.landmarks is None:
            key = self.cache.keys[int(index)]
            raise LandmarkCacheError(
                f"{self.cache.path}: item {key} has no landmarks ({entry.reason})"
            )
        return image, label, entry.landmarks
