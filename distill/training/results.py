"""The records passed between :func:`~distill.training.prepare`, the stages and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.data import FaceSource

__all__ = ["Plan", "StageResult", "TrainResult"]


@dataclass
class StageResult:
    """What one stage produced."""

    role: str
    checkpoint: Path
    epochs: int
    steps: int
    seconds: float
    images_per_second: float
    final_loss: float
    skipped: bool = False


@dataclass
class TrainResult:
    """What :func:`~distill.training.train` produced (only complete on rank 0)."""

    output: Path
    teacher_checkpoint: Path
    student_checkpoint: Path | None
    stages: list[StageResult] = field(default_factory=list)
    num_classes: int = 0
    rank: int = 0


@dataclass
class Plan:
    """Everything validated before the first byte is written."""

    source: FaceSource
    num_classes: int
    teacher_ckpt: dict[str, Any] | None
    teacher_path: Path | None
    #: weights of ``student.init = PATH`` (a checkpoint or a plain state dict), else None.
    student_init: dict[str, Any] | None = None
    #: on resume, the checked ``<out>/<role>/last.pt`` of each stage that has one (a stage
    #: takes its own out when it starts).
    resume_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: on resume, ``(key, old, new)`` of every key that differs from ``<out>/config.yaml``.
    config_changes: list[tuple[str, Any, Any]] = field(default_factory=list)
