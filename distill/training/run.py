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
    FORMAT,
    CheckpointError,
    arch_of,
    build_backbone,
    check_arch,
    check_finite_weights,
    load_checkpoint,
    load_model_state,
    load_weights,
)
from distill.config import Config, ConfigError, save_config
from distill.data import open_source
from distill.heads import create_head
from distill.training.distributed import DistContext, setup_distributed
from distill.training.errors import OutputExistsError
from distill.training.logs import log, setup_logging
from distill.training.masking import DeviceMasker, mask_spec
from distill.training.results import Plan, StageResult, TrainResult
from distill.training.resume import (
    log_config_changes,
    record_config_changes,
    resume_config_changes,
    resume_state,
)
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


def _configured_arch(cfg: Config) -> dict[str, Any]:
    return arch_of(cfg.model.backbone, cfg.model.embedding_size, cfg.model.kwargs)


def _check_fits_student(cfg: Config, ckpt: dict[str, Any], source: str) -> None:
    """The weights must initialise the configured student backbone.

    A distill checkpoint records its architecture, which must equal ``model``; a plain state
    dict records none, so its weights must load strictly into ``model`` as configured.
    """
    if ckpt.get("format") == FORMAT:
        check_arch(ckpt["arch"], _configured_arch(cfg), source)
    else:
        load_model_state(_build_backbone(cfg), ckpt["model"], source)


def _build_backbone(cfg: Config) -> nn.Module:
    return create_backbone(cfg.model.backbone, cfg.model.embedding_size, **cfg.model.kwargs)


def _check_model_options(cfg: Config) -> None:
    """Unknown or bad ``model.kwargs`` / ``model.head_kwargs`` are config errors."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            _build_backbone(cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.kwargs: {exc}") from exc
    try:
        create_head(cfg.model.head, 8, 2)
    except ValueError as exc:  # an unknown name
        raise ConfigError(f"model.head: {exc}") from exc
    try:
        create_head(cfg.model.head, 8, 2, **cfg.model.head_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.head_kwargs: {exc}") from exc


def _validate_teacher(cfg: Config) -> tuple[dict[str, Any] | None, Path | None]:
    """``teacher.checkpoint``: a distill checkpoint or a plain backbone state dict."""
    if not cfg.teacher.checkpoint:
        return None, None
    path = Path(cfg.teacher.checkpoint)
    fallback = _configured_arch(cfg) if cfg.student.init == "teacher" else None
    ckpt = load_weights(path, fallback_arch=fallback)
    check_finite_weights(ckpt, str(path))
    arch = ckpt["arch"]
    want = cfg.model.embedding_size
    if int(arch["embedding_size"]) != want:
        raise CheckpointError(
            f"embedding-size mismatch: teacher checkpoint {path} has "
            f"{arch['embedding_size']}-d embeddings but the student is configured with "
            f"{want}-d (model.embedding_size); the distillation loss compares the two"
        )
    if cfg.student.init == "teacher":
        _check_fits_student(cfg, ckpt, f"teacher checkpoint {path}")
    build_backbone(ckpt, str(path))  # the weights must fit the architecture they claim
    return ckpt, path


def _validate_student_init(cfg: Config) -> dict[str, Any] | None:
    """``student.init = PATH``: weights (checkpoint or state dict) that fit ``model``."""
    if cfg.student.init in ("teacher", "scratch") or cfg.student.epochs == 0:
        return None
    path = Path(cfg.student.init)
    ckpt = load_weights(path, fallback_arch=_configured_arch(cfg))
    check_finite_weights(ckpt, f"student.init {path}")
    _check_fits_student(cfg, ckpt, f"student.init {path}")
    return ckpt


def _resume_states(cfg: Config, out: Path) -> dict[str, dict[str, Any]]:
    """The checked ``last.pt`` of each stage this run trains, when resuming."""
    roles = [] if cfg.teacher.checkpoint else ["teacher"]
    roles += ["student"] if cfg.student.epochs > 0 else []
    states = {role: resume_state(role, cfg, out / role / "last.pt") for role in roles}
    return {role: state for role, state in states.items() if state is not None}


def prepare(cfg: Config, *, overwrite: bool = False) -> tuple[Plan, Path]:
    """Validate the config, the dataset and any teacher checkpoint; nothing is written.

    Raises:
        OutputExistsError, DatasetError, CheckpointError, ConfigError, FileNotFoundError.
    """
    cfg.validate()
    out = Path(cfg.train.output)
    _check_output(out, cfg.train.resume, overwrite)
    changes = resume_config_changes(cfg, out) if cfg.train.resume else []
    from distill.backbones import list_backbones

    if cfg.model.backbone.lower() not in list_backbones():
        raise ValueError(
            f"unknown model.backbone {cfg.model.backbone!r}; valid: {', '.join(list_backbones())}"
        )
    _check_model_options(cfg)
    teacher_ckpt, teacher_path = _validate_teacher(cfg)
    student_init = _validate_student_init(cfg)
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
    resume_states = _resume_states(cfg, out) if cfg.train.resume else {}
    plan = Plan(source, num_classes, teacher_ckpt, teacher_path, student_init)
    plan.resume_states, plan.config_changes = resume_states, changes
    return plan, out


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
        backup = None
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            backup = record_config_changes(out, the_plan.config_changes)
            save_config(cfg, out / "config.yaml")
        setup_logging(out, ctx.is_main)
        if ctx.is_main:
            log_config_changes(the_plan.config_changes, backup)
        ctx.barrier()
        result = TrainResult(out, Path(), None, num_classes=the_plan.num_classes, rank=ctx.rank)
        stage = _teacher_stage(cfg, ctx, the_plan, out, progress)
        result.stages.append(stage)
        result.teacher_checkpoint = stage.checkpoint
        if cfg.student.epochs > 0:
            ctx.barrier()
            teacher, teacher_ckpt = _load_teacher(result.teacher_checkpoint, ctx.device, the_plan)
            init = teacher_ckpt if cfg.student.init == "teacher" else the_plan.student_init
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


def _load_teacher(path: Path, device: torch.device, plan: Plan) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher backbone (on ``device``, eval mode) and its checkpoint (or state dict)."""
    if plan.teacher_ckpt is not None and path == plan.teacher_path:
        teacher_ckpt = plan.teacher_ckpt  # read and checked by prepare()
    else:
        teacher_ckpt = load_checkpoint(path)  # trained by this run
    teacher = build_backbone(teacher_ckpt, str(path))
    return teacher.to(device).eval(), teacher_ckpt
