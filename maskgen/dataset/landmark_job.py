"""``maskgen landmarks``: a dataset's landmarks fitted once into a cache.

The cache format is :mod:`maskgen.landmarks.cache`. The job runs like ``maskgen render``:
the same sources (folders, ``.bin``, ``.rec``) and keys, blocks of items in joblib workers,
one part file per block (written atomically) in ``<OUTPUT>.parts/``, so that a killed run
resumes where it stopped and ``--shard i/n`` runs on several machines fill one parts folder;
the run that finds every block done assembles the cache and removes the parts. A parts
folder started from another input listing or backend is refused, naming what changed.

Example:
    >>> import tempfile, cv2, numpy as np
    >>> from maskgen.synthetic import SyntheticFaces
    >>> root = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     _ = cv2.imwrite(f"{root}/{i}.png", SyntheticFaces(3, 1, seed=0)[i][0][:, :, ::-1])
    >>> summary = fit_landmarks(root, root + ".landmarks", landmarks="aligned", workers=1,
    ...                         progress=False)
    >>> summary["counts"]["fitted"], summary["complete"]
    (3, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.dataset.options import RenderOptions
from maskgen.dataset.sources import Item, Source, open_source
from maskgen.dataset.state import worker_state
from maskgen.io import ImageReadError, RecordIOError, decode_image
from maskgen.landmarks.backends.base import detect_decoded
from maskgen.landmarks.cache import STATUS, LandmarkCache, LandmarkCacheError, write_cache

__all__ = ["BLOCK", "fit_landmarks", "parts_dir"]

#: Items per block (and part file).
BLOCK = 512
_STATE = worker_state()


def parts_dir(output: str | os.PathLike[str]) -> Path:
    """Where the part files of a cache being fitted live: ``<OUTPUT>.parts``."""
    out = Path(output)
    return out.with_name(out.name + ".parts")


def _fingerprint(keys: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


_Row = tuple[np.ndarray, int, str]
_ERRORS = (ImageReadError, RecordIOError, OSError, ValueError)
#: Decoded pixels held at once while a block is fitted in batches.
BATCH_BYTES = 64 << 20


def _decode_item(source: Source, item: Item) -> np.ndarray:
    raw, _ = source.load(item)
    return decode_image(raw, source=source.describe(item))


def _fit_item(
    source: Source, item: Item, options: RenderOptions, image: Any = None, faces: Any = None
) -> _Row:
    """One item's landmarks, status code and reason (empty when fitted); ``image``: the
    item decoded (or the error that stopped it), ``faces``: what the backend found in it,
    ``None`` to do either here."""
    from maskgen.landmarks.selection import are_detections, select_faces

    nothing = np.full((68, 2), np.nan, np.float32)
    try:
        if isinstance(image, Exception):
            raise image
        if image is None:
            image = _decode_item(source, item)
        if faces is None:
            faces = _STATE.backend(options).detect(image, item.key)
    except _ERRORS as exc:
        return nothing, STATUS.index("failed"), str(exc)
    check_skin = are_detections(options.landmarks, faces)
    kept, reasons = select_faces(image, faces, mode="largest", check_skin=check_skin)
    if not kept:
        why = "; ".join(reasons) or f"no face found ({options.landmarks})"
        return nothing, STATUS.index("no_face"), why
    face = kept[0]
    if len(face.landmarks) != 68:
        return nothing, STATUS.index("failed"), f"{len(face.landmarks)} landmarks, not 68"
    if face.fit == "fallback":
        return face.landmarks.astype(np.float32), STATUS.index("fallback"), face.fit_reason
    return face.landmarks.astype(np.float32), STATUS.index("fitted"), ""


def _decoded(source: Source, item: Item) -> np.ndarray | Exception:
    try:
        return _decode_item(source, item)
    except _ERRORS as exc:
        return exc


def _fit_batch(
    source: Source, items: list[Item], options: RenderOptions, images: list[Any]
) -> list[_Row]:
    """Every item's row (``images``: each item decoded, or its error), the decodable ones
    detected in one ``detect_many`` of the backend (``aligned-fit``: one batched fit).
    When the batch raises, each item is detected on its own, so that an error is its
    item's failure."""
    found = detect_decoded(_STATE.backend(options), images, [it.key for it in items])
    return [
        _fit_item(source, item, options, image, found.get(i))
        for i, (item, image) in enumerate(zip(items, images, strict=True))
    ]


def _fit_block(source: Source, items: list[Item], options: RenderOptions, path: Path) -> int:
    """Fit a block and write its part file atomically; returns the number of items.

    With a backend that detects many images at once (``detect_many``) the block is decoded
    and fitted in batches of at most about :data:`BATCH_BYTES` of pixels; otherwise item
    by item. The rows are the same either way.
    """
    try:
        batched = hasattr(_STATE.backend(options), "detect_many")
    except _ERRORS:
        batched = False  # each item fails with the error, as item by item
    if not batched:
        rows = [_fit_item(source, item, options) for item in items]
    else:
        rows, start = [], 0
        while start < len(items):
            images: list[Any] = []
            held = 0
            while start + len(images) < len(items) and (not images or held < BATCH_BYTES):
                images.append(_decoded(source, items[start + len(images)]))
                held += getattr(images[-1], "nbytes", 0)
            rows += _fit_batch(source, items[start : start + len(images)], options, images)
            start += len(images)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            keys=np.array(json.dumps([it.key for it in items])),
            landmarks=np.stack([r[0] for r in rows]),
            status=np.array([r[1] for r in rows], np.uint8),
            reasons=np.array(json.dumps([r[2] for r in rows])),
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(items)


def _part_path(parts: Path, block: int) -> Path:
    return parts / f"block_{block:07d}.npz"


def _read_part(path: Path, keys: Sequence[str]) -> dict[str, Any] | None:
    """A finished part, or ``None`` when it is missing or unreadable (refitted)."""
    try:
        with np.load(path) as z:
            part = {k: z[k] for k in ("keys", "landmarks", "status", "reasons")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if json.loads(str(part["keys"])) != list(keys):
        return None
    return part


def _check_parts_meta(parts: Path, meta: dict[str, Any]) -> None:
    """Start a parts folder, or check that it was started for the same input and backend."""
    path = parts / "meta.json"
    if not path.exists():
        parts.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=1))
        return
    old = json.loads(path.read_text())
    changed = [k for k in meta if old.get(k) != meta[k]]
    if changed:
        raise LandmarkCacheError(
            f"{parts}: started with another {', '.join(changed)}; remove the folder to start over"
        )


def fit_landmarks(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    landmarks: str = "aligned-fit",
    options: RenderOptions | None = None,
    workers: int = -1,
    shard: tuple[int, int] = (0, 1),
    block: int = BLOCK,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit every item's landmarks with backend ``landmarks`` into the cache ``output``.

    Args:
        input_path: a folder, ``.bin`` pack or ``.rec`` set.
        output: the cache folder (e.g. ``train.landmarks``).
        landmarks: the backend (:func:`maskgen.landmarks.available_backends`).
        options: backend settings (``landmarks_dir``, face-alignment weights …) as
            :class:`~maskgen.dataset.RenderOptions` carries them; ``landmarks`` wins.
        workers: joblib workers (-1: all cores).
        shard: ``(i, n)``: fit only the blocks ``b`` with ``b % n == i``.
        block: items per block.
        progress: show a progress bar.

    Returns:
        A summary: ``counts`` per status (complete caches), ``blocks_done`` /
        ``blocks_total``, ``complete`` and ``output``.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    options = replace(options or RenderOptions(), landmarks=landmarks)
    source = open_source(input_path)
    items = list(source.items())
    keys = [it.key for it in items]
    parts = parts_dir(output)
    meta = {"input": str(Path(input_path).resolve()), "backend": landmarks, "items": len(keys),
            "keys_sha256": _fingerprint(keys), "block": block}  # fmt: skip
    _check_parts_meta(parts, meta)
    blocks = [items[b : b + block] for b in range(0, len(items), block)]
    done = {b for b, blk in enumerate(blocks) if _part_path(parts, b).exists()
            and _read_part(_part_path(parts, b), [it.key for it in blk]) is not None}  # fmt: skip
    i, n = shard
    todo = [b for b in range(len(blocks)) if b % n == i and b not in done]
    bar = tqdm(total=sum(len(blocks[b]) for b in todo), desc="landmarks", unit="img",
               disable=not progress)  # fmt: skip
    jobs = (delayed(_fit_block)(source, blocks[b], options, _part_path(parts, b)) for b in todo)
    for count in Parallel(n_jobs=workers, return_as="generator_unordered")(jobs):
        bar.update(count)
    bar.close()
    done |= set(todo)
    summary: dict[str, Any] = {"output": str(output), "blocks_done": len(done),
                               "blocks_total": len(blocks), "complete": False}  # fmt: skip
    if len(done) == len(blocks):
        summary["counts"] = _assemble(output, parts, blocks, meta).meta["counts"]
        summary["complete"] = True
    return summary


def _assemble(
    output: str | os.PathLike[str], parts: Path, blocks: list[list[Item]], meta: dict[str, Any]
) -> LandmarkCache:
    """Join the part files into the cache and remove them."""
    landmarks, status, reasons = [], [], {}
    for b, blk in enumerate(blocks):
        keys = [it.key for it in blk]
        part = _read_part(_part_path(parts, b), keys)
        if part is None:
            raise LandmarkCacheError(f"{_part_path(parts, b)}: missing or unreadable part file")
        landmarks.append(part["landmarks"])
        status.append(part["status"])
        for key, why in zip(keys, json.loads(str(part["reasons"])), strict=True):
            if why:
                reasons[key] = why
    all_keys = [it.key for blk in blocks for it in blk]
    stacked = np.concatenate(landmarks) if landmarks else np.zeros((0, 68, 2), np.float32)
    codes = np.concatenate(status) if status else np.zeros(0, np.uint8)
    info = {k: meta[k] for k in ("input", "backend", "keys_sha256")}
    write_cache(output, all_keys, stacked, codes, reasons, info)
    shutil.rmtree(parts, ignore_errors=True)
    return LandmarkCache(output)
