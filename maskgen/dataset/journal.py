"""The journal of a run: manifest, failure report and progress log, resumable; ``run.json``.

The last complete line of ``progress.log`` says which item finished last and how long the
manifest and failure files were then; a resumed run cuts them back to those sizes (dropping
the lines of an item that was cut short) and carries on after it. ``run.json`` holds the
options; a resumed run must use the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from maskgen.dataset.items import ItemResult
from maskgen.io import atomic_write_text

__all__ = ["Journal", "check_run_file"]


class Journal:
    """Append-only manifest/failure files plus a progress log that makes them resumable.

    Example:
        >>> import tempfile, pathlib
        >>> meta = pathlib.Path(tempfile.mkdtemp())
        >>> journal = Journal(meta)
        >>> journal.write([ItemResult(0, "a.png", [b'{"index":0}\\n'], None, 1)])
        >>> journal.close()
        >>> (meta / "progress.log").read_text()
        '0\\ta.png\\t12\\t0\\n'
        >>> again = Journal(meta)
        >>> again.resumed, again.last_index
        (True, 0)
        >>> again.close()
    """

    def __init__(self, meta: Path, suffix: str = "") -> None:
        meta.mkdir(parents=True, exist_ok=True)
        self.manifest_path = meta / f"manifest{suffix}.jsonl"
        self.failures_path = meta / f"failures{suffix}.jsonl"
        self.progress_path = meta / f"progress{suffix}.log"
        self.resumed = self.progress_path.exists()
        self.last_index, sizes = self._recover()
        self._manifest = self._open(self.manifest_path, sizes[0])
        self._failures = self._open(self.failures_path, sizes[1])
        self._sizes = sizes  # both files are cut to these sizes: track them from here
        self._progress = self._open(self.progress_path, None)

    def _recover(self) -> tuple[int, tuple[int, int]]:
        """Last finished index and the file sizes it recorded (-1, (0, 0) if none)."""
        if not self.progress_path.exists():
            return -1, (0, 0)
        last_good, good_end = None, 0
        with self.progress_path.open("rb") as fh:
            pos = 0
            for line in fh:
                pos += len(line)
                if line.endswith(b"\n"):
                    last_good, good_end = line, pos
        with self.progress_path.open("r+b") as fh:  # drop a half-written last line
            fh.truncate(good_end)
        if last_good is None:
            return -1, (0, 0)
        index, _key, m, f = last_good.decode().rstrip("\n").split("\t")
        return int(index), (int(m), int(f))

    @staticmethod
    def _open(path: Path, size: int | None) -> BinaryIO:
        fh = path.open("ab")
        if size is not None:
            fh.truncate(size)
        return fh

    def write(self, results: list[ItemResult]) -> None:
        """Append the lines of a batch of items (manifest and failures flushed), then their
        progress lines: a progress line is only ever on disk after everything it covers."""
        manifest, failures, progress = [], [], []
        m_pos, f_pos = self._sizes
        for result in results:
            for line in result.lines:
                manifest.append(line)
                m_pos += len(line)
            if result.failure is not None:
                data = (json.dumps(result.failure) + "\n").encode()
                failures.append(data)
                f_pos += len(data)
            progress.append(f"{result.index}\t{result.key}\t{m_pos}\t{f_pos}\n")
        if manifest:
            self._manifest.write(b"".join(manifest))
            self._manifest.flush()
        if failures:
            self._failures.write(b"".join(failures))
            self._failures.flush()
        self._sizes = m_pos, f_pos
        self._progress.write("".join(progress).encode())
        self._progress.flush()

    def close(self) -> None:
        """Close the three files."""
        for fh in (self._manifest, self._failures, self._progress):
            fh.close()


def check_run_file(meta: Path, identity: dict[str, Any]) -> None:
    """Write ``run.json`` (``identity``: input, options, shards), or check that the one an
    earlier run wrote says the same; raises :class:`ValueError` naming what changed."""
    run_file = meta / "run.json"
    text = json.dumps(identity, indent=1, sort_keys=True) + "\n"
    if run_file.exists():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(
                f"{meta}: an earlier run with different settings ({', '.join(changed)}) wrote "
                "here; use the same options to resume, or choose a new output"
            )
        return
    atomic_write_text(run_file, text)
