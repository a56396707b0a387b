"""Item sources: the images of a folder, an insightface ``.bin`` pack or a ``.rec`` set.

A source lists its :class:`Item` s in a fixed order and loads one item's encoded bytes
(and label); sources pickle small, so that workers receive only what they need.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskgen.dataset.options import output_kind
from maskgen.dataset.state import worker_state
from maskgen.io import ImageReadError, RecordSet, iter_image_files, load_bin, unpack

__all__ = ["BinSource", "FolderSource", "Item", "RecSource", "Source", "open_source"]

_STATE = worker_state()


@dataclass
class Item:
    """One input image: its position in the input order, its key and how to load it."""

    index: int
    key: str
    data: bytes | None = None  # encoded bytes (``.bin`` items travel with their data)


class FolderSource:
    """Image files under a folder, recursively, keyed by their relative POSIX path."""

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._paths = [p.relative_to(self.root).as_posix() for p in iter_image_files(self.root)]

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
        return {"root": self.root, "_paths": []}  # workers get their items' keys


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
            yield Item(i, f"{i:06d}", data)

    def load(self, item: Item) -> tuple[bytes, int | None]:
        assert item.data is not None
        return item.data, None

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.index}"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "pack": None}  # items carry their bytes


class RecSource:
    """The image records of a RecordIO set, keyed by record key, in ``image_keys`` order.

    Records are read through the worker's open reader (:meth:`WorkerState.reader`).
    """

    kind = "rec"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        records = RecordSet(self.path)
        self.keys = records.image_keys
        self.has_header = records.header is not None
        self.has_identities = records.num_classes is not None
        records.close()

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[Item]:
        for i, key in enumerate(self.keys.tolist()):
            yield Item(i, str(key))

    def load(self, item: Item) -> tuple[bytes, int | None]:
        return self._split(_STATE.reader(self.path).read(int(item.key)))

    @staticmethod
    def _split(record: bytes) -> tuple[bytes, int | None]:
        header, payload = unpack(record)
        label = header.label if header.flag == 0 else header.label[0]  # type: ignore[index]
        return payload, int(float(label))

    def load_many(self, items: list[Item]) -> list[tuple[bytes, int | None] | Exception]:
        """:meth:`load` for a block of items in one read; an entry is the error that
        :meth:`load` would have raised for its item."""
        out: list[tuple[bytes, int | None] | Exception] = []
        for record in _STATE.reader(self.path).read_many([int(it.key) for it in items]):
            if isinstance(record, Exception):
                out.append(record)
                continue
            try:
                out.append(self._split(record))
            except Exception as exc:  # re-raised by items.load, as load would
                out.append(exc)
        return out

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.key}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["keys"] = None  # workers only need the path
        return state


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
