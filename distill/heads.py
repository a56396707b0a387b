"""Margin-based classification heads for face recognition: ArcFace, CosFace and ElasticFace.

Every head owns the class-centre matrix ``weight`` (``num_classes × embedding_size``, normal
init with std 0.01). ``forward(embeddings, labels)`` L2-normalises embeddings and centres,
computes the cosine logits, applies a margin to the *target* logit of every labelled sample
and multiplies everything by the scale ``s``; the result goes to cross-entropy
(:meth:`MarginHead.loss` does it with ``ignore_index=-1``). Rows labelled ``-1`` get no margin
(their logits are exactly ``s·cos``) and contribute no loss.

Margins (per sample ``i`` with target cosine ``cos θ_i`` and margin ``m_i``):

* CosFace family: ``cos θ_i - m_i``.
* ArcFace family: ``cos(θ_i + m_i)``, computed as ``cos θ·cos m - sin θ·sin m`` with the cosine
  clamped to ``[-1 + eps, 1 - eps]`` (finite gradient of ``sin θ``). Where ``θ_i + m_i > π``
  the curve would turn back up and *reward* the hardest samples, so there the usual insightface
  fallback ``cos θ_i - m_i·sin m_i`` is used instead (monotone in ``θ``).
* ``ArcFace`` / ``CosFace``: ``m_i = m`` for every sample.
* ``ElasticArcFace`` / ``ElasticCosFace`` (Boutros et al., 2022): ``m_i ~ N(m, std)``, drawn
  independently per sample at every call from the ``torch.Generator`` passed to ``forward``
  (or the global RNG). With ``std == 0`` no random number is drawn and the head equals its
  plain counterpart exactly.
* ``ElasticArcFacePlus`` / ``ElasticCosFacePlus``: the same draws, sorted and dealt out by
  rank so that the sample with the *smallest* target cosine (the hardest one) receives the
  *largest* margin and the easiest sample the smallest. The public ElasticFace code indexes the
  sorted margins with the cosine sort order (a gather through the permutation instead of a
  scatter), which does not realise this ranking; here ``assigned[order] = sorted_margins``.

After each call ``head.last_margins`` holds the margins applied to that batch (shape ``B``,
detached, ``0`` for ignored rows).

Example:
    >>> import torch
    >>> from distill.heads import create_head
    >>> head = create_head("elasticarcface+", embedding_size=8, num_classes=5)
    >>> emb, labels = torch.randn(4, 8), torch.tensor([0, 3, -1, 4])
    >>> head(emb, labels, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 5])
    >>> head.last_margins.shape, bool(head.last_margins[2] == 0)
    (torch.Size([4]), True)
    >>> bool(head.loss(emb, labels) > 0)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "ArcFace",
    "CosFace",
    "ElasticArcFace",
    "ElasticArcFacePlus",
    "ElasticCosFace",
    "ElasticCosFacePlus",
    "MarginHead",
    "create_head",
    "list_heads",
    "register_head",
]

H = TypeVar("H", bound=type["MarginHead"])

_HEADS: dict[str, type[MarginHead]] = {}


def _normalise_name(name: str) -> str:
    key = name.strip().lower()
    for char in "_- ":
        key = key.replace(char, "")
    if key.endswith("plus"):
        key = key[: -len("plus")] + "+"
    return key


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator registering a :class:`MarginHead` subclass under ``name``."""

    def decorator(cls: H) -> H:
        key = _normalise_name(name)
        if key in _HEADS:
            raise ValueError(f"head {key!r} is already registered")
        _HEADS[key] = cls
        cls.registry_name = key
        return cls

    return decorator


def list_heads() -> list[str]:
    """Return the sorted names of all registered heads."""
    return sorted(_HEADS)


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs: Any) -> MarginHead:
    """Build the head registered as ``name``.

    Names are case-insensitive; ``_``/``-``/spaces are ignored and a trailing ``plus`` means
    ``+`` (``"ElasticArcFace_plus"`` == ``"elasticarcface+"``).

    Args:
        name: one of :func:`list_heads`.
        embedding_size: dimension of the embeddings fed to the head.
        num_classes: number of identities.
        **kwargs: head options (``s``, ``m``, and ``std`` for the elastic heads).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    key = _normalise_name(name)
    if key not in _HEADS:
        raise ValueError(f"unknown head {name!r}; valid names: {', '.join(list_heads())}")
    return _HEADS[key](embedding_size, num_classes, **kwargs)


class MarginHead(nn.Module):
    """Base class: normalised-softmax classifier with a per-sample margin on the target logit.

    Args:
        embedding_size: dimension of the input embeddings.
        num_classes: number of classes (identities).
        s: logit scale.
        m: margin (mean margin for elastic heads).
        std: standard deviation of the elastic margin (0 for fixed-margin heads).
        eps: cosine clamp used by the additive angular (ArcFace) margin.
    """

    #: ``"arc"`` (additive angular margin) or ``"cos"`` (additive cosine margin).
    margin_type: ClassVar[str] = "cos"
    #: rank-assign the drawn margins (hardest sample gets the largest margin).
    rank_margins: ClassVar[bool] = False
    #: whether ``std`` may be set (fixed-margin heads always use 0).
    elastic: ClassVar[bool] = True
    #: the published hyper-parameters: what ``s``, ``m`` and ``std`` default to.
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.35, "std": 0.0}
    registry_name: ClassVar[str] = ""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float | None = None,
        m: float | None = None,
        std: float | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        s = self.defaults["s"] if s is None else s
        m = self.defaults["m"] if m is None else m
        if std is not None and std != 0 and not self.elastic:
            raise ValueError(f"{type(self).__name__} has a fixed margin: std must be 0")
        std = self.defaults["std"] if std is None else std
        if embedding_size <= 0 or num_classes <= 0:
            raise ValueError("embedding_size and num_classes must be positive")
        if std < 0:
            raise ValueError(f"std must be non-negative, got {std}")
        if self.margin_type not in ("arc", "cos"):
            raise ValueError(f"unknown margin_type {self.margin_type!r}")
        self.embedding_size = int(embedding_size)
        self.num_classes = int(num_classes)
        self.s = float(s)
        self.m = float(m)
        self.std = float(std)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.last_margins: Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"s={self.s}, m={self.m}, std={self.std}"
        )

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosine similarity (float32, ``B × num_classes``) between embeddings and centres."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            emb = F.normalize(embeddings.float(), dim=1)
            centres = F.normalize(self.weight.float(), dim=1)
            return F.linear(emb, centres)

    def sample_margins(
        self, target_cos: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Margins for samples whose target cosines are ``target_cos`` (1-D).

        Fixed ``m`` when ``std == 0``; otherwise ``N(m, std)`` draws, rank-assigned inversely
        to ``target_cos`` for the "+" heads.
        """
        n = target_cos.shape[0]
        if self.std == 0.0:
            return torch.full((n,), self.m, dtype=target_cos.dtype, device=target_cos.device)
        draw_device = generator.device if generator is not None else target_cos.device
        noise = torch.randn(n, generator=generator, device=draw_device, dtype=torch.float32)
        margins = (self.m + self.std * noise).to(device=target_cos.device, dtype=target_cos.dtype)
        if self.rank_margins and n > 1:
            ascending_margins = torch.sort(margins).values
            # order[0] is the easiest sample (largest cosine): it takes the smallest margin;
            # order[-1] is the hardest sample (smallest cosine): it takes the largest one.
            order = torch.argsort(target_cos.detach(), descending=True, stable=True)
            margins = torch.empty_like(margins)
            margins[order] = ascending_margins
        return margins

    def apply_margin(self, target_cos: Tensor, margins: Tensor) -> Tensor:
        """Penalised target cosines for per-sample ``margins`` (both 1-D)."""
        if self.margin_type == "cos":
            return target_cos - margins
        cos_t = target_cos.clamp(-1.0 + self.eps, 1.0 - self.eps)
        sin_t = torch.sqrt(1.0 - cos_t * cos_t)
        cos_m, sin_m = torch.cos(margins), torch.sin(margins)
        shifted = cos_t * cos_m - sin_t * sin_m  # cos(θ + m)
        # θ + m ≤ π  ⇔  cos θ ≥ cos(π - m) = -cos m   (for 0 ≤ m ≤ π).
        in_range = (margins <= 0) | (cos_t >= -cos_m)
        return torch.where(in_range, shifted, cos_t - margins * sin_m)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Scaled logits (float32, ``B × num_classes``) with the margin on target logits.

        Args:
            embeddings: ``B × embedding_size`` (any scale; they are L2-normalised here).
            labels: ``B`` integer class indices; ``-1`` marks samples without a label.
            generator: optional RNG for the elastic margin draws.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"expected embeddings of shape (B, {self.embedding_size}), "
                f"got {tuple(embeddings.shape)}"
            )
        labels = labels.reshape(-1).long()
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError("labels must hold one entry per embedding")
        if bool(((labels < -1) | (labels >= self.num_classes)).any()):
            raise ValueError(f"labels must lie in [-1, {self.num_classes})")

        cos = self.cosine(embeddings)
        rows = torch.nonzero(labels != -1).squeeze(1)
        cols = labels[rows]
        target_cos = cos[rows, cols]
        margins = self.sample_margins(target_cos, generator)
        logits = cos.index_put((rows, cols), self.apply_margin(target_cos, margins))

        applied = torch.zeros(labels.shape[0], dtype=margins.dtype, device=margins.device)
        self.last_margins = applied.index_put((rows,), margins.detach())
        return logits * self.s

    def loss(
        self,
        embeddings: Tensor,
        labels: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Mean cross-entropy over labelled samples (0, still differentiable, if none)."""
        logits = self(embeddings, labels, generator=generator)
        labels = labels.reshape(-1).long()
        if not bool((labels != -1).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=-1)


@register_head("arcface")
class ArcFace(MarginHead):
    """ArcFace (additive angular margin): target logit ``s·cos(θ + m)``; s=64, m=0.5."""

    margin_type = "arc"
    elastic = False
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.5, "std": 0.0}


@register_head("cosface")
class CosFace(MarginHead):
    """CosFace (additive cosine margin): target logit ``s·(cos θ - m)``; s=64, m=0.35."""

    margin_type = "cos"
    elastic = False
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.35, "std": 0.0}


@register_head("elasticarcface")
class ElasticArcFace(MarginHead):
    """ElasticFace-Arc: ArcFace with ``m_i ~ N(m, std)`` per sample; s=64, m=0.5, std=0.05."""

    margin_type = "arc"
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.5, "std": 0.05}


@register_head("elasticcosface")
class ElasticCosFace(MarginHead):
    """ElasticFace-Cos: CosFace with ``m_i ~ N(m, std)``; s=64, m=0.35, std=0.05."""

    margin_type = "cos"
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.35, "std": 0.05}


@register_head("elasticarcface+")
class ElasticArcFacePlus(ElasticArcFace):
    """ElasticFace-Arc+: rank-assigned elastic angular margins; s=64, m=0.5, std=0.0175."""

    rank_margins = True
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.5, "std": 0.0175}


@register_head("elasticcosface+")
class ElasticCosFacePlus(ElasticCosFace):
    """ElasticFace-Cos+: rank-assigned elastic cosine margins; s=64, m=0.35, std=0.02."""

    rank_margins = True
    defaults: ClassVar[dict[str, float]] = {"s": 64.0, "m": 0.35, "std": 0.02}
