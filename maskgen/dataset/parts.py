"""Part files: each ``.rec``/``.bin`` block's outputs and their metadata, in one atomic file.

Layout: the magic line :data:`PART_MAGIC`, then (outputs, meta bytes) as two little-endian
uint32, the metadata (orjson list, one entry per output), each output's length (uint32),
and the outputs' bytes back to back (framed records for ``.rec``, encoded images for
``.bin``).

Example:
    >>> import tempfile, pathlib
    >>> path = part_path(pathlib.Path(tempfile.mkdtemp()), 3)
    >>> path.name
    '00000003.part'
    >>> write_part(path, [{"label": 1}, {"label": 2}], [2, 3], b"abcde")
    >>> metas, lengths, data = read_part(path)
    >>> metas, lengths, bytes(data)
    ([{'label': 1}, {'label': 2}], [2, 3], b'abcde')
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from maskgen.io import atomic_write_bytes

__all__ = ["PART_HEAD", "PART_MAGIC", "part_path", "read_part", "write_part"]

#: A part file starts with this line, then (outputs, meta bytes) as two little-endian uint32.
PART_MAGIC = b"maskgen part 2\n"
PART_HEAD = struct.Struct("<II")


def part_path(meta: Path, block: int) -> Path:
    """Part file of a block (``.rec``/``.bin`` outputs)."""
    return meta / "parts" / f"{block:08d}.part"


def write_part(path: Path, metas: list[dict[str, Any]], lengths: list[int], data: bytes) -> None:
    """Write a block's part file (atomically): what :func:`read_part` returns."""
    meta = orjson.dumps(metas)
    head = PART_HEAD.pack(len(metas), len(meta))
    sizes = np.asarray(lengths, "<u4").tobytes()
    atomic_write_bytes(path, b"".join((PART_MAGIC, head, meta, sizes, data)))


def read_part(path: Path) -> tuple[list[dict[str, Any]], list[int], memoryview]:
    """A block's part file: each output's meta, each output's length in bytes, and the
    outputs' bytes back to back (framed records for ``.rec``, encoded images for ``.bin``)."""
    raw = path.read_bytes()
    stale = f"remove {path.parent.parent} and run again"
    if not raw.startswith(PART_MAGIC):
        raise ValueError(f"{path}: not a part file of this maskgen version; {stale}")
    pos = len(PART_MAGIC)
    n, n_meta = PART_HEAD.unpack_from(raw, pos)
    pos += PART_HEAD.size
    metas = orjson.loads(raw[pos : pos + n_meta])
    pos += n_meta
    lengths = np.frombuffer(raw, "<u4", n, pos).tolist()
    data = memoryview(raw)[pos + 4 * n :]
    if len(metas) != n or sum(lengths) != len(data):
        raise ValueError(f"{path}: corrupt part file (sizes do not add up); {stale}")
    return metas, lengths, data
