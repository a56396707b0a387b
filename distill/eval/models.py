"""Checkpoints: loading a distill checkpoint as the eval-mode backbone to score."""

from __future__ import annotations

import os

from torch import nn

from distill.checkpoint import CheckpointError, load_backbone

__all__ = ["CheckpointError", "load_model"]


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Load a distill checkpoint as an eval-mode backbone (via ``load_backbone``).

    Raises ``FileNotFoundError`` or :class:`CheckpointError` with the file and the problem.
    """
    return load_backbone(path)
