"""One optimiser step: AMP set-up, :func:`backward` (scale, unscale, clip), :func:`apply_step`
and the NaN/inf guard :func:`check_finite`.

Example:
    >>> amp_setup("auto", torch.device("cpu"))
    (None, False)
    >>> amp_setup("bf16", torch.device("cpu"))
    (torch.bfloat16, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from distill.training.distributed import DistContext
from distill.training.errors import TrainingDivergedError

__all__ = ["amp_setup", "apply_step", "backward", "check_finite"]


def amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
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


def check_finite(
    value: Tensor, what: str, role: str, epoch: int, step: int, ckpt: Path, ctx: DistContext
) -> None:
    """Raise :class:`TrainingDivergedError` when ``value`` is not finite on any process."""
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
