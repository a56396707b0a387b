"""Landmark conventions, the canonical aligned layout and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maskgen._assets import asset_json
from maskgen.landmarks import (
    ARCFACE_112,
    MIRROR_68,
    aligned_landmarks,
    canonical_68,
    landmarks_from_five,
    mirror_landmarks,
    perturb_shape,
    plausibility_problem,
    similarity_transform,
    to_five,
    validate_landmarks,
)
from maskgen.landmarks.conventions import apply_affine


def test_to_five_uses_eye_means_nose_tip_and_mouth_corners() -> None:
    lm = np.random.default_rng(0).uniform(0, 100, (68, 2)).astype(np.float32)
    five = to_five(lm)
    np.testing.assert_allclose(five[0], lm[36:42].mean(0), rtol=1e-6)
    np.testing.assert_allclose(five[1], lm[42:48].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(five[2:], lm[[30, 48, 54]])
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        to_five(lm[:5])


def test_arcface_template_is_the_112_frame() -> None:
    # The 96×112 variant is this minus 8 px in x; the 112 frame is centred at x = 56.
    assert abs(float(ARCFACE_112[:, 0].mean()) - 56.0) < 0.1


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (10, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    M = similarity_transform(src, dst)
    np.testing.assert_allclose(apply_affine(src, M), dst, atol=1e-3)


def test_canonical_layout_matches_the_template_and_is_symmetric() -> None:
    lm = canonical_68()
    assert lm.shape == (68, 2) and not lm.flags.writeable
    # Derived by a similarity fit, so the 5 points sit near (not exactly on) the template.
    assert np.abs(to_five(lm) - ARCFACE_112).max() < 6.0
    mirrored = lm[MIRROR_68].copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    np.testing.assert_allclose(mirrored, lm, atol=1e-2)
    # Anatomy: eyes above nose above mouth above chin, jaw wider than the mouth.
    assert lm[36:48, 1].max() < lm[30, 1] < lm[48:68, 1].min() < lm[8, 1]
    assert np.ptp(lm[0:17, 0]) > 1.5 * (lm[54, 0] - lm[48, 0])


def test_canonical_layout_is_reproducible_from_its_script_record() -> None:
    meta = asset_json("aligned_68.json")
    assert meta["num_detections"] >= 10
    assert "derive_aligned_68.py" in meta["description"]
    assert len(meta["points"]) == 68


def test_aligned_landmarks_scale_and_five_point_mapping() -> None:
    np.testing.assert_allclose(aligned_landmarks(224), canonical_68() * 2, rtol=1e-5)
    moved = ARCFACE_112 * 1.5 + np.float32([30, 10])
    np.testing.assert_allclose(landmarks_from_five(moved), canonical_68() * 1.5 + [30, 10],
                               atol=1e-3)  # fmt: skip


def test_perturb_shape_moves_only_the_jaw() -> None:
    base = aligned_landmarks()
    wide = perturb_shape(base, face_width=1.1, chin_length=1.1)
    np.testing.assert_array_equal(wide[17:], base[17:])
    assert np.ptp(wide[0:17, 0]) > np.ptp(base[0:17, 0]) * 1.05
    assert wide[8, 1] > base[8, 1] + 1.0


def test_mirror_landmarks_is_an_involution() -> None:
    lm = aligned_landmarks()
    np.testing.assert_allclose(mirror_landmarks(mirror_landmarks(lm, 112), 112), lm, atol=1e-5)
    assert sorted(MIRROR_68.tolist()) == list(range(68))


@pytest.mark.parametrize(
    ("points", "shape", "message"),
    [
        (np.zeros((10, 2)), None, "shape"),
        (np.full((68, 2), np.inf), None, "NaN or inf"),
        (aligned_landmarks() - 500, (112, 112), "outside the 112×112 image"),
        (np.full((5, 2), 3.0), None, "collapsed"),
        (aligned_landmarks()[:, ::-1].copy(), None, "implausible"),
    ],
)
def test_validation_errors_say_what_is_wrong(points, shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_landmarks(points, shape)


def test_validation_accepts_partly_outside_faces() -> None:
    lm = aligned_landmarks() + np.float32([0, 40])  # chin and mouth below the frame
    out = validate_landmarks(lm, (112, 112))
    assert out.dtype == np.float32


def test_plausibility_accepts_real_detections(astronaut) -> None:
    _, lm = astronaut
    assert plausibility_problem(lm) is None
    assert plausibility_problem(to_five(lm)) is None


def test_assets_are_valid_json_documents() -> None:
    for name in ("aligned_68.json", "palettes.json", "shapes.json"):
        assert isinstance(json.loads(json.dumps(asset_json(name))), dict)
