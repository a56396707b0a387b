"""Random-number state: seeding a stage and the RNG snapshot kept in checkpoints.

Example:
    >>> snapshot = rng_state()
    >>> a = torch.rand(2)
    >>> set_rng_state(snapshot)
    >>> torch.equal(a, torch.rand(2))
    True
    >>> set_rng_state(snapshot)  # leave the RNGs as they were
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

__all__ = ["rng_state", "seed_everything", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) RNG states, as checkpoint-friendly values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (parts that are missing or unreadable are skipped)."""
    with contextlib.suppress(KeyError, TypeError, ValueError, RuntimeError):
        torch.set_rng_state(state["torch"].cpu())
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int, rank: int) -> None:
    """Seed Python, NumPy and torch with ``seed + rank``."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)
