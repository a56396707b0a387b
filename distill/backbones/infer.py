"""Tell a backbone's architecture from the keys and shapes of its ``state_dict``.

Public face-recognition weights (insightface ``arcface_torch``, ElasticFace) are distributed as
plain state dicts without any record of the architecture. The IResNet of this package uses the
same module names, so the architecture follows from the keys: the number of blocks in
``layer1``…``layer4`` names the depth, and the final ``features`` BatchNorm (or the ``fc``
layer before it) gives the embedding size. ``mobilefacenet`` and ``tiny`` state dicts written
by this package are recognised by their own layout.

Example:
    >>> from distill.backbones import create_backbone
    >>> state = create_backbone("iresnet18", embedding_size=64).state_dict()
    >>> infer_arch(state)
    {'backbone': 'iresnet18', 'embedding_size': 64, 'kwargs': {}}
    >>> tiny = create_backbone("tiny", 16, widths=[8, 8, 16, 16], blocks=[0, 0, 0, 0])
    >>> infer_arch(tiny.state_dict())["kwargs"]
    {'widths': [8, 8, 16, 16], 'blocks': [0, 0, 0, 0]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["IRESNET_DEPTHS", "ArchInferenceError", "embedding_size_of", "infer_arch"]

#: blocks per stage → registered IResNet name (the insightface / ElasticFace depths).
IRESNET_DEPTHS: dict[tuple[int, ...], str] = {
    (2, 2, 2, 2): "iresnet18",
    (3, 4, 6, 3): "iresnet34",
    (3, 4, 14, 3): "iresnet50",
    (3, 13, 30, 3): "iresnet100",
}
_TINY_DEFAULTS = {"widths": [16, 32, 64, 128], "blocks": [0, 0, 1, 1]}


class ArchInferenceError(ValueError):
    """The keys of a state dict match none of the known backbone layouts."""


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if hasattr(value, "shape") else None


def embedding_size_of(state: Mapping[str, Any]) -> int:
    """The embedding size: the width of the final ``features`` BatchNorm, else of ``fc``.

    Raises:
        ArchInferenceError: neither layer is present.
    """
    for key in ("features.running_mean", "features.bias", "fc.weight", "linear.weight"):
        shape = _shape(state, key)
        if shape:
            return int(shape[0])
    raise ArchInferenceError("no final 'features' or 'fc' layer to read the embedding size from")


def _block_counts(state: Mapping[str, Any]) -> tuple[int, ...]:
    counts = []
    for stage in range(1, 5):
        pattern = re.compile(rf"layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
        counts.append(max(indices) + 1 if indices else 0)
    return tuple(counts)


def _iresnet(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    counts = _block_counts(state)
    name = IRESNET_DEPTHS.get(counts)
    if name is None:
        known = ", ".join(f"{n} {list(c)}" for c, n in IRESNET_DEPTHS.items())
        raise ArchInferenceError(
            f"an IResNet with {list(counts)} blocks per stage, which is none of {known}"
        )
    return name, {}


def _tiny(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    widths: list[int] = []
    blocks: list[int] = []
    i = 0
    while True:
        if _shape(state, f"body.{i}.0.weight"):  # a stride-2 stage conv
            widths.append(int(state[f"body.{i}.0.weight"].shape[0]))
            blocks.append(0)
        elif _shape(state, f"body.{i}.body.0.0.weight") and blocks:  # a residual block
            blocks[-1] += 1
        else:
            break
        i += 1
    found = {"widths": widths, "blocks": blocks}
    return "tiny", {k: v for k, v in found.items() if v != _TINY_DEFAULTS[k]}


def _mobilefacenet(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    gdc = _shape(state, "gdc.0.weight")
    kwargs = {"gdc_channels": int(gdc[0])} if gdc and gdc[0] != 512 else {}
    return "mobilefacenet", kwargs


def infer_arch(state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``arch`` record (see :func:`distill.checkpoint.arch_of`) of a backbone state dict.

    Only options visible in the weights are recorded (depth, the ``tiny`` widths and blocks,
    the MobileFaceNet GDC width); options without weights (dropout) keep their defaults.

    Raises:
        ArchInferenceError: the keys match no known layout (the message says what was found).
    """
    if "layer1.0.conv1.weight" in state and "fc.weight" in state:
        name, kwargs = _iresnet(state)
    elif "gdc.0.weight" in state and "linear.weight" in state:
        name, kwargs = _mobilefacenet(state)
    elif "body.0.0.weight" in state and "bn.weight" in state and "fc.weight" in state:
        name, kwargs = _tiny(state)
    else:
        keys = sorted(state)
        shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        raise ArchInferenceError(
            f"the keys ({shown or 'none'}) match no known backbone layout "
            "(iresnet18/34/50/100, mobilefacenet, tiny)"
        )
    return {"backbone": name, "embedding_size": embedding_size_of(state), "kwargs": kwargs}
