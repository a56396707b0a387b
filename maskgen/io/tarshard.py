"""webdataset tar shards with Python's :mod:`tarfile` only: members, samples, new headers.

A webdataset shard is a plain tar archive whose regular files are grouped into *samples*
by their *key*: the member's name up to the first dot of its base name, directory prefix
kept (``train/000123.jpg`` and ``train/000123.cls`` are the ``jpg`` and ``cls`` of sample
``train/000123``). Consecutive members with the same key form one sample.

:func:`scan_members` walks an archive header by header without trusting it: a member whose
data runs past the end of the file is reported with a ``problem``, and bytes that are no
tar header (a bad checksum, garbage) become a :class:`Damage` region, after which the walk
resynchronises at the next valid header instead of stopping silently as :mod:`tarfile`
does. :func:`group_samples` groups the members into :class:`Sample` s; members that belong
to no sample (directories, links, names without an extension) travel with the sample before
them, so that every byte of the archive belongs to exactly one sample or damage region.
:func:`member_header` writes a member's header anew (another name or size) from the
original one, keeping its mode, owner, times and format.

Example:
    >>> import io, tarfile
    >>> buf = io.BytesIO()
    >>> with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
    ...     for name, data in [("a.jpg", b"xy"), ("a.cls", b"1"), ("b.png", b"z")]:
    ...         info = tarfile.TarInfo(name); info.size = len(data)
    ...         tf.addfile(info, io.BytesIO(data))
    >>> raw = buf.getvalue()
    >>> samples = list(group_samples(scan_members(io.BytesIO(raw), len(raw))))
    >>> [(s.key, [m.name for m in s.members]) for s in samples]
    [('a', ['a.jpg', 'a.cls']), ('b', ['b.png'])]
    >>> split_name("train/000123.seg.png"), split_name("train/.hidden"), split_name("README")
    (('train/000123', 'seg.png'), None, None)
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "BLOCK",
    "Damage",
    "Member",
    "Sample",
    "end_of_archive",
    "group_samples",
    "member_header",
    "padded",
    "read_info",
    "scan_members",
    "split_name",
]

#: Tar block size: headers are one block, data is padded to whole blocks.
BLOCK = tarfile.BLOCKSIZE
_ZERO = bytes(BLOCK)
#: Errors of a header that cannot be read (bad checksum, bad numbers, a bad extended header).
_HEADER_ERRORS = (tarfile.HeaderError, ValueError, UnicodeError, OverflowError, EOFError)
_ENCODING = "utf-8"  # names as os.fsdecode gives them (surrogate escapes for other bytes)


@dataclass(frozen=True)
class Member:
    """One archive member: where its headers start (``offset``, extended headers included),
    where its data starts and how long it is, where the next member starts (``end``), its
    name, whether it is a regular file, and why it cannot be read out (``problem``)."""

    offset: int
    data: int
    size: int
    end: int
    name: str
    regular: bool
    problem: str = ""


@dataclass(frozen=True)
class Damage:
    """Bytes ``offset`` … ``end`` of an archive that hold no tar member, and why."""

    offset: int
    end: int
    reason: str


@dataclass
class Sample:
    """Consecutive members with one key (``members``, in archive order, members of no sample
    included), or a damaged region (``damage``, no members)."""

    key: str
    members: list[Member] = field(default_factory=list)
    exts: list[str] = field(default_factory=list)
    damage: Damage | None = None

    @property
    def offset(self) -> int:
        return self.damage.offset if self.damage else self.members[0].offset

    @property
    def end(self) -> int:
        return self.damage.end if self.damage else self.members[-1].end

    @property
    def problem(self) -> str:
        """Why the sample cannot be read out of the archive ("" if it can)."""
        if self.damage is not None:
            return self.damage.reason
        return next((m.problem for m in self.members if m.problem), "")


def split_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name by webdataset's rule, or ``None`` when the base
    name has no extension or starts with a dot (such a member belongs to no sample)."""
    head, sep, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        return None
    return head + sep + stem, ext


class _Cursor:
    """What :meth:`tarfile.TarInfo.fromtarfile` reads from: a file, the names' encoding, the
    global pax headers and where the next member starts (the attributes it uses of a
    :class:`tarfile.TarFile`)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.fileobj = fileobj
        self.encoding = _ENCODING
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}
        self.offset = 0


def read_info(fileobj: BinaryIO, offset: int) -> tuple[tarfile.TarInfo, int]:
    """The member whose headers start at ``offset`` and where the next member starts;
    raises :class:`tarfile.HeaderError` (or ``ValueError``) for bytes that are no header."""
    cursor = _Cursor(fileobj)
    fileobj.seek(offset)
    info = tarfile.TarInfo.fromtarfile(cursor)  # type: ignore[arg-type]
    return info, cursor.offset


def scan_members(fileobj: BinaryIO, size: int) -> Iterator[Member | Damage]:
    """The members of the archive in ``fileobj`` (``size`` bytes), in order, and the damaged
    regions between them; ends at the end-of-archive marker or the end of the file."""
    cursor = _Cursor(fileobj)
    pos = 0
    while pos < size:
        fileobj.seek(pos)
        block = fileobj.read(BLOCK)
        if block == _ZERO:
            return
        if len(block) < BLOCK:
            yield Damage(pos, size, f"the archive ends {len(block)} bytes into a header "
                                    f"at offset {pos} (truncated)")  # fmt: skip
            return
        quick = None if cursor.pax_headers else _quick_header(block)
        if quick is not None:
            name, length, regular = quick
            data = pos + BLOCK
            end = data + (-(-length // BLOCK) * BLOCK if regular else 0)
        else:
            fileobj.seek(pos)
            try:
                info = tarfile.TarInfo.fromtarfile(cursor)  # type: ignore[arg-type]
            except _HEADER_ERRORS as exc:
                nxt = _resync(fileobj, pos + BLOCK, size)
                yield Damage(pos, nxt, f"bytes {pos}..{nxt} are no tar member "
                                       f"({exc or 'bad header'})")  # fmt: skip
                pos = nxt
                continue
            name, length, regular = info.name, info.size, info.isreg()
            data, end = info.offset_data, cursor.offset
        stored = min(length, end - data) if regular else 0  # GNU sparse: less than its size
        problem = ""
        if data + stored > size:
            got = max(0, size - data)
            problem = (f"cut short: the archive ends {got} bytes into its {length} bytes "
                       "(truncated)")  # fmt: skip
        yield Member(pos, data, length, min(end, size), name, regular, problem)
        if problem:
            return
        pos = end


def _quick_header(block: bytes) -> tuple[str, int, bool] | None:
    """``(name, size, regular)`` of a plain one-block ustar/GNU header of a file or folder,
    as :meth:`tarfile.TarInfo.frombuf` reads it (about 20 times faster), or ``None`` for
    anything else (extended headers, other types, base-256 numbers, a checksum that is not
    the unsigned sum), which :mod:`tarfile` then reads."""
    kind = block[156:157]
    if kind not in (b"0", b"\0", b"5") or block[257:262] != b"ustar":
        return None
    fields = block[124:136], block[148:156]
    if any(f[:1] in (b"\x80", b"\xff") for f in fields):
        return None
    try:
        length, check = (int(f.split(b"\0", 1)[0].strip() or b"0", 8) for f in fields)
    except ValueError:
        return None
    if check != sum(block) - sum(block[148:156]) + 256:  # the field counts as 8 spaces
        return None
    name = block[:100].split(b"\0", 1)[0].decode(_ENCODING, "surrogateescape")
    prefix = block[345:500].split(b"\0", 1)[0]
    if prefix:
        name = prefix.decode(_ENCODING, "surrogateescape") + "/" + name
    folder = kind == b"5" or name.endswith("/")
    return (name.rstrip("/") if folder else name), length, not folder


def _resync(fileobj: BinaryIO, start: int, size: int) -> int:
    """Offset of the next block at or after ``start`` that is a valid header or the
    end-of-archive marker (``size`` if there is none)."""
    pos = start
    while pos + BLOCK <= size:
        fileobj.seek(pos)
        chunk = fileobj.read(min(size - pos, 1 << 20))
        for i in range(0, len(chunk) - BLOCK + 1, BLOCK):
            block = chunk[i : i + BLOCK]
            if block == _ZERO:
                return pos + i
            try:
                tarfile.TarInfo.frombuf(block, _ENCODING, "surrogateescape")
            except _HEADER_ERRORS:
                continue
            return pos + i
        pos += len(chunk) - len(chunk) % BLOCK or BLOCK
    return size


def group_samples(entries: Iterable[Member | Damage]) -> Iterator[Sample]:
    """Group scanned members into samples by webdataset's rule (consecutive members with one
    key; a repeated extension starts a new sample). A member of no sample goes with the
    sample before it (before the first sample: with the first). Damaged regions are samples
    of their own; members of no sample left at the end with no sample to join are dropped."""
    current: Sample | None = None
    loose: list[Member] = []
    for entry in entries:
        if isinstance(entry, Damage):
            if current is not None:
                yield current
                current = None
            yield Sample("", damage=entry)
            continue
        split = split_name(entry.name) if entry.regular else None
        if split is None:
            if current is not None:
                current.members.append(entry)
                current.exts.append("")
            else:
                loose.append(entry)
            continue
        key, ext = split
        if current is not None and current.key == key and ext not in current.exts:
            current.members.append(entry)
            current.exts.append(ext)
            continue
        if current is not None:
            yield current
        current = Sample(key, [*loose, entry], [""] * len(loose) + [ext])
        loose = []
    if current is not None:
        yield current


def padded(data: bytes) -> bytes:
    """``data`` followed by the zeros that fill its last block."""
    return data + bytes(-len(data) % BLOCK)


def member_header(original: bytes, name: str, size: int) -> bytes:
    """The header blocks of a member like the one whose header blocks start ``original``
    (extended headers included), named ``name`` and ``size`` bytes long: mode, owner, times
    and the archive format (ustar, GNU, pax) are kept."""
    quick = _quick_header(original) if len(original) == BLOCK else None
    if quick is not None and quick[0] == name and quick[2] and size < 8**11:
        return _resized(original, size)
    info, _ = read_info(io.BytesIO(original), 0)
    fmt = _format_of(original)
    info.name = name
    info.size = size
    info.pax_headers = {k: v for k, v in info.pax_headers.items() if k not in ("path", "size")}
    try:
        return info.tobuf(fmt, _ENCODING, "surrogateescape")
    except ValueError:  # a name or number ustar cannot hold
        return info.tobuf(tarfile.PAX_FORMAT, _ENCODING, "surrogateescape")


def _resized(header: bytes, size: int) -> bytes:
    """A one-block header with another size and its checksum (both as :mod:`tarfile` writes
    them)."""
    block = bytearray(header)
    block[124:136] = b"%011o\0" % size
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _format_of(header: bytes) -> int:
    """The archive format a member's first header block was written in."""
    typeflag, magic = header[156:157], header[257:265]
    if typeflag in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
        return tarfile.PAX_FORMAT
    if magic == tarfile.GNU_MAGIC or typeflag in (tarfile.GNUTYPE_LONGNAME,
                                                  tarfile.GNUTYPE_LONGLINK):  # fmt: skip
        return tarfile.GNU_FORMAT
    return tarfile.USTAR_FORMAT


def end_of_archive(written: int) -> bytes:
    """The end-of-archive marker (two zero blocks) and the zeros that fill the last record
    of :data:`tarfile.RECORDSIZE` bytes, after ``written`` bytes of members (as
    :mod:`tarfile` ends an archive)."""
    tail = 2 * BLOCK
    return bytes(tail + -(written + tail) % tarfile.RECORDSIZE)
