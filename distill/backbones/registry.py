"""A small timm-style registry of face-recognition backbones.

Backbone factories are plain functions registered under a name. Every factory takes the
embedding size as its first keyword argument plus optional architecture-specific keyword
arguments, and returns an :class:`torch.nn.Module` mapping ``B×3×112×112`` images normalised to
``[-1, 1]`` to ``B×embedding_size`` embeddings.

Example:
    >>> import torch
    >>> from distill.backbones import create_backbone, list_backbones
    >>> "iresnet50" in list_backbones()
    True
    >>> model = create_backbone("tiny", embedding_size=64).eval()
    >>> model(torch.zeros(1, 3, 112, 112)).shape
    torch.Size([1, 64])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_backbone", "list_backbones", "register_backbone"]

BackboneFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=BackboneFactory)

_REGISTRY: dict[str, BackboneFactory] = {}


def _normalise(name: str) -> str:
    return name.strip().lower()


def register_backbone(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a backbone factory (usable as ``@register_backbone`` or with ``name=``).

    The registry name defaults to the function's ``__name__``. Registering the same name twice
    raises :class:`ValueError` so that two modules cannot silently shadow each other.

    Example:
        >>> from torch import nn
        >>> @register_backbone(name="_doctest_identity")
        ... def _identity(embedding_size: int = 512, **kwargs) -> nn.Module:
        ...     return nn.Identity()
        >>> "_doctest_identity" in list_backbones()
        True
        >>> _ = _REGISTRY.pop("_doctest_identity")
    """

    def decorator(factory: F) -> F:
        key = _normalise(name or factory.__name__)
        if key in _REGISTRY:
            raise ValueError(f"backbone {key!r} is already registered")
        _REGISTRY[key] = factory
        return factory

    if fn is not None:
        return decorator(fn)
    return decorator


def list_backbones() -> list[str]:
    """Return the sorted names of all registered backbones."""
    return sorted(_REGISTRY)


def create_backbone(name: str, embedding_size: int = 512, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` (case-insensitive).

    Args:
        name: registry name, e.g. ``"iresnet50"``, ``"mobilefacenet"`` or ``"tiny"``.
        embedding_size: dimension of the output embedding.
        **kwargs: architecture-specific options forwarded to the factory (e.g. ``dropout``).

    Raises:
        ValueError: if ``name`` is not registered (the message lists the valid names) or
            ``embedding_size`` is not positive.
    """
    key = _normalise(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")
    if int(embedding_size) <= 0:
        raise ValueError(f"embedding_size must be positive, got {embedding_size}")
    return _REGISTRY[key](embedding_size=int(embedding_size), **kwargs)
