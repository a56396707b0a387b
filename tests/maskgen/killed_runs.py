"""Helpers of the tests that kill ``maskgen render`` mid-run and resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def render_cli(*args: str) -> list[str]:
    """The command line of ``maskgen render ARGS`` in a fresh interpreter, without progress."""
    return [sys.executable, "-m", "maskgen.cli", "render", *args, "--no-progress"]


def kill_when(proc: subprocess.Popen, progress: Path, lines: int, timeout: float = 60) -> None:
    """SIGKILL ``proc`` once its progress log holds ``lines`` lines (it must still run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
