"""The tiny distill configuration the training tests share: 8 identities × 6 images, batch 16
(3 steps per epoch), a very small ``tiny`` net, one thread; each test adds its own
overrides (later ones win)."""

from __future__ import annotations

from pathlib import Path

from distill.config import Config, apply_overrides

#: ``model.kwargs`` of the very small net.
TINY = "{widths: [8, 8, 16, 16], blocks: [0, 0, 0, 0]}"
#: The shared overrides (also usable as ``--set`` arguments).
TINY_SETS: tuple[str, ...] = (
    "data.num_identities=8",
    "data.images_per_identity=6",
    "data.num_workers=0",
    "model.embedding_size=16",
    f"model.kwargs={TINY}",
    "train.batch_size=16",
    "optim.base_batch_size=16",
    "teacher.epochs=2",
    "student.epochs=2",
    "train.log_every=1",
    "train.threads=1",
)


def tiny_cfg(out: Path, *extra: str) -> Config:
    """The tiny configuration writing to ``out``, with ``extra`` overrides applied last."""
    return apply_overrides(Config(), [f"train.output={out}", *TINY_SETS, *extra])
