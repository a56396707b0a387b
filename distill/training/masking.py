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
