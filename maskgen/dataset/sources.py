"""Item sources: the images of a folder, an insightface ``.bin`` pack or a ``.rec`` set.

A source lists its :class:`Item` s in a fixed order and loads one item's encoded bytes
(and label); sources pickle small, so that workers receive only what they need.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.dataset.options import output_kind
from maskgen.dataset.state import worker_state
from maskgen.io import (
    ImageReadError,
    RecordIOError,
    RecordReader,
    RecordSet,
    class_label,
    iter_image_files,
    load_bin,
    unpack,
)
from maskgen.protocol import image_key

__all__ = [
    "BinSource",
    "FolderSource",
    "Item",
    "NotedBytes",
    "RecSource",
    "Source",
    "UnusableRecordError",
    "Verbatim",
    "open_source",
]

_STATE = worker_state()


@dataclass
class Item:
    """One input image: its position in the input order, its key and how to load it."""

    index: int
    key: str
    data: bytes | None = None  # encoded bytes (``.bin`` items travel with their data)


class FolderSource:
    """Image files under a folder, recursively, keyed by their relative POSIX path.

    A subfolder that cannot be listed (permission denied) is not silently skipped: it is in
    :attr:`unlisted` (``{"folder", "reason"}``), which the run reports.
    """

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.unlisted: list[dict[str, str]] = []
        paths = iter_image_files(self.root, on_error=self._unlisted)
        self._paths = [p.relative_to(self.root).as_posix() for p in paths]

    def _unlisted(self, exc: OSError) -> None:
        folder = os.fsdecode(exc.filename) if exc.filename is not None else str(self.root)
        reason = exc.strerror or str(exc)
        self.unlisted.append({"folder": folder, "reason": reason})

    def __len__(self) -> int:
        return len(self._paths)

    def items(self) -> Iterator[Item]:
        for i, rel in enumerate(self._paths):
            yield Item(i, rel)

    def load(self, item: Item) -> tuple[bytes, int | None]:
        return _read_bytes(self.root / item.key), None

    def describe(self, item: Item) -> str:
        return item.key

    def __getstate__(self) -> dict[str, Any]:
        # workers get their items' keys
        return {"root": self.root, "_paths": [], "unlisted": []}


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes), not an image")
    return data


class BinSource:
    """The 2N images of an insightface verification pack, keyed ``000000``, ``000001`` …"""

    kind = "bin"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pack = load_bin(self.path)

    def __len__(self) -> int:
        return self.pack.num_images

    def items(self) -> Iterator[Item]:
        for i, data in enumerate(self.pack.images):
            yield Item(i, image_key(i), data)

    def load(self, item: Item) -> tuple[bytes, int | None]:
        assert item.data is not None
        return item.data, None

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.index}"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "pack": None}  # items carry their bytes


class Verbatim(bytes):
    """Record data that a ``.rec`` output keeps exactly as it is (framed, never re-headered)."""


class NotedBytes(bytes):
    """An item's bytes with a note for its manifest lines (e.g. where a record was found)."""

    note: str = ""


class UnusableRecordError(RecordIOError):
    """A record that cannot be rendered: the failure ``category`` (``unreadable``,
    ``bad_label``), and ``kept``, the bytes a ``.rec`` output stores in its place."""

    def __init__(self, message: str, kept: bytes, category: str = "unreadable") -> None:
        super().__init__(message)
        self.kept = Verbatim(kept)
        self.category = category


class RecSource:
    """The image records of a RecordIO set, keyed by record key, in ``image_keys`` order.

    Records are read through the worker's open reader (:meth:`WorkerState.reader`). One bad
    record fails alone (:class:`UnusableRecordError`) and is kept in a ``.rec`` output as it
    was: a frame that cannot be read (bad magic, length past the end, a wrong ``.idx``
    offset) as the bytes at its offset (:meth:`RecordReader.span`), wrapped in a valid
    frame; a readable record with a label that is no class index, or a header or identity
    record among the images, as its data. When the set's records carry their key as
    ``IRHeader.id`` (:attr:`verify_ids`), a record whose id is not its ``.idx`` key is
    looked for right after the record of the key before it, and fails if it is not there.
    """

    kind = "rec"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        records = RecordSet(self.path, check_offsets=False)
        self.keys = records.image_keys
        self.has_header = records.header is not None
        self.has_identities = records.num_classes is not None
        self.notes = list(records.notes)
        self.verify_ids = _ids_follow_keys(records.reader, self.keys)
        if not self.verify_ids:
            self.notes.append(
                f"{self.path}: the records' header ids are not their .idx keys; records are "
                "not checked against the index"
            )
        records.close()

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[Item]:
        for i, key in enumerate(self.keys.tolist()):
            yield Item(i, str(key))

    def load(self, item: Item) -> tuple[bytes, int | None]:
        reader = _STATE.reader(self.path)
        key = int(item.key)
        try:
            record: bytes | RecordIOError = reader.read(key)
        except RecordIOError as exc:
            record = exc
        return self._split(reader, key, record)

    def _split(
        self, reader: RecordReader, key: int, record: bytes | RecordIOError
    ) -> tuple[bytes, int | None]:
        """Payload and class of record ``key`` (``record``: what the reader gave for it), or
        :class:`UnusableRecordError`."""
        name = f"{self.path.name}#{key}"
        note = ""
        if isinstance(record, RecordIOError):
            found = _record_after(reader, key) if self.verify_ids else None
            if found is None:
                raise UnusableRecordError(f"{name}: {record}; kept as found", reader.span(key))
            offset, record = found
            note = (
                f"record {key} read at offset {offset}, right after record {key - 1}: its "
                f".idx offset {reader.offset(key)} is no record"
            )
        try:
            header, payload = unpack(record)
        except RecordIOError as exc:
            raise UnusableRecordError(f"{name}: {exc}; kept as it was", record) from None
        if self.verify_ids and header.id != key:
            found = _record_after(reader, key)
            if found is None:
                raise UnusableRecordError(
                    f"{name}: the .idx offset {reader.offset(key)} holds the record with "
                    f"header id {header.id}, not {key} (wrong .idx), and record {key} is not "
                    f"right after record {key - 1}; kept as found",
                    reader.span(key),
                )
            note = (
                f"record {key} read at offset {found[0]}, right after record {key - 1}: its "
                f".idx offset {reader.offset(key)} holds the record with header id {header.id}"
            )
            record = found[1]
            header, payload = unpack(record)
        if header.flag > 0 and not payload:
            raise UnusableRecordError(
                f"{name}: a header or identity record (flag {header.flag}, no image data), "
                "not an image; kept as it was",
                record,
            )
        try:
            label = class_label(header, name)
        except RecordIOError as exc:
            raise UnusableRecordError(f"{exc}; kept as it was", record, "bad_label") from None
        if note:
            payload = NotedBytes(payload)
            payload.note = note
        return payload, label

    def load_many(self, items: list[Item]) -> list[tuple[bytes, int | None] | Exception]:
        """:meth:`load` for a block of items in one read; an entry is the error that
        :meth:`load` would have raised for its item."""
        reader = _STATE.reader(self.path)
        keys = [int(it.key) for it in items]
        out: list[tuple[bytes, int | None] | Exception] = []
        for key, record in zip(keys, reader.read_many(keys), strict=True):
            try:
                out.append(self._split(reader, key, record))
            except Exception as exc:  # re-raised by items.load, as load would
                out.append(exc)
        return out

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.key}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["keys"] = None  # workers only need the path
        return state


def _ids_follow_keys(reader: RecordReader, keys: Sequence[int], sample: int = 16) -> bool:
    """Whether the records carry their key as ``IRHeader.id`` (as insightface, ``im2rec``
    and :class:`~maskgen.io.RecordWriter` write them): true for at least 3 in 4 of up to
    ``sample`` readable records spread over ``keys``."""
    if reader.key_source != "idx":
        return reader.key_source == "header-id"  # scanned: the keys are the ids, or positions
    if not len(keys):
        return False
    picks = sorted({int(keys[i]) for i in np.linspace(0, len(keys) - 1, sample).astype(int)})
    hits = total = 0
    for key, record in zip(picks, reader.read_many(picks), strict=True):
        try:
            header = unpack(record)[0] if isinstance(record, bytes) else None
        except RecordIOError:
            header = None
        if header is not None:
            total += 1
            hits += header.id == key
    return total > 0 and 4 * hits >= 3 * total


def _record_after(reader: RecordReader, key: int) -> tuple[int, bytes] | None:
    """``(offset, record)`` of the record with header id ``key`` right after the record of
    ``key - 1``, where a sequentially written set has it; ``None`` if it is not there."""
    if key - 1 not in reader:
        return None
    try:
        offset = reader.end_of(reader.offset(key - 1))
        record = reader.read_at(offset)
        if unpack(record)[0].id == key:
            return offset, record
    except RecordIOError:
        pass
    return None


#: Any of the three sources.
Source = FolderSource | BinSource | RecSource


def open_source(path: str | os.PathLike[str]) -> Source:
    """Pick the reader for a folder, a ``.bin`` pack or a ``.rec`` set."""
    p = Path(path)
    if p.is_dir():
        return FolderSource(p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: input not found")
    kind = output_kind(p)
    if kind == "bin":
        return BinSource(p)
    if kind == "rec":
        return RecSource(p)
    raise ValueError(f"{p}: input must be a folder, a .bin pack or a .rec file")
