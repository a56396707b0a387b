"""Renderer tests: geometry checked through landmarks, determinism, replay, input formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import COVERAGES, FAMILIES, FaceFrame

EYES_AND_BROWS = list(range(17, 27)) + list(range(36, 48))
NOSTRILS = list(range(31, 36))
MOUTH = list(range(48, 68))

#: For each coverage: which landmark groups must be covered (True) or visible (False).
EXPECTED = {
    "high": {"nose_tip": True, "nostrils": True, "mouth": True, "chin": True},
    "medium": {"nose_tip": True, "nostrils": True, "mouth": True, "chin": True},
    "low": {"nose_tip": False, "nostrils": False, "mouth": True, "chin": True},
    "chin": {"nose_tip": False, "nostrils": False, "mouth": False, "chin": True},
}


def covered(alpha: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether alpha > 0.5 at each (x, y) point (pixel containing it)."""
    h, w = alpha.shape
    xs = np.clip(points[:, 0].astype(int), 0, w - 1)
    ys = np.clip(points[:, 1].astype(int), 0, h - 1)
    return alpha[ys, xs] > 0.5


def check_coverage(alpha: np.ndarray, lm: np.ndarray, coverage: str, label: str) -> None:
    expect = EXPECTED[coverage]
    groups = {
        "nose_tip": [30],
        "nostrils": NOSTRILS,
        "mouth": MOUTH,
        "chin": [8],
    }
    for group, should_cover in expect.items():
        hits = covered(alpha, lm[groups[group]])
        if should_cover:
            assert hits.all(), f"{label}: {group} points {np.array(groups[group])[~hits]} visible"
        else:
            assert not hits.any(), (
                f"{label}: {group} points {np.array(groups[group])[hits]} covered"
            )
    eyes = covered(alpha, lm[EYES_AND_BROWS])
    assert not eyes.any(), f"{label}: eye/brow points {np.array(EYES_AND_BROWS)[eyes]} covered"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("coverage", COVERAGES)
def test_coverage_levels_on_synthetic_face(frontal_face, family: str, coverage: str) -> None:
    image, lm = frontal_face
    result = render(image, lm, MaskParams(family=family, coverage=coverage, straps=True))
    check_coverage(result.alpha, lm, coverage, f"{family}/{coverage}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("coverage", COVERAGES)
def test_coverage_levels_on_real_photo(astronaut, family: str, coverage: str) -> None:
    image, lm = astronaut
    result = render(image, lm, MaskParams(family=family, coverage=coverage, texture="pleats"))
    check_coverage(result.alpha, lm, coverage, f"astronaut {family}/{coverage}")


def test_astronaut_landmarks_come_from_dlib(astronaut) -> None:
    _, lm = astronaut
    assert lm.shape == (68, 2)
    # The astronaut's face sits in the upper middle of the 512×512 photo.
    assert 150 < lm[30, 0] < 300 and 80 < lm[30, 1] < 200


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pose", ["yaw+35", "yaw-30", "roll+25", "roll-20"])
def test_every_family_follows_posed_faces(posed_faces, family: str, pose: str) -> None:
    image, lm = posed_faces[pose]
    result = render(image, lm, MaskParams(family=family, coverage="high", straps=True))
    check_coverage(result.alpha, lm, "high", f"{family} on {pose}")
    # Bounded to the face (in its own frame): nothing above the eyes, nothing far beyond
    # the jaw sideways, nothing far below the chin except a gaiter's neck part.
    frame = FaceFrame.from_landmarks(lm)
    ys, xs = np.nonzero(result.alpha > 0.5)
    uv = frame.to_face(np.stack([xs + 0.5, ys + 0.5], axis=1))
    face = frame.to_face(lm)
    jaw_u = face[0:17, 0]
    assert uv[:, 0].min() >= jaw_u.min() - 0.45 and uv[:, 0].max() <= jaw_u.max() + 0.45
    assert uv[:, 1].min() >= face[36:48, 1].max()
    assert uv[:, 1].max() <= face[8, 1] + (2.3 if family == "gaiter" else 0.7)


def test_mask_rotates_with_roll(frontal_face, posed_faces) -> None:
    """The mask's top edge is parallel to the eye line, so roll tilts it by the roll angle."""

    def top_edge_angle(alpha: np.ndarray) -> float:
        cols = np.nonzero((alpha > 0.5).any(axis=0))[0]
        left, right = cols[len(cols) // 5], cols[4 * len(cols) // 5]
        y_left = np.argmax(alpha[:, left] > 0.5)
        y_right = np.argmax(alpha[:, right] > 0.5)
        return float(np.degrees(np.arctan2(y_right - y_left, right - left)))

    params = MaskParams(family="wide", coverage="medium")
    flat = top_edge_angle(render(*frontal_face, params).alpha)
    rolled_img, rolled_lm = posed_faces["roll+25"]
    rolled = top_edge_angle(render(rolled_img, rolled_lm, params).alpha)
    eye_angle = np.degrees(np.arctan2(*(rolled_lm[42:48].mean(0) - rolled_lm[36:42].mean(0))[::-1]))
    assert abs(flat) < 6
    assert abs((rolled - flat) - eye_angle) < 8


def test_yaw_makes_the_mask_asymmetric(posed_faces) -> None:
    image, lm = posed_faces["yaw+35"]
    alpha = render(image, lm, MaskParams(family="surgical")).alpha
    cols = np.nonzero((alpha > 0.5).any(axis=0))[0]
    nose_x = lm[30, 0]
    left, right = nose_x - cols.min(), cols.max() - nose_x
    assert max(left, right) > 1.3 * min(left, right)


def test_same_params_give_identical_bytes_and_replay_from_json(frontal_face) -> None:
    image, lm = frontal_face
    params = MaskSpec().sample(np.random.default_rng(5))
    first = render(image, lm, params)
    replayed = MaskParams.from_json(json.loads(json.dumps(params.to_json())))
    second = render(image.copy(), lm.copy(), replayed)
    assert replayed == params
    assert first.image.tobytes() == second.image.tobytes()
    assert first.alpha.tobytes() == second.alpha.tobytes()


def test_spec_sampling_is_seeded(frontal_face) -> None:
    spec = MaskSpec()
    draws_a = [spec.sample(np.random.default_rng(s)) for s in range(20)]
    draws_b = [spec.sample(np.random.default_rng(s)) for s in range(20)]
    assert draws_a == draws_b
    assert len({d.to_json() for d in draws_a}) == 20
    assert len({d.family for d in draws_a}) >= 3


@pytest.mark.parametrize(
    "spec",
    [
        MaskSpec(),
        MaskSpec(random_color_prob=1.0, straps_prob=1.0, valve_prob=1.0, geometry_levels=0),
        MaskSpec(families={"kn95": 1, "gaiter": 1}, textures={"pleats": 1}, texture_variants=0),
    ],
)
def test_sampled_params_are_what_the_validating_constructor_builds(spec: MaskSpec) -> None:
    # sample() skips __post_init__ for speed: its draws must pass it unchanged.
    rng = np.random.default_rng(11)
    for _ in range(300):
        params = spec.sample(rng)
        rebuilt = MaskParams(**params.to_dict())
        assert rebuilt == params and rebuilt.to_json() == params.to_json()
        assert all(isinstance(v, int) for v in params.color + params.secondary_color)


def test_spec_round_trip_and_errors() -> None:
    spec = MaskSpec(families={"kn95": 1.0}, coverages={"low": 1.0})
    assert MaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.sample(np.random.default_rng(0)).family == "kn95"
    with pytest.raises(ValueError, match="unknown families"):
        MaskSpec(families={"balaclava": 1.0})
    with pytest.raises(ValueError, match="unknown MaskSpec fields"):
        MaskSpec.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="unknown palettes"):
        MaskSpec(palettes={"gold": 1.0})
    with pytest.raises(ValueError, match="color must be"):
        MaskParams(color=(300, 0, 0))


def test_input_is_not_modified_and_outside_pixels_are_unchanged(frontal_face) -> None:
    image, lm = frontal_face
    before = image.copy()
    result = render(image, lm, MaskParams(texture="print", shading=1.0, straps=True))
    assert np.array_equal(image, before)
    outside = result.alpha == 0
    assert np.array_equal(result.image[outside], image[outside])
    inside = result.alpha > 0.99
    assert inside.sum() > 1000
    assert not np.array_equal(result.image[inside], image[inside])


def test_solid_colour_is_exact_inside_the_mask(frontal_face) -> None:
    image, lm = frontal_face
    result = render(image, lm, MaskParams(color=(10, 200, 30), edge_softness=0.0))
    inside = result.alpha == 1.0
    assert np.all(result.image[inside] == (10, 200, 30))


def test_shading_follows_the_photo_lighting(frontal_face) -> None:
    image, lm = frontal_face
    lit = image.astype(np.float32)
    lit[:, :160] *= 0.45  # left half of the photo in shadow
    lit = lit.astype(np.uint8)
    result = render(lit, lm, MaskParams(color=(200, 200, 200), shading=1.0, family="wide"))
    inside = result.alpha > 0.99
    cols = np.nonzero(inside.any(axis=0))[0]
    mid = int(lm[30, 0])
    left = result.image[:, cols.min() : mid - 10][inside[:, cols.min() : mid - 10]].mean()
    right = result.image[:, mid + 10 : cols.max()][inside[:, mid + 10 : cols.max()]].mean()
    assert left < 0.8 * right


def test_textures_are_seeded_and_differ(frontal_face) -> None:
    image, lm = frontal_face
    out = {}
    for texture in ("pleats", "grain", "stripes", "checks", "dots", "print"):
        a = render(image, lm, MaskParams(texture=texture, texture_seed=1)).image
        b = render(image, lm, MaskParams(texture=texture, texture_seed=1)).image
        assert np.array_equal(a, b)
        out[texture] = a
    keys = list(out)
    for i, k in enumerate(keys):
        for other in keys[i + 1 :]:
            assert not np.array_equal(out[k], out[other]), (k, other)


def test_grayscale_rgba_and_16_bit_inputs(frontal_face) -> None:
    image, lm = frontal_face
    params = MaskParams(texture="grain", shading=0.7)
    ref = render(image, lm, params)

    gray = image.mean(axis=2).astype(np.uint8)
    g = render(gray, lm, params)
    assert g.image.shape == gray.shape and g.image.dtype == np.uint8
    assert np.array_equal(g.alpha, ref.alpha)
    assert np.array_equal(g.image[ref.alpha == 0], gray[ref.alpha == 0])
    g1 = render(gray[..., None], lm, params)
    assert g1.image.shape == (*gray.shape, 1)

    rgba = np.dstack([image, np.arange(image.size // 3, dtype=np.uint32).reshape(image.shape[:2])
                      .astype(np.uint8)])  # fmt: skip
    r = render(rgba, lm, params)
    assert r.image.shape == rgba.shape
    assert np.array_equal(r.image[..., 3], rgba[..., 3])
    assert np.array_equal(r.image[..., :3], ref.image)

    deep = image.astype(np.uint16) * 257
    d = render(deep, lm, MaskParams(color=(100, 150, 200), edge_softness=0.0))
    assert d.image.dtype == np.uint16
    inside = d.alpha == 1.0
    assert np.all(d.image[inside] == np.array([100, 150, 200], np.uint16) * 257)
    assert np.array_equal(d.image[d.alpha == 0], deep[d.alpha == 0])


def test_five_point_landmarks_use_the_aligned_layout() -> None:
    face = np.full((112, 112, 3), 150, np.uint8)
    from maskgen.landmarks import ARCFACE_112

    five = render(face, ARCFACE_112, MaskParams())
    full = render(face, aligned_landmarks(), MaskParams())
    inter = ((five.alpha > 0.5) & (full.alpha > 0.5)).sum()
    union = ((five.alpha > 0.5) | (full.alpha > 0.5)).sum()
    assert inter / union > 0.97


@pytest.mark.parametrize(
    ("landmarks", "message"),
    [
        (np.zeros((67, 2)), "shape"),
        (np.zeros((68, 3)), "shape"),
        (np.where(np.eye(68, 2) > 0, np.nan, 50.0), "NaN or inf"),
        (aligned_landmarks() + 1000, "outside"),
        (np.full((68, 2), 50.0), "implausible"),
        (aligned_landmarks()[::-1].copy(), "implausible"),
        ("not landmarks", "not numeric"),
    ],
)
def test_invalid_landmarks_raise_clear_errors(landmarks, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(np.zeros((112, 112, 3), np.uint8), landmarks, MaskParams())


def test_unsupported_image_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="image must be"):
        render(np.zeros((112, 112, 2), np.uint8), aligned_landmarks(), MaskParams())


def test_straps_only_where_the_face_is_big_enough(frontal_face) -> None:
    image, lm = frontal_face
    with_straps = render(image, lm, MaskParams(straps=True)).alpha
    without = render(image, lm, MaskParams(straps=False)).alpha
    assert (with_straps > 0.5).sum() > (without > 0.5).sum()
    small = np.full((112, 112, 3), 120, np.uint8)
    a = render(small, aligned_landmarks(), MaskParams(straps=True)).alpha
    b = render(small, aligned_landmarks(), MaskParams(straps=False)).alpha
    assert np.array_equal(a, b)  # a 112 crop is too small to show ear loops


def test_draws_of_earlier_versions_replay_byte_identically() -> None:
    """Renders recorded by the stop-10 renderer (every family × coverage, textures, loops and
    valves, aligned and in-the-wild faces): manifests written then must replay exactly."""
    import hashlib
    import json
    from pathlib import Path

    from maskgen.synthetic import draw_aligned_face, draw_wild_face, sample_identity

    fixture = json.loads((Path(__file__).parent / "data" / "replay_v1.json").read_text())
    ident = sample_identity(np.random.default_rng(7))
    faces = {
        "aligned": draw_aligned_face(ident, np.random.default_rng(1), yaw=20, pitch=0, roll=5),
        "wild": draw_wild_face(ident, np.random.default_rng(2), (240, 320)),
    }
    changed = []
    for case in fixture["cases"]:
        image, landmarks = faces[case["face"]]
        out = render(image, landmarks, MaskParams.from_dict(case["params"]))
        if hashlib.sha256(out.image.tobytes()).hexdigest() != case["image_sha256"]:
            changed.append((case["face"], case["params"]["family"], case["params"]["coverage"]))
    assert not changed, f"{len(changed)} of {len(fixture['cases'])} renders changed: {changed}"
