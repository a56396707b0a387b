"""Masking on the training device: :class:`DeviceMasker` (``masking.mode = device``) and the
mask specification of a config (:func:`mask_spec`)."""

from __future__ import annotations

import torch
from torch import Tensor

from distill.config import MaskingConfig
from maskgen.render import MaskSpec

__all__ = ["DeviceMasker", "mask_spec"]


def mask_spec(masking: MaskingConfig) -> MaskSpec:
    """``masking.spec`` as a :class:`~maskgen.render.MaskSpec` (the default one when empty)."""
    return MaskSpec.from_dict(masking.spec) if masking.spec else MaskSpec()


class DeviceMasker:
    """``masking.mode = device``: :class:`maskgen.augment.RandomFaceMask` on the batch.

    Item ``i`` of epoch ``e`` gets the draw (``masking.seed``, key ``str(i)``, variant ``e``)
    of :mod:`maskgen.seeding`: the draw ``masking.mode = workers`` gives it
    (:class:`maskgen.augment.MaskedPairs`), independent of the batch it lands in, the number
    of processes and the training RNG. Only the order of flip and masking differs: on the
    device the mask is drawn on the flipped face.
    """

    def __init__(self, spec: MaskSpec, p: float, seed: int) -> None:
        from maskgen.augment import RandomFaceMask

        self.aug = RandomFaceMask(spec, p=p, seed=seed)

    def __call__(
        self, images01: Tensor, landmarks: Tensor, indices: list[int], epoch: int
    ) -> tuple[Tensor, Tensor]:
        """Masked copy of ``images01`` (B×3×H×W in [0, 1]) and the per-sample masked flags."""
        self.aug.set_epoch(epoch)
        with torch.no_grad():
            masked, alpha = self.aug(images01, landmarks=landmarks, keys=indices,
                                     return_alpha=True)  # fmt: skip
        return masked, (alpha.flatten(1) > 0).any(dim=1)
