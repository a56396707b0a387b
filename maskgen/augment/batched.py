"""The batched kornia augmentation :class:`RandomFaceMask`: masks a whole batch on its device.

It has no sampler and no geometry of its own. Draws come from the spec's
:meth:`maskgen.render.MaskSpec.sample` under the one seeding scheme (:mod:`maskgen.seeding`,
through :func:`maskgen.augment.draws.sample_batch`); outlines are the CPU renderer's
(:func:`maskgen.render.mask_geometry`, packed by
:func:`maskgen.augment.functional.batch_geometry`: every family, coverage, ear loops, valves
and seams, a family registered at any time included); the functional core
(:mod:`maskgen.augment.functional`) rasterises and paints them on the batch's device.

What differs from the CPU renderer, and why: coverage is the exact area of each outline moved
out by :data:`maskgen.augment.functional.AA_OFFSET` (OpenCV's anti-aliased fill grows the
shape by about that much), and details are polygons rather than OpenCV's anti-aliased lines
and circles; the parity tests bound the difference (IoU and mean colour per draw, over the
live registries). Outlines are built on the host (a few dictionary look-ups per sample on an
aligned batch, ~30 µs per new in-the-wild landmark set): the landmarks travel to the host once
per batch.

Example:
    >>> import torch
    >>> aug = RandomFaceMask(p=1.0)
    >>> x = torch.rand(2, 3, 112, 112)
    >>> out = aug(x)
    >>> out.shape, aug.last_alpha.shape, bool(aug.last_alpha.amax() > 0.99)
    (torch.Size([2, 3, 112, 112]), torch.Size([2, 1, 112, 112]), True)
    >>> torch.equal(aug(x, params=aug._params), out)
    True
"""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from kornia.augmentation import IntensityAugmentationBase2D

from maskgen import appearance as app
from maskgen.augment.draws import (
    COLOUR_KEYS,
    INDEX_KEYS,
    SCALAR_KEYS,
    draws_to_params,
    params_to_draws,
    sample_batch,
)
from maskgen.augment.functional import (
    BatchGeometry,
    apply_look,
    batch_geometry,
    mask_batch,
    match_look_colours,
    measure_looks,
)
from maskgen.augment.keypoints import semantic_order
from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskParams, MaskSpec, paint_face
from maskgen.shapes import GEOMETRY

__all__ = ["RandomFaceMask"]

_PARAM_KEYS = (*INDEX_KEYS, *COLOUR_KEYS, *SCALAR_KEYS)
_UNMASKED = MaskParams()  # stands in for the draw of a sample that is not masked


class _Pending(NamedTuple):
    """An image call inside ``AugmentationSequential`` whose keypoints come next."""

    params: dict[str, torch.Tensor]  # the container's params of this call (matched by identity)
    input: torch.Tensor
    output: torch.Tensor  # what the image call returned; masked in place with the keypoints
    deferred: bool  # the image call did not render (keypoints were expected)


def _host_geometry(
    landmarks: torch.Tensor | None, params: dict[str, torch.Tensor], shape: tuple[int, int, int],
    device: torch.device,
) -> BatchGeometry:  # fmt: skip
    """Outlines of the batch, built on the host (NumPy and numba)."""
    n, H, W = shape
    if landmarks is None:
        landmarks = torch.from_numpy(aligned_landmarks((H, W)))[None].expand(n, -1, -1)
    return batch_geometry(landmarks, params_to_draws(params), H, W, device)


def _template_rows(params: dict[str, torch.Tensor]) -> list[int]:
    """Samples whose family is an image template (painted by the CPU renderer)."""
    names = list(GEOMETRY)
    return [i for i, f in enumerate(params["family"].tolist()) if GEOMETRY[names[f]].template]


def _paint_templates_on_cpu(
    images: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor, rows: list[int],
    params: dict[str, torch.Tensor], landmarks: torch.Tensor | None,
) -> None:  # fmt: skip
    """Image-template samples, drawn by :func:`maskgen.render.paint_face` on a host copy of
    each image and written back into ``out`` and ``alpha`` (not differentiable)."""
    H, W = images.shape[2:]
    for i in rows:
        draw = params_to_draws({k: v[i : i + 1] for k, v in params.items()})[0]
        lm = aligned_landmarks((H, W)) if landmarks is None else landmarks[i].cpu().numpy()
        frame = images[i].detach().permute(1, 2, 0).to("cpu", torch.float32).numpy().copy()
        box, cover = paint_face(frame, lm, draw)
        out[i] = torch.from_numpy(frame).permute(2, 0, 1).to(out)
        alpha[i].zero_()
        if box is not None:
            x0, y0, x1, y1 = box
            # A copy: the renderer's cached occlusion map is read-only.
            alpha[i, 0, y0:y1, x0:x1] = torch.tensor(cover, dtype=alpha.dtype, device=alpha.device)


#: The live modules by key: the compiled container path reaches its module through an int.
_MODULES: weakref.WeakValueDictionary[int, RandomFaceMask] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


@torch.library.custom_op("maskgen::random_face_mask", mutates_args=())
def _mask_op(
    input: torch.Tensor, names: str, values: list[torch.Tensor], landmarks: torch.Tensor | None,
    module: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One :meth:`RandomFaceMask._masked` call as an operator TorchDynamo does not trace into:
    the draws' host work runs when the graph runs, inside the graph."""
    params = dict(zip(names.split(","), values, strict=True)) if names else {}
    out, alpha = _MODULES[module]._masked(input, params, landmarks, None, {})
    return (out.clone() if out is input else out), alpha


@_mask_op.register_fake
def _mask_op_shapes(
    input: torch.Tensor, names: str, values: list[torch.Tensor], landmarks: torch.Tensor | None,
    module: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """What :func:`_mask_op` returns, for tracing: the batch and its ``B×1×H×W`` maps."""
    batch = 1 if input.ndim < 4 else input.shape[0]
    return torch.empty_like(input), input.new_empty(batch, 1, *input.shape[-2:],
                                                    dtype=torch.float32)  # fmt: skip


class RandomFaceMask(IntensityAugmentationBase2D):
    """Draw synthetic face masks on a ``B×3×H×W`` float batch, on the batch's own device.

    Every family, coverage, palette, texture, shading, soft edge, ear loop and valve of
    :func:`maskgen.render.render`, drawn from a :class:`maskgen.render.MaskSpec` exactly as
    the CPU paths draw them.

    Args:
        spec: what may be drawn (default ``MaskSpec()``).
        p: per-sample probability of masking (the draw's first uniform, as in
            :class:`maskgen.augment.MaskFace`).
        seed: run seed of the draws. Sample ``i`` of a call is output (key, variant) =
            (``keys[i]``, epoch) of :mod:`maskgen.seeding`; without ``keys`` the keys are a
            running sample count. ``None``: each call takes a seed from torch's global
            generator and keys ``0 … B-1`` (reproducible after ``torch.manual_seed``).
        landmarks: default landmarks, ``(68, 2)``/``(5, 2)`` or per sample ``(B, K, 2)``;
            ``None`` means the aligned ArcFace layout scaled to the image. Inside
            :class:`kornia.augmentation.AugmentationSequential` (which passes no extra
            arguments) set ``aug.landmarks = ...`` before each call.
        same_on_batch: one draw for the whole batch.
        keepdim: keep a ``C×H×W`` input's shape.
        p_batch: probability of masking the batch at all.
        subsamples: scanlines per pixel row of the rasteriser.

    Per call, ``forward(x, params=None, landmarks=None, return_alpha=False, keys=None)``:
    ``landmarks`` overrides the default, ``keys`` names the samples (e.g. dataset indices);
    the draw (landmarks included) is kept in ``_params`` and replays with
    ``aug(x, params=aug._params)``; the occlusion maps of the last call are ``last_alpha``
    (``B×1×H×W``, zero for samples that were not masked) and come back as ``(out, alpha)``
    with ``return_alpha=True``. The input is never modified and gradients flow to it.

    Example:
        >>> import torch
        >>> from maskgen.augment import MaskedPairs
        >>> from maskgen.landmarks import aligned_landmarks
        >>> aug = RandomFaceMask(p=1.0, seed=3)
        >>> lm = torch.tensor(aligned_landmarks())[None].repeat(2, 1, 1)
        >>> out, alpha = aug(torch.rand(2, 3, 112, 112), landmarks=lm, return_alpha=True,
        ...                  keys=[5, 9])
        >>> pairs = MaskedPairs([(np.zeros((112, 112, 3), np.uint8), 0)] * 10, p=1.0, seed=3)
        >>> aug.to_mask_params(aug._params)[1] == pairs.draw(9)
        True
    """

    def __init__(
        self,
        spec: MaskSpec | None = None,
        p: float = 0.5,
        *,
        seed: int | None = None,
        landmarks: Any = None,
        same_on_batch: bool = False,
        keepdim: bool = False,
        p_batch: float = 1.0,
        subsamples: int = 4,
    ) -> None:
        super().__init__(p=p, p_batch=p_batch, same_on_batch=same_on_batch, keepdim=keepdim)
        self.spec = MaskSpec() if spec is None else spec
        self.seed = None if seed is None else int(seed)
        self.epoch = 0
        self.subsamples = int(subsamples)
        self.landmarks = landmarks
        self.last_alpha: torch.Tensor | None = None
        self._alpha: torch.Tensor | None = None
        self._keys: list[str] | None = None
        self._count = 0
        self._pending: _Pending | None = None
        self._keypoints_follow = False  # learnt: the container passes keypoints after images
        self._tile_keys: list[tuple[int, int]] = []
        self.register_buffer("tiles", torch.zeros(0, 2, app.TILE, app.TILE), persistent=False)
        self._bank = torch.zeros(64, 2, app.TILE, app.TILE)
        self._register()

    def _register(self) -> None:
        self._op_key = next(_KEYS)
        _MODULES[self._op_key] = self

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._register()  # a copy (deepcopy, pickle) is a module of its own

    def set_epoch(self, epoch: int) -> None:
        """The variant of every draw from now on (as :meth:`MaskedPairs.set_epoch`)."""
        self.epoch = int(epoch)

    # -- texture bank -----------------------------------------------------------------------

    def _add_tiles(self, keys: Sequence[tuple[int, int]]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._tile_keys]
        if not new:
            return
        arr = np.stack([app.texture_tile(app.TEXTURES[k], s) for k, s in new]).transpose(0, 3, 1, 2)
        add = torch.as_tensor(np.ascontiguousarray(arr), device=self.tiles.device)
        # The bank grows in doubling steps: appending a few tiles must not copy all of it.
        if self._bank.device != self.tiles.device:  # the module was moved
            self._bank = self._bank.to(self.tiles.device)
        used, need = len(self._tile_keys), len(self._tile_keys) + len(new)
        if need > self._bank.shape[0]:
            bank = self._bank.new_zeros(max(need, 2 * self._bank.shape[0]), *self._bank.shape[1:])
            bank[:used] = self._bank[:used]
            self._bank = bank
        self._bank[used:need] = add.to(self._bank.dtype)
        self._tile_keys += new
        self.tiles = self._bank[:need]

    def _tile_index(self, texture: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        """Bank rows of (texture, seed) pairs; tiles are generated the first time one is drawn."""
        wanted = set(zip(texture.tolist(), seed.tolist(), strict=True))
        self._add_tiles(sorted((k, s) for k, s in wanted if k > 0))
        row = {key: i for i, key in enumerate(self._tile_keys)}
        rows = [row.get((k, s), 0) for k, s in zip(texture.tolist(), seed.tolist(), strict=True)]
        return torch.tensor(rows, dtype=torch.long, device=texture.device)

    # -- parameters ------------------------------------------------------------------------

    @torch.compiler.disable
    def forward_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Draw the batch: one :meth:`MaskSpec.sample` per sample (see ``seed``; host work,
        outside ``torch.compile``)."""
        B = int(batch_shape[0])
        if self.seed is None:
            seed, keys = int(torch.randint(0, 2**62, (1,)).item()), [str(i) for i in range(B)]
        else:
            seed, keys = self.seed, self._keys
            if keys is None:
                keys = [str(self._count + i) for i in range(B)]
                self._count += B
        if len(keys) != B:
            raise ValueError(f"{len(keys)} keys for a batch of {B}")
        items = sample_batch(self.spec, seed, keys[:1] if self.same_on_batch else keys, self.epoch,
                             p=self.p)  # fmt: skip
        if self.same_on_batch:
            items = items * B
        masked = [item.masked for item in items]
        if self.p_batch < 1.0 and float(torch.rand(1)) >= self.p_batch:
            masked = [False] * B
        params = draws_to_params([it.params[0] if it.masked else _UNMASKED for it in items])
        params["batch_prob"] = torch.tensor(masked, dtype=torch.float32)
        params["forward_input_shape"] = torch.tensor(batch_shape, dtype=torch.long)
        if self.landmarks is not None:
            params["landmarks"] = self._batch_landmarks(self.landmarks, B)
        return params

    @staticmethod
    def _batch_landmarks(landmarks: Any, batch: int) -> torch.Tensor:
        lm = landmarks if torch.is_tensor(landmarks) else torch.tensor(np.asarray(landmarks))
        lm = lm.to(torch.float32)
        if lm.ndim == 2:
            lm = lm[None].expand(batch, -1, -1)
        if lm.ndim != 3 or lm.shape[1:] not in ((68, 2), (5, 2)):
            raise ValueError(f"landmarks must be (68|5, 2) or (B, 68|5, 2), got {tuple(lm.shape)}")
        if lm.shape[0] != batch:
            raise ValueError(f"{lm.shape[0]} landmark sets for a batch of {batch}")
        return semantic_order(lm)

    def params_from_mask_params(
        self, draws: Sequence[MaskParams], landmarks: Any = None
    ) -> dict[str, torch.Tensor]:
        """Params dict (for ``aug(x, params=...)``) that replays CPU :class:`MaskParams` draws."""
        out = draws_to_params(draws)
        out["batch_prob"] = torch.ones(len(draws))
        if landmarks is not None:
            out["landmarks"] = self._batch_landmarks(landmarks, len(draws))
        return out

    def to_mask_params(self, params: dict[str, torch.Tensor]) -> list[MaskParams]:
        """The draws of ``params`` as :class:`MaskParams` (JSON-serialisable, replayable with
        :func:`maskgen.render.render`); samples that were not masked included."""
        return params_to_draws(params)

    # -- kornia hooks ----------------------------------------------------------------------

    def _take(self, value: torch.Tensor, n: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bring a parameter to the ``n`` samples being transformed, by its own length."""
        if value.shape[0] == n:
            return value
        if value.shape[0] == 1:
            return value.expand(n, *value.shape[1:])
        gate = params.get("batch_prob")
        if gate is not None and gate.shape[0] == value.shape[0]:
            picked = value[(gate > 0.5).to(value.device)]
            if picked.shape[0] == n:
                return picked
        raise ValueError(f"parameter of length {value.shape[0]} for {n} samples")

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n, _, H, W = input.shape
        if n == 0:
            self._alpha = input.new_zeros(0, 1, H, W, dtype=torch.float32)
            return input
        p = {k: self._take(params[k], n, params) for k in _PARAM_KEYS}
        lm = params.get("landmarks")
        lm = None if lm is None else self._take(lm, n, params)
        # kornia >= 0.9 hands over the whole batch when p < 1 and keeps the input where the gate
        # is off: draw only the gated samples.
        gate = params.get("batch_prob")
        rows: torch.Tensor | None = None
        if gate is not None and gate.shape[0] == n and not (self.p == 1.0 and self.p_batch == 1.0):
            rows = torch.nonzero(torch.atleast_1d(gate).to(input.device) > 0.5).flatten()
            if rows.shape[0] == n:
                rows = None
            elif rows.shape[0] == 0:
                self._alpha = input.new_zeros(n, 1, H, W, dtype=torch.float32)
                return input
            else:
                p = {k: v[rows.to(v.device)] for k, v in p.items()}
                lm = None if lm is None else lm[rows.to(lm.device)]
        tiles = None
        if bool((p["texture"] > 0).any()):
            p["tile"] = self._tile_index(p["texture"].to(self.tiles.device),
                                         p["texture_seed"].to(self.tiles.device))  # fmt: skip
            tiles = self.tiles
        images = input if rows is None else input[rows]
        geometry = _host_geometry(lm, p, (images.shape[0], H, W), input.device)
        looks = measure_looks(images, geometry, p)  # the photo's noise, blur, colour, JPEG
        out, alpha = mask_batch(images, geometry, match_look_colours(p, looks), tiles=tiles,
                                subsamples=self.subsamples)  # fmt: skip
        out, alpha = apply_look(out, alpha, geometry, p, looks)
        templated = _template_rows(p)
        if templated:
            _paint_templates_on_cpu(images, out, alpha, templated, p, lm)
        if rows is not None:  # kornia takes the other rows from the input (torch.where)
            out = torch.empty_like(input).index_copy_(0, rows, out)
            alpha = alpha.new_zeros(n, *alpha.shape[1:]).index_copy_(0, rows, alpha)
        self._alpha = alpha
        return out

    def forward(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor] | None = None,
        landmarks: Any = None,
        return_alpha: bool = False,
        keys: Sequence[str | int] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # kornia's AugmentationSequential calls its children with ``data_keys=[INPUT]`` and hands
        # them the keypoints afterwards (transform_keypoints), in the same call.
        if "data_keys" not in kwargs or params is None:
            out, alpha = self._masked_eagerly(input, params, landmarks, keys, kwargs)
            return (out, alpha) if return_alpha else out
        self._settle_pending()
        if self._keypoints_follow and landmarks is None:
            # The keypoints of this call come next: render once, with them.
            out = input.clone()
            self._pending = _Pending(params, input, out, deferred=True)
            self.last_alpha = None
            return (out, torch.zeros_like(input[:, :1], dtype=torch.float32)) if return_alpha \
                else out  # fmt: skip
        out, alpha = self._render(input, params, landmarks, kwargs)
        # The keypoints may mask it again in place; an operator's output (one of two) must not
        # be the tensor autograd sees modified.
        out = out.clone() if out is input or torch.compiler.is_compiling() else out
        self._pending = _Pending(params, input, out, deferred=False)
        return (out, alpha) if return_alpha else out

    # Eager under torch.compile: the draws and outlines are host work (NumPy, numba) and the
    # painter picks its band of rows on the host, so tracing in only adds graph breaks. Also
    # where a compiled caller's frame was skipped (run eagerly): the host work is never traced.
    @torch.compiler.disable
    def _masked_eagerly(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor] | None,
        landmarks: Any,
        keys: Sequence[str | int] | None,
        kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._masked(input, params, landmarks, keys, kwargs)

    def _render(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        landmarks: torch.Tensor | None,
        kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_masked` for a container call; inside a TorchDynamo trace it is one operator
        of the graph (:func:`_mask_op`), so that no graph break lands in kornia's loops."""
        if not torch.compiler.is_compiling():
            return self._masked_eagerly(input, params, landmarks, None, kwargs)
        names = [k for k, v in params.items() if torch.is_tensor(v)]
        out, alpha = _mask_op(input, ",".join(names), [params[k] for k in names], landmarks,
                              self._op_key)  # fmt: skip
        self.last_alpha = alpha
        return out, alpha

    def _masked(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor] | None,
        landmarks: Any,
        keys: Sequence[str | int] | None,
        kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked batch and its occlusion maps; uint8 batches go through float32."""
        if input.dtype == torch.uint8:
            out, alpha = self._masked(input.float() / 255, params, landmarks, keys, kwargs)
            return out.mul(255).round_().clamp_(0, 255).to(torch.uint8), alpha
        if not input.is_floating_point():
            raise TypeError(f"RandomFaceMask: images must be float or uint8, got {input.dtype}")
        shape = input.shape
        batch = 1 if input.ndim < 4 else int(shape[0])
        if params is None:
            self._keys = None if keys is None else [str(k) for k in keys]
            try:
                params = self.forward_parameters((batch, *self.transform_tensor(input).shape[1:]))
            finally:
                self._keys = None
        if landmarks is not None:
            params = dict(params)
            params["landmarks"] = self._batch_landmarks(landmarks, batch)
        self._alpha = None
        out = super().forward(input, params=params, **kwargs)
        H, W = shape[-2], shape[-1]
        applied = self._alpha
        gate = self._params.get("batch_prob")
        always = gate is None or (self.p == 1.0 and self.p_batch == 1.0)
        if applied is not None and applied.shape[0] == batch and always:
            alpha = applied
        else:
            alpha = torch.zeros(batch, 1, H, W, device=input.device)
            if applied is not None:
                sel = torch.ones(batch, dtype=torch.bool, device=input.device)
                if not always:
                    sel = (torch.atleast_1d(gate) > 0.5).to(input.device)
                if applied.shape[0] == batch:
                    alpha = applied * sel[:, None, None, None]
                else:
                    alpha = alpha.index_put((sel,), applied)
        self.last_alpha = alpha
        self._alpha = None
        return out, alpha

    # -- keypoints from AugmentationSequential -----------------------------------------------

    def transform_keypoints(
        self,
        input: Any,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Mask this call's images with the container's keypoints, as the geometric children
        before this one have moved them; the keypoints themselves pass through unchanged.

        kornia transforms every data key of one child before the next child runs, the image
        first: the image call's output is masked again here, in place, before any later child
        reads it. Keypoints that are not one face's 68 or 5 landmarks per sample are ignored.
        """
        pending, self._pending = self._pending, None
        if pending is None or params is not pending.params:
            return input
        points = getattr(input, "data", input)
        points = points[None] if points.ndim == 2 else points
        if points.shape[0] != pending.input.shape[0] or points.shape[1:] not in ((68, 2), (5, 2)):
            if pending.deferred:  # render the image call's mask after all, with the default
                self._keypoints_follow = False
                self._refill(pending, None)
            return input
        self._refill(pending, points)
        self._keypoints_follow = True
        return input

    def _refill(self, pending: _Pending, landmarks: torch.Tensor | None) -> None:
        out, _ = self._render(pending.input, pending.params, landmarks, {})
        pending.output.copy_(out)

    def _settle_pending(self) -> None:
        """Forget the previous container call; warn if it was waiting for keypoints that never
        came (its images went out unmasked)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending.deferred:
            self._keypoints_follow = False
            warnings.warn(
                "RandomFaceMask: the last AugmentationSequential call passed no keypoints after "
                "earlier calls had, and its batch was left unmasked; use one RandomFaceMask per "
                "container (or the same data_keys in every call)",
                RuntimeWarning,
                stacklevel=3,
            )
