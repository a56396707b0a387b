"""Edges of online masking: uint8 input, empty batches, ``torch.compile``, persistent
DataLoader workers across epochs, and HF ``datasets``' batched dicts."""

from __future__ import annotations

import kornia.augmentation as kaug
import numpy as np
import pytest
import torch
import torch._inductor.config as inductor_config
from torch.utils.data import DataLoader

from maskgen.augment import MaskedPairs, MaskFace, RandomFaceMask
from maskgen.augment.keypoints import semantic_order
from maskgen.fabric import shadow_reach
from maskgen.landmarks import aligned_landmarks, canonical_68
from maskgen.shapes import FaceFrame
from maskgen.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    ds = SyntheticFaces(3, 1, seed=1)
    items = [ds[i] for i in range(len(ds))]
    return np.stack([im for im, _, _ in items]), np.stack([lm for _, _, lm in items])


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# -- uint8 --------------------------------------------------------------------------------------


def test_random_face_mask_takes_and_returns_uint8(faces) -> None:
    images, lms = faces
    x8 = _batch(images)
    aug = RandomFaceMask(p=1.0, seed=7)
    out8, alpha = aug(x8, landmarks=torch.from_numpy(lms), return_alpha=True)
    assert out8.dtype == torch.uint8 and alpha.dtype == torch.float32
    ref = RandomFaceMask(p=1.0, seed=7)(x8.float() / 255, landmarks=torch.from_numpy(lms))
    assert (out8.int() - (ref * 255).round().int()).abs().max() <= 1
    # Beyond the masks and their contact shadows' reach on the skin, the pixels are the input's.
    reach = max(shadow_reach(FaceFrame.from_landmarks(lm).unit) for lm in lms)
    near = torch.nn.functional.max_pool2d((alpha > 0).float(), 2 * reach + 1, 1, reach) > 0
    outside = (~near).expand_as(x8)
    assert torch.equal(out8[outside], x8[outside]) and not torch.equal(out8, x8)
    assert torch.equal(aug(x8, params=aug._params), out8)  # replays as uint8 too
    with pytest.raises(TypeError, match="float or uint8"):
        aug(x8.int())


def test_mask_face_keeps_uint8_tensors(faces) -> None:
    images, lms = faces
    t8 = torch.from_numpy(images[0]).permute(2, 0, 1)
    out = MaskFace(p=1.0)(t8, lms[0], rng=np.random.default_rng(3))
    ref = MaskFace(p=1.0)(images[0], lms[0], rng=np.random.default_rng(3))
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), ref)


# -- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"p": 1.0}, {"p": 0.5}, {"p": 1.0, "seed": 3}, {"p": 1.0, "same_on_batch": True}]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_empty_batches_give_empty_batches_and_maps(kwargs, dtype) -> None:
    aug = RandomFaceMask(**kwargs)
    x = torch.zeros(0, 3, 112, 112, dtype=dtype)
    out, alpha = aug(x, return_alpha=True)
    assert out.shape == x.shape and out.dtype == dtype
    assert alpha.shape == (0, 1, 112, 112) and aug.last_alpha.shape == (0, 1, 112, 112)
    assert aug(x, landmarks=torch.zeros(0, 68, 2)).shape == x.shape
    seq = kaug.AugmentationSequential(kaug.RandomHorizontalFlip(), RandomFaceMask(**kwargs),
                                      data_keys=["input", "keypoints"])  # fmt: skip
    out, kp = seq(x.float(), torch.zeros(0, 68, 2))
    assert out.shape == x.shape and kp.shape == (0, 68, 2)


def test_empty_batched_dict() -> None:
    out = MaskFace(p=1.0, return_params=True, return_alpha=True)({"image": [], "label": []})
    assert out == {"image": [], "label": [], "masked": [], "mask_params": [], "mask_alpha": []}


# -- torch.compile --------------------------------------------------------------------------------


class _Student(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mask = RandomFaceMask(p=1.0, seed=5)
        self.head = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mask(x * 0.5 + 0.25)).relu()


def test_torch_compile_of_a_module_using_random_face_mask(faces) -> None:
    images, _ = faces
    x = _batch(images).float() / 255
    torch.manual_seed(0)
    eager, compiled = _Student(), _Student()
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    explained = torch._dynamo.explain(_Student())(x)
    # The augmentation runs eagerly (its draws and outlines are host work): at most one break.
    assert explained.graph_break_count <= 1, explained.break_reasons
    torch._dynamo.reset()
    fn = torch.compile(compiled, backend="inductor")
    with torch.no_grad():
        for _ in range(2):  # same seed and keys: the same draws in both
            torch.testing.assert_close(fn(x), eager(x), atol=1e-5, rtol=1e-5)


def test_aligned_layout_under_torch_compile() -> None:
    """TorchDynamo used to fail on the layout's ``setflags``, and makes the read-only arrays
    it traces writeable (the backend does not matter: ``eager`` is fast)."""

    @torch.compile(backend="eager")
    def shifted(x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_numpy(aligned_landmarks(224)).sum()

    torch._dynamo.reset()
    expected = torch.ones(1) + float(aligned_landmarks(224).sum())
    torch.testing.assert_close(shifted(torch.ones(1)), expected)
    assert not canonical_68().flags.writeable


def _container(*geometric: torch.nn.Module) -> kaug.AugmentationSequential:
    return kaug.AugmentationSequential(*geometric, RandomFaceMask(p=0.5, seed=4),
                                       data_keys=["input", "keypoints"])  # fmt: skip


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile_of_augmentation_sequential_with_keypoints(faces, backend) -> None:
    """Compiled, the container's repeated calls equal the eager container's, with the masks
    placed from the keypoints the flip (and, with the eager backend, an affine) moved. It used
    to fail on the second call, in TorchDynamo's guards on the flip's lazy matrix."""
    images, lms = faces
    x, kp = _batch(images).float() / 255, torch.from_numpy(lms)

    def geometric() -> list[torch.nn.Module]:
        flip = kaug.RandomHorizontalFlip(p=0.5)  # inductor's compile time is kept short
        return [flip] if backend == "inductor" else [flip, kaug.RandomAffine(8, scale=(0.9, 1.1))]

    eager, compiled = _container(*geometric()), _container(*geometric())
    torch._dynamo.reset()
    fn = torch.compile(compiled, backend=backend)
    masked = []
    for step in range(3):
        torch.manual_seed(step)
        expect, expect_kp = eager(x, kp)
        torch.manual_seed(step)
        # kornia's random draws as in eager; no compile worker pool for three small graphs
        with inductor_config.patch(fallback_random=True, compile_threads=1):
            out, out_kp = fn(x, kp)
        torch.testing.assert_close(out_kp, expect_kp, atol=1e-4, rtol=0)
        torch.testing.assert_close(out, expect, atol=1e-4, rtol=0)
        mask, twin = compiled[-1], eager[-1]
        torch.testing.assert_close(mask.last_alpha, twin.last_alpha, atol=1e-4, rtol=0)
        assert mask.to_mask_params(mask._params) == twin.to_mask_params(twin._params)
        # placed from the moved keypoints (semantic order restored after a flip)
        torch.testing.assert_close(mask._params["landmarks"], semantic_order(out_kp))
        masked += (mask._params["batch_prob"] > 0.5).tolist()
    assert float(mask.last_alpha.amax()) > 0.99
    assert False in masked and True in masked  # gated and masked samples both went through


# -- persistent DataLoader workers ---------------------------------------------------------------


def _masked_epoch(loader: DataLoader) -> np.ndarray:
    return np.concatenate([masked.numpy() for masked, _, _, _ in loader])


def test_set_epoch_reaches_persistent_workers() -> None:
    pairs = MaskedPairs(SyntheticFaces(4, 1, seed=2), p=1.0, seed=9)
    loader = DataLoader(pairs, batch_size=2, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in (0, 1):
        pairs.set_epoch(epoch)
        epochs.append(_masked_epoch(loader))
    assert not np.array_equal(epochs[0], epochs[1])

    fresh = MaskedPairs(SyntheticFaces(4, 1, seed=2), p=1.0, seed=9)
    fresh.set_epoch(1)
    np.testing.assert_array_equal(_masked_epoch(DataLoader(fresh, batch_size=2, num_workers=2)),
                                  epochs[1])  # fmt: skip
    np.testing.assert_array_equal(np.stack([fresh[i][0] for i in range(4)]), epochs[1])
    pairs.set_epoch(0)
    assert pairs.epoch == 0 and fresh.draw(1) != pairs.draw(1)


# -- HF datasets: batched dicts --------------------------------------------------------------------


def test_batched_dicts_as_datasets_with_transform_passes_them(faces) -> None:
    images, lms = faces
    first = images[0].copy()
    batch = {
        "image": [first, images[1], images[2]],
        "landmarks": [lms[0].tolist(), None, lms[2].tolist()],  # datasets stores lists
        "label": [0, 1, 2],
    }
    out = MaskFace(p=1.0, return_params=True, return_alpha=True)(
        batch, rng=np.random.default_rng(4)
    )  # fmt: skip
    assert out["label"] == [0, 1, 2] and out["masked"] == [True, True, True]
    single = MaskFace(p=1.0)
    rng = np.random.default_rng(4)  # the batch draws its items in order from one generator
    for i, lm in enumerate([lms[0], None, lms[2]]):
        image, params, alpha = single.apply(images[i], lm, rng)
        np.testing.assert_array_equal(out["image"][i], image)
        np.testing.assert_array_equal(out["mask_alpha"][i], alpha)
        assert out["mask_params"][i] == params.to_json()
    assert batch["image"][0] is first and out["image"][0] is not first  # input kept
    np.testing.assert_array_equal(first, images[0])
    with pytest.raises(ValueError, match="2 'landmarks' for 3 images"):
        MaskFace(p=1.0)({"image": list(images), "landmarks": [None, None]})
