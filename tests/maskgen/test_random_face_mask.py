"""``RandomFaceMask``: parity with the CPU renderer over the live registries, one sampler with
the CPU paths, and kornia conventions (devices, dtypes, gradients, module vs functional)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from maskgen.appearance import TEXTURES
from maskgen.augment import MaskedPairs, RandomFaceMask, draws_to_params
from maskgen.augment.functional import (
    apply_look,
    batch_geometry,
    mask_batch,
    match_look_colours,
    measure_looks,
)
from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import COVERAGES, GEOMETRY, FamilyGeometry, register_family
from maskgen.synthetic import SyntheticFaces

SIZE = 224  # ear loops show from a 36 px face unit: 224 crops draw every detail


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    ds = SyntheticFaces(4, 2, seed=0, size=SIZE)
    items = [ds[i] for i in range(len(ds))]
    return np.stack([im for im, _, _ in items]), np.stack([lm for _, _, lm in items])


@pytest.fixture(scope="module", autouse=True)
def registered_family():
    """A family registered at test time, with a seam and a valve."""
    register_family("test_visor", FamilyGeometry(outset=-0.05, chin_drop=0.05, seam=True,
                                                 valve=True, pleats_as="stripes"))  # fmt: skip
    yield "test_visor"
    GEOMETRY.pop("test_visor")


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def _family_draws(family: str) -> list[MaskParams]:
    """Every coverage × texture of ``family``, with its details on where it has them."""
    geo = GEOMETRY[family]
    return [
        MaskParams(family=family, coverage=c, texture=geo.pleats_as if t == "pleats" else t,
                   texture_seed=k % 3, color=(60 + 7 * k, 140, 200), shading=0.6,
                   straps=geo.ear_loops, valve=geo.valve)
        for k, (c, t) in enumerate(itertools.product(COVERAGES, TEXTURES))
    ]  # fmt: skip


def test_every_registered_family_renders_alike_in_both_paths(faces) -> None:
    images, lms = faces
    assert "test_visor" in GEOMETRY
    for family in list(GEOMETRY):
        draws = _family_draws(family)
        idx = [k % len(images) for k in range(len(draws))]
        aug = RandomFaceMask(p=1.0)
        out = aug(_tensor(images[idx]), params=aug.params_from_mask_params(draws, lms[idx]))
        alpha = aug.last_alpha[:, 0].numpy()
        for k, d in enumerate(draws):
            ref = render(images[idx[k]], lms[idx[k]], d)
            iou = _iou(ref.alpha, alpha[k])
            assert iou >= (0.9 if d.coverage == "chin" else 0.95), (d, iou)
            inner = (ref.alpha > 0.99) & (alpha[k] > 0.99)
            got = out[k].permute(1, 2, 0).numpy()[inner]
            diff = np.abs(ref.image[inner] / 255.0 - got).mean() * 255
            assert diff < 3.0, (d, diff)


def test_details_are_drawn_by_the_batched_path(faces) -> None:
    """Valve, seam and ear loops change the batched pixels as they change the CPU's."""
    images, lms = faces
    plain = MaskParams(family="test_visor", texture="none", shading=0.0)
    detailed = MaskParams(family="test_visor", texture="none", shading=0.0, valve=True,
                          straps=True)  # fmt: skip
    aug = RandomFaceMask(p=1.0)
    x = _tensor(images[:1])
    a = aug(x, params=aug.params_from_mask_params([plain], lms[:1]))
    b = aug(x, params=aug.params_from_mask_params([detailed], lms[:1]))
    changed = (a != b).any(1)[0].numpy()
    ref = render(images[0], lms[0], plain).image != render(images[0], lms[0], detailed).image
    assert _iou(changed.astype(float), ref.any(2).astype(float)) > 0.6


def test_same_seed_and_key_give_the_cpu_paths_draws() -> None:
    spec = MaskSpec()
    pairs = MaskedPairs([(np.zeros((112, 112, 3), np.uint8), 0)] * 40, spec, p=0.7, seed=11)
    aug = RandomFaceMask(spec, p=0.7, seed=11)
    for epoch in (0, 3):
        pairs.set_epoch(epoch)
        aug.set_epoch(epoch)
        keys = list(range(0, 40, 3))
        aug(torch.rand(len(keys), 3, 112, 112), keys=keys)
        got = aug.to_mask_params(aug._params)
        masked = (aug._params["batch_prob"] > 0.5).tolist()
        want = [pairs.draw(k) for k in keys]
        assert masked == [w is not None for w in want] and 0 < sum(masked) < len(keys)
        assert [g for g, m in zip(got, masked, strict=True) if m] == [w for w in want if w]


def test_unseeded_draws_follow_torch_manual_seed() -> None:
    x = torch.rand(4, 3, 112, 112)
    torch.manual_seed(5)
    a = RandomFaceMask(p=1.0)(x)
    torch.manual_seed(5)
    assert torch.equal(RandomFaceMask(p=1.0)(x), a)
    assert not torch.equal(RandomFaceMask(p=1.0)(x), a)


class TestRandomFaceMask:
    """kornia's conventions for an intensity augmentation."""

    @pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device"))])  # fmt: skip
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    def test_device_and_dtype(self, device: str, dtype: torch.dtype) -> None:
        x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
        aug = RandomFaceMask(p=1.0, seed=1)
        ref = aug(x, keys=[0, 1, 2])
        out = aug(x.to(device, dtype), keys=[0, 1, 2])
        assert out.dtype == dtype and out.device.type == device
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
        assert torch.allclose(out.float().cpu(), ref, atol=tol)

    def test_module_equals_functional(self) -> None:
        x = torch.rand(2, 3, 112, 112)
        aug = RandomFaceMask(p=1.0, seed=2)
        out = aug(x, keys=["a", "b"])
        draws = aug.to_mask_params(aug._params)
        lm = np.stack([aligned_landmarks()] * 2)
        params = draws_to_params(draws)
        params["tile"] = aug._tile_index(params["texture"], params["texture_seed"])
        geometry = batch_geometry(lm, draws, 112, 112)
        looks = measure_looks(x, geometry, params)  # the photo's look: noise, blur, colour
        assert all(look is not None for look in looks)  # default draws carry it
        functional, alpha = mask_batch(x, geometry, match_look_colours(params, looks),
                                       tiles=aug.tiles)  # fmt: skip
        functional, _ = apply_look(functional, alpha, geometry, params, looks)
        assert torch.equal(functional, out)

    def test_gradcheck(self) -> None:
        # The lighting is measured on the detached input (a constant of the blend), so the
        # exact gradient is 1 - alpha: checked without shading, with a texture and soft edges.
        draws = [MaskParams(texture="stripes", shading=0.0, edge_softness=0.02)]
        lm = aligned_landmarks((24, 24))[None]
        geometry = batch_geometry(lm, draws, 24, 24)
        params = draws_to_params(draws)
        x = torch.rand(1, 3, 24, 24, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: mask_batch(t, geometry, params)[0], (x,))

    def test_replay_and_gate(self) -> None:
        x = torch.rand(8, 3, 112, 112)
        aug = RandomFaceMask(p=0.5, seed=4)
        out = aug(x, keys=range(8))
        applied = aug._params["batch_prob"] > 0.5
        assert 0 < int(applied.sum()) < 8  # both kinds present: the checks below bite
        assert torch.equal(aug(x, params=aug._params), out)
        assert torch.equal(out[~applied], x[~applied])
        assert (aug.last_alpha[~applied] == 0).all()
        assert (aug.last_alpha.flatten(1).amax(1)[applied] > 0.99).all()


def test_rejected_landmarks_leave_the_sample_unmasked_and_say_so() -> None:
    lm = np.stack([aligned_landmarks(), np.zeros((68, 2), np.float32)])  # collapsed set
    aug = RandomFaceMask(p=1.0, seed=0)
    x = torch.rand(2, 3, 112, 112)
    with pytest.warns(UserWarning, match=r"1 of 2 landmark sets rejected.*sample 1"):
        out = aug(x, landmarks=lm, keys=[0, 1])
    assert torch.equal(out[1], x[1]) and not torch.equal(out[0], x[0])
    assert aug.last_alpha[1].amax() == 0


def test_rasteriser_draws_several_polygons_into_one_map() -> None:
    from maskgen.augment.functional import rasterize_polygons

    square = torch.tensor([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0], [2.0, 6.0]])
    polys = torch.stack([square, square + 8, square + 2])  # two apart, one overlapping
    maps = rasterize_polygons(polys, 20, 20, owner=torch.tensor([0, 0, 1]), outputs=2)
    assert maps.shape == (2, 20, 20)
    assert float(maps[0].sum()) == 32.0 and float(maps[1].sum()) == 16.0
    union = rasterize_polygons(polys[[0, 2]], 20, 20, owner=torch.tensor([0, 0]), outputs=1)
    assert float(union.sum()) == 16.0 + 16.0 - 4.0  # overlap counted once


def test_the_look_for_the_whole_batch_equals_the_look_box_by_box(faces) -> None:
    """The accelerator form (whole frames, one grouped blur, one noise gather) agrees with
    the CPU form (box by box, as the renderer) away from the boxes' edges."""
    images, lms = faces
    x = _tensor(images)
    draws = [MaskParams(family="surgical", texture="none", shading=0.5, noise=1.2, blur=1.5,
                        color_match=1.0, texture_seed=k) for k in range(len(images))]  # fmt: skip
    geometry = batch_geometry(lms, draws, SIZE, SIZE)
    params = draws_to_params(draws)
    looks = measure_looks(x, geometry, params)
    painted, alpha = mask_batch(x, geometry, match_look_colours(params, looks))
    boxwise, _ = apply_look(painted, alpha, geometry, params, looks, per_sample=True)
    batched, _ = apply_look(painted, alpha, geometry, params, looks, per_sample=False)
    assert not torch.equal(boxwise, painted)  # the look did something
    for i, (x0, y0, x1, y1) in enumerate(geometry.box.long().tolist()):
        inner = (slice(None), slice(y0 + 8, y1 - 8), slice(x0 + 8, x1 - 8))
        diff = (boxwise[i][inner] - batched[i][inner]).abs()
        assert diff.max() < 1.5 / 255, (i, float(diff.max()) * 255)
