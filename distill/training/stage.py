"""One training stage (teacher or student): :func:`run_stage`.

The stage is built in order (seed → model and head → data → optimiser, scheduler and scaler
→ state restored from ``<out>/<role>/last.pt`` on resume), then trained epoch by epoch, step
by step, with a checkpoint after every epoch. The order matters: it fixes what the RNGs have
drawn before the first step, so a run and its resumption see the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.backbones import create_backbone
from distill.checkpoint import (
    CheckpointError,
    load_model_state,
    make_checkpoint,
    non_finite_tensor,
    save_checkpoint,
)
from distill.config import Config, config_to_dict
from distill.data import GlobalBatchSampler, TrainDataset, normalize
from distill.heads import MarginHead, create_head
from distill.training.distributed import DistContext
from distill.training.errors import TrainingDivergedError
from distill.training.logs import Metrics, log, progress_bar
from distill.training.loss import Net, compute_loss
from distill.training.masking import DeviceMasker, mask_spec
from distill.training.results import Plan, StageResult
from distill.training.schedule import build_optimizer, build_scheduler
from distill.training.state import rng_state, seed_everything, set_rng_state
from distill.training.step import amp_setup, apply_step, backward, check_finite
from maskgen.augment import MaskedPairs

__all__ = ["run_stage"]

_Data = tuple[TrainDataset, GlobalBatchSampler, DeviceMasker | None]
#: images of the first batch whose embeddings are checked before each checkpoint.
_PROBE_SIZE = 8


@dataclass
class _Stage:
    """A built stage: its model, data and optimisation, and where the loop stands."""

    role: str
    cfg: Config
    ctx: DistContext
    num_classes: int
    stage_dir: Path
    ckpt_path: Path
    epochs: int
    net: nn.Module  # the Net, or DDP around it
    inner: Net
    teacher: nn.Module | None
    dataset: TrainDataset
    sampler: GlobalBatchSampler
    masker: DeviceMasker | None
    steps_per_epoch: int
    total_steps: int
    lr: float
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    weight: float
    start_epoch: int = 0
    step: int = 0
    seen: int = 0
    last_loss: float = math.nan
    t_stage: float = 0.0
    #: a few inputs of the stage's first batch: the eval-mode embeddings of every saved
    #: checkpoint must be finite on them.
    probe: Tensor | None = None


@dataclass
class _Window:
    """Sums over the steps since the last metrics row."""

    t0: float = field(default_factory=time.perf_counter)
    images: int = 0
    masked: float = 0.0
    loss_sum: float = 0.0
    parts_sum: dict[str, float] = field(default_factory=dict)
    batch: int = 0  # images of the last step, all processes
    lr: float = 0.0  # learning rate of the last step

    def add(self, images: int, loss: float, masked: float, parts: dict[str, Tensor]) -> None:
        self.batch = images
        self.images += images
        self.loss_sum += loss
        self.masked += masked
        for k, v in parts.items():
            self.parts_sum[k] = self.parts_sum.get(k, 0.0) + float(v)


def run_stage(
    role: str,
    cfg: Config,
    ctx: DistContext,
    plan: Plan,
    out: Path,
    teacher: nn.Module | None,
    init: dict[str, Any] | None,
    progress: bool,
) -> StageResult:
    """Train stage ``role`` into ``<out>/<role>`` (``teacher``: frozen model of the student
    stage; ``init``: checkpoint to start from unless resuming)."""
    stage_cfg = cfg.teacher if role == "teacher" else cfg.student
    stage_dir = out / role
    ckpt_path = stage_dir / "last.pt"
    epochs = stage_cfg.epochs
    resume_state = plan.resume_states.pop(role, None)  # read and checked by prepare()
    if resume_state is not None and int(resume_state["epoch"]) >= epochs:
        if ctx.is_main:
            log.info("%s: already complete in %s, skipping", role, ckpt_path)
        return StageResult(role, ckpt_path, epochs, int(resume_state["step"]), 0, 0, 0, True)

    seed_everything(cfg.train.seed + (0 if role == "teacher" else 1), ctx.rank)
    net = _build_net(cfg, ctx, plan.num_classes, init if resume_state is None else None)
    data = _build_data(role, cfg, ctx, plan)
    st = _build_stage(role, cfg, ctx, plan, stage_dir, epochs, stage_cfg.lr, net, teacher, data)
    if resume_state is not None:
        _restore(st, resume_state)
    return _train(st, progress)


# ---- building ---------------------------------------------------------------------------------


def _build_head(cfg: Config, num_classes: int) -> MarginHead:
    return create_head(
        cfg.model.head, cfg.model.embedding_size, num_classes, **cfg.model.head_kwargs
    )


def _build_backbone(cfg: Config) -> nn.Module:
    return create_backbone(cfg.model.backbone, cfg.model.embedding_size, **cfg.model.kwargs)


def _build_net(
    cfg: Config, ctx: DistContext, num_classes: int, init: dict[str, Any] | None
) -> nn.Module:
    """Backbone + head on the device (from ``init`` when given), wrapped in DDP if distributed."""
    backbone = _build_backbone(cfg)
    head = _build_head(cfg, num_classes)
    if init is not None:
        load_model_state(backbone, init["model"], "initial student weights")
        if "head" in init and init["head"]["weight"].shape == head.weight.shape:
            head.load_state_dict(init["head"])
        elif ctx.is_main:
            why = "does not fit these classes" if "head" in init else "is not in the weights"
            log.info("student: the initial head %s; new head", why)
    device = ctx.device
    net: nn.Module = Net(backbone, head).to(device)
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return net


def _build_data(role: str, cfg: Config, ctx: DistContext, plan: Plan) -> _Data:
    """The dataset (masked pairs in the workers for the student), sampler and device masker."""
    spec = mask_spec(cfg.masking)
    masker: DeviceMasker | None = None
    if role == "student" and cfg.masking.mode == "workers":
        base: Any = MaskedPairs(plan.source, spec, p=cfg.masking.p, seed=cfg.masking.seed)
    else:
        base = plan.source
        if role == "student" and cfg.masking.p > 0:
            masker = DeviceMasker(spec, cfg.masking.p, cfg.masking.seed)
    dataset = TrainDataset(base, flip=cfg.data.flip, seed=cfg.train.seed)
    sampler = GlobalBatchSampler(
        len(dataset),
        cfg.train.batch_size,
        ctx.rank,
        ctx.world_size,
        seed=cfg.train.seed + (0 if role == "teacher" else 7919),
        max_steps=cfg.train.max_steps_per_epoch,
    )
    return dataset, sampler, masker


def _build_stage(
    role: str,
    cfg: Config,
    ctx: DistContext,
    plan: Plan,
    stage_dir: Path,
    epochs: int,
    stage_lr: float,
    net: nn.Module,
    teacher: nn.Module | None,
    data: _Data,
) -> _Stage:
    """The stage with its optimiser, learning-rate schedule and AMP (scaler) set up."""
    dataset, sampler, masker = data
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = steps_per_epoch * epochs
    lr = stage_lr * cfg.train.batch_size / cfg.optim.base_batch_size
    inner = net.module if ctx.distributed else net
    optimizer = build_optimizer(inner, lr, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, total_steps)
    amp_dtype, use_scaler = amp_setup(cfg.train.amp, ctx.device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    return _Stage(
        role=role,
        cfg=cfg,
        ctx=ctx,
        num_classes=plan.num_classes,
        stage_dir=stage_dir,
        ckpt_path=stage_dir / "last.pt",
        epochs=epochs,
        net=net,
        inner=inner,
        teacher=teacher,
        dataset=dataset,
        sampler=sampler,
        masker=masker,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp_dtype=amp_dtype,
        weight=cfg.student.distill_weight if role == "student" else 0.0,
    )


def _restore(st: _Stage, resume_state: dict[str, Any]) -> None:
    """Model, head, optimiser, scheduler, scaler, RNGs, epoch and step from the checkpoint."""
    load_model_state(st.inner.backbone, resume_state["model"], str(st.ckpt_path))
    st.inner.head.load_state_dict(resume_state["head"])
    st.optimizer.load_state_dict(resume_state["optimizer"])
    st.scheduler.load_state_dict(resume_state["scheduler"])
    if st.scaler is not None and resume_state.get("scaler"):
        st.scaler.load_state_dict(resume_state["scaler"])
    set_rng_state(resume_state.get("rng", {}))
    st.start_epoch, st.step = int(resume_state["epoch"]), int(resume_state["step"])
    if st.step != st.start_epoch * st.steps_per_epoch:
        raise CheckpointError(
            f"{st.ckpt_path}: step {st.step} after {st.start_epoch} epochs does not match "
            f"{st.steps_per_epoch} steps per epoch; train.batch_size or the dataset changed"
        )
    if st.ctx.is_main:
        log.info(
            "%s: resuming at epoch %d, step %d, lr %.6g (checkpoint written by %s "
            "process(es), now %d)",
            st.role, st.start_epoch, st.step, st.scheduler.get_last_lr()[0],
            resume_state.get("world_size", "?"), st.ctx.world_size,
        )  # fmt: skip


# ---- training ---------------------------------------------------------------------------------


def _loader_kwargs(st: _Stage) -> dict[str, Any]:
    loader_kwargs: dict[str, Any] = {
        "batch_sampler": st.sampler,
        "num_workers": st.cfg.data.num_workers,
        "pin_memory": st.ctx.device.type == "cuda",
    }
    if st.cfg.data.num_workers > 0:
        loader_kwargs["prefetch_factor"] = 4
    return loader_kwargs


def _log_start(st: _Stage) -> None:
    cfg, ctx = st.cfg, st.ctx
    log.info(
        "%s: %d images, %d classes, %d epochs × %d steps, global batch %d on %d process(es)"
        ", lr %.4g, device %s, amp %s, masking %s",
        st.role, len(st.dataset), st.num_classes, st.epochs, st.steps_per_epoch,
        cfg.train.batch_size, ctx.world_size, st.lr, ctx.device, st.amp_dtype or "off",
        f"{cfg.masking.mode} p={cfg.masking.p}" if st.role == "student" else "none",
    )  # fmt: skip


def _freeze(teacher: nn.Module | None) -> None:
    """Eval mode (BatchNorm statistics fixed) and no gradients."""
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)


def _train(st: _Stage, progress: bool) -> StageResult:
    """Epochs ``start_epoch …`` of the stage, a checkpoint after each."""
    loader_kwargs = _loader_kwargs(st)
    metrics = Metrics(st.stage_dir if st.ctx.is_main else None, start_step=st.step)
    if st.ctx.is_main:
        _log_start(st)
    _freeze(st.teacher)
    bar = progress_bar(st.total_steps, st.step, st.role, progress and st.ctx.is_main)
    st.t_stage = time.perf_counter()
    try:
        for epoch in range(st.start_epoch, st.epochs):
            _run_epoch(st, epoch, loader_kwargs, metrics, bar)
            _check_savable(st, epoch)
            if st.ctx.is_main:
                _save_epoch(st, epoch)
            st.ctx.barrier()
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
    seconds = time.perf_counter() - st.t_stage
    rate = st.seen / max(seconds, 1e-9)
    return StageResult(st.role, st.ckpt_path, st.epochs, st.step, seconds, rate, st.last_loss)


def _run_epoch(
    st: _Stage, epoch: int, loader_kwargs: dict[str, Any], metrics: Metrics, bar: Any
) -> None:
    st.net.train()
    st.sampler.set_epoch(epoch)
    st.dataset.set_epoch(epoch)
    loader = DataLoader(st.dataset, **loader_kwargs)
    window = _Window()
    for batch in loader:
        _train_step(st, epoch, batch, window)
        if bar is not None:
            rate = st.seen / max(time.perf_counter() - st.t_stage, 1e-9)
            bar.set_postfix(loss=f"{st.last_loss:.3f}", img_s=f"{rate:.0f}", epoch=epoch + 1)
            bar.update(1)
        if st.step % st.cfg.train.log_every == 0 or st.step % st.steps_per_epoch == 0:
            _write_metrics(st, epoch, window, metrics, bar is None)
            window = _Window()


def _train_step(st: _Stage, epoch: int, batch: Any, window: _Window) -> None:
    """One optimiser step on ``batch``; its statistics go into ``window``."""
    x_student, x_teacher, labels, was_masked = _inputs(st, batch, epoch)
    if st.probe is None:
        st.probe = x_student[:_PROBE_SIZE].detach().clone()
    loss, parts = _forward(st, x_student, x_teacher, labels)
    window.lr = _optimise(st, epoch, loss)
    batch_n = labels.shape[0] * st.ctx.world_size
    st.seen += batch_n
    st.last_loss = float(loss.detach())
    masked = float(was_masked.float().sum()) * st.ctx.world_size
    window.add(batch_n, st.last_loss, masked, parts)


def _inputs(st: _Stage, batch: Any, epoch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normalised student and teacher views, labels and masked flags, on the device."""
    s_img, t_img, labels, was_masked, landmarks, indices = batch
    device = st.ctx.device
    s_img = s_img.to(device, non_blocking=True)
    t_img = t_img.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if st.masker is not None:
        clean01 = t_img.float() / 255.0
        s01, was_masked = st.masker(clean01, landmarks.to(device), indices.tolist(), epoch)
        x_student = normalize(s01)
    else:
        x_student = normalize(s_img if st.role == "student" else t_img)
    x_teacher = normalize(t_img)
    return x_student, x_teacher, labels, was_masked


def _forward(
    st: _Stage, x_student: Tensor, x_teacher: Tensor, labels: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss under autocast, the head's draws seeded by (seed, step, rank)."""
    device = st.ctx.device
    gen = torch.Generator(device=device)
    gen.manual_seed(st.cfg.train.seed * 1_000_003 + st.step * 131 + st.ctx.rank)
    with torch.autocast(
        device.type, dtype=st.amp_dtype or torch.float32, enabled=st.amp_dtype is not None
    ):
        return compute_loss(
            st.net,
            st.teacher if st.role == "student" else None,
            x_student,
            x_teacher,
            labels,
            st.weight,
            gen,
        )


def _optimise(st: _Stage, epoch: int, loss: Tensor) -> float:
    """Check, backpropagate, clip and step; returns the learning rate the step used."""
    check_finite(loss, "loss", st.role, epoch, st.step, st.ckpt_path, st.ctx)
    norm = backward(
        loss, st.optimizer, st.scaler, st.inner.backbone.parameters(), st.cfg.optim.clip_grad_norm
    )
    if norm is not None and st.scaler is None:
        check_finite(norm, "gradient norm", st.role, epoch, st.step, st.ckpt_path, st.ctx)
    step_lr = st.optimizer.param_groups[0]["lr"]
    apply_step(st.optimizer, st.scaler)
    st.scheduler.step()
    st.step += 1
    return step_lr


def _write_metrics(
    st: _Stage, epoch: int, window: _Window, metrics: Metrics, log_line: bool
) -> None:
    """A metrics row over ``window`` (and a log line on rank 0 when ``log_line``)."""
    n_steps = max(window.images // window.batch, 1)
    dt = time.perf_counter() - window.t0
    parts_sum = window.parts_sum
    row: dict[str, Any] = {
        "step": st.step,
        "epoch": epoch + 1,
        "loss": window.loss_sum / n_steps,
        "ce": parts_sum.get("ce", 0.0) / n_steps,
        "mse": parts_sum["mse"] / n_steps if "mse" in parts_sum else "",
        "lr": window.lr,
        "images_per_s": window.images / max(dt, 1e-9),
        "masked": window.masked / max(window.images, 1),
        "time_s": time.perf_counter() - st.t_stage,
    }
    metrics.write(row)
    if st.ctx.is_main and log_line:
        log.info(
            "%s epoch %d step %d/%d loss %.4f lr %.5f %.0f img/s",
            st.role, epoch + 1, st.step, st.total_steps, row["loss"], row["lr"],
            row["images_per_s"],
        )  # fmt: skip


def _divergence(st: _Stage) -> str:
    """What makes the stage's model unusable: a non-finite tensor, or non-finite eval-mode
    embeddings of the probe inputs (huge but finite weights overflow there); "" if nothing."""
    for prefix, module in (("", st.inner.backbone), ("head.", st.inner.head)):
        name = non_finite_tensor(module.state_dict())
        if name is not None:
            return f"tensor {prefix}{name} is not finite"
    if st.probe is None:
        return ""
    backbone, was_training = st.inner.backbone, st.inner.backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            finite = bool(torch.isfinite(backbone(st.probe)).all())
    finally:
        backbone.train(was_training)
    return "" if finite else "the embeddings (eval mode) of training images are not finite"


def _check_savable(st: _Stage, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` on every process, before epoch ``epoch`` is
    saved, when the model diverged: a non-finite checkpoint is never written."""
    problem = _divergence(st)
    ok = torch.tensor([0 if problem else 1], dtype=torch.int32, device=st.ctx.device)
    if st.ctx.distributed:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if int(ok.item()) == 1:
        return
    kept = (
        f"the last good checkpoint {st.ckpt_path} is kept"
        if st.ckpt_path.is_file()
        else "no checkpoint of this stage was written"
    )
    raise TrainingDivergedError(
        f"{st.role}: after epoch {epoch + 1} (step {st.step}) "
        f"{problem or 'another process diverged'}: the training diverged; the checkpoint is "
        f"not saved, {kept}. Lower the learning rate ({st.role}.lr), add "
        "optim.warmup_epochs or check the data."
    )


def _save_epoch(st: _Stage, epoch: int) -> None:
    """Checkpoint after epoch ``epoch`` (0-based), written atomically (rank 0)."""
    cfg = st.cfg
    ckpt = make_checkpoint(
        st.inner.backbone,
        cfg.model.backbone,
        cfg.model.embedding_size,
        cfg.model.kwargs,
        role=st.role,
        head={k: v.detach().cpu() for k, v in st.inner.head.state_dict().items()},
        head_arch={
            "head": cfg.model.head,
            "num_classes": st.num_classes,
            "kwargs": dict(cfg.model.head_kwargs),
        },
        optimizer=st.optimizer.state_dict(),
        scheduler=st.scheduler.state_dict(),
        scaler=st.scaler.state_dict() if st.scaler is not None else None,
        rng=rng_state(),
        epoch=epoch + 1,
        step=st.step,
        world_size=st.ctx.world_size,
        config=config_to_dict(cfg),
    )
    save_checkpoint(st.ckpt_path, ckpt)
    log.info(
        "%s: epoch %d/%d done (step %d, loss %.4f), checkpoint %s",
        st.role, epoch + 1, st.epochs, st.step, st.last_loss, st.ckpt_path,
    )  # fmt: skip
