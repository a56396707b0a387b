"""Checkpoints: loading the eval-mode backbone to score, from a distill checkpoint or a plain
backbone state dict (insightface / ElasticFace ``backbone.pth``)."""

from __future__ import annotations

import os

from torch import nn

from distill.checkpoint import CheckpointError, load_backbone, non_finite_tensor

__all__ = ["CheckpointError", "load_model"]


def load_model(path: str | os.PathLike[str], arch: str | None = None) -> nn.Module:
    """Load a distill checkpoint or a backbone state dict as an eval-mode backbone.

    Args:
        path: the weights.
        arch: the backbone name of a state dict whose architecture the keys do not tell
            (the embedding size is read from the weights); ``None`` infers it.

    Raises ``FileNotFoundError`` or :class:`CheckpointError` with the file and the problem
    (weights that hold NaN or inf included: they would score every pair alike).
    """
    model = load_backbone(path, arch=arch)
    name = non_finite_tensor(model.state_dict())
    if name is not None:
        raise CheckpointError(
            f"{path}: tensor {name} is not finite (it holds NaN or inf): the weights are "
            "unusable, e.g. saved by a training that diverged"
        )
    return model
