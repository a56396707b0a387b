"""insightface / MXNet RecordIO training sets (``train.rec`` + ``train.idx``) in pure Python.

File layout (dmlc-core RecordIO, as written by ``mx.recordio.MXIndexedRecordIO``):

* A ``.rec`` file is a sequence of frames ``magic | lrecord | data | padding``, all integers
  little-endian ``uint32``: ``magic = 0xCED7230A``; ``lrecord = (cflag << 29) | length``;
  the data is zero-padded to a multiple of 4 bytes. A record whose data contains the magic
  word at a 4-byte-aligned position is split there into several frames (``cflag`` 1 = first,
  2 = middle, 3 = last; 0 = a whole record) and the magic word itself is left out; readers
  put it back between the parts.
* The ``.idx`` file is text, one ``key<TAB>offset`` line per record, ``offset`` being the byte
  position of the record's first frame.
* An image record's data is an ``IRHeader`` (``struct "IfQQ"``: ``flag`` uint32, ``label``
  float32, ``id`` uint64, ``id2`` uint64; 24 bytes) followed, when ``flag > 0``, by ``flag``
  float32 labels (the header's own ``label`` field is then 0), then the encoded image.
* insightface convention: record 0 is a header record (``flag = 2``, empty payload) whose
  labels are ``(first_identity_key, end_key)``; the images are keys ``1 .. first - 1`` and keys
  ``first .. end - 1`` are identity records whose labels are the ``[start, end)`` image-key
  range of one identity, so ``num_classes = end - first``. ``arcface_torch`` only uses
  ``label[0]`` (``imgidx = range(1, int(label[0]))``); the class of an image is its record's
  ``label`` (or ``label[0]`` when ``flag > 0``). Sets without such a header use every key.

Readers open their file lazily and reopen it in a new process, use positional reads (no
shared seek pointer, so threads may share one), never load the ``.rec`` into memory, and are
picklable (for ``torch.utils.data`` workers).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> rec = Path(tempfile.mkdtemp()) / "train.rec"
    >>> with RecordWriter(rec) as writer:
    ...     for key, label in [(1, 0), (2, 0), (3, 1)]:
    ...         _ = writer.write_image(key, np.full((8, 8, 3), 40 * key, np.uint8), label)
    ...     writer.write_header_record()
    >>> records = RecordSet(rec)
    >>> len(records), records.num_classes, records.image_keys.tolist()
    (3, 2, [1, 2, 3])
    >>> image, label = records[2]
    >>> image.shape, label
    ((8, 8, 3), 1)
    >>> records.close(); import shutil; shutil.rmtree(rec.parent)
"""

from __future__ import annotations

import array
import contextlib
import math
import numbers
import os
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from maskgen.io.atomic import AtomicFile
from maskgen.io.images import decode_image, encode_image

__all__ = [
    "MAGIC",
    "IRHeader",
    "MissingRecordError",
    "RecordIOError",
    "RecordReader",
    "RecordSet",
    "RecordWriter",
    "class_label",
    "frame_image_records",
    "frame_record",
    "pack",
    "read_face_record",
    "unpack",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1
MAX_RECORD_BYTES = _LENGTH_MASK


class RecordIOError(ValueError):
    """A malformed or inconsistent RecordIO set; the message names the file."""


class MissingRecordError(RecordIOError, KeyError):
    """The requested key is not in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IRHeader(NamedTuple):
    """MXNet image-record header.

    ``label`` is a ``float`` when ``flag == 0``, else a ``float32`` array of ``flag`` values.
    """

    flag: int
    label: float | np.ndarray
    id: int
    id2: int = 0


def _padded(length: int) -> int:
    return (length + 3) & ~3


def pack(header: IRHeader | Sequence[Any], payload: bytes | bytearray | memoryview) -> bytes:
    """Serialise an image record: IRHeader, optional float32 labels, then ``payload``.

    As in MXNet, a scalar ``label`` gives ``flag = 0``; an array label gives
    ``flag = label.size`` (the ``flag`` passed in is ignored) and header label 0.
    """
    _, label, rid, rid2 = IRHeader(*header)
    if isinstance(label, numbers.Number):
        return _IR.pack(0, float(label), int(rid), int(rid2)) + bytes(payload)
    labels = np.asarray(label, dtype="<f4").ravel()
    return _IR.pack(labels.size, 0.0, int(rid), int(rid2)) + labels.tobytes() + bytes(payload)


def unpack(record: bytes | bytearray | memoryview) -> tuple[IRHeader, bytes]:
    """Split a record into its :class:`IRHeader` and payload (the inverse of :func:`pack`)."""
    view = memoryview(record)
    if len(view) < _IR.size:
        raise RecordIOError(
            f"record of {len(view)} bytes is too short for an image-record header "
            f"({_IR.size} bytes)"
        )
    flag, label, rid, rid2 = _IR.unpack_from(view)
    body = view[_IR.size :]
    if flag > 0:
        need = 4 * flag
        if len(body) < need:
            raise RecordIOError(
                f"record header announces {flag} float32 labels ({need} bytes) but only "
                f"{len(body)} bytes follow"
            )
        labels = np.frombuffer(body[:need], dtype="<f4").astype(np.float32)
        return IRHeader(flag, labels, rid, rid2), bytes(body[need:])
    return IRHeader(flag, float(label), rid, rid2), bytes(body)


def frame_record(data: bytes | bytearray | memoryview) -> bytes:
    """Encode one record as RecordIO frames (splitting at aligned magic words), padded."""
    data = data if isinstance(data, bytes) else bytes(data)
    n = len(data)
    if n > MAX_RECORD_BYTES:
        raise RecordIOError(f"record of {n} bytes exceeds the RecordIO limit of 2**29 - 1")
    hit = data.find(_MAGIC_BYTES)
    if hit == -1:  # the usual case: one frame
        return b"".join((_FRAME.pack(MAGIC, n), data, b"\x00" * (_padded(n) - n)))
    out: list[bytes] = []
    start = 0
    while hit != -1:
        if hit % 4 == 0:
            cflag = 1 if start == 0 else 2
            out += [_FRAME.pack(MAGIC, (cflag << 29) | (hit - start)), data[start:hit]]
            start = hit + 4
            hit = data.find(_MAGIC_BYTES, start)
        else:
            hit = data.find(_MAGIC_BYTES, hit + 1)
    cflag = 3 if start > 0 else 0
    out += [_FRAME.pack(MAGIC, (cflag << 29) | (n - start)), data[start:]]
    out.append(b"\x00" * (_padded(n) - n))
    return b"".join(out)


_PADDING = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


def frame_image_records(records: Iterable[tuple[float, int, bytes]]) -> tuple[bytes, list[int]]:
    """Frame ordinary image records (scalar ``label``, ``key``, encoded ``payload``) back to
    back, as ``frame_record(pack(IRHeader(0, label, key, 0), payload))`` frames each; returns
    the framed bytes and each record's framed length. The hot path of ``.rec`` output.

    Every record is first laid out as a single frame; one scan of the whole batch then looks
    for the magic word at a 4-byte aligned position other than a frame start (where RecordIO
    must split a record). Only a batch that has one is framed again record by record. A
    search per record would cost more than the rest of the framing.

    Example:
        >>> blob, lengths = frame_image_records([(3, 7, b"jpeg"), (0, 8, b"")])
        >>> expected = [frame_record(pack(IRHeader(0, label, key, 0), data))
        ...             for label, key, data in [(3, 7, b"jpeg"), (0, 8, b"")]]
        >>> blob == b"".join(expected), lengths
        (True, [36, 32])
    """
    pieces: list[bytes] = []
    lengths: list[int] = []
    for label, key, payload in records:
        header = _IR.pack(0, float(label), int(key), 0)
        n = len(header) + len(payload)
        if n > MAX_RECORD_BYTES:
            raise RecordIOError(f"record of {n} bytes exceeds the RecordIO limit of 2**29 - 1")
        pad = -n % 4
        pieces += (_FRAME.pack(MAGIC, n), header, payload, _PADDING[pad])
        lengths.append(_FRAME.size + n + pad)
    blob = b"".join(pieces)
    if np.count_nonzero(np.frombuffer(blob, "<u4") == MAGIC) == len(lengths):
        return blob, lengths  # the magic word starts the frames and occurs nowhere else
    framed = [frame_record(pieces[i + 1] + pieces[i + 2]) for i in range(0, len(pieces), 4)]
    return b"".join(framed), [len(f) for f in framed]


def _sibling_idx(rec_path: Path) -> Path:
    return rec_path.with_suffix(".idx")


class RecordReader:
    """Random access to the records of a ``.rec`` file.

    ``idx_path``: the ``.idx`` file; ``None`` uses ``<rec stem>.idx`` next to the ``.rec`` when
    it exists. Without an index (or with ``use_index=False``) the ``.rec`` is scanned once,
    reading only frame and record headers; keys are then the records' ``IRHeader.id`` (the
    key insightface and ``im2rec`` write) when every record has one and they are unique, else
    the record positions 0, 1, 2… (:attr:`key_source` says which).

    ``check_offsets``: refuse an index with any offset that is no record position (negative,
    past the end, not a multiple of 4). With ``False`` only an index whose every offset is
    bad is refused (it belongs to another file); reading a record with a bad offset raises
    :class:`RecordIOError` for that record alone.
    """

    def __init__(
        self,
        rec_path: str | os.PathLike[str],
        idx_path: str | os.PathLike[str] | None = None,
        *,
        use_index: bool = True,
        check_offsets: bool = True,
    ) -> None:
        self.rec_path = Path(rec_path)
        self._check_offsets = check_offsets
        self._ends: np.ndarray | None = None  # sorted distinct offsets (see span)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"{self.rec_path}: RecordIO file not found")
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._lock = threading.Lock()
        self._size = self.rec_path.stat().st_size
        if idx_path is not None and use_index:
            self.idx_path: Path | None = Path(idx_path)
            if not self.idx_path.is_file():
                raise FileNotFoundError(f"{self.idx_path}: RecordIO index file not found")
        elif use_index and _sibling_idx(self.rec_path).is_file():
            self.idx_path = _sibling_idx(self.rec_path)
        else:
            self.idx_path = None
        if self.idx_path is not None:
            keys, offsets = self._load_index(self.idx_path)
            self.key_source = "idx"
        else:
            keys, offsets, self.key_source = self._scan()
        self._set_index(keys, offsets)

    # -- index -----------------------------------------------------------------------------

    def _load_index(self, idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
        text = idx_path.read_bytes()
        tokens = text.split()
        lines = text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)
        table: np.ndarray | None = None
        if len(tokens) == 2 * lines:
            try:
                table = np.array(tokens, dtype=np.int64).reshape(-1, 2)
            except (ValueError, OverflowError):
                table = None
        if table is None:  # slow path: find the offending line for the message
            rows: list[tuple[int, int]] = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    if len(parts) != 2:
                        raise ValueError
                    rows.append((int(parts[0]), int(parts[1])))
                except ValueError:
                    raise RecordIOError(
                        f"{idx_path}: line {lineno}: expected '<integer key><TAB><offset>', "
                        f"got {line[:80]!r}"
                    ) from None
            table = np.array(rows, dtype=np.int64).reshape(-1, 2)
        keys, offsets = table[:, 0].copy(), table[:, 1].copy()
        bad = (offsets < 0) | (offsets + _FRAME.size > self._size) | (offsets % 4 != 0)
        if bad.any() and (self._check_offsets or bad.all()):
            i = int(np.flatnonzero(bad)[0])
            raise RecordIOError(
                f"{idx_path}: key {keys[i]} has offset {offsets[i]}, which is not a record "
                f"position in {self.rec_path} ({self._size} bytes); is the index for another "
                ".rec file?"
            )
        if (keys < 0).any():
            i = int(np.flatnonzero(keys < 0)[0])
            raise RecordIOError(f"{idx_path}: negative key {keys[i]}")
        return keys, offsets

    def _scan(self) -> tuple[np.ndarray, np.ndarray, str]:
        offsets: list[int] = []
        ids: list[int | None] = []
        with open(self.rec_path, "rb") as f:

            def read_at(pos: int, n: int) -> bytes:
                f.seek(pos)
                return f.read(n)

            pos = 0
            while pos < self._size:
                head = read_at(pos, _FRAME.size)
                _, _, cflag, length = self._check_frame(head, pos)
                if cflag == 0:
                    ir = read_at(pos + _FRAME.size, min(length, _IR.size))
                    next_pos = pos + _FRAME.size + _padded(length)
                    if len(ir) < min(length, _IR.size) or next_pos > self._size:
                        raise RecordIOError(
                            f"{self.rec_path}: record at offset {pos} is truncated "
                            f"({length} bytes announced, file ends at {self._size})"
                        )
                elif cflag == 1:
                    data, next_pos = self._read_frames(pos, read_at)
                    ir = data[: _IR.size]
                else:
                    raise RecordIOError(
                        f"{self.rec_path}: offset {pos}: continuation frame (cflag {cflag}) "
                        "without a first frame"
                    )
                offsets.append(pos)
                ids.append(_IR.unpack(ir)[2] if len(ir) == _IR.size else None)
                pos = next_pos
        n = len(offsets)
        if n and None not in ids and len(set(ids)) == n:
            return np.array(ids, dtype=np.int64), np.array(offsets, dtype=np.int64), "header-id"
        return np.arange(n, dtype=np.int64), np.array(offsets, dtype=np.int64), "position"

    def _set_index(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        self._keys = keys
        self._keys.flags.writeable = False
        self._offsets = offsets
        n = len(keys)
        self._first_key = int(keys[0]) if n else 0
        self._contiguous = bool(n == 0 or np.array_equal(keys, np.arange(keys[0], keys[0] + n)))
        if self._contiguous:
            self._sorted_keys = self._sorted_pos = None
        else:
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
            if dup.size:
                where = self.idx_path if self.idx_path is not None else self.rec_path
                raise RecordIOError(
                    f"{where}: key {sorted_keys[dup[0]]} appears more than once "
                    f"({dup.size} duplicate keys)"
                )
            self._sorted_keys, self._sorted_pos = sorted_keys, order

    def _position(self, key: int) -> int | None:
        """Index of ``key`` in :attr:`keys`, or ``None``."""
        k = int(key)
        if self._contiguous:
            i = k - self._first_key
            return i if 0 <= i < len(self._keys) else None
        assert self._sorted_keys is not None and self._sorted_pos is not None
        j = int(np.searchsorted(self._sorted_keys, k))
        if j < len(self._sorted_keys) and self._sorted_keys[j] == k:
            return int(self._sorted_pos[j])
        return None

    @property
    def keys(self) -> np.ndarray:
        """The record keys (``int64``, read-only) in index order (file order when scanned)."""
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (int, np.integer)):
            return False
        return self._position(int(key)) is not None

    def offset(self, key: int) -> int:
        """Byte offset of record ``key`` in the ``.rec`` file."""
        i = self._position(key)
        if i is None:
            where = f" (index {self.idx_path})" if self.idx_path is not None else ""
            raise MissingRecordError(f"{self.rec_path}: no record with key {key}{where}")
        return int(self._offsets[i])

    # -- reading ---------------------------------------------------------------------------

    def _ensure_open(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            with self._lock:
                if self._fd is None or self._fd_pid != pid:
                    if self._fd is not None:  # inherited across fork: drop our copy
                        with contextlib.suppress(OSError):
                            os.close(self._fd)
                    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
                    self._fd = os.open(self.rec_path, flags)
                    self._fd_pid = pid
        return self._fd

    def _pread(self, pos: int, n: int) -> bytes:
        fd = self._ensure_open()
        if hasattr(os, "pread"):
            chunks: list[bytes] = []
            while n > 0:
                chunk = os.pread(fd, n, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
                n -= len(chunk)
            return b"".join(chunks)
        with self._lock:  # no pread (Windows): serialise seek + read
            os.lseek(fd, pos, os.SEEK_SET)
            return os.read(fd, n)

    def _check_frame(self, head: bytes, pos: int) -> tuple[int, int, int, int]:
        if len(head) < _FRAME.size:
            raise RecordIOError(
                f"{self.rec_path}: truncated frame header at offset {pos} "
                f"(file has {self._size} bytes)"
            )
        magic, lrec = _FRAME.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(
                f"{self.rec_path}: no RecordIO record at offset {pos} (found 0x{magic:08x} "
                f"instead of the magic 0x{MAGIC:08x}); corrupt file or wrong .idx"
            )
        return magic, lrec, lrec >> 29, lrec & _LENGTH_MASK

    def _read_frames(self, pos: int, read_at: Any = None) -> tuple[bytes, int]:
        """Read the record starting at ``pos``; return its data and the next record's offset."""
        read = read_at if read_at is not None else self._pread
        if pos < 0 or pos % 4 or pos + _FRAME.size > self._size:
            raise RecordIOError(
                f"{self.rec_path}: offset {pos} is not a record position (the file has "
                f"{self._size} bytes and records start at multiples of 4); wrong .idx"
            )
        start = pos
        parts: list[bytes] = []
        first = True
        while True:
            _, _, cflag, length = self._check_frame(read(pos, _FRAME.size), pos)
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                raise RecordIOError(
                    f"{self.rec_path}: record at offset {start}: unexpected frame flag "
                    f"{cflag} at offset {pos}"
                )
            body = read(pos + _FRAME.size, length)
            if len(body) < length:
                raise RecordIOError(
                    f"{self.rec_path}: record at offset {start} is truncated ({length} bytes "
                    f"announced at offset {pos}, file has {self._size} bytes)"
                )
            parts.append(body)
            pos += _FRAME.size + _padded(length)
            if cflag in (0, 3):
                return b"".join(parts), pos
            parts.append(_MAGIC_BYTES)
            first = False

    def read_at(self, offset: int) -> bytes:
        """Read the record whose first frame starts at byte ``offset``."""
        return self._read_frames(int(offset))[0]

    def end_of(self, offset: int) -> int:
        """The byte position just after the record whose first frame starts at ``offset``
        (where the next record of a sequentially written file starts)."""
        return self._read_frames(int(offset))[1]

    def span(self, key: int) -> bytes:
        """The bytes from record ``key``'s offset up to the next larger offset in the index
        (or the end of the file), at most ``2**29 - 1``: what lies where the record should
        be, readable or not; empty when the offset is outside the file.

        An unreadable record (bad magic, length past the end, wrong ``.idx`` offset) is kept
        in a rendered copy as these bytes.
        """
        offset = self.offset(key)
        if offset < 0 or offset >= self._size:
            return b""
        if self._ends is None:
            self._ends = np.unique(self._offsets)
        j = int(np.searchsorted(self._ends, offset, side="right"))
        end = int(self._ends[j]) if j < len(self._ends) else self._size
        end = min(end, self._size, offset + MAX_RECORD_BYTES)
        return self._pread(offset, end - offset)

    def read(self, key: int) -> bytes:
        """Read record ``key`` (the whole record: IRHeader + labels + payload)."""
        return self.read_at(self.offset(key))

    def read_many(
        self, keys: Sequence[int], max_span: int = 64 << 20
    ) -> list[bytes | RecordIOError]:
        """Read several records with as few system calls as possible.

        The records' byte range (from the lowest to the highest offset, up to ``max_span``
        bytes) is read in one go and the records are cut out of it; a record reaching past
        it is read on its own. Each entry is the record or the :class:`RecordIOError` that
        :meth:`read` would have raised for that key (missing key, corrupt frame).
        """
        offsets = self._offsets_of(keys)
        found = [o for o in offsets if isinstance(o, int)]
        read: Any = None
        buf, lo = b"", 0
        if len(found) > 1:
            lo, hi = min(found), max(found)
            if hi - lo <= max_span:
                end = min(hi + 2 * _FRAME.size + 65536, self._size, lo + max_span)
                buf = self._pread(lo, end - lo)
                limit = lo + len(buf)

                def read(pos: int, n: int) -> bytes:
                    if lo <= pos and pos + n <= limit:
                        return buf[pos - lo : pos - lo + n]
                    return self._pread(pos, n)

        out: list[bytes | RecordIOError] = []
        size = len(buf)
        for offset in offsets:
            if isinstance(offset, RecordIOError):
                out.append(offset)
                continue
            # The usual record, one frame inside the buffer, cut out here; anything else
            # (split records, bad frames, outside the buffer) goes through _read_frames,
            # which gives the same bytes or the error.
            rel = offset - lo
            if rel >= 0 and rel + _FRAME.size <= size and not offset & 3:
                magic, lrec = _FRAME.unpack_from(buf, rel)
                stop = rel + _FRAME.size + (lrec & _LENGTH_MASK)
                if magic == MAGIC and not lrec >> 29 and stop <= size:
                    out.append(buf[rel + _FRAME.size : stop])
                    continue
            try:
                out.append(self._read_frames(offset, read)[0])
            except RecordIOError as exc:
                out.append(exc)
        return out

    def _offsets_of(self, keys: Sequence[int]) -> list[int | RecordIOError]:
        """Each key's offset, or the :class:`MissingRecordError` :meth:`offset` raises for
        it; looked up in one NumPy pass when every key is in the index."""
        n = len(self._keys)
        try:
            k = np.asarray(keys, np.int64).reshape(-1)
        except (OverflowError, TypeError, ValueError):
            k = None
        if k is not None and n and k.size == len(keys):
            if self._contiguous:
                pos = k - self._first_key
                ok = bool(((pos >= 0) & (pos < n)).all())
            else:
                assert self._sorted_keys is not None and self._sorted_pos is not None
                at = np.minimum(np.searchsorted(self._sorted_keys, k), n - 1)
                ok = bool((self._sorted_keys[at] == k).all())
                pos = self._sorted_pos[at]
            if ok:
                return self._offsets[pos].tolist()
        offsets: list[int | RecordIOError] = []
        for key in keys:
            try:
                offsets.append(self.offset(key))
            except RecordIOError as exc:
                offsets.append(exc)
        return offsets

    def read_header(self, key: int) -> IRHeader:
        """Read record ``key`` and return its :class:`IRHeader`."""
        header, _ = unpack(self.read(key))
        return header

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(key, record)`` for every record, in index order."""
        for key, offset in zip(self._keys.tolist(), self._offsets.tolist(), strict=True):
            yield key, self.read_at(offset)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (it is reopened on the next read)."""
        fd, self._fd = self._fd, None
        if fd is not None and self._fd_pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd_pid = None

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_fd_pid"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._keys.flags.writeable = False

    def __repr__(self) -> str:
        return f"RecordReader({str(self.rec_path)!r}, records={len(self)}, keys={self.key_source})"


def class_label(header: IRHeader, source: str) -> int:
    """The class of an image record: its ``label`` (``label[0]`` with array labels), which
    must be a non-negative integer; anything else (1.7, inf, NaN, -1) raises
    :class:`RecordIOError` naming ``source`` and the value.

    Example:
        >>> class_label(IRHeader(0, 3.0, 1), "train.rec#1")
        3
        >>> try:
        ...     class_label(IRHeader(0, 1.7, 2), "train.rec#2")
        ... except RecordIOError as exc:
        ...     print(exc)
        train.rec#2: label 1.7 is not a class index (a non-negative integer)
    """
    if header.flag == 0:
        value = float(header.label)  # type: ignore[arg-type]
    else:
        labels = np.ravel(np.asarray(header.label, np.float64))
        if not labels.size:
            raise RecordIOError(f"{source}: the record has no label")
        value = float(labels[0])
    if not math.isfinite(value) or value != int(value) or value < 0:
        # labels are float32: show the shortest text that reads back as the stored value
        shown = np.format_float_positional(np.float32(value), trim="-")
        raise RecordIOError(
            f"{source}: label {shown} is not a class index (a non-negative integer)"
        )
    return int(value)


def read_face_record(reader: RecordReader, key: int) -> tuple[np.ndarray, int]:
    """Read image record ``key``: ``(H×W×3 uint8 RGB image, integer class label)``.

    The label is ``header.label``, or ``header.label[0]`` for records with array labels (as in
    insightface's ``MXFaceDataset``).
    """
    source = f"{reader.rec_path} [key {key}]"
    try:
        header, payload = unpack(reader.read(key))
    except MissingRecordError:
        raise
    except RecordIOError as exc:
        raise RecordIOError(f"{source}: {exc}") from exc
    label = class_label(header, source)
    return decode_image(payload, source=source), label


class RecordSet:
    """An insightface training set: the image records of a RecordIO file and their labels.

    Understands the insightface header record (key 0, see the module docstring) and checks
    it against the index: every image key ``1 .. first - 1`` must exist, identity records
    must be all present or all absent, and no record may lie outside the announced ranges.
    Sets without a header record expose every key as an image. ``set[i]`` returns
    ``(image_rgb, label)`` for the ``i``-th image key.

    A header record that cannot be read (bad magic, truncated) is rebuilt from the identity
    records when the set has them (the last one ends where the images end); otherwise the
    set is read as headerless. Either way :attr:`notes` says so. ``check_offsets``: see
    :class:`RecordReader`.
    """

    def __init__(
        self,
        source: RecordReader | str | os.PathLike[str],
        idx_path: str | os.PathLike[str] | None = None,
        *,
        use_index: bool = True,
        check_offsets: bool = True,
    ) -> None:
        if isinstance(source, RecordReader):
            self.reader = source
        else:
            self.reader = RecordReader(
                source, idx_path, use_index=use_index, check_offsets=check_offsets
            )
        self.notes: list[str] = []  # what was repaired or assumed while opening the set
        self.header: IRHeader | None = None
        self.num_classes: int | None = None
        self.identity_keys: np.ndarray = np.zeros(0, dtype=np.int64)
        header = self._header_record()
        if header is None:
            self.image_keys: np.ndarray = self.reader.keys.copy()
        else:
            self.header = header
            self._check_header(header)

    def _where(self) -> str:
        r = self.reader
        return f"{r.rec_path}" + (f" / {r.idx_path.name}" if r.idx_path is not None else "")

    def _header_record(self) -> IRHeader | None:
        if 0 not in self.reader:
            return None
        try:
            record = self.reader.read(0)
        except RecordIOError as exc:  # the frame itself is broken
            return self._rebuilt_header(exc)
        try:
            header, payload = unpack(record)
        except RecordIOError:
            return None  # not an image record: treat the set as headerless
        # insightface writes the header with array labels and an empty payload; an image
        # record at key 0 may also carry array labels (face2rec2 writes [label, aligned]).
        if header.flag > 0 and not payload:
            return header
        return None

    def _rebuilt_header(self, error: RecordIOError) -> IRHeader | None:
        """The header an unreadable key 0 had, from the identity records: the last key's
        record is the last identity record, whose range ends at ``first``; record ``first``
        is the first identity record and starts at image 1. ``None`` (headerless) if not."""
        where = self._where()
        keys = self.reader.keys
        last = int(keys.max())
        try:
            first = self._identity_range(last)[1]
            start = self._identity_range(first)[0] if 1 <= first <= last else None
        except RecordIOError:
            start = None
        if start != 1 or not np.isin(np.arange(first, last + 1), keys).all():
            self.notes.append(
                f"{where}: key 0 is unreadable ({error}) and no identity records follow the "
                "images: read as a set without a header record, key 0 as an image record"
            )
            return None
        self.notes.append(
            f"{where}: the header record (key 0) is unreadable ({error}); rebuilt from the "
            f"identity records: images 1..{first - 1}, identity records {first}..{last}"
        )
        return IRHeader(2, np.array([first, last + 1], np.float32), 0, 0)

    def _identity_range(self, key: int) -> tuple[int, int]:
        """``[start, end)`` of identity record ``key``; RecordIOError if it is not one."""
        header, payload = unpack(self.reader.read(key))
        labels = np.ravel(np.asarray(header.label, np.float64))
        if header.flag < 2 or payload or not np.all(np.isfinite(labels[:2])):
            raise RecordIOError(f"{self._where()}: key {key} is not an identity record")
        start, end = float(labels[0]), float(labels[1])
        if start != int(start) or end != int(end) or not 1 <= start < end:
            raise RecordIOError(f"{self._where()}: key {key} is not an identity record")
        return int(start), int(end)

    def _check_header(self, header: IRHeader) -> None:
        where = self._where()
        labels = np.asarray(header.label, dtype=np.float64).ravel()
        first = labels[0]
        if not math.isfinite(first) or first != int(first) or first < 1:
            raise RecordIOError(
                f"{where}: header record (key 0) label[0] = {first!r} is not a record key"
            )
        first_key = int(first)
        end = labels[1] if labels.size >= 2 else first
        end_key = int(end) if math.isfinite(end) and end == int(end) else first_key
        end_key = max(end_key, first_key)
        keys = self.reader.keys
        expected = np.arange(1, first_key, dtype=np.int64)
        present = np.isin(expected, keys)
        if not present.all():
            missing = expected[~present]
            have = int(present.sum())
            raise RecordIOError(
                f"{where}: the header record (key 0) announces {expected.size} images (keys "
                f"1..{first_key - 1}) but {missing.size} of them are missing from the records "
                f"(first missing key: {missing[0]}; {have} present)"
            )
        identity = np.arange(first_key, end_key, dtype=np.int64)
        id_present = np.isin(identity, keys)
        if id_present.all() and identity.size:
            self.num_classes = int(identity.size)
            self.identity_keys = identity
        elif id_present.any():
            missing = identity[~id_present]
            raise RecordIOError(
                f"{where}: the header record (key 0) announces {identity.size} identity records "
                f"(keys {first_key}..{end_key - 1}) but {missing.size} are missing (first "
                f"missing key: {missing[0]})"
            )
        covered = keys == 0
        covered |= (keys >= 1) & (keys < first_key)
        if self.num_classes is not None:
            covered |= (keys >= first_key) & (keys < end_key)
        if not covered.all():
            extra = keys[~covered]
            raise RecordIOError(
                f"{where}: {extra.size} records lie outside the ranges announced by the header "
                f"record (images 1..{first_key - 1}"
                + (f", identities {first_key}..{end_key - 1}" if self.num_classes else "")
                + f"), e.g. key {extra[0]}; the header does not match the records"
            )
        self.image_keys = expected

    @property
    def num_images(self) -> int:
        """Number of image records."""
        return len(self.image_keys)

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return read_face_record(self.reader, int(self.image_keys[index]))

    def read(self, key: int) -> tuple[np.ndarray, int]:
        """``(image_rgb, label)`` of the record with key ``key``."""
        return read_face_record(self.reader, key)

    def identity_range(self, identity: int) -> tuple[int, int]:
        """The ``[start, end)`` image-key range stored in identity record ``identity``.

        Only for sets with identity records (:attr:`num_classes` not ``None``); ``identity``
        counts from 0 in identity-record order.
        """
        if self.num_classes is None:
            raise RecordIOError(f"{self._where()}: this set has no identity records")
        if not 0 <= identity < self.num_classes:
            raise IndexError(f"identity {identity} out of range (0..{self.num_classes - 1})")
        header, _ = unpack(self.reader.read(int(self.identity_keys[identity])))
        labels = np.asarray(header.label, dtype=np.float64).ravel()
        if labels.size < 2:
            raise RecordIOError(
                f"{self._where()}: identity record {self.identity_keys[identity]} has no "
                "[start, end) label pair"
            )
        return int(labels[0]), int(labels[1])

    def close(self) -> None:
        """Close the underlying reader."""
        self.reader.close()

    def __enter__(self) -> RecordSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RecordSet({str(self.reader.rec_path)!r}, images={self.num_images}, "
            f"classes={self.num_classes}, header={'yes' if self.header else 'no'})"
        )


def _fill_unknown(labels: np.ndarray) -> np.ndarray:
    """Negative (unknown) labels replaced by the label before them, leading ones by the
    first known label.

    Example:
        >>> _fill_unknown(np.array([-1, 4, -1, 5, -1])).tolist()
        [4, 4, 4, 5, 5]
    """
    known = labels >= 0
    if known.all() or not known.any():
        return labels
    last = np.maximum.accumulate(np.where(known, np.arange(labels.size), -1))
    last[last < 0] = int(np.flatnonzero(known)[0])
    return labels[last]


class RecordWriter:
    """Write a RecordIO set (``.rec`` + ``.idx``) atomically.

    Records go to temporary files in the destination directories; :meth:`close` renames them
    into place (the ``.rec`` first, then the ``.idx``), so a half-written ``.rec`` never has
    the final name. Leaving the ``with`` block by an exception (or calling :meth:`abort`)
    discards everything. ``idx_path`` defaults to ``<rec stem>.idx``.

    For an insightface set, write the images with keys ``1..N`` (grouped by label if identity
    records are wanted), then call :meth:`write_header_record`.
    """

    def __init__(
        self,
        rec_path: str | os.PathLike[str],
        idx_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else _sibling_idx(self.rec_path)
        if self.rec_path.resolve() == self.idx_path.resolve():
            raise ValueError(f"{self.rec_path}: the .rec and .idx paths must differ")
        # Records are small (a 112×112 JPEG is ~5 KB): a large buffer writes them in few calls.
        self._rec = AtomicFile(self.rec_path, "wb", buffering=1 << 20)
        try:
            self._idx = AtomicFile(self.idx_path, "w", newline="\n", buffering=1 << 16)
        except BaseException:
            self._rec.abort()
            raise
        self._pos = 0
        self._keys: set[int] = set()
        self._image_keys = array.array("q")
        self._image_labels = array.array("q")
        self._has_header = False

    def tell(self) -> int:
        """Offset at which the next record will start."""
        return self._pos

    def write_record(self, key: int, record: bytes | bytearray | memoryview) -> int:
        """Append a raw record (already :func:`pack`-ed) under ``key``; return its offset."""
        return self._append(key, frame_record(record))

    def write_framed(
        self,
        keys: Sequence[int],
        framed: bytes | memoryview,
        lengths: Sequence[int],
        labels: Sequence[int | None],
    ) -> None:
        """Append records framed by :func:`frame_image_records` (as worker processes prepare
        them): ``framed`` holds them back to back, record ``i`` being ``lengths[i]`` bytes
        stored under ``keys[i]``; ``labels[i]`` is its class, ``None`` if it is not an image
        record, or negative for an image record whose class is unknown (a record kept as it
        was because it could not be read; see :meth:`write_header_record`)."""
        if self._rec.closed:
            raise ValueError(f"{self.rec_path}: writer is closed")
        if not len(keys) == len(lengths) == len(labels):
            raise ValueError("write_framed needs as many keys, lengths and labels")
        sizes = np.asarray(lengths, np.int64)
        starts = np.cumsum(sizes) - sizes
        words = np.frombuffer(framed, "<u4") if len(framed) % 4 == 0 else None
        if (
            words is None
            or int(sizes.sum()) != len(framed)
            or np.any(sizes % 4)
            or np.any(words[starts // 4] != MAGIC)
        ):
            raise RecordIOError(f"{self.rec_path}: keys {keys[0]}..: not framed RecordIO records")
        checked = [self._new_key(key) for key in keys]
        if len(set(checked)) != len(checked):
            raise RecordIOError(f"{self.rec_path}: a key is given twice in {keys[0]}..")
        self._rec.file.write(framed)
        offsets = (starts + self._pos).tolist()
        self._idx.file.write("".join(f"{k}\t{o}\n" for k, o in zip(checked, offsets, strict=True)))
        self._pos += len(framed)
        self._keys.update(checked)
        for key, label in zip(checked, labels, strict=True):
            if label is not None and key != 0:
                self._image_keys.append(key)
                self._image_labels.append(int(label))

    def _new_key(self, key: int) -> int:
        """``key`` as an ``int`` after checking that it is valid and not written yet."""
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise ValueError(f"record keys must be non-negative integers, got {key!r}")
        key = int(key)
        if key in self._keys:
            raise RecordIOError(f"{self.rec_path}: key {key} written twice")
        return key

    def _append(self, key: int, framed: bytes) -> int:
        """Write framed bytes under a new ``key`` and index them; return their offset."""
        if self._rec.closed:
            raise ValueError(f"{self.rec_path}: writer is closed")
        key = self._new_key(key)
        offset = self._pos
        self._rec.file.write(framed)
        self._idx.file.write(f"{key}\t{offset}\n")
        self._pos += len(framed)
        self._keys.add(key)
        return offset

    def write(self, key: int, header: IRHeader | Sequence[Any], payload: bytes) -> int:
        """Append an image record (``header`` + ``payload``) under ``key``; return its offset."""
        hdr = IRHeader(*header)
        offset = self.write_record(key, pack(hdr, payload))
        if payload and int(key) != 0:
            if isinstance(hdr.label, numbers.Real):  # the usual scalar label, without numpy
                value = float(hdr.label)
            else:
                flat = np.ravel(np.asarray(hdr.label, dtype=np.float64))
                value = float(flat[0]) if flat.size else math.nan
            if math.isfinite(value) and value == int(value):
                self._image_keys.append(int(key))
                self._image_labels.append(int(value))
        elif int(key) == 0 and not payload:
            self._has_header = True
        return offset

    def write_image(
        self,
        key: int,
        image_rgb: np.ndarray,
        label: int,
        *,
        quality: int = 95,
        ext: str = ".jpg",
    ) -> int:
        """Encode ``image_rgb`` (JPEG by default) and append it with class ``label``."""
        if int(key) == 0:
            raise ValueError("key 0 is reserved for the insightface header record")
        payload = encode_image(image_rgb, ext, quality)
        return self.write(key, IRHeader(0, float(label), int(key), 0), payload)

    def write_header_record(
        self,
        label: tuple[float, float] | None = None,
        *,
        identities: bool = True,
    ) -> None:
        """Write the insightface header record (key 0), and identity records if possible.

        With ``label=None`` it is derived from the images written so far, whose keys must be
        exactly ``1..N``: with ``identities=True`` each label must occupy one run of
        consecutive keys; one identity record per run (label ``[start, end)``) is written at
        keys ``N+1 .. N+C`` and the header label is ``(N+1, N+1+C)``, as insightface's
        ``face2rec2.py`` does. An image of unknown class (negative label, from
        :meth:`write_framed`) is counted in the run of the key before it (the first run if
        it comes first): identity records only list key ranges. With ``identities=False``
        the header is ``(N+1, N+1)``. An explicit ``label`` is written as given, without
        identity records.
        """
        if self._has_header or 0 in self._keys:
            raise RecordIOError(f"{self.rec_path}: key 0 (the header record) already written")
        if label is not None:
            self.write(0, IRHeader(2, [float(v) for v in label], 0, 0), b"")
            return
        keys = np.frombuffer(self._image_keys, dtype=np.int64)
        labels = np.frombuffer(self._image_labels, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        keys, labels = keys[order], labels[order]
        labels = _fill_unknown(labels)
        n = keys.size
        if not np.array_equal(keys, np.arange(1, n + 1)):
            raise RecordIOError(
                f"{self.rec_path}: an insightface header needs the image keys to be exactly "
                f"1..{n}; got keys from {keys.min() if n else '-'} to "
                f"{keys.max() if n else '-'}"
            )
        runs: list[tuple[int, int]] = []
        if identities and n:
            breaks = np.flatnonzero(labels[1:] != labels[:-1]) + 1
            starts = np.concatenate([[0], breaks])
            ends = np.concatenate([breaks, [n]])
            run_labels = labels[starts]
            if np.unique(run_labels).size != run_labels.size:
                values, counts = np.unique(run_labels, return_counts=True)
                raise RecordIOError(
                    f"{self.rec_path}: label {values[counts > 1][0]} is spread over several "
                    "runs of keys; write the images grouped by label, or call "
                    "write_header_record(identities=False)"
                )
            runs = [(int(s) + 1, int(e) + 1) for s, e in zip(starts, ends, strict=True)]
        first = n + 1
        self.write(0, IRHeader(2, [float(first), float(first + len(runs))], 0, 0), b"")
        for j, (start, end) in enumerate(runs):
            key = first + j
            self.write(key, IRHeader(2, [float(start), float(end)], key, 0), b"")

    def close(self) -> None:
        """Finish: rename the ``.rec`` and then the ``.idx`` into place."""
        if self._rec.closed:
            return
        try:
            self._rec.commit()
        except BaseException:
            self._idx.abort()
            raise
        self._idx.commit()

    def abort(self) -> None:
        """Discard everything written; existing files at the final paths stay as they were."""
        self._rec.abort()
        self._idx.abort()

    def __del__(self) -> None:
        rec = getattr(self, "_rec", None)
        if rec is not None and not rec.closed:
            warnings.warn(
                f"RecordWriter for {self.rec_path} was never closed; its records are discarded",
                ResourceWarning,
                stacklevel=2,
            )
            with contextlib.suppress(Exception):
                self.abort()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
