"""The stage loss :func:`compute_loss` and :class:`Net`, the backbone + head module."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from distill.heads import MarginHead

__all__ = ["Net", "compute_loss"]


class Net(nn.Module):
    """Backbone + margin head, so that DDP synchronises both."""

    def __init__(self, backbone: nn.Module, head: MarginHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, x: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        emb = self.backbone(x)
        return emb, self.head(emb, labels, generator=generator)


def compute_loss(
    net: nn.Module,
    teacher: nn.Module | None,
    student_input: Tensor,
    teacher_input: Tensor,
    labels: Tensor,
    distill_weight: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage loss: ``CE`` (teacher stage) or ``CE + w · MSE`` of normalised templates.

    ``net`` maps ``(x, labels, generator)`` to ``(embeddings, logits)``; ``teacher`` (frozen,
    eval mode) embeds ``teacher_input``, the clean images of the same samples.
    """
    emb, logits = net(student_input, labels, generator)
    ce = F.cross_entropy(logits.float(), labels)
    if teacher is None:
        return ce, {"ce": ce.detach()}
    with torch.no_grad():
        target = teacher(teacher_input)
    mse = F.mse_loss(F.normalize(emb.float(), dim=1), F.normalize(target.float(), dim=1))
    loss = ce + distill_weight * mse
    return loss, {"ce": ce.detach(), "mse": mse.detach()}
