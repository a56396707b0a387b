"""Process group and device: :class:`DistContext` and :func:`setup_distributed`.

Example:
    >>> ctx = DistContext()
    >>> ctx.is_main, ctx.world_size, ctx.device.type
    (True, 1, 'cpu')
    >>> 0 < free_port() < 65536
    True
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["DistContext", "free_port", "setup_distributed"]


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
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
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", rank=rank, world_size=env_world
            )
            ctx.owns_group = True
            ctx.rank, ctx.world_size = rank, env_world
        ctx.distributed = True
    ctx.device = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    return ctx
