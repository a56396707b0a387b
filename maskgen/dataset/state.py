"""Per-worker state of ``maskgen render``: one explicit object instead of module caches.

A worker (a joblib process, or the main process with ``workers=1``) keeps, across the
blocks it renders:

* the landmark backends, one per configuration (models load once per worker), and the
  last one used (most items ask for the same options object: no key to build);
* the quantised-landmark memo (:func:`maskgen.dataset.manifest.quantised`): aligned crops
  share one layout, so quantising it and writing its JSON happen once;
* the aligned-selection memo (:func:`maskgen.dataset.items.detect`): with the ``aligned``
  backend the selected faces depend on the image size and the selection options only;
* the open ``.rec`` readers, one per input path;
* the JPEG headers seen (:func:`maskgen.dataset.items.jpeg_size`): the bytes up to the
  frame header that give an image's size, so that the pixel limit of a record whose
  header starts the same is checked without parsing it again.

Every entry is a pure function of its key (or an open reader of an unchanging file), so
the state changes no output: it only saves work. Threads of one process (joblib's
``threading`` backend) share the process's instance, as they shared the module caches it
replaces; its entries are filled with single dictionary stores, atomic under the GIL.

Example:
    >>> state = worker_state()
    >>> state is worker_state()
    True
    >>> state.reset()
    >>> state.backends, state.landmarks, state.aligned, state.readers, state.jpeg_heads
    ({}, {}, {}, {}, [])
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from maskgen.io import RecordReader

if TYPE_CHECKING:
    from maskgen.dataset.items import Detected
    from maskgen.dataset.options import RenderOptions

__all__ = [
    "JPEG_HEADS",
    "LANDMARK_MEMO",
    "WorkerState",
    "main_gone",
    "stop_if_orphaned",
    "worker_state",
]

#: Quantised layouts :attr:`WorkerState.landmarks` keeps (the oldest goes first).
LANDMARK_MEMO = 64

#: JPEG header prefixes :attr:`WorkerState.jpeg_heads` keeps.
JPEG_HEADS = 4


class WorkerState:
    """What one worker process keeps between items and blocks (see the module docstring).

    Attributes:
        backends: landmark backends by their configuration (JSON of
            :meth:`RenderOptions.backend_config`).
        last_backend: ``(options, backend)`` of the last :meth:`backend` call.
        landmarks: landmarks' ``(bytes, shape)`` → their quantised array (read-only) and
            its manifest JSON; at most :data:`LANDMARK_MEMO` entries.
        aligned: ``(height, width, faces, min_face)`` → the faces selected on an aligned
            crop of that size.
        readers: input path → its open :class:`~maskgen.io.RecordReader`.
        jpeg_heads: ``(header prefix, (width, height))``, most recent first, at most
            :data:`JPEG_HEADS`; ``jpeg_misses`` counts the sizes parsed in full.
    """

    __slots__ = ("aligned", "backends", "jpeg_heads", "jpeg_misses", "landmarks",
                 "last_backend", "readers")  # fmt: skip

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self.last_backend: tuple[RenderOptions | None, Any] = (None, None)
        self.landmarks: dict[tuple[bytes, tuple[int, ...]], tuple[Any, bytes]] = {}
        self.aligned: dict[tuple[Any, ...], Detected] = {}
        self.readers: dict[str, RecordReader] = {}
        self.jpeg_heads: list[tuple[bytes, tuple[int, int]]] = []
        self.jpeg_misses = 0

    def backend(self, options: RenderOptions) -> Any:
        """The landmark backend of ``options``, created on first use (one per process and
        configuration)."""
        last = self.last_backend
        if last[0] is options:
            return last[1]
        config = options.backend_config()
        key = json.dumps(config, sort_keys=True)
        backend = self.backends.get(key)
        if backend is None:
            from maskgen.landmarks import create_backend

            name = config.pop("name")
            backend = self.backends[key] = create_backend(name, **config)
        self.last_backend = (options, backend)
        return backend

    def reader(self, path: str | os.PathLike[str]) -> RecordReader:
        """The open reader of the ``.rec`` at ``path``, opened on first use."""
        key = str(path)
        reader = self.readers.get(key)
        if reader is None:
            # bad .idx offsets fail their record alone (sources.RecSource)
            reader = self.readers[key] = RecordReader(path, check_offsets=False)
        return reader

    def reset(self) -> None:
        """Forget everything: close the open readers, drop the backends and both memos.

        The instance is emptied in place, so modules holding it see the reset. Call it
        when an input ``.rec`` was replaced on disk, to free the models and file handles
        after a run, or between tests that must not share them; never while a block is
        being rendered in this process.
        """
        readers = list(self.readers.values())
        self.readers.clear()
        for reader in readers:
            reader.close()
        self.backends.clear()
        self.last_backend = (None, None)
        self.landmarks.clear()
        self.aligned.clear()
        self.jpeg_heads.clear()
        self.jpeg_misses = 0


_WORKER = WorkerState()


def worker_state() -> WorkerState:
    """This process's :class:`WorkerState` (the same instance on every call)."""
    return _WORKER


_PARENT_AT_START = os.getppid()


def main_gone(main_pid: int, main_host: str) -> bool:
    """Whether the main process of a run (``main_pid`` on ``main_host``) is gone while this
    worker still runs: a worker it started was re-parented, or, on the same host, no process
    ``main_pid`` exists. Always ``False`` in the main process itself and without a pid.

    Example:
        >>> main_gone(os.getpid(), socket.gethostname()), main_gone(0, "")
        (False, False)
    """
    if not main_pid or os.getpid() == main_pid:
        return False
    parent = os.getppid()
    if parent == main_pid:
        return False
    if main_pid == _PARENT_AT_START:  # started by the main process, now re-parented
        return True
    if main_host != socket.gethostname():
        return False  # another machine (e.g. a dask worker): no way to tell
    try:
        os.kill(main_pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def stop_if_orphaned(main_pid: int, main_host: str) -> None:
    """End this worker process at once if the run's main process is gone (:func:`main_gone`):
    nobody would journal what it writes. The first call in a worker also starts a watcher
    thread that checks every :data:`WATCH_INTERVAL` seconds, so that a worker busy with one
    long item (a huge photo, a kernel compiled on first use) stops too."""
    if main_gone(main_pid, main_host):
        os._exit(70)
    if main_pid and os.getpid() != main_pid and os.getpid() not in _WATCHING:
        _WATCHING.append(os.getpid())
        threading.Thread(target=_watch, args=(main_pid, main_host), daemon=True,
                         name="maskgen-orphan-watch").start()  # fmt: skip


#: How often (seconds) a worker's watcher thread looks for its main process.
WATCH_INTERVAL = 0.5
_WATCHING: list[int] = []


def _watch(main_pid: int, main_host: str) -> None:
    while True:
        time.sleep(WATCH_INTERVAL)
        if main_gone(main_pid, main_host):
            os._exit(70)
