"""Training data with per-face landmarks from a cache (``data.landmarks``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.config import ConfigError, DataConfig, load_config
from distill.data import DatasetError, open_source
from distill.eval.inputs import _build_entry
from maskgen.dataset.landmark_job import fit_landmarks
from maskgen.io import RecordWriter, encode_image, load_bin, save_bin
from maskgen.landmarks.cache import STATUS, LandmarkCache, write_cache
from maskgen.protocol import dataset_sha256
from maskgen.render import MaskSpec
from maskgen.synthetic import SyntheticFaces


@pytest.fixture()
def rec(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 6-image RecordIO set of synthetic aligned faces and their exact landmarks."""
    faces = SyntheticFaces(3, 2, seed=1)
    path = tmp_path / "train.rec"
    exact = []
    with RecordWriter(path) as writer:
        for i in range(len(faces)):
            image, label, lm = faces[i]
            writer.write_image(i + 1, image, label=label)
            exact.append(lm)
        writer.write_header_record()
    return path, np.stack(exact).astype(np.float32)


def _cache(path: Path, keys: list[str], lm: np.ndarray, status: list[str]) -> Path:
    codes = np.array([STATUS.index(s) for s in status], np.uint8)
    lm = lm.copy()
    lm[codes >= STATUS.index("no_face")] = np.nan
    reasons = {k: s for k, s in zip(keys, status, strict=True) if s != "fitted"}
    return write_cache(path, keys, lm, codes, reasons, {"backend": "file", "input": "x"})


def test_recordio_items_carry_the_cached_landmarks(tmp_path: Path, rec) -> None:
    path, exact = rec
    keys = [str(k) for k in range(1, 7)]
    order = [5, 0, 1, 2, 3, 4]  # the cache's order need not be the set's: keys match
    cache = _cache(tmp_path / "train.landmarks", [keys[i] for i in order], exact[order],
                   ["fitted"] * 6)  # fmt: skip
    source = open_source(DataConfig(source="recordio", path=str(path), landmarks=f"cache:{cache}"))
    assert len(source) == 6 and source.num_classes == 3
    for i in range(6):
        image, _, lm = source[i]
        np.testing.assert_array_equal(lm, exact[i])
        assert image.shape == (112, 112, 3)
    plain = open_source(DataConfig(source="recordio", path=str(path)))
    assert not np.array_equal(plain[0][2], exact[0])  # the canonical layout otherwise


def test_items_without_cached_landmarks_are_refused_up_front(tmp_path: Path, rec) -> None:
    path, exact = rec
    keys = [str(k) for k in range(1, 7)]
    cache = _cache(tmp_path / "c", keys[:5], exact[:5], ["fitted", "no_face", *["fitted"] * 3])
    with pytest.raises(DatasetError, match=r"2 of 6 training images have no landmarks.*2 \("):
        open_source(DataConfig(source="recordio", path=str(path), landmarks=str(cache)))
    with pytest.raises(DatasetError, match=r"data\.landmarks: .*not a landmark cache"):
        open_source(DataConfig(source="recordio", path=str(path), landmarks=str(tmp_path)))


def test_a_cache_for_synthetic_data_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  landmarks: cache:x.landmarks\n")
    with pytest.raises(ConfigError, match=r"data\.landmarks is for folder and recordio"):
        load_config(cfg).validate()


def test_distill_eval_reads_a_landmark_cache_made_on_its_pack(tmp_path: Path) -> None:
    """``maskgen landmarks x.bin`` keys images 000000…: evaluation finds them by those keys."""
    faces = SyntheticFaces(4, 1, seed=2)
    pack = tmp_path / "lfw.bin"
    save_bin(pack, [encode_image(faces[i][0], ".png") for i in range(4)], [True, False])
    cache = tmp_path / "lfw.landmarks"
    fit_landmarks(pack, cache, landmarks="aligned", workers=1, progress=False)
    data = load_bin(pack)
    entry = _build_entry("lfw", data, ("m-m",), 0, MaskSpec(), f"cache:{cache}",
                         dataset_sha256(data), progress=False)  # fmt: skip
    assert entry.landmarks == f"cache:{cache}" and entry.points is not None
    stored = LandmarkCache(cache)
    for i, points in enumerate(entry.points):
        np.testing.assert_array_equal(points, stored.get(f"{i:06d}").landmarks)
