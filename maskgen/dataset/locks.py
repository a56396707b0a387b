"""Locks on an output: one run at a time writes it (``fcntl.flock`` on files in the meta folder).

* An unsharded run holds ``<meta>/lock`` exclusively for its whole duration.
* A sharded run holds ``<meta>/lock`` shared (shards of one job run side by side; an
  unsharded run cannot start beside them, nor they beside it) and
  ``<meta>/lock.shard-i-of-n`` exclusively (the same shard cannot run twice).
* Assembling a ``.rec``/``.bin`` (and removing what a killed assembly left) happens under
  ``<meta>/assemble.lock``, waited for, so that two shards never assemble at once.

A second run fails at once with :class:`~maskgen.dataset.errors.OutputLockedError`. The locks
go with the process: a killed run leaves nothing to clean up. The lock files stay (empty).
On platforms without ``fcntl`` nothing is locked.

Example:
    >>> import tempfile, pathlib
    >>> meta = pathlib.Path(tempfile.mkdtemp())
    >>> with run_lock(meta, "out", (0, 1)):
    ...     try:
    ...         with run_lock(meta, "out", (0, 1)):
    ...             pass
    ...     except OutputLockedError as exc:
    ...         print(str(exc).split(";")[0])
    out: another maskgen render is writing this output (it holds ...lock)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from maskgen.dataset.errors import OutputLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["assembly_lock", "run_lock"]


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool, wait: bool, output: str) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLockedError(
                f"{output}: another maskgen render is writing this output (it holds {path}); "
                "wait for it to finish, or choose another output"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def run_lock(meta: Path, output: str, shard: tuple[int, int]) -> Iterator[None]:
    """Hold the locks of a run of shard ``shard`` = ``(i, n)`` on the output ``output``."""
    meta.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_flock(meta / "lock", shard[1] == 1, False, output))
        if shard[1] > 1:
            name = f"lock.shard-{shard[0]}-of-{shard[1]}"
            stack.enter_context(_flock(meta / name, True, False, output))
        yield


@contextlib.contextmanager
def assembly_lock(meta: Path, output: str) -> Iterator[None]:
    """Hold the assembly lock (waiting for a shard that is assembling)."""
    with _flock(meta / "assemble.lock", True, True, output):
        yield
