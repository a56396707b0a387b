"""The errors that stop ``maskgen render``: each message is one line naming the path and the
cause. They are :class:`ValueError` s, which the CLI reports as ``error: …`` with exit code 2.

Example:
    >>> issubclass(OutputLockedError, ValueError)
    True
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "JournalError",
    "OutputLockedError",
    "OutputWriteError",
    "RenderError",
    "UnsafeOutputError",
    "write_error",
]


class RenderError(ValueError):
    """A problem that stops a whole run (not one item's failure)."""


class UnsafeOutputError(RenderError):
    """An output that would overwrite or re-read the input (or, for replay, lies outside
    the output folder)."""


class OutputLockedError(RenderError):
    """Another run holds the output's lock."""


class JournalError(RenderError):
    """A journal (progress log, manifest) that cannot be resumed from."""


class OutputWriteError(RenderError):
    """Writing an output or its bookkeeping failed (read-only folder, disk full …)."""


_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space and run the same command again to resume",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run again to resume",
    errno.EFBIG: "the file size limit is reached; raise it and run again to resume",
    errno.EROFS: "the file system is read-only; choose another output",
    errno.EACCES: "no permission to write there; choose another output or fix the permissions",
    errno.EPERM: "no permission to write there; choose another output or fix the permissions",
}


def write_error(exc: OSError, fallback: str | os.PathLike[str]) -> OutputWriteError:
    """The one-line :class:`OutputWriteError` of an ``OSError`` raised while writing: the
    path (``exc.filename``, else ``fallback``), the cause and what to do.

    Example:
        >>> exc = OSError(errno.ENOSPC, "No space left on device", "out/a.png")
        >>> message = str(write_error(exc, "out"))
        >>> message.startswith("out/a.png: cannot write: No space left on device (the disk is full")
        True
    """
    path = exc.filename if exc.filename is not None else os.fspath(fallback)
    cause = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno or 0)
    return OutputWriteError(f"{path}: cannot write: {cause}" + (f" ({advice})" if advice else ""))
