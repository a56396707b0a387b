"""The demo's benchmark spread (``data.variation``): it really widens the within-identity
variation of the synthetic faces, the built-in spread is unchanged, and it reaches the
training source and the held-out pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.config import DEMO_VARIATION, Config, ConfigError, apply_overrides, validate_config
from distill.data import SyntheticSource, build_synthetic_pack, open_source
from maskgen.io import load_bin
from maskgen.synthetic import SyntheticFaces, Variation, draw_aligned_face, sample_identity

N = 48  # 6 identities x 8 images


def _faces(variation: dict | None) -> tuple[np.ndarray, np.ndarray]:
    ds = SyntheticFaces(6, 8, seed=3, variation=variation)
    items = [ds[i] for i in range(len(ds))]
    return np.stack([it[0] for it in items]), np.stack([it[2] for it in items])


@pytest.fixture(scope="module")
def default_faces() -> tuple[np.ndarray, np.ndarray]:
    return _faces(None)


@pytest.fixture(scope="module")
def demo_faces() -> tuple[np.ndarray, np.ndarray]:
    return _faces(Config().data.variation)


def _roll(lm: np.ndarray) -> np.ndarray:
    """Eye-line angle (degrees) of each crop from its exact landmarks."""
    left, right = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    d = right - left
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def _yaw_proxy(lm: np.ndarray) -> np.ndarray:
    """Nose tip offset from the eye midpoint, in inter-ocular distances (turns with yaw)."""
    left, right = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    iod = np.linalg.norm(right - left, axis=1)
    return (lm[:, 30, 0] - (left[:, 0] + right[:, 0]) / 2) / iod


def test_demo_config_uses_the_benchmark_spread() -> None:
    assert Config().data.variation == DEMO_VARIATION
    v = Variation.from_dict(DEMO_VARIATION)
    base = Variation()
    assert v.yaw > base.yaw and v.pitch > base.pitch and v.roll > base.roll
    assert v.lighting > base.lighting and v.occlusion > 0


def test_demo_spread_widens_pose(default_faces, demo_faces) -> None:
    (_, lm0), (_, lm1) = default_faces, demo_faces
    # uniform in ±range: the std grows with the range (8° -> 15° roll, 15° -> 40° yaw)
    assert np.std(_roll(lm1)) > 1.4 * np.std(_roll(lm0))
    assert np.std(_yaw_proxy(lm1)) > 1.8 * np.std(_yaw_proxy(lm0))
    assert np.abs(_roll(lm1)).max() > 10 and np.abs(_roll(lm0)).max() < 10


def test_demo_spread_widens_lighting(default_faces, demo_faces) -> None:
    (im0, _), (im1, _) = default_faces, demo_faces

    # left-right brightness difference of the face area: the light gradient
    def gradient(images: np.ndarray) -> np.ndarray:
        grey = images[:, 30:100, 20:92].mean(-1)
        return grey[:, :, :36].mean((1, 2)) - grey[:, :, 36:].mean((1, 2))

    assert np.std(gradient(im1)) > 1.3 * np.std(gradient(im0))


def test_occluders_are_drawn_at_their_rate() -> None:
    ident = sample_identity(np.random.default_rng(0))
    changed = 0
    for k in range(40):
        pose = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0, "mouth_open": 0.0, "smile": 0.0}
        a, _ = draw_aligned_face(ident, np.random.default_rng(k), postprocess=False, **pose)
        b, _ = draw_aligned_face(
            ident,
            np.random.default_rng(k),
            postprocess=False,
            variation=Variation(occlusion=0.5),
            **pose,
        )
        changed += not np.array_equal(a, b)
    assert 10 <= changed <= 30  # p = 0.5 of 40


def test_default_variation_draws_the_same_bytes() -> None:
    ident = sample_identity(np.random.default_rng(1))
    for k in range(4):
        a, la = draw_aligned_face(ident, np.random.default_rng(k))
        b, lb = draw_aligned_face(ident, np.random.default_rng(k), variation=Variation())
        assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_variation_reaches_source_and_pack(tmp_path: Path) -> None:
    src = SyntheticSource(2, 2, seed=0, cache="none", variation=DEMO_VARIATION)
    assert src.faces.variation == Variation.from_dict(DEMO_VARIATION)
    ref = SyntheticFaces(2, 2, seed=0, variation=DEMO_VARIATION)
    assert np.array_equal(src[3][0], ref[3][0])
    pack, info = build_synthetic_pack(tmp_path / "p.bin", 3, 2, 4, seed=9, variation=DEMO_VARIATION)
    assert info["variation"] == Variation.from_dict(DEMO_VARIATION).to_dict()
    plain, _ = build_synthetic_pack(tmp_path / "q.bin", 3, 2, 4, seed=9)
    assert load_bin(pack).num_pairs == 4
    assert pack.read_bytes() != plain.read_bytes()


def test_disk_cache_is_keyed_by_variation(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["data.num_identities=2", "data.images_per_identity=2",
                                     "data.cache=disk"])  # fmt: skip
    a = open_source(cfg.data, tmp_path)
    b = open_source(apply_overrides(cfg, ["data.variation={}"]).data, tmp_path)
    files = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert files == ["synthetic_2x2_s0.npz", f"synthetic_2x2_s0_v{files[1][-12:-4]}.npz"]
    assert not np.array_equal(a[0][0], b[0][0])
    with np.load(tmp_path / files[1]) as z:  # the key inside the file holds the spread too
        assert (
            json.loads(str(z["key"]))["variation"] == Variation.from_dict(DEMO_VARIATION).to_dict()
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{yawn: 3}", "data.variation: unknown variation key 'yawn'"),
        ("{yaw: -1}", "data.variation: variation.yaw must be finite and >= 0"),
        ("{occlusion: 2}", "data.variation: variation.occlusion is a probability"),
    ],
)
def test_bad_variation_names_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(apply_overrides(Config(), [f"data.variation={value}"]))
