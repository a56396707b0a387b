"""Manifest and failure records: quantised landmarks, face entries, one JSON line per output.

A manifest line is written with orjson rather than ``json``: a line per output is on the
hot path of million-image datasets, and orjson writes one about ten times faster. Face
landmarks are written once per layout (:func:`quantised`) and spliced into each line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from maskgen.dataset.state import LANDMARK_MEMO, worker_state
from maskgen.landmarks import head_pose, quantise
from maskgen.render import MaskParams

if TYPE_CHECKING:
    from maskgen.dataset.items import Context
    from maskgen.dataset.sources import Item

__all__ = ["dump", "face_entry", "failure", "quantise", "quantised", "record"]

_STATE = worker_state()


def quantised(landmarks: np.ndarray) -> tuple[np.ndarray, bytes]:
    """:func:`quantise` (read-only result) and the manifest's JSON text of the result,
    memoised in :attr:`WorkerState.landmarks`: aligned crops share one layout, so both are
    computed once per process.

    Example:
        >>> q, text = quantised(np.array([[1.23456, 2.0]], np.float32))
        >>> text, q.flags.writeable
        (b'[[1.23,2.0]]', False)
    """
    memo = _STATE.landmarks
    key = (landmarks.tobytes(), landmarks.shape)
    hit = memo.get(key)
    if hit is None:
        q = quantise(landmarks)
        q.setflags(write=False)
        hit = (q, orjson.dumps(np.round(q.astype(np.float64), 2).tolist()))
        if len(memo) >= LANDMARK_MEMO:
            memo.pop(next(iter(memo)))
        memo[key] = hit
    return hit


def _placeholder(i: int) -> str:
    return f"\x00landmarks{i}\x00"  # NUL never occurs in keys, paths or params


_PLACEHOLDERS = tuple(orjson.dumps(_placeholder(i)) for i in range(8))


def face_entry(face: Any, i: int) -> dict[str, Any]:
    """What a face's manifest entry says whatever is drawn on it (:func:`record` adds the
    draw); its landmarks are a placeholder filled in by :func:`dump`."""
    entry = {
        "box": [round(float(v), 2) for v in face.box],
        "landmarks": _placeholder(i),
        "score": round(float(face.score), 4),
        "backend": face.backend,
        "pose": _pose(face.landmarks),
    }
    if getattr(face, "fit", ""):  # aligned-fit: "fitted", or "fallback" and the reason
        entry["fit"] = face.fit
        if face.fit_reason:
            entry["fit_reason"] = face.fit_reason
    return entry


def _pose(landmarks: np.ndarray) -> list[float] | None:
    """[yaw, pitch, roll] of the landmarks in degrees, to 0.1° (about 6 µs); ``None`` when
    they have none (coincident points)."""
    try:
        yaw, pitch, roll = head_pose(landmarks)
    except ValueError:
        return None
    return [round(yaw, 1) + 0.0, round(pitch, 1) + 0.0, round(roll, 1) + 0.0]  # no "-0.0"


def dump(record: dict[str, Any], landmarks: list[bytes]) -> bytes:
    """The manifest line of ``record`` (one JSON object and a newline), face ``i``'s
    landmarks being the JSON text ``landmarks[i]``.

    Example:
        >>> dump({"landmarks": _placeholder(0), "n": 1}, [b"[[1.0,2.0]]"])
        b'{"landmarks":[[1.0,2.0]],"n":1}\\n'
    """
    try:
        text = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        text = _dump_names(record)
    for i, lm in enumerate(landmarks):
        marker = _PLACEHOLDERS[i] if i < len(_PLACEHOLDERS) else orjson.dumps(_placeholder(i))
        text = text.replace(marker, lm)
    return text


def _dump_names(record: dict[str, Any]) -> bytes:
    """:func:`dump` of a record whose names are not valid UTF-8 (a file name with bytes that
    are not, read by Python as surrogate escapes), which orjson refuses: those strings are
    written by :mod:`json` as ``\\udcXX`` escapes, which ``json.loads`` turns back into the
    same string (and ``os.fsencode`` into the same bytes).

    Example:
        >>> import json, os
        >>> name = os.fsdecode(b"caf\\xe9.jpg")
        >>> line = _dump_names({"key": name, "n": 1})
        >>> line, json.loads(line)["key"] == name
        (b'{"key":"caf\\\\udce9.jpg","n":1}\\n', True)
    """
    spliced: dict[bytes, bytes] = {}
    safe: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, str) and not _is_utf8(value):
            marker = _placeholder(1000 + len(spliced))
            spliced[orjson.dumps(marker)] = json.dumps(value).encode("ascii")
            value = marker
        safe[name] = value
    text = orjson.dumps(safe, option=orjson.OPT_APPEND_NEWLINE)
    for marker, value in spliced.items():
        text = text.replace(marker, value)
    return text


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def failure(ctx: Context, item: Item, category: str, reason: str) -> dict[str, Any]:
    """The failure report's record of ``item``."""
    return {
        "index": item.index,
        "key": item.key,
        "input": ctx.source.describe(item),
        "category": category,
        "reason": reason,
    }


def record(
    ctx: Context,
    item: Item,
    variant: int,
    name: str,
    label: int | None,
    entries: list[dict[str, Any]],
    params: list[MaskParams | None],
) -> dict[str, Any]:
    """The manifest record of one output (faces: their :func:`face_entry` and draws)."""
    # params stay dataclasses: orjson writes their fields in order, as to_dict does.
    face_records = [{**e, "params": p} for e, p in zip(entries, params, strict=True)]
    rec: dict[str, Any] = {
        "index": item.index,
        "key": item.key,
        "variant": variant,
        "input": ctx.source.describe(item),
        "output": name,
    }
    if label is not None:
        rec["label"] = label
    rec["backend"] = entries[0]["backend"] if entries else ctx.options.landmarks
    rec["faces"] = face_records
    rec["landmarks"] = face_records[0]["landmarks"] if face_records else None
    rec["params"] = face_records[0]["params"] if face_records else None
    return rec
