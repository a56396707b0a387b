"""Landmark backends: the registry, dlib on real and synthetic photos, aligned, file,
face-alignment wiring, face selection and the import cost of ``maskgen.landmarks``."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from maskgen.landmarks import (
    AlignedLayout,
    Backend,
    DlibDetector,
    Downscaled,
    Face,
    FaceAlignmentDetector,
    FaceAlignmentWeightsError,
    FileLandmarks,
    available_backends,
    canonical_68,
    create_backend,
    load_annotation,
    mirror_landmarks,
    plausibility_problem,
    read_pts,
    register_backend,
    select_faces,
    skin_fraction,
    unregister_backend,
)
from maskgen.landmarks.backends.fan import FAN_FILE
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


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------

#: The configuration the render pipeline passes to every backend (RenderOptions.backend_config).
PIPELINE_OPTIONS: dict[str, object] = {
    "landmarks_dir": None,
    "fa_weights": None,
    "fa_detector": "sfd",
    "fa_detector_weights": None,
    "detect_max_side": 800,
}


def _needs_dlib() -> None:
    pytest.importorskip("dlib", reason="the dlib backends need dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("the dlib backends need the package face_recognition_models")


def _check_aligned(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    backend = create_backend("aligned", **PIPELINE_OPTIONS)
    (face,) = backend.detect(astro)
    assert backend.name == face.backend == "aligned" and face.box == (0.0, 0.0, 512.0, 512.0)


def _check_aligned_fit(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    _needs_dlib()
    backend = create_backend("aligned-fit", **PIPELINE_OPTIONS)
    (face,) = backend.detect(cv2.resize(astro, (112, 112)))  # not aligned: a poor fit
    assert backend.name == face.backend == "aligned-fit" and face.fit in ("fitted", "fallback")


def _check_cache(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    from maskgen.landmarks.cache import write_cache

    truth = AlignedLayout().detect(astro)[0].landmarks
    folder = write_cache(tmp_path / "astro.landmarks", ["astro.png"], truth[None],
                         np.array([1], np.uint8), {}, {"backend": "file"})  # fmt: skip
    with pytest.raises(ValueError, match="needs a path"):
        create_backend("cache", **PIPELINE_OPTIONS)
    backend = create_backend(f"cache:{folder}", **PIPELINE_OPTIONS)
    (face,) = backend.detect(astro, "astro.png")
    assert backend.name == "cache(file)" and face.backend == "file"
    np.testing.assert_array_equal(face.landmarks, truth)


def _check_dlib(name: str, upsample: int) -> Callable[[np.ndarray, Path, Path], None]:
    def check(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
        _needs_dlib()
        backend = create_backend(name, **PIPELINE_OPTIONS, upsample=upsample)
        assert isinstance(backend, Downscaled) and isinstance(backend.inner, DlibDetector)
        kept, _ = select_faces(astro, backend.detect(astro))
        assert backend.name == name and [f.backend for f in kept] == [name]
        assert _iou(kept[0].box, ASTRO_FACE) > 0.6

    return check


def _check_face_alignment(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    pytest.importorskip("face_alignment", reason="the face_alignment backend needs it")
    # No FAN weights can be downloaded here: the backend must say where to put them.
    with pytest.raises(FaceAlignmentWeightsError, match="never downloads") as info:
        create_backend("face_alignment", **PIPELINE_OPTIONS, device="cpu")
    assert str(hub / FAN_FILE) in str(info.value)


def _check_auto(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    _needs_dlib()
    backend = create_backend("auto", **PIPELINE_OPTIONS)
    assert backend.name == "auto(dlib)"  # no face-alignment weights in the empty hub cache
    assert {f.backend for f in backend.detect(astro)} == {"dlib"}
    assert backend.detect(cv2.resize(astro, (112, 112)))[0].backend == "aligned"


def _check_file(astro: np.ndarray, tmp_path: Path, hub: Path) -> None:
    truth = AlignedLayout().detect(astro)[0].landmarks
    np.save(tmp_path / "astro.npy", truth)
    with pytest.raises(ValueError, match="--landmarks-dir"):
        create_backend("file", **PIPELINE_OPTIONS)
    backend = create_backend("file", **{**PIPELINE_OPTIONS, "landmarks_dir": tmp_path})
    (face,) = backend.detect(astro, "astro.png")
    assert backend.name == face.backend == "file"
    np.testing.assert_array_equal(face.landmarks, truth)


#: One creation check per built-in backend: each builds it with the pipeline's options.
CREATION_CHECKS: dict[str, Callable[[np.ndarray, Path, Path], None]] = {
    "aligned": _check_aligned,
    "aligned-fit": _check_aligned_fit,
    "auto": _check_auto,
    "cache": _check_cache,
    "dlib": _check_dlib("dlib", upsample=1),
    "dlib-cnn": _check_dlib("dlib-cnn", upsample=0),  # the CNN is slow on CPU: no upsampling
    "face_alignment": _check_face_alignment,
    "file": _check_file,
}


@pytest.mark.parametrize("name", available_backends())
def test_every_registered_backend_can_be_created(
    name: str, astro: np.ndarray, tmp_path: Path, offline: Path
) -> None:
    check = CREATION_CHECKS.get(name)
    assert check is not None, f"backend {name!r} is registered but has no creation check"
    check(astro, tmp_path, offline)


def test_unknown_backend_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown landmark backend 'nope'") as info:
        create_backend("nope")
    names = available_backends()
    assert set(CREATION_CHECKS) <= set(names)
    assert f"choose from {', '.join(names)}" in str(info.value)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) upsampel; .*upsample"):
        create_backend("dlib", upsampel=2)


class MirroredLayout:
    """The aligned layout of the mirrored crop, mapped back: a backend built at test time."""

    name = "mirrored"

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def detect(self, image: np.ndarray, key: str | None = None) -> list[Face]:
        (face,) = AlignedLayout().detect(np.ascontiguousarray(image[:, ::-1]), key)
        lm = mirror_landmarks(face.landmarks, image.shape[1]) + np.float32(self.shift)
        return [Face(face.box, lm.astype(np.float32), 1.0, self.name)]


def test_backend_registered_at_test_time_is_creatable_then_removed(astro: np.ndarray) -> None:
    @register_backend("test-mirrored")
    def create_mirrored(*, shift: float = 0.0) -> Backend:
        return MirroredLayout(shift)

    try:
        assert "test-mirrored" in available_backends()
        with pytest.raises(ValueError, match="already registered"):
            register_backend("test-mirrored")(create_mirrored)
        # Its own option reaches it; a shared option of the other backends is ignored.
        backend = create_backend("test-mirrored", shift=0.0, detect_max_side=400)
        crop = cv2.resize(astro, (112, 112))
        (face,) = backend.detect(crop)
        np.testing.assert_allclose(face.landmarks, canonical_68(), atol=1e-2)
        (shifted,) = create_backend("test-mirrored", shift=2.0).detect(crop)
        np.testing.assert_allclose(shifted.landmarks - face.landmarks, 2.0, atol=1e-4)
    finally:
        assert unregister_backend("test-mirrored") is create_mirrored
    assert "test-mirrored" not in available_backends()
    with pytest.raises(ValueError, match="unknown landmark backend 'test-mirrored'"):
        create_backend("test-mirrored")
    with pytest.raises(TypeError, match="shift"):  # its option went with it
        create_backend("aligned", shift=1.0)


def test_importing_landmarks_loads_no_detector_library() -> None:
    probe = (
        "import sys, maskgen.landmarks; "
        "print(' '.join(m for m in ('dlib', 'torch', 'face_alignment') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
