"""The journal of a run: manifest, failure report and progress log, resumable; ``run.json``.

``progress.log`` starts with the line :data:`PROGRESS_MAGIC`; then one line per finished
item, seven tab-separated fields::

    index  key  manifest-bytes  failure-bytes  manifest-crc  failure-crc  line-crc

``key`` is the item's name as bytes (``os.fsencode``), percent-escaped (:func:`quote_key`), so
that any name round-trips: tabs, newlines, ``%`` and non-UTF-8 bytes included. The sizes are
those of the manifest and failure files once the item's lines were appended; the CRC-32s
cover the item's own bytes in them and the line itself.

Writes are durable: a batch's manifest and failure lines are appended and synced to disk
before its progress lines, which are then synced too. A resumed run reads the log line by
line and checks every line and the bytes it covers; the first line that is torn (a kill or a
power cut mid-write, NUL bytes) or covers bytes that differ ends the trusted prefix. The
log, manifest and failure files are cut back to that prefix (dropping the lines of items cut
short), the repair is reported in :attr:`Journal.notes`, and the run renders every item whose
key is not in the prefix. A log of maskgen's first format (four fields, no magic line) is
converted on resume; one that cannot be read is refused (:class:`JournalError`).

``run.json`` holds the options; a resumed run must use the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from maskgen.dataset.errors import JournalError
from maskgen.dataset.items import ItemResult
from maskgen.io import AtomicFile, atomic_write_text

__all__ = [
    "PROGRESS_MAGIC",
    "DoneKeys",
    "Journal",
    "ProgressEntry",
    "check_run_file",
    "quote_key",
    "sync",
    "unquote_key",
]

#: First line of a progress log in the current format.
PROGRESS_MAGIC = b"maskgen progress 2\n"

# Printable ASCII that stays as it is in a quoted key (besides letters, digits and "_.-~").
_SAFE = "/ !#$&'()*+,:;=@[]^`{|}"
# A key made of these characters only is its own quoted form (most keys: .rec keys, paths).
_AS_IS = re.compile(r"[A-Za-z0-9_.~" + re.escape(_SAFE + "-") + r"]*")


def quote_key(key: str) -> str:
    """An item key as one tab- and newline-free ASCII field (percent-escaped file-system bytes).

    Example:
        >>> quote_key("a b/c.jpg"), quote_key("tab\\there.png"), quote_key("caf\\xe9.jpg")
        ('a b/c.jpg', 'tab%09here.png', 'caf%C3%A9.jpg')
        >>> name = os.fsdecode(b"bad\\xff\\n.jpg")
        >>> unquote_key(quote_key(name)) == name
        True
    """
    if _AS_IS.fullmatch(key):
        return key
    return urllib.parse.quote_from_bytes(os.fsencode(key), safe=_SAFE)


def unquote_key(text: str) -> str:
    """The inverse of :func:`quote_key`."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(text))


def sync(fh: BinaryIO) -> None:
    """Flush ``fh`` and make its data durable (``fdatasync`` where there is one)."""
    fh.flush()
    (getattr(os, "fdatasync", None) or os.fsync)(fh.fileno())


def _line(index: int, key: str, manifest: int, failures: int, m_crc: int, f_crc: int) -> bytes:
    """:meth:`ProgressEntry.line` of these fields (the journal's hot path: no tuple built)."""
    body = b"%d\t%s\t%d\t%d\t%08x\t%08x" % (
        index,
        quote_key(key).encode("ascii"),
        manifest,
        failures,
        m_crc,
        f_crc,
    )
    return body + b"\t%08x\n" % zlib.crc32(body)


class ProgressEntry(NamedTuple):
    """One line of the progress log."""

    index: int
    key: str
    manifest: int
    failures: int
    manifest_crc: int
    failures_crc: int

    def line(self) -> bytes:
        """The entry as a progress-log line (with its own CRC and the newline)."""
        return _line(*self)

    @classmethod
    def parse(cls, line: bytes) -> ProgressEntry | None:
        """The entry of a complete line, or ``None`` if it is torn or corrupt.

        Example:
            >>> e = ProgressEntry(3, "a\\tb", 10, 0, 1, 0)
            >>> ProgressEntry.parse(e.line()) == e, ProgressEntry.parse(e.line()[:-2])
            (True, None)
        """
        if not line.endswith(b"\n"):
            return None
        fields = line[:-1].split(b"\t")
        if len(fields) != 7:
            return None
        body = b"\t".join(fields[:6])
        try:
            if int(fields[6], 16) != zlib.crc32(body):
                return None
            index, m, f = int(fields[0]), int(fields[2]), int(fields[3])
            key = unquote_key(fields[1].decode("ascii"))
            return cls(index, key, m, f, int(fields[4], 16), int(fields[5], 16))
        except (ValueError, UnicodeDecodeError):
            return None


class DoneKeys:
    """The keys of the finished items: canonical integers (``.rec`` keys) in a sorted array,
    other names in a set, so that millions of record keys stay small.

    Example:
        >>> done = DoneKeys(["7", "a.jpg", "000017"])
        >>> "7" in done, "000017" in done, "17" in done, len(done)
        (True, True, False, 3)
        >>> done.contains_many(["7", "8", "a.jpg", "000017"])
        [True, False, True, True]
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        ints: list[int] = []
        self._names: set[str] = set()
        for key in keys:
            if key.isascii() and key.isdigit() and str(int(key)) == key:
                ints.append(int(key))
            else:
                self._names.add(key)
        self._ints = np.unique(np.asarray(ints, np.int64))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key.isascii() and key.isdigit() and str(int(key)) == key:
            i = int(np.searchsorted(self._ints, int(key)))
            return i < self._ints.size and int(self._ints[i]) == int(key)
        return key in self._names

    def contains_many(self, keys: list[str]) -> list[bool]:
        """``[key in self for key in keys]``, the integer keys looked up in one call."""
        if not self._ints.size:
            return [key in self._names for key in keys]
        canonical = [k.isascii() and k.isdigit() and str(int(k)) == k for k in keys]
        ints = np.asarray([int(k) if c else -1 for k, c in zip(keys, canonical, strict=True)],
                          np.int64)  # fmt: skip
        at = np.minimum(np.searchsorted(self._ints, ints), self._ints.size - 1)
        hits = (self._ints[at] == ints).tolist()
        return [h if c else k in self._names
                for k, c, h in zip(keys, canonical, hits, strict=True)]  # fmt: skip

    def __len__(self) -> int:
        return int(self._ints.size) + len(self._names)

    def __iter__(self) -> Iterator[str]:
        yield from (str(k) for k in self._ints.tolist())
        yield from sorted(self._names)


def _read_range(fh: BinaryIO | None, n: int) -> bytes | None:
    """The next ``n`` bytes of ``fh`` (``None`` if the file ends before)."""
    if n == 0:
        return b""
    data = fh.read(n) if fh is not None else b""
    return data if len(data) == n else None


class _Recovery:
    """What a resumed journal found: the trusted entries' keys and sizes, and the notes."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sizes = (0, 0)
        self.end = len(PROGRESS_MAGIC)  # byte length of the trusted progress log
        self.notes: list[str] = []
        self.rewrite: list[bytes] | None = None  # new log lines (old format converted)


class Journal:
    """Append-only manifest/failure files plus a progress log that makes them resumable.

    Attributes:
        resumed: whether an earlier run left a progress log.
        done: the keys of the items an earlier run finished (:class:`DoneKeys`).
        notes: what the resume repaired (torn tails, converted format), one line each.

    Example:
        >>> import tempfile, pathlib
        >>> meta = pathlib.Path(tempfile.mkdtemp())
        >>> journal = Journal(meta)
        >>> journal.write([ItemResult(0, "a\\tb.png", [b'{"index":0}\\n'], None, 1)])
        >>> journal.close()
        >>> (meta / "progress.log").read_bytes().splitlines()[1].split(b"\\t")[:4]
        [b'0', b'a%09b.png', b'12', b'0']
        >>> again = Journal(meta)
        >>> again.resumed, "a\\tb.png" in again.done, again.notes
        (True, True, [])
        >>> again.close()
    """

    def __init__(self, meta: Path, suffix: str = "") -> None:
        meta.mkdir(parents=True, exist_ok=True)
        self.manifest_path = meta / f"manifest{suffix}.jsonl"
        self.failures_path = meta / f"failures{suffix}.jsonl"
        self.progress_path = meta / f"progress{suffix}.log"
        self.resumed = self.progress_path.exists()
        found = self._recover() if self.resumed else _Recovery()
        self.done = DoneKeys(found.keys)
        self.notes = found.notes
        self._sizes = found.sizes
        self._manifest = self._open(self.manifest_path, found.sizes[0])
        self._failures = self._open(self.failures_path, found.sizes[1])
        self._progress = self._open_progress(found)

    # -- resume ----------------------------------------------------------------------------

    def _recover(self) -> _Recovery:
        """Read and check the progress log against the manifest and failure files."""
        found = _Recovery()
        with contextlib.ExitStack() as stack:
            progress = stack.enter_context(self.progress_path.open("rb"))
            files = [
                stack.enter_context(p.open("rb")) if p.exists() else None
                for p in (self.manifest_path, self.failures_path)
            ]
            head = progress.read(len(PROGRESS_MAGIC))
            if head == PROGRESS_MAGIC:
                self._read_entries(progress, files, found)
            elif PROGRESS_MAGIC.startswith(head):  # killed while the log was created
                found.rewrite = []
            elif not head.strip(b"\x00"):
                found.rewrite = []
                found.notes.append(
                    f"{self.progress_path}: the log holds NUL bytes only (a power cut?); "
                    "every item is rendered again"
                )
            else:
                progress.seek(0)
                self._convert_v1(progress, files, found)
            self._note_tails(files, found)
        return found

    def _read_entries(
        self, progress: BinaryIO, files: list[BinaryIO | None], found: _Recovery
    ) -> None:
        for line in progress:
            entry = ProgressEntry.parse(line)
            problem = None
            if entry is None:
                problem = "a torn or corrupt line"
            else:
                problem = self._check_ranges(entry, files, found.sizes)
            if problem is not None:
                rest = len(line) + len(progress.read())
                found.notes.append(
                    f"{self.progress_path}: {problem} at byte {found.end}; the journal is cut "
                    f"back to {len(found.keys)} finished items ({rest} bytes of the log "
                    "dropped) and the items after them are rendered again"
                )
                return
            assert entry is not None
            found.keys.append(entry.key)
            found.sizes = (entry.manifest, entry.failures)
            found.end += len(line)

    def _check_ranges(
        self, entry: ProgressEntry, files: list[BinaryIO | None], sizes: tuple[int, int]
    ) -> str | None:
        """Why the manifest/failure bytes of ``entry`` are not what it says, or ``None``."""
        for fh, start, end, crc, path in (
            (files[0], sizes[0], entry.manifest, entry.manifest_crc, self.manifest_path),
            (files[1], sizes[1], entry.failures, entry.failures_crc, self.failures_path),
        ):
            if end < start:
                return f"an entry whose sizes go backwards ({path.name})"
            data = _read_range(fh, end - start)
            if data is None:
                return f"an entry past the end of {path.name}"
            if zlib.crc32(data) != crc:
                return f"an entry whose bytes in {path.name} differ (CRC)"
        return None

    def _convert_v1(
        self, progress: BinaryIO, files: list[BinaryIO | None], found: _Recovery
    ) -> None:
        """Read a first-format log (``index key m f`` lines) and convert it."""
        found.rewrite = []
        for line_no, line in enumerate(progress, 1):
            if not line.endswith(b"\n"):
                break  # a torn last line: the item is rendered again
            fields = line[:-1].split(b"\t")
            try:
                index, m, f = int(fields[0]), int(fields[-2]), int(fields[-1])
                if len(fields) < 4:
                    raise ValueError
                key = b"\t".join(fields[1:-2]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise JournalError(
                    f"{self.progress_path}: line {line_no} is not a progress line of any "
                    "maskgen version (a file name with a newline?); remove "
                    f"{self.progress_path.parent} and run again"
                ) from None
            crcs = []
            for fh, start, end in ((files[0], found.sizes[0], m), (files[1], found.sizes[1], f)):
                data = _read_range(fh, end - start) if end >= start else None
                if data is None or (data and not data.endswith(b"\n")) or b"\x00" in data:
                    found.notes.append(
                        f"{self.progress_path}: line {line_no} does not match the manifest or "
                        f"failure file; the journal is cut back to {len(found.keys)} items"
                    )
                    return
                crcs.append(zlib.crc32(data))
            entry = ProgressEntry(index, key, m, f, crcs[0], crcs[1])
            found.rewrite.append(entry.line())
            found.keys.append(key)
            found.sizes = (m, f)
        found.notes.append(
            f"{self.progress_path}: converted from the first progress-log format "
            f"({len(found.keys)} finished items)"
        )

    def _note_tails(self, files: list[BinaryIO | None], found: _Recovery) -> None:
        """Report bytes after the trusted sizes that are not just an item cut short."""
        paths = (self.manifest_path, self.failures_path)
        for fh, size, path in zip(files, found.sizes, paths, strict=True):
            if fh is None:
                continue
            fh.seek(size)
            tail = fh.read(1 << 20)
            if b"\x00" in tail:
                found.notes.append(
                    f"{path}: NUL bytes after the last verified record (a power cut?); cut "
                    f"back to {size} bytes"
                )

    # -- files -----------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path, size: int) -> BinaryIO:
        fh = path.open("ab")
        if fh.tell() != size:
            fh.truncate(size)
            sync(fh)
        return fh

    def _open_progress(self, found: _Recovery) -> BinaryIO:
        if found.rewrite is not None or not self.resumed:
            with AtomicFile(self.progress_path, "wb") as atomic:
                atomic.file.write(PROGRESS_MAGIC + b"".join(found.rewrite or []))
            return self.progress_path.open("ab")
        return self._open(self.progress_path, found.end)

    def write(self, results: list[ItemResult]) -> None:
        """Append the lines of a batch of items, sync them to disk, then append and sync
        their progress lines: a progress line is only ever on disk after what it covers.

        Two ``fdatasync`` calls per batch (three when it has failures): about 0.3 ms each on
        the development VM, under 1 µs per item of a 1,024-item block; the CPU work of the
        lines costs more, so it is kept to one pass with no intermediate objects.
        """
        manifest, failures, progress = [], [], []
        m_pos, f_pos = self._sizes
        crc32 = zlib.crc32
        for result in results:
            lines = result.lines
            data = lines[0] if len(lines) == 1 else b"".join(lines)
            manifest.append(data)
            m_pos += len(data)
            f_crc = 0  # zlib.crc32(b"")
            if result.failure is not None:
                fail = (json.dumps(result.failure) + "\n").encode("ascii")
                failures.append(fail)
                f_pos += len(fail)
                f_crc = crc32(fail)
            progress.append(_line(result.index, result.key, m_pos, f_pos, crc32(data), f_crc))
        if m_pos != self._sizes[0]:
            _append(self._manifest, self.manifest_path, b"".join(manifest))
        if failures:
            _append(self._failures, self.failures_path, b"".join(failures))
        self._sizes = m_pos, f_pos
        _append(self._progress, self.progress_path, b"".join(progress))

    def close(self) -> None:
        """Close the three files (after a failed write, without raising again)."""
        errors = []
        for fh in (self._manifest, self._failures, self._progress):
            try:
                fh.close()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _append(fh: BinaryIO, path: Path, data: bytes) -> None:
    """Append ``data`` and sync it; an ``OSError`` names ``path`` (a file object's does not)."""
    try:
        fh.write(data)
        sync(fh)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


_DEFAULTS: dict[str, Any] | None = None


def _default_options() -> dict[str, Any]:
    global _DEFAULTS
    if _DEFAULTS is None:
        from maskgen.dataset.options import RenderOptions

        _DEFAULTS = RenderOptions().to_dict()
    return _DEFAULTS


def check_run_file(meta: Path, identity: dict[str, Any]) -> None:
    """Write ``run.json`` (``identity``: input, options, shards), or check that the one an
    earlier run wrote says the same; raises :class:`ValueError` naming what changed.

    An option that an earlier maskgen version did not know yet counts as unchanged when it
    has its default value.
    """
    run_file = meta / "run.json"
    text = json.dumps(identity, indent=1, sort_keys=True) + "\n"
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise JournalError(
                f"{run_file}: unreadable ({exc}); remove {meta} and run again"
            ) from None
        if isinstance(old, dict) and isinstance(old.get("options"), dict):
            new_keys = set(identity.get("options", {})) - set(old["options"])
            defaults = _default_options()
            old["options"].update({k: defaults.get(k) for k in new_keys})
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(
                f"{meta}: an earlier run with different settings ({', '.join(changed)}) wrote "
                "here; use the same options to resume, or choose a new output"
            )
        return
    atomic_write_text(run_file, text)
