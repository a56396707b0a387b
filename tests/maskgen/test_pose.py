"""Head pose from the 68 landmarks: synthetic faces of known pose, the astronaut, mirroring."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from maskgen.dataset import RenderOptions, meta_dir, render_dataset, replay_record
from maskgen.io import read_image, write_image
from maskgen.landmarks import HeadPose, head_pose, mirror_landmarks
from maskgen.landmarks.mirror import MIRROR_68
from maskgen.landmarks.pose import face_3d, head_poses
from maskgen.synthetic import draw_wild_face, sample_identity

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "derive_face_3d.py"


def _wild(k: int, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Exact landmarks of synthetic identity ``k`` drawn at the given pose (its own expression,
    size and position)."""
    ident = sample_identity(np.random.default_rng([k, 41]))
    _, lm = draw_wild_face(
        ident,
        np.random.default_rng([k, 42]),
        (160, 200),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        postprocess=False,
        background=(128, 128, 128),
    )
    return lm


@pytest.fixture(scope="module")
def synthetic_set() -> tuple[np.ndarray, np.ndarray]:
    """160 identities, yaw -45…45°, pitch ±12° and roll ±25° (draw_wild_face's own ranges)."""
    rng = np.random.default_rng(2024)
    n = 160
    poses = np.column_stack(
        [np.linspace(-45, 45, n), rng.uniform(-12, 12, n), rng.uniform(-25, 25, n)]
    )
    landmarks = np.stack([_wild(k, *map(float, p)) for k, p in enumerate(poses)])
    return landmarks, poses


def test_pose_error_on_synthetic_faces(synthetic_set: tuple[np.ndarray, np.ndarray]) -> None:
    landmarks, truth = synthetic_set
    estimate = np.array([head_pose(lm) for lm in landmarks])
    err = np.abs(estimate - truth)
    assert (err.max(0) <= 5.0).all(), err.max(0)
    assert (err.mean(0) < 1.5).all(), err.mean(0)


@pytest.mark.parametrize("yaw", [-45.0, 45.0])
@pytest.mark.parametrize("pitch", [-12.0, 12.0])
def test_pose_error_at_the_corners(yaw: float, pitch: float) -> None:
    for k in range(12):
        roll = (-25.0, 0.0, 25.0)[k % 3]
        got = head_pose(_wild(1000 + k, yaw, pitch, roll))
        assert np.abs(np.subtract(got, (yaw, pitch, roll))).max() <= 5.0, (k, got)


def test_signs_follow_the_generator() -> None:
    for name, pose in {"yaw": (30, 0, 0), "pitch": (0, 10, 0), "roll": (0, 0, 20)}.items():
        got = head_pose(_wild(7, *map(float, pose)))
        axis = HeadPose._fields.index(name)
        assert got[axis] > 0.7 * pose[axis], (name, got)
        neg = head_pose(_wild(7, *(-float(v) for v in pose)))
        assert neg[axis] < -0.7 * pose[axis], (name, neg)


def test_batched_equals_single(synthetic_set: tuple[np.ndarray, np.ndarray]) -> None:
    landmarks, _ = synthetic_set
    single = np.array([head_pose(lm) for lm in landmarks])
    np.testing.assert_allclose(head_poses(landmarks), single, atol=1e-9)


def test_mirrored_landmarks_negate_yaw_and_roll(
    synthetic_set: tuple[np.ndarray, np.ndarray], astronaut: tuple[np.ndarray, np.ndarray]
) -> None:
    image, lm = astronaut
    sets = [(lm, image.shape[1])] + [(s, 200) for s in synthetic_set[0][::10]]
    for points, width in sets:
        yaw, pitch, roll = head_pose(points)
        m_yaw, m_pitch, m_roll = head_pose(mirror_landmarks(points, width))
        assert (m_yaw, m_pitch, m_roll) == pytest.approx((-yaw, pitch, -roll), abs=1e-3)


def test_astronaut_is_near_frontal(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    # Measured: yaw ≈ 0.2°, pitch ≈ -1°, roll ≈ 3.0° (the eye line is tilted by 3.5°).
    _, lm = astronaut
    pose = head_pose(lm)
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_line = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    assert abs(pose.yaw) < 5 and abs(pose.pitch) < 8, pose
    assert abs(pose.roll - eye_line) < 1.5, (pose, eye_line)


def test_pose_ignores_position_and_scale(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    _, lm = astronaut
    moved = lm.astype(np.float64) * 2.5 + np.array([-300.0, 80.0])
    assert head_pose(moved) == pytest.approx(head_pose(lm), abs=1e-6)


def test_bad_landmarks_are_refused() -> None:
    with pytest.raises(ValueError, match="68, 2"):
        head_pose(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        head_pose(np.ones((68, 2)))
    with pytest.raises(ValueError, match="B, 68, 2"):
        head_poses(np.zeros((68, 2)))
    assert np.isnan(head_poses(np.ones((1, 68, 2)))).all()


def test_template_is_symmetric_and_derived_from_the_generator() -> None:
    face = face_3d()
    mirrored = face.points[MIRROR_68] * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, face.points, atol=1e-4)
    spec = importlib.util.spec_from_file_location("derive_face_3d", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    few = script.shapes(100, script.SEED).mean(0)  # the script's first 100 identities
    assert np.abs(few - face.points).max() < 0.05
    assert np.abs(few - face.points).max() > 0  # a different sample, not a copy


def test_manifest_gives_each_face_its_pose(
    tmp_path: Path, astronaut: tuple[np.ndarray, np.ndarray]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "astronaut.png", astronaut[0])
    ident = sample_identity(np.random.default_rng(3))
    turned = {"yaw": 30.0, "pitch": 0.0, "roll": 0.0, "face_frac": 0.5}
    wild, _ = draw_wild_face(ident, np.random.default_rng(6), (320, 320), **turned)
    write_image(src / "turned.png", wild)
    out = tmp_path / "out"
    render_dataset(src, out, RenderOptions(landmarks="dlib", seed=1), workers=1, progress=False)
    lines = (meta_dir(out) / "manifest.jsonl").read_text().splitlines()
    records = {r["key"]: r for r in map(json.loads, lines)}
    for rec in records.values():
        face = rec["faces"][0]
        expected = head_pose(np.asarray(face["landmarks"], np.float32))
        assert face["pose"] == pytest.approx(list(expected), abs=0.06)
        # the manifest still replays to the written pixels
        replayed = replay_record(read_image(src / rec["key"]), rec)
        np.testing.assert_array_equal(replayed, read_image(out / rec["output"]))
    assert abs(records["astronaut.png"]["faces"][0]["pose"][0]) < 5
    assert records["turned.png"]["faces"][0]["pose"][0] > 20  # dlib's points on a 30° turn
