"""How :class:`maskgen.augment.MaskFace` speaks the call conventions of albumentations and
torchvision's ``transforms.v2``, without importing either.

- albumentations (``A.Compose([...], keypoint_params=A.KeypointParams(format="xy"))``) calls
  every transform as ``t(**data)`` (``t(force_apply=True, **data)`` inside ``OneOf``) and reads
  ``available_keys`` / ``targets_as_params``; the keypoints arrive in its internal layout,
  one row per point with ``x, y`` first (:func:`albumentations_inputs`). ``MaskFace`` masks
  ``data["image"]`` with those points and returns the data with everything else, keypoints
  included, as it was.
- torchvision v2 passes whatever structure it was given (a tuple, a dict, ``(image,
  keypoints)`` as two arguments) and expects the same structure back. :class:`Structure`
  finds the image (a ``tv_tensors.Image``, else the first plain image-like leaf) and the
  ``tv_tensors.KeyPoints`` in it; ``MaskFace`` returns the structure with the image masked
  (the same tensor subclass as it came in).

Landmarks coming through either pipeline have been moved with the image; a flip leaves them
in mirrored order, which :func:`maskgen.augment.keypoints.semantic_order` undoes (it runs on
every landmark set :class:`~maskgen.augment.MaskFace` gets).

Example:
    >>> import numpy as np
    >>> from maskgen.augment import MaskFace
    >>> from maskgen.landmarks import aligned_landmarks
    >>> out = MaskFace(p=1.0)(image=np.full((112, 112, 3), 128, np.uint8),
    ...                       keypoints=aligned_landmarks(), rng=np.random.default_rng(0))
    >>> sorted(out), out["image"].shape
    (['image', 'keypoints', 'masked'], (112, 112, 3))
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "ALBUMENTATIONS_KEYS",
    "Structure",
    "albumentations_inputs",
    "find_keypoints",
    "is_keypoints",
    "keypoints_to_landmarks",
    "mapping_landmarks",
]

#: The data keys :class:`MaskFace` reads in an albumentations pipeline.
ALBUMENTATIONS_KEYS = frozenset({"image", "keypoints"})


def _tv_class(name: str) -> type | None:
    """``torchvision.tv_tensors.<name>`` if torchvision is already imported (an object of that
    class cannot exist otherwise), else ``None``."""
    tv_tensors = getattr(sys.modules.get("torchvision"), "tv_tensors", None)
    return getattr(tv_tensors, name, None)


def is_keypoints(obj: Any) -> bool:
    """Whether ``obj`` is a ``torchvision.tv_tensors.KeyPoints``."""
    cls = _tv_class("KeyPoints")
    return cls is not None and isinstance(obj, cls)


def keypoints_to_landmarks(points: Any, source: str = "keypoints") -> np.ndarray:
    """One face's ``(68|5, 2)`` float32 landmarks from a ``KeyPoints`` / tensor / array of
    ``(K, 2)``, ``(1, K, 2)`` or albumentations' ``(K, 2+)`` rows."""
    if torch.is_tensor(points):
        points = points.detach().cpu().as_subclass(torch.Tensor).numpy()
    arr = np.asarray(points, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and arr.shape[1] > 2:  # albumentations' internal rows: x, y, then angle, ...
        arr = arr[:, :2]
    if arr.ndim != 2 or arr.shape not in ((68, 2), (5, 2)):
        raise ValueError(
            f"MaskFace: {source} of shape {tuple(np.shape(points))} are not one face's 68 or 5 "
            "landmarks (with albumentations, use KeypointParams(remove_invisible=False) so that "
            "none is dropped)"
        )
    return np.ascontiguousarray(arr)


def albumentations_inputs(data: Mapping[str, Any]) -> tuple[Any, np.ndarray | None]:
    """The image and landmarks of an albumentations call ``t(**data)``: ``data["image"]`` and
    ``data["keypoints"]`` (``None`` when the pipeline has no keypoints)."""
    if "image" not in data:
        given = ", ".join(sorted(data)) or "nothing"
        raise KeyError(f"MaskFace needs the data key 'image' (albumentations call), got {given}")
    points = data.get("keypoints")
    return data["image"], None if points is None else keypoints_to_landmarks(points)


def _is_image_leaf(obj: Any) -> bool:
    image_cls = _tv_class("Image")
    if image_cls is not None and isinstance(obj, image_cls):
        return True
    tv_tensor = _tv_class("TVTensor")
    if torch.is_tensor(obj):  # a plain tensor, not boxes / masks / keypoints
        return obj.ndim == 3 and not (tv_tensor is not None and isinstance(obj, tv_tensor))
    if isinstance(obj, np.ndarray):
        return obj.ndim == 3 or (obj.ndim == 2 and obj.shape not in ((68, 2), (5, 2)))
    return type(obj).__module__.startswith("PIL.")


def find_keypoints(leaves: list[Any]) -> Any:
    """The one ``tv_tensors.KeyPoints`` among ``leaves`` (``None`` if there is none)."""
    found = [leaf for leaf in leaves if is_keypoints(leaf)]
    if len(found) > 1:
        raise ValueError(f"MaskFace: {len(found)} KeyPoints in one sample; expected one")
    return found[0] if found else None


class Structure:
    """A torchvision-style sample taken apart: its leaves, the image's place among them and the
    landmarks of its ``KeyPoints`` (``None`` if it has none); :meth:`rebuild` puts it back
    together around a new image."""

    def __init__(self, inputs: Any) -> None:
        self.leaves, self.spec = tree_flatten(inputs)
        image_cls = _tv_class("Image")
        marked = [i for i, leaf in enumerate(self.leaves)
                  if image_cls is not None and isinstance(leaf, image_cls)]  # fmt: skip
        candidates = marked or [i for i, leaf in enumerate(self.leaves) if _is_image_leaf(leaf)]
        if not candidates:
            kinds = ", ".join(sorted({type(leaf).__name__ for leaf in self.leaves}))
            raise TypeError(f"MaskFace: no image in the sample (found {kinds or 'nothing'})")
        self.index = candidates[0]
        points = find_keypoints(self.leaves)
        self.landmarks = None if points is None else keypoints_to_landmarks(points, "KeyPoints")

    @property
    def image(self) -> Any:
        return self.leaves[self.index]

    def rebuild(self, image: Any) -> Any:
        leaves = list(self.leaves)
        leaves[self.index] = image
        return tree_unflatten(leaves, self.spec)


def mapping_landmarks(sample: Mapping[str, Any], key: str) -> Any:
    """A dict sample's landmarks: ``sample[key]``, else its one ``KeyPoints`` value."""
    if sample.get(key) is not None:
        return sample[key]
    return find_keypoints(list(sample.values()))
