"""The ``aligned-fit`` backend: each aligned crop's own 68 points, or the canonical layout
with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from maskgen.dataset import RenderOptions, render_dataset
from maskgen.dataset.options import meta_dir
from maskgen.landmarks import (
    ARCFACE_112,
    aligned_landmarks,
    apply_affine,
    create_backend,
    similarity_transform,
    to_five,
)
from maskgen.render import MaskParams, render
from maskgen.synthetic import SyntheticFaces, draw_wild_face, sample_identity

pytest.importorskip("dlib", reason="aligned-fit runs dlib's predictor")


@pytest.fixture(scope="module")
def fit():
    return create_backend("aligned-fit")


def _align(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> tuple[np.ndarray, ...]:
    """The ArcFace-aligned crop of a face and its landmarks in the crop."""
    M = similarity_transform(to_five(landmarks), ARCFACE_112 * (size / 112))
    crop = cv2.warpAffine(np.ascontiguousarray(image), M, (size, size), flags=cv2.INTER_LINEAR)
    return crop, apply_affine(landmarks, M)


def _mask_iou(crop: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the occlusion maps of a default surgical mask drawn on landmarks a and b."""
    alpha = [render(crop, lm, MaskParams()).alpha.astype(np.float64) for lm in (a, b)]
    return float(np.minimum(*alpha).sum() / np.maximum(*alpha).sum())


def test_on_the_astronaut_the_fit_finds_the_full_photo_landmarks(astronaut, fit):
    image, full = astronaut
    crop, truth = _align(image, full)
    (face,) = fit.detect(crop)
    assert face.fit == "fitted" and face.fit_reason == "" and face.backend == "aligned-fit"
    # (The canonical layout itself was derived from this face: it is no baseline here.)
    assert np.linalg.norm(face.landmarks - truth, axis=1).mean() < 2.0
    assert _mask_iou(crop, face.landmarks, truth) >= 0.9


@pytest.mark.parametrize("yaw", [-30.0, -15.0, 15.0, 30.0])
def test_on_turned_synthetic_faces_the_fit_beats_the_canonical_layout(fit, yaw):
    """Synthetic in-the-wild faces aligned to 112 (exact landmarks known)."""
    fitted, canonical = [], []
    for seed in range(4):
        rng = np.random.default_rng([seed, int(yaw) + 100])
        image, exact = draw_wild_face(sample_identity(rng), rng, yaw=yaw)
        crop, truth = _align(image, exact)
        (face,) = fit.detect(crop)
        fitted.append(_mask_iou(crop, face.landmarks, truth))
        canonical.append(_mask_iou(crop, aligned_landmarks(), truth))
    assert np.mean(fitted) >= 0.85
    assert np.mean(fitted) >= np.mean(canonical) + 0.05


@pytest.mark.parametrize(
    "crop",
    ["grey", "noise", "cat", "rocket"],
)
def test_a_crop_without_a_face_falls_back_with_a_reason(fit, crop):
    images = {
        "grey": lambda: np.full((112, 112, 3), 128, np.uint8),
        "noise": lambda: np.random.default_rng(0).integers(0, 256, (112, 112, 3), np.uint8),
        "cat": lambda: cv2.resize(data.chelsea(), (112, 112), interpolation=cv2.INTER_AREA),
        "rocket": lambda: cv2.resize(data.rocket()[:300, :300], (112, 112)),
    }
    (face,) = fit.detect(images[crop]())
    assert face.fit == "fallback" and face.fit_reason
    np.testing.assert_array_equal(face.landmarks, aligned_landmarks())


def test_larger_aligned_crops_scale_the_box(astronaut, fit):
    image, full = astronaut
    small, _ = _align(image, full, 112)
    large, _ = _align(image, full, 224)
    a, b = fit.detect(small)[0], fit.detect(large)[0]
    assert a.fit == b.fit == "fitted"
    assert np.linalg.norm(b.landmarks / 2 - a.landmarks, axis=1).mean() < 1.5


def test_without_verification_one_fit_is_used(astronaut):
    image, full = astronaut
    crop, truth = _align(image, full)
    (face,) = create_backend("aligned-fit", verify=False).detect(crop)
    assert face.fit == "fitted"
    assert np.linalg.norm(face.landmarks - truth, axis=1).mean() < 3.0


def test_the_manifest_says_fitted_or_fallback(astronaut, tmp_path: Path):
    """``maskgen render --landmarks aligned-fit`` on a folder of aligned crops."""
    image, full = astronaut
    folder = tmp_path / "crops"
    folder.mkdir()
    crop, _ = _align(image, full)
    cv2.imwrite(str(folder / "face.png"), crop[:, :, ::-1])
    cv2.imwrite(str(folder / "blank.png"), np.full((112, 112, 3), 90, np.uint8))
    out = tmp_path / "out"
    render_dataset(folder, out, RenderOptions(landmarks="aligned-fit"), workers=1, progress=False)
    lines = (meta_dir(out) / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    faces = {Path(r["input"]).name: r["faces"][0] for r in records if r.get("faces")}
    assert faces["face.png"]["fit"] == "fitted" and "fit_reason" not in faces["face.png"]
    assert faces["blank.png"]["fit"] == "fallback"
    assert "follows the box" in faces["blank.png"]["fit_reason"]


def test_a_batch_gives_each_crop_what_detect_gives_it(astronaut):
    """``detect_many`` (one batched fit) against ``detect`` crop by crop: faces, turned
    faces, crops without a face that fall back (noise, grey, a cat), a larger crop."""
    image, full = astronaut
    crops = [_align(image, full)[0], _align(image, full, 224)[0]]
    crops += [SyntheticFaces(3, 2, seed=8, kind="aligned")[i][0] for i in range(6)]
    for seed, yaw in enumerate((-40.0, 25.0)):
        rng = np.random.default_rng([seed, 77])
        wild, exact = draw_wild_face(sample_identity(rng), rng, yaw=yaw)
        crops.append(_align(wild, exact)[0])
    crops += [
        np.random.default_rng(1).integers(0, 256, (112, 112, 3), np.uint8),
        np.full((112, 112, 3), 128, np.uint8),
        cv2.resize(data.chelsea(), (112, 112), interpolation=cv2.INTER_AREA),
    ]
    for verify in (True, False):
        fit = create_backend("aligned-fit", verify=verify)
        keys = [f"{i}.jpg" for i in range(len(crops))]
        many = fit.detect_many(crops, keys)
        assert len(many) == len(crops)
        verdicts = set()
        for crop, got in zip(crops, many, strict=True):
            ((a,), (b,)) = got, fit.detect(crop)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert (a.box, a.score, a.fit, a.fit_reason) == (b.box, b.score, b.fit, b.fit_reason)
            verdicts.add(a.fit)
        assert "fitted" in verdicts and ("fallback" in verdicts or not verify)
        fits = fit.fit_many(crops)
        for crop, (landmarks, why) in zip(crops, fits, strict=True):
            alone = fit.fit(crop)
            np.testing.assert_array_equal(landmarks, alone[0])
            assert why == alone[1]
    assert fit.detect_many([]) == []


def test_every_backend_detects_many_images():
    """``detect_many``: the backend's own, or ``detect`` image by image."""
    from maskgen.landmarks.backends.base import detect_many

    crops = [np.zeros((112, 112, 3), np.uint8), np.zeros((96, 80, 3), np.uint8)]
    aligned = create_backend("aligned")
    got = detect_many(aligned, crops, ["a", "b"])
    want = [aligned.detect(c, k) for c, k in zip(crops, "ab", strict=True)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g[0].landmarks, w[0].landmarks)
    fit = create_backend("aligned-fit")
    assert [f[0].fit for f in detect_many(fit, crops)] == ["fallback", "fallback"]
    with pytest.raises(ValueError, match="uint8"):
        fit.detect_many([crops[0], crops[1].astype(np.float32)])
