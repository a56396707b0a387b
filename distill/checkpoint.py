"""Training checkpoints: atomic save, validated load, and :func:`load_backbone` for evaluation.

A checkpoint is a dict written with :func:`torch.save`::

    {"format": "distill-checkpoint", "version": 1, "role": "teacher" | "student",
     "arch": {"backbone": "tiny", "embedding_size": 128, "kwargs": {...}},
     "model": <backbone state_dict>, "head": <head state_dict>, "head_arch": {...},
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": ..., "epoch": int,
     "step": int, "config": {...}, "world_size": int}

Only tensors and plain Python values are stored, so it loads with ``weights_only=True``
(nothing pickled gets executed).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny", embedding_size=32)
    >>> path = Path(tempfile.mkdtemp()) / "t.pt"
    >>> _ = save_checkpoint(path, make_checkpoint(net, "tiny", 32, {}, role="teacher"))
    >>> model = load_backbone(path)
    >>> model.embedding_size, model.training
    (32, False)
    >>> import shutil; shutil.rmtree(path.parent)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskgen.io import atomic_write_bytes

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "arch_of",
    "check_arch",
    "load_backbone",
    "load_checkpoint",
    "load_model_state",
    "make_checkpoint",
    "save_checkpoint",
]

FORMAT = "distill-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable distill checkpoint, or one that does not fit."""


def arch_of(backbone: str, embedding_size: int, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The ``arch`` record of a checkpoint.

    >>> arch_of("Tiny", 64, None)
    {'backbone': 'tiny', 'embedding_size': 64, 'kwargs': {}}
    """
    return {
        "backbone": backbone.strip().lower(),
        "embedding_size": int(embedding_size),
        "kwargs": dict(kwargs or {}),
    }


def make_checkpoint(
    model: nn.Module,
    backbone: str,
    embedding_size: int,
    kwargs: dict[str, Any] | None,
    *,
    role: str,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a checkpoint dict for ``model`` (a backbone) plus any training state."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "arch": arch_of(backbone, embedding_size, kwargs),
        "model": state,
    }
    ckpt.update(extra)
    return ckpt


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically (a crash never leaves a truncated file at ``path``)."""
    if checkpoint.get("format") != FORMAT:
        raise CheckpointError("refusing to save a dict without format='distill-checkpoint'")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a distill checkpoint.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: for unreadable files, other torch files, a wrong format or version,
            or a checkpoint without model weights / architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable distill checkpoint (torch.load failed: {first})"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        what = (
            f"a dict with keys {sorted(map(str, obj))[:8]}"
            if isinstance(obj, dict)
            else f"a {type(obj).__name__}"
        )
        raise CheckpointError(
            f"{p}: not a distill checkpoint (expected format={FORMAT!r}, found {what})"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: unsupported distill checkpoint version {obj.get('version')!r} "
            f"(this code reads version {VERSION})"
        )
    arch = obj.get("arch")
    if (
        not isinstance(arch, dict)
        or not isinstance(arch.get("backbone"), str)
        or not isinstance(arch.get("embedding_size"), int)
        or not isinstance(obj.get("model"), dict)
    ):
        raise CheckpointError(f"{p}: distill checkpoint without a valid 'arch' / 'model' entry")
    return obj


def check_arch(found: dict[str, Any], expected: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` if two ``arch`` records differ (naming the difference).

    >>> check_arch(arch_of("tiny", 64, {}), arch_of("tiny", 64, {}), "x.pt")
    >>> try:
    ...     check_arch(arch_of("tiny", 64, {}), arch_of("iresnet50", 64, {}), "x.pt")
    ... except CheckpointError as e:
    ...     print(e)
    x.pt: architecture mismatch: the checkpoint holds backbone 'tiny', expected 'iresnet50'
    """
    if found["backbone"] != expected["backbone"]:
        raise CheckpointError(
            f"{source}: architecture mismatch: the checkpoint holds backbone "
            f"{found['backbone']!r}, expected {expected['backbone']!r}"
        )
    if int(found["embedding_size"]) != int(expected["embedding_size"]):
        raise CheckpointError(
            f"{source}: embedding-size mismatch: the checkpoint has "
            f"{found['embedding_size']}-d embeddings, expected {expected['embedding_size']}-d"
        )
    if dict(found.get("kwargs") or {}) != dict(expected.get("kwargs") or {}):
        raise CheckpointError(
            f"{source}: architecture mismatch: backbone options {found.get('kwargs')} in the "
            f"checkpoint, expected {expected.get('kwargs')}"
        )


def load_model_state(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state)`` with a readable error on any mismatch."""
    try:
        _unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        summary = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0]
        raise CheckpointError(
            f"{source}: architecture mismatch: the weights do not fit "
            f"{type(_unwrap(model)).__name__} ({summary[:400]})"
        ) from exc


def load_backbone(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    expected_arch: dict[str, Any] | None = None,
) -> nn.Module:
    """Rebuild the backbone stored in a checkpoint, in eval mode.

    Args:
        path: a checkpoint written by ``distill train``.
        map_location: device for the weights.
        expected_arch: if given (see :func:`arch_of`), the checkpoint must match it.

    Raises:
        CheckpointError: not a distill checkpoint, unknown backbone, or weights that do not
            fit the recorded (or expected) architecture.
    """
    from distill.backbones import create_backbone

    ckpt = load_checkpoint(path, map_location=map_location)
    arch = ckpt["arch"]
    if expected_arch is not None:
        check_arch(arch, expected_arch, str(path))
    try:
        model = create_backbone(arch["backbone"], arch["embedding_size"], **arch.get("kwargs", {}))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the backbone: {exc}") from exc
    load_model_state(model, ckpt["model"], str(path))
    if (
        map_location is not None
        and not callable(map_location)
        and not isinstance(map_location, dict)
    ):
        model = model.to(map_location)
    return model.eval()
