"""What ``train.resume`` checks before anything runs: the config against the run's
``config.yaml`` (:func:`resume_config_changes`), and each stage's ``last.pt``
(:func:`resume_state`); and how an allowed change is recorded (:func:`record_config_changes`).

A resumed run goes on with the schedule it started with, so a changed key that matters
(``teacher.lr``, ``masking.p``, ``student.distill_weight``, ...) is refused unless
``train.allow_changes`` (``--allow-changes``) is given; the keys of
:data:`distill.config.RESUME_SAFE_KEYS` may change freely. Every change is logged as
``key: old → new``, and an allowed one keeps the previous ``config.yaml`` as
``config.yaml.<n>.bak``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.checkpoint import (
    CheckpointError,
    arch_of,
    check_arch,
    check_finite_weights,
    load_checkpoint,
)
from distill.config import (
    RESUME_SAFE_KEYS,
    Config,
    ConfigError,
    config_changes,
    describe_change,
    read_config,
)
from distill.training.logs import log
from maskgen.io import atomic_write_bytes

__all__ = [
    "TRAINING_STATE",
    "log_config_changes",
    "record_config_changes",
    "resume_config_changes",
    "resume_state",
]

#: what a checkpoint needs to be resumed (besides its weights): a weights-only file has none.
TRAINING_STATE = ("head", "optimizer", "scheduler", "epoch", "step")

Change = tuple[str, Any, Any]


def resume_config_changes(cfg: Config, out: Path) -> list[Change]:
    """The keys of ``cfg`` that differ from ``<out>/config.yaml`` (none without that file).

    Raises:
        ConfigError: a change outside :data:`~distill.config.RESUME_SAFE_KEYS` without
            ``train.allow_changes`` (the message lists them, ``key: old → new``).
    """
    path = out / "config.yaml"
    if not path.is_file():
        return []
    changes = config_changes(read_config(path), cfg)
    refused = [c for c in changes if c[0] not in RESUME_SAFE_KEYS]
    if refused and not cfg.train.allow_changes:
        raise ConfigError(
            f"{path}: the run to resume was started with another config "
            f"({'; '.join(map(describe_change, refused))}); resume it with the same settings, "
            "or add --allow-changes (train.allow_changes=true) to go on with the new ones"
        )
    return changes


def _backup_path(config: Path) -> Path:
    n = 1
    while config.with_name(f"{config.name}.{n}.bak").exists():
        n += 1
    return config.with_name(f"{config.name}.{n}.bak")


def record_config_changes(out: Path, changes: list[Change]) -> Path | None:
    """Keep ``<out>/config.yaml`` as ``config.yaml.<n>.bak`` (first free ``n``) when
    ``changes`` hold a change outside the safe keys; returns the copy, else None. Rank 0,
    before the new ``config.yaml`` is written."""
    config = out / "config.yaml"
    if not config.is_file() or all(key in RESUME_SAFE_KEYS for key, _, _ in changes):
        return None
    return atomic_write_bytes(_backup_path(config), config.read_bytes())


def log_config_changes(changes: list[Change], backup: Path | None) -> None:
    """One log line per change (``resume: key: old → new``), then where the old config is."""
    for change in changes:
        why = "safe" if change[0] in RESUME_SAFE_KEYS else "allowed by train.allow_changes"
        log.info("resume: %s (%s)", describe_change(change), why)
    if backup is not None:
        log.info("resume: the previous config is kept as %s", backup)


def resume_state(role: str, cfg: Config, ckpt_path: Path) -> dict[str, Any] | None:
    """The stage's ``last.pt`` when resuming, checked: this stage's, the configured
    architecture, finite weights and a training state to go on from; None without one.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    if not (cfg.train.resume and ckpt_path.is_file()):
        return None
    state = load_checkpoint(ckpt_path)
    if state.get("role") != role:
        raise CheckpointError(f"{ckpt_path}: holds a {state.get('role')} checkpoint")
    check_arch(
        state["arch"],
        arch_of(cfg.model.backbone, cfg.model.embedding_size, cfg.model.kwargs),
        str(ckpt_path),
    )
    missing = [key for key in TRAINING_STATE if key not in state]
    if missing:
        raise CheckpointError(
            f"{ckpt_path}: holds no training state to resume from (no {', '.join(missing)}): "
            "weights only; use it as teacher.checkpoint or student.init, or train without "
            "--resume"
        )
    for key in ("epoch", "step"):
        value = state[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{ckpt_path}: {key} {value!r} is not a count of {key}s")
    check_finite_weights(state, str(ckpt_path))
    return state
