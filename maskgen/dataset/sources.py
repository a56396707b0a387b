"""Item sources: the images of a folder, an insightface ``.bin`` pack, a ``.rec`` set or
webdataset ``.tar`` shards.

A source lists its :class:`Item` s in a fixed order and loads one item's encoded bytes
(and label); sources pickle small, so that workers receive only what they need.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.dataset.options import output_kind
from maskgen.dataset.state import worker_state
from maskgen.io import (
    LISTED_EXTENSIONS,
    ImageReadError,
    RecordIOError,
    RecordReader,
    RecordSet,
    class_label,
    iter_image_files,
    load_bin,
    unpack,
)
from maskgen.io.tarshard import Member, group_samples, scan_members, split_name
from maskgen.protocol import image_key

__all__ = [
    "BinSource",
    "FolderSource",
    "Item",
    "NotedBytes",
    "RecSource",
    "Source",
    "TarItem",
    "TarSampleError",
    "TarSource",
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


@dataclass
class TarItem(Item):
    """One sample of a webdataset shard: the shard (its position in
    :attr:`TarSource.shards`), the bytes ``start`` … ``end`` it spans there (every member
    of the sample, members of no sample that go with it included), ``member``: the name of
    its image member (the sample's key when it has none), ``ext``: that member's extension
    (``.jpg`` …, lower case; "" without one), and ``kept``/``left_out``: why it fails
    (``(category, reason)``) when that is known from the listing — a ``kept`` sample is
    copied to the output as it is, a ``left_out`` one cannot be read out of the archive."""

    shard: int = 0
    start: int = 0
    end: int = 0
    member: str = ""
    ext: str = ""
    kept: tuple[str, str] | None = None
    left_out: str = ""

    @property
    def sample(self) -> str:
        """The webdataset key of the sample (``train/000123``)."""
        split = split_name(self.member)
        return split[0] if split is not None else self.member


class TarSampleError(ImageReadError):
    """A sample that cannot be rendered (no image member, a repeated key, a member cut short,
    damaged bytes): its failure ``category``."""

    def __init__(self, message: str, category: str = "unreadable") -> None:
        super().__init__(message)
        self.category = category


#: Extensions (lower case, no dot) of the member a sample's image is taken from.
TAR_IMAGE_EXTENSIONS = frozenset(e.lstrip(".") for e in LISTED_EXTENSIONS)


class TarSource:
    """The samples of webdataset ``.tar`` shards, in shard order, then archive order.

    A sample's key is its shard's path relative to ``root`` without ``.tar``, a slash and
    its image member's name: ``data-000000/000123.jpg`` for member ``000123.jpg`` of
    ``data-000000.tar`` — the key the same image has in a folder the shard was extracted
    into (``data-000000/``), so both are masked alike. A sample without an image member is
    keyed by its webdataset key, a damaged region by ``.bytes-OFFSET`` and a repeated key
    gets ``.#N``; none of these can be the key of a sample with an image.

    The listing reads every member header once (:func:`~maskgen.io.tarshard.scan_members`)
    and keeps each sample's key and byte range; workers read a block's ranges in one read
    per shard and find the members again in those bytes.
    """

    kind = "tar"

    def __init__(self, shards: Sequence[Path], root: Path, described: str = "") -> None:
        self.root = Path(root)
        self.shards = [Path(p) for p in shards]
        self.names = [_relative(p, self.root) for p in self.shards]
        self.described = described or str(root)
        self.notes: list[str] = []
        keys: list[str] = []
        where: list[tuple[int, int, int]] = []
        self._special: dict[int, tuple[str, str, bool]] = {}  # index: category, reason, left out
        self._members: dict[int, str] = {}  # index: member name where the key does not say it
        for s, path in enumerate(self.shards):
            self._list_shard(s, path, keys, where)
        self.keys = keys
        self._where = np.asarray(where, np.int64).reshape(-1, 3)

    def _list_shard(
        self, s: int, path: Path, keys: list[str], where: list[tuple[int, int, int]]
    ) -> None:
        prefix = self.names[s][: -len(".tar")] + "/"
        seen: set[str] = set()
        repeats: dict[str, int] = {}
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                samples = list(group_samples(scan_members(fh, size)))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot read the shard: {exc.strerror}", str(path)) from exc
        for sample in samples:
            index = len(keys)
            where.append((s, sample.offset, sample.end))
            if sample.damage is not None:
                keys.append(f"{prefix}.bytes-{sample.offset}")
                self._members[index] = f"@{sample.offset}"
                self._special[index] = ("unreadable", sample.problem, True)
                continue
            images = [m for m, e in zip(sample.members, sample.exts, strict=True)
                      if e.lower() in TAR_IMAGE_EXTENSIONS]  # fmt: skip
            member = images[0].name if len(images) == 1 else sample.key
            key = prefix + member
            special = _sample_problem(sample.key, sample.members, sample.exts, images, seen)
            if sample.key in seen:  # ".#N" cannot end the key of a sample with an image
                repeats[sample.key] = repeats.get(sample.key, 1) + 1
                key = f"{key}.#{repeats[sample.key]}"
            seen.add(sample.key)
            if key != prefix + member:
                self._members[index] = member
            if special is not None:
                self._special[index] = special
            keys.append(key)
        if not samples:
            self.notes.append(f"{path}: no samples (an empty archive); its output shard is empty")

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[TarItem]:
        names = [len(n) - len(".tar") + 1 for n in self.names]
        for i, key in enumerate(self.keys):
            s, start, end = (int(v) for v in self._where[i])
            member = self._members.get(i) or key[names[s] :]
            split = split_name(member)
            ext = ""
            if split is not None and split[1].lower() in TAR_IMAGE_EXTENSIONS:
                ext = "." + split[1].lower()
            special = self._special.get(i)
            kept = left_out = None
            if special is not None:
                if special[2]:
                    left_out = special[1]
                else:
                    kept = special[:2]
            yield TarItem(i, key, None, s, start, end, member, ext, kept, left_out or "")

    def describe(self, item: Item) -> str:
        assert isinstance(item, TarItem)
        sep = "" if item.member.startswith("@") else "#"
        return f"{self.names[item.shard]}{sep}{item.member}"

    def read_spans(self, items: Sequence[TarItem]) -> list[bytes | OSError]:
        """The bytes of each item's range, one read per run of items in one shard."""
        out: list[bytes | OSError] = []
        run: list[TarItem] = []
        for item in [*items, None]:
            if run and (item is None or item.shard != run[0].shard or item.start < run[-1].end):
                out += self._read_run(run)
                run = []
            if item is not None:
                run.append(item)
        return out

    def _read_run(self, run: list[TarItem]) -> list[bytes | OSError]:
        path = self.shards[run[0].shard]
        start, end = run[0].start, run[-1].end
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                blob = fh.read(end - start)
        except OSError as exc:
            return [OSError(exc.errno, exc.strerror, str(path)) for _ in run]
        return [blob[it.start - start : it.end - start] for it in run]

    def split(
        self, item: TarItem, span: bytes | OSError, members: list[Member] | None = None
    ) -> tuple[bytes, int | None]:
        """The image member's bytes out of the item's ``span`` (no label; ``members``: the
        span's, if known); raises :class:`TarSampleError` for a sample that cannot be
        rendered."""
        where = self.describe(item)
        if isinstance(span, OSError):
            raise span
        if item.left_out:
            raise TarSampleError(f"{where}: {item.left_out}; left out of the output")
        if item.kept is not None:
            raise TarSampleError(f"{where}: {item.kept[1]}; kept as it was", item.kept[0])
        for m in sample_members(span) if members is None else members:
            if m.name == item.member:
                data = span[m.data : m.data + m.size]
                if not data:
                    raise TarSampleError(f"{where}: empty member (0 bytes), not an image")
                return data, None
        raise TarSampleError(f"{where}: the member is gone (the shard changed since it was listed)")

    def load(self, item: Item) -> tuple[bytes, int | None]:
        assert isinstance(item, TarItem)
        return self.split(item, self.read_spans([item])[0])

    def load_many(self, items: list[TarItem]) -> list[tuple[bytes, int | None] | Exception]:
        """:meth:`load` for a block of items, one read per shard."""
        out: list[tuple[bytes, int | None] | Exception] = []
        for item, span in zip(items, self.read_spans(items), strict=True):
            try:
                out.append(self.split(item, span))
            except Exception as exc:  # re-raised by items.load, as load would
                out.append(exc)
        return out

    @property
    def path(self) -> Path:
        """What the run was given (named in messages)."""
        return Path(self.described)

    def __getstate__(self) -> dict[str, Any]:
        # workers get their items' ranges; they need the shards' paths and names only
        state = self.__dict__.copy()
        state.update(keys=[], _where=None, _special={}, _members={}, notes=[])
        return state


def _sample_problem(
    key: str,
    members: list[Member],
    exts: list[str],
    images: list[Member],
    seen: set[str],
) -> tuple[str, str, bool] | None:
    """Why a sample fails, known from the listing: a member cut short (left out), a repeated
    key, no image member or several (kept as they are); ``None`` if it can be rendered."""
    cut = next((m for m in members if m.problem), None)
    if cut is not None:
        return "unreadable", f"member {cut.name} is {cut.problem}", True
    if key in seen:
        return ("unsupported", f"sample key {key!r} repeats an earlier sample of this shard "
                "(webdataset would read both under one key)", False)  # fmt: skip
    if not images:
        found = ", ".join(e for e in exts if e) or "none"
        return ("unreadable", f"sample {key!r} has no image member (extensions: {found}; "
                f"images are one of {', '.join(sorted(TAR_IMAGE_EXTENSIONS))})", False)  # fmt: skip
    if len(images) > 1:
        return ("unsupported", f"sample {key!r} has {len(images)} image members "
                f"({', '.join(m.name for m in images)}): which one to mask is ambiguous",
                False)  # fmt: skip
    return None


def sample_members(span: bytes) -> list[Member]:
    """The members in a sample's bytes (offsets relative to its start)."""
    return [m for m in scan_members(io.BytesIO(span), len(span)) if isinstance(m, Member)]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion as webdataset writes shard lists: ``{000..009}`` (zero
    padding kept) and ``{a,b}``, left to right.

    Example:
        >>> expand_braces("data-{00..02}.tar")
        ['data-00.tar', 'data-01.tar', 'data-02.tar']
        >>> expand_braces("{a,b}/x-{1..2}.tar")
        ['a/x-1.tar', 'a/x-2.tar', 'b/x-1.tar', 'b/x-2.tar']
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    span = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if span is not None:
        a, b = span.groups()
        width = len(a) if a.lstrip("-").startswith("0") or len(a) == len(b) else 0
        step = 1 if int(b) >= int(a) else -1
        choices = [f"{v:0{width}d}" for v in range(int(a), int(b) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = ["{" + body + "}"]  # not a brace expression: literal
        head, tail = pattern[: match.end()], pattern[match.end() :]
        return [head + rest for rest in expand_braces(tail)]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [head + c + rest for c in choices for rest in expand_braces(tail)]


def is_shard_pattern(text: str) -> bool:
    """Whether an input names several shards by a glob or brace pattern."""
    return bool(_BRACE.search(text)) or glob.has_magic(text)


def _shard_files(folder: Path) -> list[Path]:
    """The ``.tar`` files under ``folder``, recursively, sorted by relative path; names
    starting with ``.`` are skipped (as folder listings skip them)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames
                  if f.lower().endswith(".tar") and not f.startswith(".")]  # fmt: skip
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def open_shards(text: str) -> TarSource:
    """The shards a glob or brace pattern names (``shards/data-{000000..000009}.tar``,
    ``shards/*.tar``), in the pattern's order (a glob's matches sorted); every name must be a
    ``.tar`` and exist. Keys are relative to the pattern's folder (its part before the first
    wildcard or brace)."""
    files: list[Path] = []
    for name in expand_braces(text):
        matches = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
        if not matches or not Path(matches[0]).is_file():
            raise FileNotFoundError(f"{name}: input not found (from the pattern {text})")
        files += [Path(m) for m in matches if Path(m) not in files]
    bad = [f for f in files if f.suffix.lower() != ".tar" or not f.is_file()]
    if bad:
        raise ValueError(f"{bad[0]}: the pattern {text} names a file that is not a .tar shard")
    fixed = re.split(r"[*?\[{]", text, maxsplit=1)[0]
    root = Path(fixed if fixed.endswith("/") else os.path.dirname(fixed) or ".")
    return TarSource(files, root, text)


#: Any of the four sources.
Source = FolderSource | BinSource | RecSource | TarSource


def open_source(path: str | os.PathLike[str]) -> Source:
    """Pick the reader for a folder, a ``.bin`` pack, a ``.rec`` set or ``.tar`` shards (a
    ``.tar``, a glob or brace pattern of them, or a folder that holds ``.tar`` files and no
    images)."""
    p = Path(path)
    if p.is_dir():
        folder = FolderSource(p)
        if len(folder) == 0 and not folder.unlisted:
            shards = _shard_files(p)
            if shards:
                return TarSource(shards, p, str(p))
        return folder
    if not p.exists():
        if is_shard_pattern(str(path)):
            return open_shards(str(path))
        raise FileNotFoundError(f"{p}: input not found")
    if p.suffix.lower() == ".tar":
        return TarSource([p], p.parent, str(p))
    kind = output_kind(p)
    if kind == "bin":
        return BinSource(p)
    if kind == "rec":
        return RecSource(p)
    raise ValueError(
        f"{p}: input must be a folder, a .bin pack, a .rec file or .tar shards (a .tar, a "
        "folder of them or a pattern such as data-{000000..000009}.tar)"
    )
