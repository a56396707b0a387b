"""Training checkpoints: atomic save, validated load, and :func:`load_backbone` for evaluation.

Wherever a checkpoint is read (``distill eval``, ``teacher.checkpoint``, ``student.init``,
:func:`load_backbone`), a *plain backbone state dict* is accepted as well: the files that
insightface ``arcface_torch`` and ElasticFace publish (``backbone.pth``), also wrapped in a
``"state_dict"`` entry or with the ``module.`` prefix of DDP. Their architecture is told from
the keys (:func:`distill.backbones.infer_arch`) or named by the caller, and the weights are
loaded strictly (:func:`load_weights`).

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
from collections.abc import Mapping
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
    "build_backbone",
    "check_arch",
    "check_finite_weights",
    "load_backbone",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "make_checkpoint",
    "non_finite_tensor",
    "plain_state_dict",
    "save_checkpoint",
    "state_mismatch",
]

FORMAT = "distill-checkpoint"
VERSION = 1
#: ``format`` of the checkpoint-like dict :func:`load_weights` makes of a plain state dict.
STATE_DICT_FORMAT = "state-dict"
#: entries that wrap a state dict in other projects' files (insightface, Lightning, ...).
_WRAPPER_KEYS = ("state_dict", "state_dict_backbone", "model", "backbone", "net")
#: key prefixes of wrapped models: DDP, torch.compile, a ``backbone`` attribute.
_PREFIXES = ("module.", "_orig_mod.", "backbone.")


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
    return _validated(_torch_load(p, map_location), p)


def _torch_load(p: Path, map_location: Any) -> Any:
    """``torch.load(p, weights_only=True)`` with one-line errors."""
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign or corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable distill checkpoint (torch.load failed: {first})"
        ) from exc


def _validated(obj: Any, p: Path) -> dict[str, Any]:
    """``obj`` if it is a valid distill checkpoint, else :class:`CheckpointError`."""
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


def non_finite_tensor(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding a NaN or an infinity.

    >>> non_finite_tensor({"a": torch.zeros(2), "b": torch.tensor([1.0, float("inf")])})
    'b'
    >>> non_finite_tensor({"a": torch.zeros(2), "n": torch.tensor(3)}) is None
    True
    """
    for name, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            return str(name)
    return None


def check_finite_weights(ckpt: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor of the backbone (``model``) or
    the head (``head``, named ``head.*``) of ``ckpt`` that is not finite."""
    for prefix, part in (("", ckpt.get("model")), ("head.", ckpt.get("head"))):
        name = non_finite_tensor(part) if isinstance(part, Mapping) else None
        if name is not None:
            raise CheckpointError(
                f"{source}: tensor {prefix}{name} is not finite (it holds NaN or inf): the "
                "weights are unusable, e.g. saved by a training that diverged"
            )


def _listed(keys: list[str], shown: int = 3) -> str:
    """``a, b, c (+4 more)``."""
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def state_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str:
    """What keeps ``state`` from loading strictly into ``model`` ("" when it fits).

    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny", 8, widths=[8, 8, 8, 8], blocks=[0, 0, 0, 0])
    >>> state = dict(net.state_dict())
    >>> state_mismatch(net, state)
    ''
    >>> _ = state.pop("fc.bias"); state["head.w"] = state["fc.weight"]
    >>> state_mismatch(net, state)
    'missing keys fc.bias; unexpected keys head.w'
    """
    expected = _unwrap(model).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_listed(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch {_listed(shapes, 2)}")
    return "; ".join(parts)


def load_model_state(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """``model.load_state_dict(state, strict=True)``; any mismatch is one line naming the keys.

    Raises:
        CheckpointError: ``{source}: architecture mismatch: the weights do not fit
            <Model> (missing keys ...; unexpected keys ...; shape mismatch ...)``.
    """
    problem = state_mismatch(model, state)
    if problem:
        raise CheckpointError(
            f"{source}: architecture mismatch: the weights do not fit "
            f"{type(_unwrap(model)).__name__} ({problem})"
        )
    _unwrap(model).load_state_dict(dict(state), strict=True)


def _is_state(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def plain_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The backbone weights of a plain state dict as other projects save them.

    Accepts a ``{name: tensor}`` dict, also wrapped in a ``state_dict`` (insightface,
    Lightning), ``state_dict_backbone``, ``model``, ``backbone`` or ``net`` entry, and strips a
    ``module.`` (DDP), ``_orig_mod.`` (``torch.compile``) or ``backbone.`` prefix shared by
    every key.

    >>> w = torch.zeros(2)
    >>> list(plain_state_dict({"state_dict": {"module.fc.weight": w}}, "x.pth"))
    ['fc.weight']

    Raises:
        CheckpointError: ``obj`` holds no such state dict.
    """
    if isinstance(obj, dict) and not _is_state(obj):
        inner = [obj[k] for k in _WRAPPER_KEYS if _is_state(obj.get(k))]
        if inner:
            obj = inner[0]
    if not _is_state(obj):
        what = (
            f"a dict with keys {sorted(map(str, obj))[:8]}"
            if isinstance(obj, dict)
            else f"a {type(obj).__name__}"
        )
        raise CheckpointError(
            f"{source}: not a distill checkpoint nor a backbone state dict (found {what})"
        )
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _arch_for_state(
    state: Mapping[str, Any],
    source: str,
    arch: str | Mapping[str, Any] | None,
    fallback: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The architecture of a plain state dict: ``arch`` (a name or record), else inferred,
    else ``fallback``."""
    from distill.backbones.infer import ArchInferenceError, embedding_size_of, infer_arch

    try:
        inferred: dict[str, Any] | None = infer_arch(state)
    except ArchInferenceError as exc:
        if arch is None and fallback is not None:
            return _arch_for_state(state, source, fallback, None)
        if arch is None:
            raise CheckpointError(
                f"{source}: not a distill checkpoint, and a state dict whose architecture "
                f"cannot be told: {exc}; name it (distill eval --arch NAME)"
            ) from exc
        inferred = None
    if arch is None:
        assert inferred is not None
        return inferred
    if isinstance(arch, str):
        same = inferred is not None and inferred["backbone"] == arch.strip().lower()
        kwargs = inferred["kwargs"] if same and inferred is not None else {}
        try:
            size = embedding_size_of(state)
        except ArchInferenceError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        return arch_of(arch, size, kwargs)
    return arch_of(arch["backbone"], int(arch["embedding_size"]), arch.get("kwargs"))


def load_weights(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    arch: str | Mapping[str, Any] | None = None,
    fallback_arch: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A distill checkpoint, or a plain backbone state dict presented like one.

    Args:
        path: a ``distill train`` checkpoint, or a state dict (``backbone.pth``).
        map_location: device for the weights.
        arch: for a state dict, its architecture: a backbone name (the embedding size is
            read from the weights) or an :func:`arch_of` record; ``None`` infers it from the
            keys. For a distill checkpoint a name must agree with the recorded backbone.
        fallback_arch: for a state dict whose keys match no known layout, the record to try
            (``distill train`` passes the configured ``model``); the strict load decides.

    Returns:
        The checkpoint, or ``{"format": "state-dict", "arch": ..., "model": ...}``.

    Raises:
        FileNotFoundError, CheckpointError (one line naming the file and the problem).
    """
    p = Path(path)
    obj = _torch_load(p, map_location)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = _validated(obj, p)
        if isinstance(arch, str) and arch.strip().lower() != ckpt["arch"]["backbone"]:
            raise CheckpointError(
                f"{p}: architecture mismatch: the checkpoint holds backbone "
                f"{ckpt['arch']['backbone']!r}, not {arch.strip().lower()!r}"
            )
        return ckpt
    state = plain_state_dict(obj, str(p))
    found = _arch_for_state(state, str(p), arch, fallback_arch)
    return {"format": STATE_DICT_FORMAT, "arch": found, "model": state}


def build_backbone(ckpt: Mapping[str, Any], source: str) -> nn.Module:
    """The backbone of ``ckpt["arch"]`` with ``ckpt["model"]`` loaded strictly (train mode)."""
    from distill.backbones import create_backbone

    arch = ckpt["arch"]
    try:
        model = create_backbone(arch["backbone"], arch["embedding_size"], **arch.get("kwargs", {}))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: cannot rebuild the backbone: {exc}") from exc
    load_model_state(model, ckpt["model"], source)
    return model


def load_backbone(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    expected_arch: dict[str, Any] | None = None,
    arch: str | Mapping[str, Any] | None = None,
) -> nn.Module:
    """Rebuild the backbone stored in a checkpoint or a plain state dict, in eval mode.

    Args:
        path: a checkpoint written by ``distill train``, or a backbone state dict such as
            insightface's / ElasticFace's ``backbone.pth``.
        map_location: device for the weights.
        expected_arch: if given (see :func:`arch_of`), the weights must match it.
        arch: the architecture of a state dict (see :func:`load_weights`); inferred if None.

    Raises:
        CheckpointError: not a checkpoint nor a known state dict, unknown backbone, or weights
            that do not fit the recorded (or expected) architecture.
    """
    ckpt = load_weights(path, map_location=map_location, arch=arch)
    if expected_arch is not None:
        check_arch(ckpt["arch"], expected_arch, str(path))
    model = build_backbone(ckpt, str(path))
    if (
        map_location is not None
        and not callable(map_location)
        and not isinstance(map_location, dict)
    ):
        model = model.to(map_location)
    return model.eval()
