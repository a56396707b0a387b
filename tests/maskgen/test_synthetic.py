"""Tests for the procedural face generator ``maskgen.synthetic``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from maskgen.landmarks import ARCFACE_112, to_five, validate_landmarks
from maskgen.synthetic import (
    FACIAL_HAIR,
    HAIR_STYLES,
    Identity,
    SyntheticFaces,
    draw_aligned_face,
    draw_wild_face,
    landmarks_3d,
    sample_identity,
)

FRONTAL = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0, "align_noise": 0.0}


def _ident(seed: int) -> Identity:
    return sample_identity(np.random.default_rng(seed))


def _plain(seed: int) -> Identity:
    """An identity without facial hair, marks, blush or folds, with short hair."""
    return dataclasses.replace(
        _ident(seed),
        facial_hair=FACIAL_HAIR.index("none"),
        hair_style=HAIR_STYLES.index("short"),
        marks=(),
        blush=0.0,
        folds=0.0,
    )


def _eye_angle(lm: np.ndarray) -> float:
    d = lm[42:48].mean(0) - lm[36:42].mean(0)
    return float(np.degrees(np.arctan2(d[1], d[0])))


def test_identity_json_round_trip() -> None:
    for seed in range(5):
        ident = _ident(seed)
        data = json.loads(json.dumps(ident.to_dict()))
        assert Identity.from_dict(data) == ident


def test_identities_differ_and_are_deterministic() -> None:
    assert _ident(1) == _ident(1)
    assert _ident(1) != _ident(2)


def test_dataset_items_are_deterministic_and_order_free() -> None:
    a = SyntheticFaces(4, 3, seed=11)
    b = SyntheticFaces(4, 3, seed=11)
    forward = [a[i] for i in range(len(a))]
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    for (img1, lab1, lm1), (img2, lab2, lm2) in zip(forward, backward, strict=True):
        assert lab1 == lab2
        assert img1.tobytes() == img2.tobytes()
        assert lm1.tobytes() == lm2.tobytes()
    assert [lab for _, lab, _ in forward] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert forward[0][0].tobytes() != forward[1][0].tobytes()
    assert forward[0][0].tobytes() != forward[3][0].tobytes()
    assert a[-1][1] == 3
    with pytest.raises(IndexError):
        a[len(a)]
    other_seed = SyntheticFaces(4, 3, seed=12)
    assert other_seed[0][0].tobytes() != forward[0][0].tobytes()


def test_dataset_identity_matches_sampler() -> None:
    ds = SyntheticFaces(5, 2, seed=3)
    assert ds.identity(4) == sample_identity(np.random.default_rng([3, 4, 7]))
    with pytest.raises(IndexError):
        ds.identity(5)
    with pytest.raises(ValueError):
        SyntheticFaces(2, 2, kind="video")


def test_wild_dataset_shape() -> None:
    img, label, lm = SyntheticFaces(2, 2, seed=0, kind="wild", size=(120, 160))[2]
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8 and label == 1
    assert lm.shape == (68, 2) and lm.dtype == np.float32


def test_draw_aligned_face_is_reproducible() -> None:
    ident = _ident(0)
    img1, lm1 = draw_aligned_face(ident, np.random.default_rng(5))
    img2, lm2 = draw_aligned_face(ident, np.random.default_rng(5))
    img3, _ = draw_aligned_face(ident, np.random.default_rng(6))
    assert img1.tobytes() == img2.tobytes() and lm1.tobytes() == lm2.tobytes()
    assert img1.tobytes() != img3.tobytes()


def test_frontal_aligned_five_points_on_template() -> None:
    errors = []
    for seed in range(20):
        _, lm = draw_aligned_face(_ident(seed), np.random.default_rng(seed), **FRONTAL, smile=0.02)
        errors.append(np.linalg.norm(to_five(lm) - ARCFACE_112, axis=1))
        validate_landmarks(lm, (112, 112))
    errors = np.array(errors)
    assert errors.mean() < 1.5
    assert errors.mean(axis=0).max() < 2.0
    assert errors.max() < 3.0


def test_default_jitter_landmarks_are_plausible() -> None:
    for seed in range(10):
        img, lm = draw_aligned_face(_ident(seed), np.random.default_rng(seed))
        assert img.shape == (112, 112, 3) and img.dtype == np.uint8
        validate_landmarks(lm, img.shape)
        assert abs(_eye_angle(lm)) <= 8.5
        assert np.abs(to_five(lm) - ARCFACE_112).max() < 15


def test_features_are_drawn_at_their_landmarks() -> None:
    skin, lips, iris = (225, 190, 160), (170, 30, 60), (40, 90, 40)
    for seed in range(6):
        ident = dataclasses.replace(_plain(seed), skin=skin, lip_color=lips, iris_color=iris)
        img, lm = draw_aligned_face(
            ident, np.random.default_rng(seed), **FRONTAL, size=224, postprocess=False
        )
        img = img.astype(int)

        def at(p: np.ndarray, img: np.ndarray = img) -> np.ndarray:
            return img[round(float(p[1])), round(float(p[0]))]

        lower_lip = (lm[57] + lm[66]) / 2
        assert np.abs(at(lower_lip) - lips).max() < 30
        cheek = (lm[3] + lm[31]) / 2  # between jaw and nose wing: plain skin
        assert np.abs(at(cheek) - np.array(skin)).max() < 30
        for eye in (lm[36:42], lm[42:48]):  # iris and pupil: darker than skin
            x, y = np.round(eye.mean(0)).astype(int)
            assert np.median(img[y - 2 : y + 3, x - 2 : x + 3].sum(axis=2)) < 0.6 * sum(skin)


def test_jaw_points_lie_on_the_face_boundary() -> None:
    background = (0, 90, 255)
    for seed in range(6):
        ident = _plain(seed)
        skin = np.array(ident.skin)
        for yaw, roll in ((0.0, 0.0), (20.0, 10.0), (-25.0, -15.0)):
            img, lm = draw_wild_face(
                ident,
                np.random.default_rng(seed),
                yaw=yaw,
                pitch=0.0,
                roll=roll,
                face_frac=0.4,
                background=background,
                postprocess=False,
            )
            centre = lm[27:36].mean(0)
            for j in (2, 3, 4, 12, 13, 14):
                tangent = lm[j + 1] - lm[j - 1]
                normal = np.array([-tangent[1], tangent[0]]) / np.linalg.norm(tangent)
                if normal @ (lm[j] - centre) < 0:
                    normal = -normal
                x_in, y_in = np.round(lm[j] - 4 * normal).astype(int)
                x_out, y_out = np.round(lm[j] + 4 * normal).astype(int)
                inside = img[y_in, x_in].astype(int)
                outside = img[y_out, x_out].astype(int)
                assert np.abs(inside - skin).max() < 0.12 * skin.max() + 4, (seed, yaw, j)
                assert np.abs(outside - background).max() < 8, (seed, yaw, j)


def test_yaw_makes_the_jaw_asymmetric_about_the_nose() -> None:
    ident = _ident(4)
    spans = {}
    for yaw in (-30.0, 0.0, 30.0):
        _, lm = draw_aligned_face(ident, np.random.default_rng(0), yaw=yaw, pitch=0.0, roll=0.0)
        nose_x = lm[30, 0]
        spans[yaw] = (nose_x - lm[0, 0], lm[16, 0] - nose_x)
    left, right = spans[0.0]
    assert abs(left - right) < 1.0
    left, right = spans[30.0]  # nose turns to image right: the right half shrinks
    assert right < 0.75 * left
    left, right = spans[-30.0]
    assert left < 0.75 * right


def test_roll_rotates_the_eye_line() -> None:
    ident = _ident(5)
    for roll in (-10.0, 0.0, 25.0):
        _, lm = draw_aligned_face(ident, np.random.default_rng(1), yaw=0.0, pitch=0.0, roll=roll)
        assert abs(_eye_angle(lm) - roll) < 0.5
    _, lm = draw_wild_face(ident, np.random.default_rng(1), yaw=0.0, pitch=0.0, roll=25.0)
    assert abs(_eye_angle(lm) - 25.0) < 0.5
    # With yaw, the 5-point similarity alignment itself tilts the face slightly.
    _, lm = draw_aligned_face(ident, np.random.default_rng(1), yaw=35.0, pitch=0.0, roll=25.0)
    assert abs(_eye_angle(lm) - 25.0) < 2.0
    validate_landmarks(lm, (112, 112))


def test_lower_face_carries_identity() -> None:
    """The mouth region differs more between identities than between images of one."""
    mouth = np.s_[78:108, 30:82]
    crops = {
        label: [
            draw_aligned_face(_ident(100 + label), np.random.default_rng([label, k]))[0][mouth]
            for k in range(3)
        ]
        for label in range(8)
    }
    crops = {k: [c.astype(np.float32) for c in v] for k, v in crops.items()}
    within = [
        np.abs(v[i] - v[j]).mean() for v in crops.values() for i in range(3) for j in range(i)
    ]
    between = [np.abs(crops[a][0] - crops[b][0]).mean() for a in range(8) for b in range(a)]
    assert np.mean(between) > 1.5 * np.mean(within)


def test_wild_landmarks_inside_and_scale_varies() -> None:
    widths = []
    for seed in range(12):
        img, lm = draw_wild_face(_ident(seed), np.random.default_rng(seed), (240, 320))
        assert img.shape == (240, 320, 3)
        assert (lm >= 0).all() and (lm[:, 0] < 320).all() and (lm[:, 1] < 240).all()
        validate_landmarks(lm, img.shape)
        widths.append(float(lm[:, 0].max() - lm[:, 0].min()) / 320)
    assert min(widths) < 0.25 and max(widths) > 0.35


def test_landmarks_3d_are_symmetric_and_expression_moves_only_the_mouth() -> None:
    ident = _ident(9)
    rest = landmarks_3d(ident)
    open_mouth = landmarks_3d(ident, mouth_open=0.12, smile=0.04)
    assert np.allclose(rest[:48], open_mouth[:48])
    assert open_mouth[66, 1] - open_mouth[62, 1] > rest[66, 1] - rest[62, 1] + 0.1
    assert np.allclose(rest[0, 0], -rest[16, 0]) and np.allclose(rest[8, 0], 0.0)
