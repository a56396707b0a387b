"""The :class:`Face` record, the :class:`Backend` protocol and the registry of backends.

Backends register a factory under a name with :func:`register_backend`;
:func:`create_backend` builds one by name, :func:`available_backends` lists the names.
A factory takes keyword options only. Every option that some registered factory takes may
be passed to any backend, which ignores the ones it does not use (one configuration serves
every backend, as the render pipeline passes it); an option no factory takes is an error.

Example:
    >>> import numpy as np
    >>> class Blank:
    ...     name = "blank"
    ...     def detect(self, image, key=None):
    ...         return []
    >>> @register_backend("doctest-blank")
    ... def _blank() -> Backend:
    ...     return Blank()
    >>> create_backend("doctest-blank").detect(np.zeros((8, 8, 3), np.uint8))
    []
    >>> _ = unregister_backend("doctest-blank")
    >>> "doctest-blank" in available_backends()
    False
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Face:
    """One face: ``box`` is (x0, y0, x1, y1) in pixels, ``landmarks`` (68, 2) float32.

    ``score`` is the detector's confidence (dlib HOG: the SVM margin; 1.0 when unknown) and
    ``backend`` names what produced the face. Backends that fit landmarks to a known layout
    (``aligned-fit``) say how it went: ``fit`` is ``"fitted"`` or ``"fallback"`` (the
    canonical layout was used instead, ``fit_reason`` says why); empty for the others.

    Example:
        >>> import numpy as np
        >>> Face((0.0, 0.0, 10.0, 20.0), np.zeros((68, 2), np.float32)).box_area
        200.0
    """

    box: Box
    landmarks: np.ndarray
    score: float = 1.0
    backend: str = ""
    fit: str = ""
    fit_reason: str = ""

    @property
    def box_area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def size(self) -> float:
        """Face size in pixels: the shorter side of the box."""
        x0, y0, x1, y1 = self.box
        return max(0.0, min(x1 - x0, y1 - y0))

    def scaled(self, factor: float) -> Face:
        """The same face in an image ``factor`` times larger."""
        box = tuple(float(v) * factor for v in self.box)
        lm = (self.landmarks * np.float32(factor)).astype(np.float32)
        return replace(self, box=box, landmarks=lm)  # type: ignore[arg-type]


class Backend(Protocol):
    """What every landmark backend provides.

    ``detect_many`` is optional: a backend that can find the faces of many images at once
    for less than one by one (``aligned-fit`` fits a batch of crops in one pass) defines
    it, returning what ``detect`` returns for each image; :func:`detect_many` calls it, or
    ``detect`` image by image for the backends without one (this default body).
    """

    name: str

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]: ...

    def detect_many(
        self, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
    ) -> list[list[Face]]:
        keys = [None] * len(images) if keys is None else keys
        return [self.detect(im, key) for im, key in zip(images, keys, strict=True)]


def detect_many(
    backend: Any, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
) -> list[list[Face]]:
    """The faces of each image: the backend's own ``detect_many`` when it has one, else
    ``detect`` image by image (the same faces either way).

    Example:
        >>> import numpy as np
        >>> from maskgen.landmarks import create_backend
        >>> crops = [np.zeros((112, 112, 3), np.uint8)] * 2
        >>> [len(faces) for faces in detect_many(create_backend("aligned"), crops)]
        [1, 1]
    """
    batched = getattr(backend, "detect_many", None)
    if batched is not None:
        return batched(images, keys)
    return Backend.detect_many(backend, images, keys)


def detect_decoded(
    backend: Any, images: Sequence[np.ndarray | Exception], keys: Sequence[str | None]
) -> dict[int, list[Face]]:
    """The faces of the decodable ``images`` (the others are the errors that stopped them),
    by position, from one call of the backend's own ``detect_many``; nothing when it has
    none or when the batch raises, so that each image is then detected on its own and an
    error is that image's failure (the batch jobs of :mod:`maskgen.dataset`)."""
    todo = [i for i, image in enumerate(images) if not isinstance(image, Exception)]
    batched = getattr(backend, "detect_many", None)
    if not todo or batched is None:
        return {}
    try:
        found = batched([images[i] for i in todo], [keys[i] for i in todo])
    except Exception:  # retried image by image by the caller, where an error is attributed
        return {}
    return dict(zip(todo, found, strict=True))


def box_of(landmarks: np.ndarray) -> Box:
    """Bounding box of a landmark set.

    Example:
        >>> import numpy as np
        >>> box_of(np.array([[1, 2], [5, 3]], np.float32))
        (1.0, 2.0, 5.0, 3.0)
    """
    lo, hi = np.min(landmarks, axis=0), np.max(landmarks, axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

#: A backend factory: keyword options in, a :class:`Backend` out.
BackendFactory = Callable[..., Backend]
F = TypeVar("F", bound=BackendFactory)

_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[F], F]:
    """Decorator registering a backend factory under ``name`` (returns it unchanged).

    Raises ``ValueError`` when ``name`` is already taken (:func:`unregister_backend` first).
    """

    def add(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"landmark backend {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def unregister_backend(name: str) -> BackendFactory:
    """Remove the backend ``name`` from the registry; returns its factory."""
    if name not in _REGISTRY:
        raise ValueError(_unknown(name))
    return _REGISTRY.pop(name)


def available_backends() -> list[str]:
    """Names of the registered backends, sorted.

    Example:
        >>> from maskgen.landmarks import available_backends
        >>> available_backends()
        ['aligned', 'aligned-fit', 'auto', 'cache', 'dlib', 'dlib-cnn', 'face_alignment', 'file']
    """
    return sorted(_REGISTRY)


def _unknown(name: str) -> str:
    return f"unknown landmark backend {name!r}; choose from {', '.join(available_backends())}"


def _keyword_options(factory: BackendFactory) -> tuple[set[str], bool]:
    """The option names a factory takes, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(factory).parameters.values()
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def create_backend(name: str = "auto", **options: Any) -> Backend:
    """Build the landmark backend registered as ``name`` (see :func:`available_backends`).

    ``options`` go to the backend's factory; options that only other backends take are
    ignored, options no registered backend takes raise ``TypeError``.

    Example:
        >>> from maskgen.landmarks import create_backend
        >>> create_backend("aligned", upsample=2).name
        'aligned'
        >>> create_backend("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown landmark backend 'nope'; choose from aligned, aligned-fit, auto, ...
    """
    if name.startswith("cache:"):  # a landmark cache names its folder: cache:PATH
        name, options = "cache", {**options, "cache_path": name[len("cache:") :]}
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ValueError(_unknown(name))
    takes, takes_any = _keyword_options(factory)
    if takes_any:
        return factory(**options)
    known = set().union(*(_keyword_options(f)[0] for f in _REGISTRY.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"landmark backend {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"the backends take {', '.join(sorted(known))}"
        )
    return factory(**{k: v for k, v in options.items() if k in takes})
