"""ElasticFace teacher-student training (MaskInv recipe): ``distill train``.

Two stages, each a plain supervised loop over the configured face source:

* **teacher**: backbone + ElasticFace head on *clean* faces (skipped when
  ``teacher.checkpoint`` is given).
* **student**: initialised from the teacher (backbone and head) or from scratch; every sample
  is masked with probability ``masking.p``; the loss is ::

      CE(head(student(masked)), label) + w · MSE(normalise(student(masked)),
                                                normalise(teacher(clean)))

  The teacher is frozen (no gradients), in eval mode (BatchNorm statistics fixed), and always
  sees the *clean* image of the same sample (never the masked one: the masked view is a new
  tensor, see :class:`maskgen.augment.MaskedPairs`).

Optimisation: SGD (momentum, weight decay), learning rate ``stage.lr · global_batch /
optim.base_batch_size`` with cosine or step decay and optional linear warm-up (per step),
gradient-norm clipping of the backbone, AMP on CUDA (bf16, or fp16 with a gradient scaler).

Distributed: under ``torchrun`` (or ``train.distributed=on``) the run uses DDP with NCCL on
CUDA and gloo on CPU. ``train.batch_size`` is the *global* batch, split over the processes,
so the step count, the learning rate and the sample order do not depend on the number of
processes, and a run can resume on another number of processes.

Checkpoints: ``<output>/<role>/last.pt`` is rewritten atomically after every epoch with the
model, head, optimizer, scheduler, scaler, RNG states, epoch and step
(:mod:`distill.checkpoint`). ``train.resume=true`` continues each stage from it, at the same
step and learning rate. A NaN/inf loss (or gradient norm) stops the run with
:class:`TrainingDivergedError`; the last good checkpoint is left untouched.

Outputs: ``config.yaml`` (resolved), ``train.log``, ``<role>/metrics.csv``, TensorBoard
events under ``<role>/tb`` when ``torch.utils.tensorboard`` is importable (otherwise only the
CSV; the log says so).

Example:
    >>> lr_factor(0, total=10, warmup=2, schedule="cosine")
    0.5
    >>> round(lr_factor(6, total=10, warmup=2, schedule="cosine"), 3)
    0.5
    >>> lr_factor(5, total=10, warmup=0, schedule="step", milestones=(4,), gamma=0.1)
    0.1
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.backbones import create_backbone
from distill.checkpoint import (
    CheckpointError,
    arch_of,
    check_arch,
    load_checkpoint,
    load_model_state,
    make_checkpoint,
    save_checkpoint,
)
from distill.config import Config, config_to_dict, save_config
from distill.data import (
    FaceSource,
    GlobalBatchSampler,
    TrainDataset,
    normalize,
    open_source,
)
from distill.heads import MarginHead, create_head
from maskgen.augment import MaskedPairs
from maskgen.render import MaskSpec

__all__ = [
    "DistContext",
    "OutputExistsError",
    "StageResult",
    "TrainResult",
    "TrainingDivergedError",
    "compute_loss",
    "lr_factor",
    "setup_distributed",
    "train",
]

log = logging.getLogger("distill")


class TrainingDivergedError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the last good checkpoint is kept."""


class OutputExistsError(FileExistsError):
    """The output directory already holds a run (and neither resume nor overwrite was asked)."""


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
    """What :func:`train` produced (only complete on rank 0)."""

    output: Path
    teacher_checkpoint: Path
    student_checkpoint: Path | None
    stages: list[StageResult] = field(default_factory=list)
    num_classes: int = 0
    rank: int = 0


# ----------------------------------------------------------------------------------------------
# Distributed setup
# ----------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """Process-group facts of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup_distributed(mode: str = "auto", device: str = "auto") -> DistContext:
    """Join (or create) the process group and pick the device.

    ``mode="auto"`` uses DDP when launched by ``torchrun`` (``WORLD_SIZE > 1``); ``"on"``
    always does (a single process without ``torchrun`` becomes a group of one, on a free
    local port); ``"off"`` never does. Backend: NCCL on CUDA, gloo on CPU.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but CUDA is not available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    use_dist = mode == "on" or (mode == "auto" and env_world > 1)
    ctx = DistContext()
    if use_dist:
        rank = int(os.environ.get("RANK", "0"))
        ctx.local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        if dist.is_initialized():
            ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
        else:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", rank=rank, world_size=env_world
            )
            ctx.owns_group = True
            ctx.rank, ctx.world_size = rank, env_world
        ctx.distributed = True
    ctx.device = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    return ctx


# ----------------------------------------------------------------------------------------------
# Schedule, AMP, loss
# ----------------------------------------------------------------------------------------------


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


def _amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a gradient scaler)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ValueError("train.amp = 'fp16' needs CUDA (use 'bf16' or 'off' on CPU)")
    return torch.float16, True


class _Net(nn.Module):
    """Backbone + margin head, so that DDP synchronises both."""

    def __init__(self, backbone: nn.Module, head: MarginHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        emb = self.backbone(x)
        return emb, self.head(emb, labels, generator=generator)


def compute_loss(
    net: nn.Module,
    teacher: nn.Module | None,
    student_input: Tensor,
    teacher_input: Tensor,
    labels: Tensor,
    distill_weight: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage loss: ``CE`` (teacher stage) or ``CE + w · MSE`` of normalised templates.

    ``net`` maps ``(x, labels, generator)`` to ``(embeddings, logits)``; ``teacher`` (frozen,
    eval mode) embeds ``teacher_input``, the clean images of the same samples.
    """
    emb, logits = net(student_input, labels, generator)
    ce = F.cross_entropy(logits.float(), labels)
    if teacher is None:
        return ce, {"ce": ce.detach()}
    with torch.no_grad():
        target = teacher(teacher_input)
    mse = F.mse_loss(F.normalize(emb.float(), dim=1), F.normalize(target.float(), dim=1))
    loss = ce + distill_weight * mse
    return loss, {"ce": ce.detach(), "mse": mse.detach()}


# ----------------------------------------------------------------------------------------------
# Device masking (maskgen.augment.RandomFaceMask)
# ----------------------------------------------------------------------------------------------


class _DeviceMasker:
    """Adapter around ``maskgen.augment.RandomFaceMask`` (masks a batch on its device)."""

    def __init__(self, spec: MaskSpec, p: float, seed: int) -> None:
        try:
            from maskgen.augment import RandomFaceMask  # type: ignore[attr-defined]
        except ImportError as exc:
            raise RuntimeError(
                "masking.mode = 'device' needs maskgen.augment.RandomFaceMask, which is not "
                f"available ({exc}); use masking.mode=workers"
            ) from exc
        try:
            self.aug = RandomFaceMask(spec, p=p)
        except TypeError:
            self.aug = RandomFaceMask(spec)
        self.seed = seed

    def __call__(self, images01: Tensor, landmarks: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Masked copy of ``images01`` (B×3×H×W in [0, 1]) and the per-sample masked flags.

        The draws use the global torch RNG (kornia), reseeded per step inside
        :func:`torch.random.fork_rng` so they are reproducible and leave the training RNG alone.
        """
        devices = [images01.device] if images01.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + step)
            out = self.aug(images01, landmarks=landmarks, return_alpha=True)
        masked, alpha = out if isinstance(out, tuple) else (out, None)
        if alpha is not None:
            was = (alpha.flatten(1) > 0).any(dim=1)
        else:
            was = (masked != images01).flatten(1).any(dim=1)
        return masked, was


# ----------------------------------------------------------------------------------------------
# Logging and metrics
# ----------------------------------------------------------------------------------------------


def _setup_logging(out: Path | None, is_main: bool) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        if getattr(h, "_distill", False):
            log.removeHandler(h)
            h.close()
    if not is_main:
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out is not None:
        handlers.append(logging.FileHandler(out / "train.log", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        h._distill = True  # type: ignore[attr-defined]
        log.addHandler(h)
    log.propagate = False


class _Metrics:
    """CSV rows (always) and TensorBoard scalars (when importable), rank 0 only."""

    COLUMNS = ("step", "epoch", "loss", "ce", "mse", "lr", "images_per_s", "masked", "time_s")

    def __init__(self, directory: Path | None) -> None:
        self.file = None
        self.tb = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "metrics.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(self.COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(directory / "tb"))
        except ImportError:
            log.info("TensorBoard is not installed: metrics go to %s only", path)

    def write(self, row: dict[str, float]) -> None:
        if self.file is None:
            return
        self.writer.writerow([row.get(c, "") for c in self.COLUMNS])
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "ce", "mse", "lr", "images_per_s", "masked"):
                if key in row and row[key] != "":
                    self.tb.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
    with contextlib.suppress(KeyError, TypeError, ValueError, RuntimeError):
        torch.set_rng_state(state["torch"].cpu())
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


# ----------------------------------------------------------------------------------------------
# Output directory and input validation
# ----------------------------------------------------------------------------------------------


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a directory")
    markers = [out / "config.yaml", out / "teacher", out / "student"]
    if any(m.exists() for m in markers) and not (resume or overwrite):
        raise OutputExistsError(
            f"output directory {out} already holds a run; use train.resume=true (--resume) "
            "to continue it, --overwrite to train into it anyway, or another output directory"
        )


@dataclass
class _Plan:
    """Everything validated before the first byte is written."""

    source: FaceSource
    num_classes: int
    teacher_ckpt: dict[str, Any] | None
    teacher_path: Path | None


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


# ----------------------------------------------------------------------------------------------
# One stage
# ----------------------------------------------------------------------------------------------


def _build_head(cfg: Config, num_classes: int) -> MarginHead:
    return create_head(
        cfg.model.head, cfg.model.embedding_size, num_classes, **cfg.model.head_kwargs
    )


def _build_backbone(cfg: Config) -> nn.Module:
    return create_backbone(cfg.model.backbone, cfg.model.embedding_size, **cfg.model.kwargs)


def _run_stage(
    role: str,
    cfg: Config,
    ctx: DistContext,
    plan: _Plan,
    out: Path,
    teacher: nn.Module | None,
    init: dict[str, Any] | None,
    progress: bool,
) -> StageResult:
    stage_cfg = cfg.teacher if role == "teacher" else cfg.student
    device = ctx.device
    stage_dir = out / role
    ckpt_path = stage_dir / "last.pt"
    epochs = stage_cfg.epochs

    # ---- resume? ----
    resume_state: dict[str, Any] | None = None
    if cfg.train.resume and ckpt_path.is_file():
        resume_state = load_checkpoint(ckpt_path)
        check_arch(
            resume_state["arch"],
            arch_of(cfg.model.backbone, cfg.model.embedding_size, cfg.model.kwargs),
            str(ckpt_path),
        )
        if resume_state.get("role") != role:
            raise CheckpointError(f"{ckpt_path}: holds a {resume_state.get('role')} checkpoint")
        if int(resume_state["epoch"]) >= epochs:
            if ctx.is_main:
                log.info("%s: already complete in %s, skipping", role, ckpt_path)
            return StageResult(role, ckpt_path, epochs, int(resume_state["step"]), 0, 0, 0, True)

    _seed_everything(cfg.train.seed + (0 if role == "teacher" else 1), ctx.rank)
    backbone = _build_backbone(cfg)
    head = _build_head(cfg, plan.num_classes)
    if init is not None and resume_state is None:
        load_model_state(backbone, init["model"], "teacher weights")
        if "head" in init and init["head"]["weight"].shape == head.weight.shape:
            head.load_state_dict(init["head"])
        elif ctx.is_main:
            log.info("student: the teacher's head does not fit these classes; new head")
    net: nn.Module = _Net(backbone, head).to(device)
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- data ----
    spec = MaskSpec.from_dict(cfg.masking.spec) if cfg.masking.spec else MaskSpec()
    masker: _DeviceMasker | None = None
    if role == "student" and cfg.masking.mode == "workers":
        base: Any = MaskedPairs(plan.source, spec, p=cfg.masking.p, seed=cfg.masking.seed)
    else:
        base = plan.source
        if role == "student" and cfg.masking.p > 0:
            masker = _DeviceMasker(spec, cfg.masking.p, cfg.masking.seed)
    dataset = TrainDataset(base, flip=cfg.data.flip, seed=cfg.train.seed)
    sampler = GlobalBatchSampler(
        len(dataset),
        cfg.train.batch_size,
        ctx.rank,
        ctx.world_size,
        seed=cfg.train.seed + (0 if role == "teacher" else 7919),
        max_steps=cfg.train.max_steps_per_epoch,
    )
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = steps_per_epoch * epochs

    # ---- optimisation ----
    lr = stage_cfg.lr * cfg.train.batch_size / cfg.optim.base_batch_size
    inner = net.module if ctx.distributed else net
    optimizer = torch.optim.SGD(
        [
            {"params": inner.backbone.parameters(), "name": "backbone"},
            {"params": inner.head.parameters(), "name": "head"},
        ],
        lr=lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    milestones = [round(m * steps_per_epoch) for m in cfg.optim.milestones]
    o = cfg.optim

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup, o.schedule, milestones, o.gamma, o.min_lr_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    amp_dtype, use_scaler = _amp_setup(cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    start_epoch, step = 0, 0
    if resume_state is not None:
        load_model_state(inner.backbone, resume_state["model"], str(ckpt_path))
        inner.head.load_state_dict(resume_state["head"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        _set_rng_state(resume_state.get("rng", {}))
        start_epoch, step = int(resume_state["epoch"]), int(resume_state["step"])
        if step != start_epoch * steps_per_epoch:
            raise CheckpointError(
                f"{ckpt_path}: step {step} after {start_epoch} epochs does not match "
                f"{steps_per_epoch} steps per epoch; train.batch_size or the dataset changed"
            )
        if ctx.is_main:
            log.info(
                "%s: resuming at epoch %d, step %d, lr %.6g (checkpoint written by %s "
                "process(es), now %d)",
                role, start_epoch, step, scheduler.get_last_lr()[0],
                resume_state.get("world_size", "?"), ctx.world_size,
            )  # fmt: skip

    loader_kwargs: dict[str, Any] = {
        "batch_sampler": sampler,
        "num_workers": cfg.data.num_workers,
        "pin_memory": device.type == "cuda",
    }
    if cfg.data.num_workers > 0:
        loader_kwargs["prefetch_factor"] = 4

    metrics = _Metrics(stage_dir if ctx.is_main else None)
    if ctx.is_main:
        log.info(
            "%s: %d images, %d classes, %d epochs × %d steps, global batch %d on %d process(es)"
            ", lr %.4g, device %s, amp %s, masking %s",
            role, len(dataset), plan.num_classes, epochs, steps_per_epoch, cfg.train.batch_size,
            ctx.world_size, lr, device, amp_dtype or "off",
            f"{cfg.masking.mode} p={cfg.masking.p}" if role == "student" else "none",
        )  # fmt: skip
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    bar = _progress(total_steps, step, role, progress and ctx.is_main)
    t_stage = time.perf_counter()
    seen = 0
    last_loss = float("nan")
    weight = cfg.student.distill_weight if role == "student" else 0.0
    try:
        for epoch in range(start_epoch, epochs):
            net.train()
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, **loader_kwargs)
            t_log, n_log, masked_log, loss_sum, parts_sum = time.perf_counter(), 0, 0.0, 0.0, {}
            for s_img, t_img, labels, was_masked, landmarks in loader:
                s_img = s_img.to(device, non_blocking=True)
                t_img = t_img.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                if masker is not None:
                    clean01 = t_img.float() / 255.0
                    s01, was_masked = masker(clean01, landmarks.to(device), step)
                    x_student = normalize(s01)
                else:
                    x_student = normalize(s_img if role == "student" else t_img)
                x_teacher = normalize(t_img)
                gen = torch.Generator(device=device)
                gen.manual_seed(cfg.train.seed * 1_000_003 + step * 131 + ctx.rank)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    loss, parts = compute_loss(
                        net,
                        teacher if role == "student" else None,
                        x_student,
                        x_teacher,
                        labels,
                        weight,
                        gen,
                    )
                _check_finite(loss, "loss", role, epoch, step, ckpt_path, ctx)
                norm = backward(
                    loss, optimizer, scaler, inner.backbone.parameters(), cfg.optim.clip_grad_norm
                )
                if norm is not None and scaler is None:
                    _check_finite(norm, "gradient norm", role, epoch, step, ckpt_path, ctx)
                step_lr = optimizer.param_groups[0]["lr"]
                apply_step(optimizer, scaler)
                scheduler.step()
                step += 1
                batch_n = labels.shape[0] * ctx.world_size
                seen += batch_n
                n_log += batch_n
                last_loss = float(loss.detach())
                loss_sum += last_loss
                masked_log += float(was_masked.float().sum()) * ctx.world_size
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
                if bar is not None:
                    rate = seen / max(time.perf_counter() - t_stage, 1e-9)
                    bar.set_postfix(loss=f"{last_loss:.3f}", img_s=f"{rate:.0f}", epoch=epoch + 1)
                    bar.update(1)
                if step % cfg.train.log_every == 0 or step % steps_per_epoch == 0:
                    n_steps = max(n_log // batch_n, 1)
                    dt = time.perf_counter() - t_log
                    row = {
                        "step": step,
                        "epoch": epoch + 1,
                        "loss": loss_sum / n_steps,
                        "ce": parts_sum.get("ce", 0.0) / n_steps,
                        "mse": parts_sum["mse"] / n_steps if "mse" in parts_sum else "",
                        "lr": step_lr,
                        "images_per_s": n_log / max(dt, 1e-9),
                        "masked": masked_log / max(n_log, 1),
                        "time_s": time.perf_counter() - t_stage,
                    }
                    metrics.write(row)
                    if ctx.is_main and bar is None:
                        log.info(
                            "%s epoch %d step %d/%d loss %.4f lr %.5f %.0f img/s",
                            role, epoch + 1, step, total_steps, row["loss"], row["lr"],
                            row["images_per_s"],
                        )  # fmt: skip
                    t_log, n_log, masked_log, loss_sum, parts_sum = (
                        time.perf_counter(), 0, 0.0, 0.0, {},
                    )  # fmt: skip
            if ctx.is_main:
                ckpt = make_checkpoint(
                    inner.backbone,
                    cfg.model.backbone,
                    cfg.model.embedding_size,
                    cfg.model.kwargs,
                    role=role,
                    head={k: v.detach().cpu() for k, v in inner.head.state_dict().items()},
                    head_arch={
                        "head": cfg.model.head,
                        "num_classes": plan.num_classes,
                        "kwargs": dict(cfg.model.head_kwargs),
                    },
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    rng=_rng_state(),
                    epoch=epoch + 1,
                    step=step,
                    world_size=ctx.world_size,
                    config=config_to_dict(cfg),
                )
                save_checkpoint(ckpt_path, ckpt)
                log.info(
                    "%s: epoch %d/%d done (step %d, loss %.4f), checkpoint %s",
                    role, epoch + 1, epochs, step, last_loss, ckpt_path,
                )  # fmt: skip
            ctx.barrier()
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
    seconds = time.perf_counter() - t_stage
    return StageResult(role, ckpt_path, epochs, step, seconds, seen / max(seconds, 1e-9), last_loss)


def backward(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip_params: Iterable[torch.nn.Parameter],
    clip_norm: float,
) -> torch.Tensor | None:
    """Gradients of ``loss`` (through ``scaler`` under float16 AMP, then unscaled), clipped
    to ``clip_norm`` over ``clip_params`` when it is positive; returns the norm before
    clipping (``None`` without clipping). Apply them with :func:`apply_step`."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if clip_norm > 0:
        return torch.nn.utils.clip_grad_norm_(clip_params, clip_norm)
    return None


def apply_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """The optimizer step for the gradients :func:`backward` left (skipped by the scaler
    when they are not finite under float16 AMP)."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _check_finite(
    value: Tensor, what: str, role: str, epoch: int, step: int, ckpt: Path, ctx: DistContext
) -> None:
    ok = torch.isfinite(value.detach()).all().to(torch.int32).reshape(1)
    if ctx.distributed:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if int(ok.item()) == 1:
        return
    kept = (
        f"the last good checkpoint {ckpt} is kept"
        if ckpt.is_file()
        else "no checkpoint of this stage was written yet"
    )
    raise TrainingDivergedError(
        f"{role}: the {what} became {float(value.detach().float().reshape(-1)[0])} at step "
        f"{step} (epoch {epoch + 1}); training stopped, {kept}. Lower the learning rate "
        "(teacher.lr / student.lr), add optim.warmup_epochs or check the data."
    )


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def prepare(cfg: Config, *, overwrite: bool = False) -> tuple[_Plan, Path]:
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
        _DeviceMasker(MaskSpec.from_dict(cfg.masking.spec) if cfg.masking.spec else MaskSpec(),
                      cfg.masking.p, cfg.masking.seed)  # fmt: skip
    return _Plan(source, num_classes, teacher_ckpt, teacher_path), out


def train(
    cfg: Config,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    plan: tuple[_Plan, Path] | None = None,
) -> TrainResult:
    """Run the teacher and student stages described by ``cfg`` (see the module docstring).

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
        _setup_logging(out, ctx.is_main)
        ctx.barrier()
        result = TrainResult(out, Path(), None, num_classes=the_plan.num_classes, rank=ctx.rank)

        # ---- teacher ----
        if the_plan.teacher_path is not None:
            teacher_path = the_plan.teacher_path
            if ctx.is_main:
                log.info("teacher: using %s", teacher_path)
            result.stages.append(StageResult("teacher", teacher_path, 0, 0, 0, 0, 0, True))
        else:
            stage = _run_stage("teacher", cfg, ctx, the_plan, out, None, None, progress)
            result.stages.append(stage)
            teacher_path = stage.checkpoint
        result.teacher_checkpoint = teacher_path

        # ---- student ----
        if cfg.student.epochs > 0:
            ctx.barrier()
            teacher_ckpt = load_checkpoint(teacher_path)
            teacher = create_backbone(
                teacher_ckpt["arch"]["backbone"],
                teacher_ckpt["arch"]["embedding_size"],
                **teacher_ckpt["arch"].get("kwargs", {}),
            )
            load_model_state(teacher, teacher_ckpt["model"], str(teacher_path))
            teacher = teacher.to(ctx.device).eval()
            init = teacher_ckpt if cfg.student.init == "teacher" else None
            stage = _run_stage("student", cfg, ctx, the_plan, out, teacher, init, progress)
            result.stages.append(stage)
            result.student_checkpoint = stage.checkpoint
        ctx.barrier()
        return result
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()
