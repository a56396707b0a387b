"""Per-sample online masking for ``torch.utils.data`` pipelines (CPU, in DataLoader workers).

:class:`MaskFace` masks one image with the full CPU renderer (:func:`maskgen.render.render`:
every family, texture, shading, ear loops and valves) and returns the input's own type.
:class:`MaskedPairs` turns a dataset of ``(image, label[, landmarks])`` into the
``(masked, clean, label, was_masked)`` items of teacher-student training.

Randomness: without an explicit ``rng``/``seed`` each draw takes a 62-bit seed from torch's
global generator, which ``DataLoader`` seeds per worker (``base_seed + worker_id``), so a run
is reproducible after ``torch.manual_seed`` for a fixed number of workers. With
``MaskedPairs(seed=...)`` every item's draw depends only on ``(seed, index, epoch)`` through
the one seeding scheme of :mod:`maskgen.seeding` (key ``str(index)``, variant ``epoch``), and
is identical whatever the number of workers or the order of reading.

Example:
    >>> import numpy as np
    >>> from maskgen.synthetic import SyntheticFaces
    >>> pairs = MaskedPairs(SyntheticFaces(2, 2, seed=0), p=1.0, seed=3)
    >>> masked, clean, label, was_masked = pairs[1]
    >>> masked.shape, label, was_masked, bool((masked != clean).any())
    ((112, 112, 3), 0, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from maskgen.augment.compat import (
    ALBUMENTATIONS_KEYS,
    Structure,
    albumentations_inputs,
    is_keypoints,
    mapping_landmarks,
)
from maskgen.augment.keypoints import semantic_order
from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.seeding import item_rng, sample_item

__all__ = ["MaskFace", "MaskedPairs"]

_NO_SAMPLE: Any = object()  # ``MaskFace(**data)``: albumentations passes keywords only


def _torch_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global generator (DataLoader-worker aware)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL is a torchvision/matplotlib dependency
        return False
    return isinstance(obj, Image.Image)


def _copy(image: Any) -> Any:
    if torch.is_tensor(image):
        return image.clone()
    if isinstance(image, np.ndarray):
        return image.copy()
    if _is_pil(image):
        return image.copy()
    return np.array(image, copy=True)


class MaskFace:
    """Mask one face image: a picklable transform for ``torch.utils.data`` pipelines.

    Accepts an H×W×C ``numpy`` array (uint8/uint16/float in [0, 1]; RGB, gray or RGBA), a PIL
    image, a ``C×H×W`` tensor (float in [0, 1] or uint8) or a dict sample holding the image
    under ``image_key`` (and optionally landmarks under ``landmarks_key``); returns the same
    type. The input is never modified.

    Landmarks, first found wins: the ``landmarks`` call argument, the dict sample's
    ``landmarks_key`` (or its one ``tv_tensors.KeyPoints``), the constructor's ``landmarks``,
    the aligned ArcFace layout scaled to the image (for aligned crops). A set in mirrored
    order (after a flip that kept the indices) is put back in semantic order.

    It composes with the geometric augmentations of other libraries and masks with the
    landmarks *they* moved (:mod:`maskgen.augment.compat`; neither library is imported here):

    - albumentations: ``A.Compose([A.HorizontalFlip(), A.Affine(...), MaskFace(p=1.0)],
      keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))`` called with
      ``image=, keypoints=``; the keypoints come back unchanged.
    - torchvision ``transforms.v2``: ``(tv_tensors.Image, tv_tensors.KeyPoints)`` (two
      arguments, a tuple or a dict) in, the same structure out with the image masked (still a
      ``tv_tensors.Image``).
    - HF ``datasets.with_transform``: a batched dict of lists (``{"image": [...],
      "landmarks": [...]}``) comes back with lists (``"masked"`` a list of bools).

    Args:
        spec: what may be drawn (default ``MaskSpec()``).
        p: probability of masking a sample.
        landmarks: default ``(68, 2)`` / ``(5, 2)`` pixel landmarks.
        return_params: also return the :class:`MaskParams` (``None`` when not masked).
        return_alpha: also return the occlusion map (H×W float32 array; ``1×H×W`` tensor for
            tensor inputs; zeros when not masked).
        on_invalid: ``"raise"`` (default) or ``"skip"`` (return the image unmasked) when the
            landmarks are rejected as implausible.
        image_key, landmarks_key: keys of dict samples.

    Non-dict samples with ``return_params``/``return_alpha`` give a tuple
    ``(image, params[, alpha])`` (``(image, alpha)`` for alpha only). Dict samples come back as
    a new dict with ``"masked"`` (bool) and, when asked, ``"mask_params"`` (JSON text, ``""``
    when not masked, so that ``default_collate`` can batch it) and ``"mask_alpha"``.

    Example:
        >>> import numpy as np, torch
        >>> t = torch.full((3, 112, 112), 0.5)
        >>> out, params = MaskFace(p=1.0, return_params=True)(t, rng=np.random.default_rng(1))
        >>> out.shape, out.dtype, params.family in ("surgical", "wide", "round", "kn95", "n95",
        ...                                         "cloth", "gaiter")
        (torch.Size([3, 112, 112]), torch.float32, True)
    """

    def __init__(
        self,
        spec: MaskSpec | None = None,
        p: float = 0.5,
        landmarks: np.ndarray | None = None,
        *,
        return_params: bool = False,
        return_alpha: bool = False,
        on_invalid: str = "raise",
        image_key: str = "image",
        landmarks_key: str = "landmarks",
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.spec = MaskSpec() if spec is None else spec
        self.p = float(p)
        self.landmarks = None if landmarks is None else np.asarray(landmarks, np.float32)
        self.return_params = return_params
        self.return_alpha = return_alpha
        self.on_invalid = on_invalid
        self.image_key = image_key
        self.landmarks_key = landmarks_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, spec={self.spec!r})"

    # -- albumentations protocol (see :mod:`maskgen.augment.compat`) ------------------------

    @property
    def available_keys(self) -> set[str]:
        """The data keys read in an ``albumentations.Compose`` (``image``, ``keypoints``)."""
        return set(ALBUMENTATIONS_KEYS)

    @property
    def targets_as_params(self) -> list[str]:
        """Data keys albumentations must pass (``image``)."""
        return ["image"]

    def to_dict_private(self) -> dict[str, Any]:
        """The settings as albumentations writes a transform into ``Compose.to_dict()`` and its
        ``repr`` (``A.from_dict`` cannot build it back: it knows only its own classes)."""
        return {
            "__class_fullname__": f"{type(self).__module__}.{type(self).__qualname__}",
            "p": self.p,
            "spec": self.spec.to_dict(),
            "on_invalid": self.on_invalid,
        }

    # -- core ------------------------------------------------------------------------------

    def apply(
        self,
        image: Any,
        landmarks: Any = None,
        rng: np.random.Generator | None = None,
        *,
        p: float | None = None,
    ) -> tuple[Any, MaskParams | None, np.ndarray]:
        """Mask ``image`` (any supported type); returns ``(image, params or None, alpha)``.

        The returned image is always a new object of the input's type (the same tensor subclass,
        e.g. ``tv_tensors.Image``); ``alpha`` is an H×W float32 array. ``p`` overrides the
        masking probability for this call. Landmarks in mirrored order (moved by a flip with
        their indices kept) are put back in semantic order
        (:func:`maskgen.augment.keypoints.semantic_order`).
        """
        rng = _torch_rng() if rng is None else rng
        masked, draws = sample_item(self.spec, rng, p=self.p if p is None else p)
        array, restore = _to_array(image)
        h, w = array.shape[:2]
        if not masked:
            return _copy(image), None, np.zeros((h, w), np.float32)
        params = draws[0]
        lm = landmarks if landmarks is not None else self.landmarks
        lm = aligned_landmarks((h, w)) if lm is None else _landmark_array(lm)
        try:
            result = render(array, lm, params)
        except ValueError:
            if self.on_invalid == "raise":
                raise
            return _copy(image), None, np.zeros((h, w), np.float32)
        return restore(result.image), params, result.alpha

    def __call__(
        self,
        sample: Any = _NO_SAMPLE,
        landmarks: Any = None,
        *,
        rng: np.random.Generator | None = None,
        force_apply: bool = False,
        **data: Any,
    ) -> Any:
        """Mask one sample; see the class docstring for what comes back.

        ``transform(image=..., keypoints=...)`` is albumentations' call (``force_apply``: mask
        whatever ``p`` is); a tuple or list sample, or ``tv_tensors.KeyPoints`` as
        ``landmarks``, is torchvision v2's (the same structure comes back).
        """
        if sample is _NO_SAMPLE:
            image, lm = albumentations_inputs(data)
            image_out, params, alpha = self.apply(image, lm, rng, p=1.0 if force_apply else None)
            return self._mapping_out(data, "image", image_out, params, alpha)
        if data:
            raise TypeError(f"MaskFace got unexpected keyword arguments {sorted(data)}")
        if isinstance(sample, Mapping):
            if isinstance(sample.get(self.image_key), (list, tuple)):
                return self._call_batch(sample, rng)
            lm = (
                landmarks
                if landmarks is not None
                else mapping_landmarks(sample, self.landmarks_key)
            )
            image, params, alpha = self.apply(sample[self.image_key], lm, rng)
            return self._mapping_out(sample, self.image_key, image, params, alpha)
        if isinstance(sample, (tuple, list)) or is_keypoints(landmarks):
            parts = Structure(sample if landmarks is None else (sample, landmarks))
            image, params, alpha = self.apply(parts.image, parts.landmarks, rng)
            out = parts.rebuild(image)
            extras = self._extras(params, alpha, image)
        else:
            out, params, alpha = self.apply(sample, landmarks, rng)
            extras = self._extras(params, alpha, sample)
        return (out, *extras) if extras else out

    def _extras(self, params: MaskParams | None, alpha: np.ndarray, like: Any) -> list[Any]:
        extras: list[Any] = []
        if self.return_params:
            extras.append(params)
        if self.return_alpha:
            extras.append(_alpha_like(alpha, like))
        return extras

    def _mapping_out(
        self, sample: Mapping[str, Any], key: str, image: Any, params: MaskParams | None,
        alpha: np.ndarray,
    ) -> dict[str, Any]:  # fmt: skip
        out = dict(sample)
        out[key] = image
        out["masked"] = params is not None
        if self.return_params:
            out["mask_params"] = "" if params is None else params.to_json()
        if self.return_alpha:
            out["mask_alpha"] = _alpha_like(alpha, image)
        return out

    def _call_batch(
        self, batch: Mapping[str, Any], rng: np.random.Generator | None
    ) -> dict[str, Any]:
        """A batched dict of lists (HF ``datasets.with_transform``): every field a list of the
        batch's values; ``masked``, ``mask_params``, ``mask_alpha`` come back as lists too."""
        images = list(batch[self.image_key])
        marks = batch.get(self.landmarks_key)
        marks = [None] * len(images) if marks is None else list(marks)
        if len(marks) != len(images):
            raise ValueError(
                f"MaskFace: {len(marks)} '{self.landmarks_key}' for {len(images)} images in a batch"
            )
        items = [self.apply(im, None if lm is None else np.asarray(lm, np.float32), rng)
                 for im, lm in zip(images, marks, strict=True)]  # fmt: skip
        out = dict(batch)
        out[self.image_key] = [image for image, _, _ in items]
        out["masked"] = [params is not None for _, params, _ in items]
        if self.return_params:
            out["mask_params"] = ["" if p is None else p.to_json() for _, p, _ in items]
        if self.return_alpha:
            out["mask_alpha"] = [_alpha_like(a, im) for im, _, a in items]
        return out


def _landmark_array(landmarks: Any) -> np.ndarray:
    """Host float32 landmarks in semantic order (tensors, ``KeyPoints`` and lists accepted)."""
    if torch.is_tensor(landmarks):
        landmarks = landmarks.detach().cpu().as_subclass(torch.Tensor).numpy()
    lm = np.asarray(landmarks, np.float32)
    if lm.ndim == 3 and lm.shape[0] == 1:  # one face of a (1, K, 2) KeyPoints
        lm = lm[0]
    if lm.ndim == 2 and lm.shape in ((68, 2), (5, 2)):
        lm = semantic_order(lm)
    return lm


def _alpha_like(alpha: np.ndarray, like: Any) -> Any:
    if torch.is_tensor(like):
        return torch.from_numpy(alpha)[None].to(like.device)
    return alpha


def _to_array(image: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """View ``image`` as an H×W[×C] array for :func:`render`, and how to convert back."""
    if torch.is_tensor(image):
        t = image.detach()
        if t.ndim != 3:
            raise ValueError(f"tensor images must be C×H×W, got shape {tuple(t.shape)}")
        dtype, device = t.dtype, t.device
        if t.is_floating_point() and dtype != torch.float64:
            t = t.float()
        arr = t.cpu().permute(1, 2, 0).numpy()
        arr = arr[..., 0] if arr.shape[2] == 1 else arr

        kind = type(image)

        def back_tensor(out: np.ndarray) -> torch.Tensor:
            out = out[..., None] if out.ndim == 2 else out
            res = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
            res = res.to(device=device, dtype=dtype)
            # A tensor subclass without metadata (torchvision's tv_tensors.Image) comes back as
            # itself, so that later v2 transforms still see an image.
            return res if kind is torch.Tensor else res.as_subclass(kind)

        return np.ascontiguousarray(arr), back_tensor
    if _is_pil(image):
        from PIL import Image

        mode = image.mode
        if mode not in ("RGB", "L", "RGBA"):
            image, mode = image.convert("RGB"), "RGB"
        return np.asarray(image), lambda out: Image.fromarray(out, mode=mode)
    if isinstance(image, np.ndarray):
        return image, lambda out: out
    raise TypeError(f"unsupported image type {type(image).__name__}")


class MaskedPairs(torch.utils.data.Dataset):
    """Teacher-student items ``(masked, clean, label, was_masked)`` from any map-style dataset.

    The wrapped dataset yields ``(image, label)`` or ``(image, label, landmarks)`` (e.g.
    :class:`maskgen.synthetic.SyntheticFaces`); images are numpy arrays, PIL images or ``C×H×W``
    tensors. ``clean`` is a copy of the dataset's image that masking never touches (the
    teacher must see the clean face); ``masked`` is a separate object, masked with probability
    ``p`` (a plain copy otherwise).

    Args:
        dataset: map-style dataset.
        spec: what may be drawn (default ``MaskSpec()``).
        p: probability of masking.
        seed: if given, item ``i`` in epoch ``e`` is output (key ``str(i)``, variant ``e``) of
            :mod:`maskgen.seeding` (independent of workers and order; call :meth:`set_epoch`
            per epoch, before iterating: the epoch lives in shared memory, so persistent
            workers see it too). ``None``: seeds from torch's global generator (DataLoader worker
            seeding).
        landmarks: default landmarks for items without their own (else the aligned layout).
        transform: applied to both images after masking (e.g. a tensor conversion).
        on_invalid: as in :class:`MaskFace`.
    """

    def __init__(
        self,
        dataset: Any,
        spec: MaskSpec | None = None,
        p: float = 0.5,
        *,
        seed: int | None = None,
        landmarks: np.ndarray | None = None,
        transform: Callable[[Any], Any] | None = None,
        on_invalid: str = "raise",
    ) -> None:
        self.dataset = dataset
        self.masker = MaskFace(spec, p=p, landmarks=landmarks, on_invalid=on_invalid)
        self.seed = seed
        # In shared memory, so that DataLoader workers started earlier (persistent_workers=True)
        # read the epoch set in the main process; torch passes it to spawned workers by handle.
        self._epoch = torch.zeros((), dtype=torch.int64)
        if seed is not None:
            self._epoch.share_memory_()
        self.transform = transform

    @property
    def epoch(self) -> int:
        """The variant of this epoch's draws (shared with the DataLoader workers)."""
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(int(value))

    def set_epoch(self, epoch: int) -> None:
        """Change the draws of a seeded dataset from one epoch to the next; workers that are
        already running (``persistent_workers=True``) see it from their next item on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, index: int) -> MaskParams | None:
        """The draw item ``index`` gets this epoch (``None``: left clean); seeded datasets only.

        Example:
            >>> import numpy as np
            >>> pairs = MaskedPairs([(np.zeros((112, 112, 3), np.uint8), 0)], p=1.0, seed=1)
            >>> pairs.draw(0) == pairs.draw(0) != None
            True
        """
        if self.seed is None:
            raise ValueError("only a seeded MaskedPairs has fixed draws (pass seed=...)")
        rng = item_rng(self.seed, str(int(index)), self.epoch)
        masked, params = sample_item(self.masker.spec, rng, p=self.masker.p)
        return params[0] if masked else None

    def __getitem__(self, index: int) -> tuple[Any, Any, Any, bool]:
        item = self.dataset[index]
        image, label = item[0], item[1]
        lm = item[2] if len(item) > 2 else None
        clean = _copy(image)
        rng = None
        if self.seed is not None:
            rng = item_rng(self.seed, str(int(index)), self.epoch)
        masked, params, _ = self.masker.apply(clean, lm, rng)
        if self.transform is not None:
            masked, clean = self.transform(masked), self.transform(clean)
        return masked, clean, label, params is not None
