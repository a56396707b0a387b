"""Atomic file writes: a file either keeps its old content or gets the complete new one.

Data goes to a temporary file in the destination's directory (its name starts with ``.`` and
ends with ``.tmp``, so a reader never sees a half-written file under the final name), is
flushed and fsynced, then renamed over the destination with :func:`os.replace`. Missing parent
directories are created. If anything fails, the temporary file is removed and the destination
is left untouched.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = atomic_write_text(d / "sub" / "note.txt", "hello")
    >>> (d / "sub" / "note.txt").read_text()
    'hello'
    >>> sorted(p.name for p in (d / "sub").iterdir())  # no temporary file left behind
    ['note.txt']
    >>> import shutil; shutil.rmtree(d)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "AtomicFile",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "temp_file_target",
]

_ALLOWED_MODES = {"w": "w", "wt": "w", "wb": "wb"}


def _read_umask() -> int:
    """Return the process umask (read once at import; setting it back immediately)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so that a rename survives a crash (POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_file_target(name: str) -> str | None:
    """The final file name behind one of our temporary files, or ``None`` if ``name`` is not one.

    Temporary files are named ``"." + final name + "." + random suffix + ".tmp"``.

    Example:
        >>> temp_file_target(".a.png.k2j4_x9q.tmp"), temp_file_target("a.png")
        ('a.png', None)
    """
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    return name[1:-4].rpartition(".")[0] or None


class AtomicFile:
    """A temporary file that becomes ``path`` on :meth:`commit`, or vanishes on :meth:`abort`.

    This is the long-lived form of :func:`atomic_open` (used e.g. by the RecordIO writer, which
    keeps two files open for a whole dataset). ``mode`` is ``"wb"`` (binary) or ``"w"``/``"wt"``
    (text, with ``encoding``/``newline``/``buffering`` as for :func:`open`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "wb",
        *,
        encoding: str | None = None,
        newline: str | None = None,
        buffering: int = -1,
    ) -> None:
        if mode not in _ALLOWED_MODES:
            raise ValueError(f"atomic writes support modes 'wb', 'w' and 'wt', not {mode!r}")
        self.path = Path(path)
        if self.path.name in ("", ".", ".."):
            raise ValueError(f"not a file path: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self.tmp_path = Path(tmp)
        self._done = False
        try:
            # mkstemp creates 0600 files; give the result the permissions open() would.
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o666 & ~_UMASK)
            if _ALLOWED_MODES[mode] == "wb":
                self.file: IO[Any] = os.fdopen(fd, "wb", buffering)
            else:
                self.file = os.fdopen(
                    fd, "w", buffering, encoding=encoding or "utf-8", newline=newline
                )
        except BaseException:
            os.close(fd)
            self.tmp_path.unlink(missing_ok=True)
            raise

    @property
    def closed(self) -> bool:
        """Whether the file has been committed or aborted."""
        return self._done

    def commit(self) -> Path:
        """Flush, fsync and rename the temporary file to the final path; return that path."""
        if self._done:
            raise ValueError(f"{self.path}: atomic write already finished")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Discard the temporary file; the final path keeps whatever it had before."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing atomically; the file appears when the ``with`` block ends.

    On an exception inside the block the temporary file is removed, the exception propagates
    and ``path`` is untouched.
    """
    atomic = AtomicFile(path, mode, encoding=encoding, newline=newline)
    try:
        yield atomic.file
    except OSError as exc:
        atomic.abort()
        named = _named(exc, atomic.path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        atomic.abort()
        raise
    try:
        atomic.commit()
    except OSError as exc:
        named = _named(exc, atomic.path)
        if named is exc:
            raise
        raise named from exc


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it has none (file objects' errors don't)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", newline: str | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default) and return the path."""
    with atomic_open(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return Path(path)
