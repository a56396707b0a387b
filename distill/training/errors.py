"""The errors a training run raises on purpose (besides config, data and checkpoint errors)."""

from __future__ import annotations

__all__ = ["OutputExistsError", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the last good checkpoint is kept."""


class OutputExistsError(FileExistsError):
    """The output directory already holds a run (and neither resume nor overwrite was asked)."""
