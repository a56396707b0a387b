"""Tests for online masking: ``MaskFace``, ``MaskedPairs`` and the batched ``RandomFaceMask``."""

from __future__ import annotations

import pickle
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from kornia.augmentation import AugmentationSequential, RandomHorizontalFlip

from maskgen.augment import MaskedPairs, MaskFace, RandomFaceMask
from maskgen.augment.functional import rasterize_polygons
from maskgen.landmarks import aligned_landmarks, to_five
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    ds = SyntheticFaces(6, 4, seed=0)
    items = [ds[i] for i in range(len(ds))]
    return np.stack([im for im, _, _ in items]), np.stack([lm for _, _, lm in items])


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


# ------------------------------------------------------------------------------ parity


def _draws(n: int, seed: int, **fixed: object) -> list[MaskParams]:
    rng = np.random.default_rng(seed)
    spec = MaskSpec()
    return [replace(spec.sample(rng), straps=False, valve=False, **fixed) for _ in range(n)]


@pytest.mark.parametrize("textured", [False, True])
def test_parity_with_cpu_renderer(faces, textured: bool) -> None:
    images, lms = faces
    n = len(images)
    fixed = {} if textured else {"texture": "none", "shading": 0.0}
    draws = _draws(n, 1 if textured else 2, **fixed)
    # Tiny chin-only masks (≈150 px) are dominated by their anti-aliased rim: checked apart.
    draws = [d if d.coverage != "chin" else replace(d, coverage="high") for d in draws]
    aug = RandomFaceMask(p=1.0)
    out = aug(_tensor(images), params=aug.params_from_mask_params(draws, landmarks=lms))
    alpha = aug.last_alpha[:, 0].numpy()
    for i, d in enumerate(draws):
        ref = render(images[i], lms[i], d)
        assert _iou(ref.alpha, alpha[i]) >= 0.97, (d, _iou(ref.alpha, alpha[i]))
        inner = (ref.alpha > 0.99) & (alpha[i] > 0.99)
        diff = np.abs(ref.image[inner] / 255.0 - out[i].permute(1, 2, 0).numpy()[inner])
        assert diff.mean() * 255 < 2.5, (d, diff.mean() * 255)
        if not textured and d.family != "kn95":  # the 1-px KN95 seam is CPU-only
            # Solid colour: rounding only. The photo's blur spreads the two rasterisers'
            # anti-aliased edges a few pixels inwards: those are left out.
            core = cv2.erode(inner.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0
            core_diff = np.abs(ref.image[core] / 255.0 - out[i].permute(1, 2, 0).numpy()[core])
            assert np.percentile(core_diff, 99) * 255 < 3, d


def test_parity_chin_masks(faces) -> None:
    images, lms = faces
    draws = _draws(8, 3, coverage="chin", texture="none", shading=0.0)
    aug = RandomFaceMask(p=1.0)
    aug(_tensor(images[:8]), params=aug.params_from_mask_params(draws, landmarks=lms[:8]))
    for i, d in enumerate(draws):
        assert _iou(render(images[i], lms[i], d).alpha, aug.last_alpha[i, 0].numpy()) >= 0.9


def test_to_mask_params_round_trip(faces) -> None:
    images, lms = faces
    aug = RandomFaceMask(p=1.0)
    x = _tensor(images[:4])
    out = aug(x, landmarks=lms[:4])
    draws = aug.to_mask_params(aug._params)
    assert all(MaskParams.from_json(d.to_json()) == d for d in draws)
    replay = aug(x, params=aug.params_from_mask_params(draws, landmarks=lms[:4]))
    assert torch.allclose(replay, out, atol=1e-4)


def test_rasterize_exact_area() -> None:
    tri = torch.tensor([[[10.0, 10.0], [50.0, 14.0], [30.0, 50.0]]])
    cov = rasterize_polygons(tri, 64, 64, subsamples=8)
    assert abs(float(cov.sum()) - 760.0) < 1.0
    # Repeated vertices (the padding of the batched outlines) change nothing.
    padded = torch.cat([tri, tri[:, :1].expand(1, 5, 2)], 1)
    assert torch.allclose(rasterize_polygons(padded, 64, 64, 8), cov)


def test_five_point_landmarks(faces) -> None:
    _, lms = faces
    five = torch.from_numpy(np.stack([to_five(lm) for lm in lms[:2]]))
    aug = RandomFaceMask(p=1.0, seed=0)
    x = torch.rand(2, 3, 112, 112)
    from_five = aug(x, landmarks=five, keys=[0, 1])
    from maskgen.landmarks import landmarks_from_five

    expanded = np.stack([landmarks_from_five(f) for f in five.numpy()])
    assert torch.equal(aug(x, landmarks=expanded, keys=[0, 1]), from_five)
    assert aug.last_alpha.amax() > 0.99


# --------------------------------------------------------------------------- kornia conventions


def test_replay_p_same_on_batch_keepdim(faces) -> None:
    images, lms = faces
    x = _tensor(images[:6])
    torch.manual_seed(0)
    aug = RandomFaceMask(p=0.5)
    out = aug(x, landmarks=lms[:6])
    applied = aug._params["batch_prob"] > 0.5
    assert torch.equal(aug(x, params=aug._params), out)
    assert torch.equal(out[~applied], x[~applied])
    assert (aug.last_alpha[~applied] == 0).all()
    assert (aug.last_alpha.flatten(1).amax(1)[applied] > 0.99).all()

    assert torch.equal(RandomFaceMask(p=0.0)(x), x)
    aug1 = RandomFaceMask(p=1.0)
    _, alpha = aug1(x, return_alpha=True)
    assert (alpha.flatten(1).amax(1) > 0.99).all()

    same = RandomFaceMask(p=1.0, same_on_batch=True)
    same(x)
    for key in ("family", "coverage", "color", "width", "texture_seed"):
        assert (same._params[key] == same._params[key][:1]).all()

    single = RandomFaceMask(p=1.0, keepdim=True)(x[0])
    assert single.shape == x[0].shape


def test_inside_augmentation_sequential(faces) -> None:
    images, lms = faces
    x = _tensor(images[:4])
    mask = RandomFaceMask(p=1.0, landmarks=lms[:4])
    seq = AugmentationSequential(RandomHorizontalFlip(p=0.0), mask)
    out = seq(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(seq(x, params=seq._params), out)
    assert mask.last_alpha.amax() > 0.99


def test_gradients_and_no_in_place(faces) -> None:
    images, lms = faces
    x = _tensor(images[:3]).requires_grad_(True)
    before = x.detach().clone()
    # Without the photo's blur (which spreads each output pixel over its neighbours) and the
    # contact shadow (which darkens the skin just outside) the blend's gradient is 1 - alpha.
    spec = MaskSpec(textures={"stripes": 1.0}, shading=(0.8, 0.8), blur=(0.0, 0.0),
                    contact_shadow=(0.0, 0.0))  # fmt: skip
    aug = RandomFaceMask(spec, p=1.0)
    out = aug(x, landmarks=lms[:3])
    assert torch.equal(x.detach(), before)
    out.sum().backward()
    grad = x.grad
    assert grad is not None
    covered = aug.last_alpha.expand_as(grad) > 0.999
    assert torch.allclose(grad[~(aug.last_alpha.expand_as(grad) > 0)], torch.ones(1))
    assert grad[covered].abs().max() < 2e-3  # d out / d x = 1 - alpha


# ------------------------------------------------------------------------- per-sample transform


def test_mask_face_types_and_landmark_sources(faces) -> None:
    images, lms = faces
    from PIL import Image

    rng = np.random.default_rng
    mask = MaskFace(p=1.0, return_alpha=True)
    arr, alpha = mask(images[0], lms[0], rng=rng(0))
    assert arr.dtype == np.uint8 and alpha.max() > 0.99
    pil = mask(Image.fromarray(images[0]), lms[0], rng=rng(0))[0]
    assert isinstance(pil, Image.Image) and np.array_equal(np.asarray(pil), arr)
    t = torch.from_numpy(images[0]).permute(2, 0, 1)
    tout, talpha = mask(t, lms[0], rng=rng(0))
    assert tout.dtype == torch.uint8 and talpha.shape == (1, 112, 112)
    assert np.array_equal(tout.permute(1, 2, 0).numpy(), arr)
    sample = {"image": images[0], "landmarks": lms[0], "label": 3}
    d = MaskFace(p=1.0, return_params=True)(sample, rng=rng(0))
    assert d["label"] == 3 and d["masked"] and np.array_equal(d["image"], arr)
    assert MaskParams.from_json(d["mask_params"]).family
    aligned = MaskFace(p=1.0)(images[0], rng=rng(0))  # aligned layout by default
    ref = render(images[0], aligned_landmarks(), MaskFace(p=1.0).spec.sample(_skip_one(0)))
    assert np.array_equal(aligned, ref.image)
    assert np.array_equal(MaskFace(p=0.0)(images[0]), images[0])


def _skip_one(seed: int) -> np.random.Generator:
    g = np.random.default_rng(seed)
    g.random()  # MaskFace draws the p gate first
    return g


def test_mask_face_pickles(faces) -> None:
    images, lms = faces
    mask = MaskFace(MaskSpec(families={"cloth": 1.0}), p=1.0)
    clone = pickle.loads(pickle.dumps(mask))
    a = mask(images[0], lms[0], rng=np.random.default_rng(5))
    assert np.array_equal(clone(images[0], lms[0], rng=np.random.default_rng(5)), a)
    pickle.loads(pickle.dumps(RandomFaceMask(p=1.0)))


class _SameObject(torch.utils.data.Dataset):
    """Returns the very same array object for every index (a cache, a memory map...)."""

    def __init__(self, image: np.ndarray, lm: np.ndarray) -> None:
        self.image, self.lm = image, lm

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return self.image, i % 2, self.lm


def test_masked_pairs_never_touch_the_clean_image(faces) -> None:
    images, lms = faces
    shared = images[0].copy()
    pristine = shared.copy()
    pairs = MaskedPairs(_SameObject(shared, lms[0]), p=1.0, seed=0)
    for i in range(len(pairs)):
        masked, clean, label, was_masked = pairs[i]
        assert was_masked and label == i % 2
        assert np.array_equal(clean, pristine)
        assert not np.shares_memory(masked, clean) and not np.shares_memory(clean, shared)
        assert not np.array_equal(masked, pristine)
    assert np.array_equal(shared, pristine)
    # Tensor datasets too.
    tshared = torch.from_numpy(shared).permute(2, 0, 1)
    tpairs = MaskedPairs(_SameObject(tshared, lms[0]), p=1.0, seed=0)
    masked, clean, _, _ = tpairs[0]
    assert torch.equal(clean, tshared) and torch.equal(
        tshared, torch.from_numpy(pristine).permute(2, 0, 1)
    )
    assert not torch.equal(masked, clean)


def _collect(loader) -> list[torch.Tensor]:
    return [batch[0].clone() for batch in loader]


def test_dataloader_workers_reproducible() -> None:
    ds = SyntheticFaces(2, 2, seed=1)
    seeded = MaskedPairs(ds, p=0.7, seed=11)
    a = _collect(torch.utils.data.DataLoader(seeded, batch_size=2, num_workers=2))
    b = _collect(torch.utils.data.DataLoader(seeded, batch_size=2, num_workers=0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    unseeded = MaskedPairs(ds, p=0.7)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(_collect(torch.utils.data.DataLoader(unseeded, batch_size=2, num_workers=2)))
    assert all(torch.equal(x, y) for x, y in zip(*runs, strict=True))


def test_large_outputs_are_ordinary_writable_tensors() -> None:
    from maskgen.augment._memory import MIN_BYTES, advise_huge_pages, empty_like_large

    big = torch.zeros(MIN_BYTES // 4 + 1024)
    out = empty_like_large(big)
    assert out.shape == big.shape and out.dtype == big.dtype and out.data_ptr() != big.data_ptr()
    out.fill_(3.0)
    assert float(out.sum()) == 3.0 * out.numel()
    assert advise_huge_pages(torch.zeros(4)) is False  # nothing 2 MB-aligned to advise
    if torch.cuda.is_available():
        assert advise_huge_pages(torch.zeros(4, device="cuda")) is False
