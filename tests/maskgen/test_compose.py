"""Masking after other libraries' geometric augmentations: ``MaskFace`` in albumentations and
torchvision v2 pipelines, ``RandomFaceMask`` in kornia's ``AugmentationSequential``.

Every test flips and slightly rotates/scales the faces before masking, and compares the
occlusion map with a mask rendered by :func:`maskgen.render.render` from landmarks the test
moves itself (pixel-index convention: a flip maps ``x`` to ``W - 1 - x``, rotations turn about
``((W - 1) / 2, (H - 1) / 2)``) and puts back in semantic order with ``MIRROR_68``.
"""

from __future__ import annotations

import warnings

import cv2
import kornia.augmentation as kaug
import numpy as np
import pytest
import torch

from maskgen.augment import MaskFace, RandomFaceMask
from maskgen.augment.keypoints import handedness, semantic_order
from maskgen.fabric import shadow_reach
from maskgen.landmarks import MIRROR_5, MIRROR_68, mirror_landmarks, to_five
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import FaceFrame
from maskgen.synthetic import draw_wild_face, sample_identity

SIZE = 160
YAWS = (0.0, 20.0, 30.0)
ANGLE, SCALE = 6.0, 0.95
#: Ear loops and valves are thin details whose batched rendering differs from OpenCV's lines on
#: small faces; chin-only masks are a few hundred pixels. Placement is what is tested here.
PLAIN = MaskSpec(straps_prob=0.0, valve_prob=0.0, coverages={"high": 2, "medium": 1, "low": 1})


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    """Three 160×160 faces at yaw 0°, 20°, 30° with every landmark inside the image."""
    images, marks = [], []
    for k, yaw in enumerate(YAWS):
        image, lm = draw_wild_face(sample_identity(np.random.default_rng([k, 1])),
                                   np.random.default_rng([k, 2]), (SIZE, SIZE), yaw=yaw,
                                   pitch=0.0, roll=0.0, face_frac=0.5)  # fmt: skip
        images.append(image)
        marks.append(lm)
    return np.stack(images), np.stack(marks)


def moved(lm: np.ndarray, angle: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``lm`` after a horizontal flip, then a turn by ``angle`` degrees (positive: from +x
    towards +y) scaled by ``SCALE`` about the image centre, then ``shift``; semantic order."""
    out = np.asarray(lm, np.float64).copy()
    out[..., 0] = SIZE - 1 - out[..., 0]
    out = out[..., MIRROR_68, :]
    c, t = (SIZE - 1) / 2, np.deg2rad(angle)
    R = SCALE * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return ((out - c) @ R.T + c + np.asarray(shift)).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def reference_alpha(lm: np.ndarray, params: MaskParams) -> np.ndarray:
    return render(np.zeros((SIZE, SIZE, 3), np.uint8), lm, params).alpha


# -- semantic order ---------------------------------------------------------------------------


def test_semantic_order_undoes_the_index_mirroring_of_a_flip(faces) -> None:
    _, lms = faces
    flipped = lms.copy()
    flipped[..., 0] = SIZE - flipped[..., 0]  # positions mirrored, indices kept
    assert (handedness(lms) > 0).all() and (handedness(flipped) < 0).all()
    expect = np.stack([mirror_landmarks(lm, SIZE) for lm in lms])
    np.testing.assert_allclose(semantic_order(flipped), expect)
    np.testing.assert_array_equal(semantic_order(lms), lms)
    five = to_five(flipped[0])
    np.testing.assert_allclose(semantic_order(five), five[MIRROR_5])
    t = semantic_order(torch.from_numpy(np.concatenate([lms[:1], flipped[1:]])))
    np.testing.assert_allclose(t.numpy(), np.concatenate([lms[:1], expect[1:]]))
    with pytest.raises(ValueError, match="68"):
        semantic_order(np.zeros((7, 2), np.float32))


def test_mask_face_accepts_a_flipped_set_with_its_indices_kept(faces) -> None:
    images, lms = faces
    image = images[1][:, ::-1].copy()
    kept = lms[1].copy()
    kept[:, 0] = SIZE - 1 - kept[:, 0]  # what a flip does to keypoints: indices kept
    params = MaskParams(family="surgical", coverage="high")
    with pytest.raises(ValueError, match="implausible"):
        render(image, kept, params)
    _, got, alpha = MaskFace(MaskSpec(families={"surgical": 1}), p=1.0).apply(image, kept)
    np.testing.assert_array_equal(alpha, render(image, kept[MIRROR_68], got).alpha)


# -- albumentations ---------------------------------------------------------------------------


def test_mask_face_in_albumentations_takes_the_moved_keypoints(faces) -> None:
    A = pytest.importorskip("albumentations")
    images, lms = faces
    geometric = [A.HorizontalFlip(p=1.0),
                 A.Affine(rotate=(ANGLE, ANGLE), scale=(SCALE, SCALE),
                          translate_px={"x": (3, 3), "y": (-2, -2)}, p=1.0)]  # fmt: skip
    masker = MaskFace(p=1.0, return_alpha=True, return_params=True)
    pipe = A.Compose([*geometric, masker], keypoint_params=A.KeypointParams(format="xy"), seed=0)
    plain = A.Compose(geometric, keypoint_params=A.KeypointParams(format="xy"), seed=0)
    assert "MaskFace" in repr(pipe)
    for image, lm in zip(images, lms, strict=True):
        out = pipe(image=image, keypoints=lm)
        ref = plain(image=image, keypoints=lm)
        # albumentations turns positive angles from +x towards -y
        expect = moved(lm, -ANGLE, (3.0, -2.0))
        np.testing.assert_allclose(np.asarray(out["keypoints"]), ref["keypoints"])  # unchanged
        np.testing.assert_allclose(np.asarray(out["keypoints"])[MIRROR_68], expect, atol=1e-3)
        params = MaskParams.from_json(out["mask_params"])
        assert out["masked"] and out["image"].dtype == np.uint8
        assert iou(out["mask_alpha"], reference_alpha(expect, params)) >= 0.97
        # the check is sensitive: the untransformed landmarks would place it elsewhere
        assert iou(out["mask_alpha"], reference_alpha(lm, params)) < 0.8
        # Beyond the mask and its contact shadow's reach, the image is the plain pipeline's.
        reach = shadow_reach(FaceFrame.from_landmarks(expect).unit)
        kernel = np.ones((2 * reach + 1,) * 2, np.uint8)
        outside = cv2.dilate((out["mask_alpha"] > 0).astype(np.uint8), kernel) == 0
        np.testing.assert_array_equal(out["image"][outside], ref["image"][outside])


def test_albumentations_force_apply_and_missing_keypoints(faces) -> None:
    A = pytest.importorskip("albumentations")
    images, _ = faces
    rare = MaskFace(p=0.001)
    torch.manual_seed(0)  # MaskFace draws from torch's generator
    out = A.Compose([A.OneOf([rare], p=1.0)])(image=images[0])  # OneOf forces its choice
    assert out["masked"] and not np.array_equal(out["image"], images[0])
    assert not A.Compose([rare])(image=images[0])["masked"]
    with pytest.raises(KeyError, match="'image'"):
        MaskFace(p=1.0)(mask=images[0][..., 0])
    with pytest.raises(ValueError, match="remove_invisible=False"):
        MaskFace(p=1.0)(image=images[0], keypoints=np.zeros((60, 2), np.float32))


# -- torchvision v2 ---------------------------------------------------------------------------


def _torchvision():
    """``(tv_tensors, v2)``, or skip: not installed, or built for another torch (its C++ ops
    then fail to register with a RuntimeError, which ``importorskip`` does not catch)."""
    try:
        from torchvision import tv_tensors
        from torchvision.transforms import v2
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError as exc:  # e.g. a CUDA torchvision next to a CPU-only torch
        pytest.skip(f"torchvision does not load with this torch build: {exc}")
    return tv_tensors, v2


def test_mask_face_in_torchvision_v2_takes_the_moved_keypoints(faces) -> None:
    tv_tensors, v2 = _torchvision()
    images, lms = faces
    geometric = [v2.RandomHorizontalFlip(p=1.0),
                 v2.RandomAffine(degrees=(ANGLE, ANGLE), scale=(SCALE, SCALE))]  # fmt: skip
    masker = MaskFace(p=1.0, return_alpha=True, return_params=True)
    for image, lm in zip(images, lms, strict=True):
        sample = {
            "image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
            "keypoints": tv_tensors.KeyPoints(torch.from_numpy(lm), canvas_size=(SIZE, SIZE)),
        }
        out = v2.Compose([*geometric, masker])(sample)
        ref = v2.Compose(geometric)(sample)
        expect = moved(lm, ANGLE)
        assert isinstance(out["image"], tv_tensors.Image) and out["image"].dtype == torch.uint8
        assert isinstance(out["keypoints"], tv_tensors.KeyPoints)
        torch.testing.assert_close(out["keypoints"], ref["keypoints"])  # unchanged
        # torchvision turns keypoints about (W/2, H/2) but pixels about ((W-1)/2, (H-1)/2)
        np.testing.assert_allclose(out["keypoints"].numpy()[MIRROR_68], expect, atol=0.2)
        alpha = out["mask_alpha"][0].numpy()
        params = MaskParams.from_json(out["mask_params"])
        assert iou(alpha, reference_alpha(expect, params)) >= 0.97
        assert iou(alpha, reference_alpha(lm, params)) < 0.8

        # two arguments, as v2.Compose passes (image, keypoints): the same structure back
        image_out, points_out = v2.Compose([*geometric, MaskFace(p=1.0)])(
            sample["image"], sample["keypoints"]
        )
        assert isinstance(image_out, tv_tensors.Image)
        assert isinstance(points_out, tv_tensors.KeyPoints)


def test_mask_face_keeps_tensor_subclasses_and_tuples() -> None:
    class Marked(torch.Tensor):
        pass

    image = torch.full((3, 112, 112), 0.5).as_subclass(Marked)
    out = MaskFace(p=1.0)(image, rng=np.random.default_rng(0))
    assert type(out) is Marked and out.shape == image.shape
    masked, label = MaskFace(p=1.0)((image.as_subclass(torch.Tensor), 7),
                                    rng=np.random.default_rng(0))  # fmt: skip
    assert label == 7 and not torch.equal(masked, image.as_subclass(torch.Tensor))
    with pytest.raises(TypeError, match="no image"):
        MaskFace(p=1.0)((1, "a"))


# -- kornia AugmentationSequential ------------------------------------------------------------


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _geometric():
    return [kaug.RandomHorizontalFlip(p=1.0),
            kaug.RandomAffine(degrees=(ANGLE, ANGLE), scale=(SCALE, SCALE), p=1.0)]  # fmt: skip


def test_random_face_mask_reads_the_moved_keypoints_of_augmentation_sequential(faces) -> None:
    images, lms = faces
    x, kp = _batch(images), torch.from_numpy(lms)
    aug = RandomFaceMask(PLAIN, p=1.0, seed=11)
    seq = kaug.AugmentationSequential(*_geometric(), aug, data_keys=["input", "keypoints"])
    moved_x = kaug.AugmentationSequential(*_geometric())(x)
    expect = moved(lms, ANGLE)
    twin = RandomFaceMask(PLAIN, p=1.0)
    for _ in range(3):  # the first call renders twice, later ones once (after the keypoints)
        out, kp_out = seq(x, kp)
        np.testing.assert_allclose(kp_out.numpy()[:, MIRROR_68], expect, atol=1e-3)
        draws = aug.to_mask_params(aug._params)
        alpha = aug.last_alpha[:, 0].numpy()
        for i in range(len(draws)):
            assert iou(alpha[i], reference_alpha(expect[i], draws[i])) >= 0.97, (i, draws[i])
        # identical to masking the moved batch directly with the moved landmarks
        direct = twin(moved_x, params=twin.params_from_mask_params(draws, torch.from_numpy(expect)))
        # (up to the 1e-5 px by which kornia's keypoints differ from the test's)
        torch.testing.assert_close(out, direct, atol=2e-3, rtol=0)
        torch.testing.assert_close(aug.last_alpha, twin.last_alpha, atol=2e-3, rtol=0)
    stale = [iou(alpha[i], reference_alpha(lms[i], draws[i])) for i in range(len(draws))]
    assert min(stale) < 0.8


def test_augmentation_sequential_gating_and_containers_without_keypoints(faces) -> None:
    images, lms = faces
    x, kp = _batch(images), torch.from_numpy(lms)
    torch.manual_seed(0)
    aug = RandomFaceMask(PLAIN, p=0.5, seed=4)
    seq = kaug.AugmentationSequential(*_geometric(), aug, data_keys=["input", "keypoints"])
    moved_x = kaug.AugmentationSequential(*_geometric())(x)
    expect = moved(lms, ANGLE)
    seen = set()
    for _ in range(4):
        out, _ = seq(x, kp)
        gate = aug._params["batch_prob"] > 0.5
        for i in range(len(gate)):
            seen.add(bool(gate[i]))
            if not gate[i]:
                torch.testing.assert_close(out[i], moved_x[i], atol=1e-6, rtol=0)
                assert float(aug.last_alpha[i].abs().max()) == 0.0
            else:
                draw = aug.to_mask_params(aug._params)[i]
                alpha = aug.last_alpha[i, 0].numpy()
                assert iou(alpha, reference_alpha(expect[i], draw)) >= 0.97
    assert seen == {True, False}


def test_the_same_module_in_a_container_without_keypoints_warns_once(faces) -> None:
    images, lms = faces
    x, kp = _batch(images), torch.from_numpy(lms)
    aug = RandomFaceMask(PLAIN, p=1.0, seed=2)
    kaug.AugmentationSequential(aug, data_keys=["input", "keypoints"])(x, kp)
    kaug.AugmentationSequential(aug, data_keys=["input", "keypoints"])(x, kp)  # now waits for them
    plain = kaug.AugmentationSequential(aug)
    first = plain(x)  # waited for keypoints that never came
    with pytest.warns(RuntimeWarning, match="no keypoints"):
        plain(x)
    torch.testing.assert_close(first, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plain(x)
    assert float(aug.last_alpha.amax()) > 0.99 and not torch.equal(out, x)
