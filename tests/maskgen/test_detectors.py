"""Landmark backends: dlib on real and synthetic photos, aligned, file, face-alignment wiring."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from maskgen.landmarks import canonical_68, plausibility_problem
from maskgen.landmarks.detectors import (
    FAN_FILE,
    AlignedLayout,
    DlibDetector,
    Downscaled,
    Face,
    FaceAlignmentDetector,
    FaceAlignmentWeightsError,
    FileLandmarks,
    create_backend,
    load_annotation,
    read_pts,
    select_faces,
    skin_fraction,
)
from maskgen.synthetic import draw_wild_face, sample_identity

ASTRO_FACE = (175.0, 76.0, 265.0, 166.0)
ASTRO_BADGE = (126.0, 335.0, 215.0, 425.0)


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    return DlibDetector(upsample=1)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network (any connection attempt fails at once) and an empty torch hub cache."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in the tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_dlib_finds_the_badge_but_only_the_face_is_kept(astro, dlib_detector) -> None:
    faces = dlib_detector.detect(astro)
    boxes = sorted(f.box for f in faces)
    assert any(_iou(b, ASTRO_BADGE) > 0.5 for b in boxes)  # the known false positive
    kept, reasons = select_faces(astro, faces)
    assert len(kept) == 1 and _iou(kept[0].box, ASTRO_FACE) > 0.7
    assert len(reasons) == 1 and "skin" in reasons[0]
    assert plausibility_problem(kept[0].landmarks) is None


def test_largest_mode_and_min_face(astro, dlib_detector) -> None:
    faces = dlib_detector.detect(astro)
    fake_small = Face((0.0, 0.0, 30.0, 30.0), faces[0].landmarks * 0.3, 1.0, "dlib")
    kept, _ = select_faces(astro, [*faces, fake_small], mode="largest", check_skin=False)
    assert len(kept) == 1 and kept[0].box_area == max(f.box_area for f in faces)
    kept, reasons = select_faces(astro, faces, min_face=120)
    assert kept == [] and any("too small" in r for r in reasons)


@pytest.mark.parametrize("seed", [3, 8])
def test_dlib_lands_near_the_true_landmarks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ident = sample_identity(rng)
    image, truth = draw_wild_face(ident, rng, (360, 480), yaw=0, pitch=0, roll=5, face_frac=0.4)
    kept, _ = select_faces(image, create_backend("dlib").detect(image))
    assert len(kept) == 1
    iod = np.linalg.norm(truth[36:42].mean(0) - truth[42:48].mean(0))
    err = np.linalg.norm(kept[0].landmarks - truth, axis=1)
    assert np.median(err) < 0.25 * iod


def test_downscaled_detection_returns_full_resolution_landmarks(astro, dlib_detector) -> None:
    big = cv2.resize(astro, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    faces = Downscaled(dlib_detector, max_side=512).detect(big)
    kept, _ = select_faces(big, faces)
    assert len(kept) == 1
    assert _iou(kept[0].box, tuple(v * 3 for v in ASTRO_FACE)) > 0.6
    small = select_faces(astro, dlib_detector.detect(astro))[0][0]
    assert np.median(np.linalg.norm(kept[0].landmarks / 3 - small.landmarks, axis=1)) < 3


def test_aligned_layout_and_auto_on_aligned_crops(offline: Path) -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    (face,) = AlignedLayout().detect(crop)
    np.testing.assert_allclose(face.landmarks, canonical_68(), atol=1e-5)
    auto = create_backend("auto")
    assert auto.name == "auto(dlib)"  # no face-alignment weights in the empty hub cache
    assert auto.detect(crop)[0].backend == "aligned"


def test_skin_fraction_is_none_without_colour() -> None:
    gray = np.full((112, 112, 3), 100, np.uint8)
    assert skin_fraction(gray, canonical_68()) is None


def test_file_backend_reads_npy_json_and_pts(tmp_path: Path, astro, dlib_detector) -> None:
    truth = select_faces(astro, dlib_detector.detect(astro))[0][0]
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "one.npy", truth.landmarks)
    (tmp_path / "two.json").write_text(json.dumps({"faces": [{"box": list(truth.box)}]}))
    pts = "version: 1\nn_points: 68\n{\n"
    pts += "".join(f"{x + 1} {y + 1}\n" for x, y in truth.landmarks) + "}\n"
    (tmp_path / "three.pts").write_text(pts)
    backend = FileLandmarks(tmp_path, predictor=dlib_detector)
    (one,) = backend.detect(astro, "a/one.jpg")
    np.testing.assert_allclose(one.landmarks, truth.landmarks)
    (two,) = backend.detect(astro, "two.png")
    assert two.backend == "file-box"
    np.testing.assert_allclose(two.landmarks, truth.landmarks, atol=1.0)
    np.testing.assert_allclose(read_pts(tmp_path / "three.pts"), truth.landmarks, atol=1e-4)
    assert len(backend.detect(astro, "three.jpg")) == 1
    with pytest.raises(FileNotFoundError, match="no landmark file"):
        backend.detect(astro, "missing.jpg")


def test_annotation_formats_reject_bad_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((7, 3)))
    with pytest.raises(ValueError, match="expected landmarks"):
        load_annotation(tmp_path / "bad.npy")
    five = np.array([[30, 50], [80, 50], [55, 70], [35, 90], [75, 90]], np.float32)
    np.save(tmp_path / "five.npy", five)
    (face,) = FileLandmarks(tmp_path).detect(np.zeros((112, 112, 3), np.uint8), "five.jpg")
    assert face.landmarks.shape == (68, 2)


def test_face_alignment_missing_weights_message(offline: Path) -> None:
    with pytest.raises(FaceAlignmentWeightsError) as info:
        create_backend("face_alignment")
    text = str(info.value)
    assert str(offline / FAN_FILE) in text
    assert "--fa-weights" in text and "--landmarks dlib" in text and "never downloads" in text


class _FixedHeatmaps(torch.nn.Module):
    """Stand-in FAN: ignores the crop and puts each landmark where an average face sits."""

    def __init__(self) -> None:
        super().__init__()
        # The canonical aligned layout, placed in the 64×64 heatmap frame of a FAN crop.
        pts = (canonical_68() - [56.0, 72.0]) * 0.34 + np.array([32.0, 36.0], np.float32)
        heat = torch.zeros(68, 64, 64)
        for j, (x, y) in enumerate(np.round(pts).astype(int)):
            heat[j, y, x] = 1.0
        self.register_buffer("heat", heat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heat.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_face_alignment_loads_a_torchscript_stand_in_from_the_hub_cache(offline, astro) -> None:
    offline.mkdir(parents=True)
    torch.jit.script(_FixedHeatmaps()).save(str(offline / FAN_FILE))
    fa = FaceAlignmentDetector(detector="dlib", device="cpu", batch_size=2)
    faces, small = fa.detect_batch([astro, cv2.resize(astro, (256, 256))])
    assert len(small) == 1 and _iou(small[0].box, tuple(v / 2 for v in ASTRO_FACE)) > 0.6
    assert len(faces) == 2 and all(f.backend == "face_alignment" for f in faces)
    kept, _ = select_faces(astro, faces)
    assert len(kept) == 1 and _iou(kept[0].box, ASTRO_FACE) > 0.7
    x0, y0, x1, y1 = kept[0].box
    centre = kept[0].landmarks[27:36].mean(0)
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1


def test_face_alignment_loads_a_state_dict_and_runs_batched(offline, astro) -> None:
    from face_alignment.models import FAN

    offline.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(1).state_dict(), offline / FAN_FILE)  # a 1-module FAN, random weights
    fa = FaceAlignmentDetector(detector="dlib", device="cpu", flip_input=False)
    (face,) = fa.detect(cv2.resize(astro, (256, 256)))  # one crop: random FANs are slow
    assert face.landmarks.shape == (68, 2) and np.isfinite(face.landmarks).all()


def test_face_alignment_rejects_a_broken_weights_file(offline) -> None:
    offline.mkdir(parents=True)
    (offline / FAN_FILE).write_bytes(b"not a model")
    with pytest.raises(FaceAlignmentWeightsError, match="not a usable"):
        FaceAlignmentDetector(detector="dlib", device="cpu")
    assert create_backend("auto").name == "auto(dlib)"
