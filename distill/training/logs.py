"""What a run reports: the ``distill`` logger (``train.log``), the per-stage metrics
(``metrics.csv`` and TensorBoard) and the progress bar.

Example:
    >>> Metrics.COLUMNS[:3]
    ('step', 'epoch', 'loss')
    >>> m = Metrics(None)  # not rank 0: writes nothing
    >>> m.write({"step": 1}); m.close()
    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> m = Metrics(d)
    >>> for step in (1, 2, 3): m.write({"step": step})
    >>> m.close(); m = Metrics(d, start_step=2)  # resumed at step 2: row 3 goes
    >>> m.close(); [ln.split(",")[0] for ln in (d / "metrics.csv").read_text().splitlines()]
    ['step', '1', '2']
    >>> import shutil; shutil.rmtree(d)
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

from maskgen.io import atomic_write_text

__all__ = ["Metrics", "log", "progress_bar", "setup_logging"]

log = logging.getLogger("distill")


def setup_logging(out: Path | None, is_main: bool) -> None:
    """Log INFO to stderr and ``<out>/train.log`` on rank 0 (replacing earlier handlers)."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        if getattr(h, "_distill", False):
            log.removeHandler(h)
            h.close()
    if not is_main:
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out is not None:
        handlers.append(logging.FileHandler(out / "train.log", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        h._distill = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.propagate = False


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The rows of ``path`` (a metrics CSV) for steps ``<= step``; rows of later steps (those
    of an epoch that was killed before its checkpoint) and unreadable rows are dropped."""
    if step <= 0 or not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))[1:]
    kept = []
    for row in rows:
        try:
            if len(row) == len(Metrics.COLUMNS) and int(row[0]) <= step:
                kept.append(row)
        except ValueError:
            continue
    return kept


class Metrics:
    """CSV rows (always) and TensorBoard scalars (when importable), rank 0 only.

    A stage that starts at ``start_step`` (0, or the step it resumes at) keeps the rows of
    the steps up to it and drops the later ones, so no step appears twice; TensorBoard
    purges its later events the same way.
    """

    COLUMNS = ("step", "epoch", "loss", "ce", "mse", "lr", "images_per_s", "masked", "time_s")

    def __init__(self, directory: Path | None, start_step: int = 0) -> None:
        self.file = None
        self.tb = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "metrics.csv"
        buffer = io.StringIO()
        csv.writer(buffer).writerows([self.COLUMNS, *_rows_up_to(path, start_step)])
        atomic_write_text(path, buffer.getvalue(), newline="")
        self.file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb_dir = directory / "tb"
            purge = start_step + 1 if tb_dir.is_dir() else None  # events of later steps go
            self.tb = SummaryWriter(str(tb_dir), purge_step=purge)
        except ImportError:
            log.info("TensorBoard is not installed: metrics go to %s only", path)

    def write(self, row: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.writer.writerow([row.get(c, "") for c in self.COLUMNS])
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "ce", "mse", "lr", "images_per_s", "masked"):
                if key in row and row[key] != "":
                    self.tb.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over optimiser steps, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
