"""Learning rate: the per-step multiplier :func:`lr_factor`, the SGD optimiser and its scheduler.

Example:
    >>> lr_factor(0, total=10, warmup=2, schedule="cosine")
    0.5
    >>> round(lr_factor(6, total=10, warmup=2, schedule="cosine"), 3)
    0.5
    >>> lr_factor(5, total=10, warmup=0, schedule="step", milestones=(4,), gamma=0.1)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from distill.config import OptimConfig
from distill.training.loss import Net

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def lr_factor(
    step: int,
    total: int,
    warmup: int = 0,
    schedule: str = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_ratio: float = 0.0,
) -> float:
    """Learning-rate multiplier for (0-based) optimizer step ``step`` of ``total``.

    Linear warm-up over ``warmup`` steps (``(step + 1) / warmup``), then cosine decay to
    ``min_ratio`` or step decay by ``gamma`` at each step in ``milestones``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        return float(gamma ** sum(step >= m for m in milestones))
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return float(min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_optimizer(net: Net, lr: float, optim: OptimConfig) -> torch.optim.SGD:
    """SGD (momentum, weight decay) with one parameter group each for backbone and head."""
    return torch.optim.SGD(
        [
            {"params": net.backbone.parameters(), "name": "backbone"},
            {"params": net.head.parameters(), "name": "head"},
        ],
        lr=lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :func:`lr_factor` schedule; warm-up and milestones are given in epochs."""
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    milestones = [round(m * steps_per_epoch) for m in optim.milestones]
    o = optim

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup, o.schedule, milestones, o.gamma, o.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
