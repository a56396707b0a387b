"""A batch of draws: :meth:`maskgen.render.MaskSpec.sample` per sample, as tensors.

The batched augmentation has no sampler of its own. Each sample's draw is the draw of
(seed, key, variant) under :mod:`maskgen.seeding` — the one scheme of ``maskgen render``,
:class:`maskgen.augment.MaskFace` and :class:`maskgen.augment.MaskedPairs` — so the same
spec, seed and sample key give the same :class:`maskgen.render.MaskParams` on the device and
in DataLoader workers. :func:`draws_to_params` and :func:`params_to_draws` convert between
those draws and the per-sample tensors kornia carries (scalars in float64, so that the
conversion is exact both ways).

Example:
    >>> from maskgen.render import MaskSpec
    >>> draws = sample_batch(MaskSpec(), seed=0, keys=["0", "1"])
    >>> params = draws_to_params([d.params[0] for d in draws])
    >>> params_to_draws(params) == [d.params[0] for d in draws]
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskgen import appearance as app
from maskgen.render import MaskParams, MaskSpec
from maskgen.seeding import ItemDraw, item_stream, sample_item
from maskgen.shapes import COVERAGES, GEOMETRY

__all__ = ["COLOUR_KEYS", "SCALAR_KEYS", "draws_to_params", "params_to_draws", "sample_batch"]

#: Per-sample colour tensors ``(B, 3)``, 0–255.
COLOUR_KEYS: tuple[str, ...] = ("color", "secondary_color", "strap_color")
#: Per-sample float64 scalars ``(B,)``, named as :class:`maskgen.render.MaskParams` fields.
SCALAR_KEYS: tuple[str, ...] = (
    "texture_scale",
    "texture_angle",
    "shading",
    "edge_softness",
    "opacity",
    "width",
    "top_offset",
    "bottom_offset",
    "noise",
    "blur",
    "color_match",
    "fabric",
    "contact_shadow",
    "creases",
    "compression",
)
#: Index keys: ``family`` (into :data:`maskgen.shapes.GEOMETRY`'s names at conversion time),
#: ``coverage``, ``texture``, ``texture_seed``, the flags ``straps`` and ``valve``, and the
#: ``geometry`` version.
INDEX_KEYS: tuple[str, ...] = (
    "family", "coverage", "texture", "texture_seed", "straps", "valve", "geometry", "lighting",
)  # fmt: skip


def sample_batch(
    spec: MaskSpec, seed: int, keys: Sequence[str], variant: int = 0, *, p: float = 1.0
) -> list[ItemDraw]:
    """The draws of samples ``keys`` (:func:`maskgen.seeding.draw_item`), one face each."""
    return [
        sample_item(spec, item_stream(seed, key, variant), p=p) for key in keys
    ]  # fmt: skip


def draws_to_params(
    draws: Sequence[MaskParams], families: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Per-sample tensors of ``draws`` (on the CPU; ``families`` defaults to the live
    registry's names, :data:`maskgen.shapes.GEOMETRY`)."""
    names = list(GEOMETRY) if families is None else list(families)
    n = len(draws)
    out: dict[str, torch.Tensor] = {
        "family": torch.tensor([names.index(d.family) for d in draws], dtype=torch.long),
        "coverage": torch.tensor([COVERAGES.index(d.coverage) for d in draws], dtype=torch.long),
        "texture": torch.tensor([app.TEXTURES.index(d.texture) for d in draws], dtype=torch.long),
        "texture_seed": torch.tensor([d.texture_seed for d in draws], dtype=torch.long),
        "straps": torch.tensor([d.straps for d in draws], dtype=torch.bool),
        "valve": torch.tensor([d.valve for d in draws], dtype=torch.bool),
        "geometry": torch.tensor([d.geometry for d in draws], dtype=torch.long),
        "lighting": torch.tensor([d.lighting for d in draws], dtype=torch.long),
    }
    for name in COLOUR_KEYS:
        values = [getattr(d, name) for d in draws]
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(n, 3)
    for name in SCALAR_KEYS:
        out[name] = torch.tensor([getattr(d, name) for d in draws], dtype=torch.float64)
    return out


def params_to_draws(
    params: dict[str, torch.Tensor], families: Sequence[str] | None = None
) -> list[MaskParams]:
    """The :class:`maskgen.render.MaskParams` of per-sample tensors (inverse of
    :func:`draws_to_params`)."""
    names = list(GEOMETRY) if families is None else list(families)
    host = {k: params[k].detach().cpu().tolist() for k in (*INDEX_KEYS, *COLOUR_KEYS,
                                                            *SCALAR_KEYS)}  # fmt: skip
    draws = []
    for i in range(len(host["family"])):
        fields = {
            "family": names[int(host["family"][i])],
            "coverage": COVERAGES[int(host["coverage"][i])],
            "texture": app.TEXTURES[int(host["texture"][i])],
            "texture_seed": int(host["texture_seed"][i]),
            "straps": bool(host["straps"][i]),
            "valve": bool(host["valve"][i]),
            "geometry": int(host["geometry"][i]),
            "lighting": int(host["lighting"][i]),
        }
        for name in COLOUR_KEYS:
            fields[name] = tuple(round(float(v)) for v in host[name][i])
        for name in SCALAR_KEYS:
            fields[name] = float(host[name][i])
        draws.append(MaskParams(**fields))
    return draws
