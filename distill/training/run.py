"""The entry points: :func:`prepare` (every check, nothing written) and :func:`train`
(teacher stage, then student stage)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distill.backbones import create_backbone
from distill.checkpoint import (
    CheckpointError,
    arch_of,
    check_arch,
    load_checkpoint,
    load_model_state,
)
from distill.config import Config, save_config
from distill.data import open_source
from distill.heads import create_head
from distill.training.distributed import DistContext, setup_distributed
from distill.training.errors import OutputExistsError
from distill.training.logs import log, setup_logging
from distill.training.masking import DeviceMasker, mask_spec
from distill.training.results import Plan, StageResult, TrainResult
from distill.training.stage import run_stage

__all__ = ["prepare", "train"]


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a directory")
    markers = [out / "config.yaml", out / "teacher", out / "student"]
    if any(m.exists() for m in markers) and not (resume or overwrite):
        raise OutputExistsError(
            f"output directory {out} already holds a run; use train.resume=true (--resume) "
            "to continue it, --overwrite to train into it anyway, or another output directory"
        )


def _validate_teacher(cfg: Config) -> tuple[dict[str, Any] | None, Path | None]:
    if not cfg.teacher.checkpoint:
        return None, None
    path = Path(cfg.teacher.checkpoint)
    ckpt = load_checkpoint(path)
    arch = ckpt["arch"]
    want = cfg.model.embedding_size
    if int(arch["embedding_size"]) != want:
        raise CheckpointError(
            f"embedding-size mismatch: teacher checkpoint {path} has "
            f"{arch['embedding_size']}-d embeddings but the student is configured with "
            f"{want}-d (model.embedding_size); the distillation loss compares the two"
        )
    if cfg.student.init == "teacher":
        check_arch(
            arch, arch_of(cfg.model.backbone, want, cfg.model.kwargs), f"teacher checkpoint {path}"
        )
    # the weights must fit the architecture the checkpoint claims
    from distill.checkpoint import load_backbone

    load_backbone(path)
    return ckpt, path


def prepare(cfg: Config, *, overwrite: bool = False) -> tuple[Plan, Path]:
    """Validate the config, the dataset and any teacher checkpoint; nothing is written.

    Raises:
        OutputExistsError, DatasetError, CheckpointError, ConfigError, FileNotFoundError.
    """
    cfg.validate()
    out = Path(cfg.train.output)
    _check_output(out, cfg.train.resume, overwrite)
    from distill.backbones import list_backbones

    if cfg.model.backbone.lower() not in list_backbones():
        raise ValueError(
            f"unknown model.backbone {cfg.model.backbone!r}; valid: {', '.join(list_backbones())}"
        )
    create_head(cfg.model.head, 8, 2, **cfg.model.head_kwargs)  # unknown name / kwargs
    teacher_ckpt, teacher_path = _validate_teacher(cfg)
    source = open_source(cfg.data, out / "cache")  # a disk cache is the only thing written
    num_classes = int(source.num_classes)
    if num_classes < 2:
        raise ValueError(f"the dataset has {num_classes} identity; need at least 2")
    if len(source) < cfg.train.batch_size:
        raise ValueError(
            f"the dataset has {len(source)} images, fewer than train.batch_size = "
            f"{cfg.train.batch_size}"
        )
    if cfg.masking.mode == "device" and cfg.student.epochs > 0 and cfg.masking.p > 0:
        DeviceMasker(mask_spec(cfg.masking), cfg.masking.p, cfg.masking.seed)
    return Plan(source, num_classes, teacher_ckpt, teacher_path), out


def train(
    cfg: Config,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    plan: tuple[Plan, Path] | None = None,
) -> TrainResult:
    """Run the teacher and student stages described by ``cfg`` (see :mod:`distill.training`).

    Args:
        cfg: the resolved configuration.
        overwrite: train into an output directory that already holds a run.
        progress: show a tqdm progress bar (default: when stderr is a terminal).
        plan: the result of :func:`prepare` when the caller validated already.

    Returns:
        Paths of the final checkpoints and per-stage statistics.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    ctx = setup_distributed(cfg.train.distributed, cfg.train.device)
    try:
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        the_plan, out = plan if plan is not None else prepare(cfg, overwrite=overwrite)
        ctx.barrier()
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        setup_logging(out, ctx.is_main)
        ctx.barrier()
        result = TrainResult(out, Path(), None, num_classes=the_plan.num_classes, rank=ctx.rank)
        stage = _teacher_stage(cfg, ctx, the_plan, out, progress)
        result.stages.append(stage)
        result.teacher_checkpoint = stage.checkpoint
        if cfg.student.epochs > 0:
            ctx.barrier()
            teacher, teacher_ckpt = _load_teacher(result.teacher_checkpoint, ctx.device)
            init = teacher_ckpt if cfg.student.init == "teacher" else None
            stage = run_stage("student", cfg, ctx, the_plan, out, teacher, init, progress)
            result.stages.append(stage)
            result.student_checkpoint = stage.checkpoint
        ctx.barrier()
        return result
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _teacher_stage(
    cfg: Config, ctx: DistContext, plan: Plan, out: Path, progress: bool
) -> StageResult:
    """Train the teacher, or take the given ``teacher.checkpoint`` (a skipped stage)."""
    if plan.teacher_path is not None:
        if ctx.is_main:
            log.info("teacher: using %s", plan.teacher_path)
        return StageResult("teacher", plan.teacher_path, 0, 0, 0, 0, 0, True)
    return run_stage("teacher", cfg, ctx, plan, out, None, None, progress)


def _load_teacher(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher backbone (on ``device``, eval mode) and its checkpoint."""
    teacher_ckpt = load_checkpoint(path)
    teacher = create_backbone(
        teacher_ckpt["arch"]["backbone"],
        teacher_ckpt["arch"]["embedding_size"],
        **teacher_ckpt["arch"].get("kwargs", {}),
    )
    load_model_state(teacher, teacher_ckpt["model"], str(path))
    return teacher.to(device).eval(), teacher_ckpt
