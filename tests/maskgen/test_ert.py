"""The compiled shape predictor (``maskgen.landmarks.ert``): dlib's serialization decoded
from bytes encoded here by the documented format, a tiny model written here and read by
both dlib and the parser, and dlib's 68-point model compared landmark by landmark."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from maskgen.landmarks.backends.aligned_fit import fit_box
from maskgen.landmarks.ert import (
    ERTPredictor,
    decode_float,
    decode_int,
    parse_dlib_shape_predictor,
)
from maskgen.synthetic import SyntheticFaces, draw_wild_face, sample_identity

# --- dlib's serialization, written by hand (dlib/serialize.h, dlib/float_details.h) --------


def enc_int(value: int, signed: bool = True) -> bytes:
    """Control byte (byte count, bit 7 the sign), then the magnitude's bytes, low first."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if signed and value < 0 else 0)]) + body


def enc_float(value: float) -> bytes:
    """A float32 as (mantissa, exponent) integers: value = mantissa·2^exponent."""
    value = float(np.float32(value))
    if math.isnan(value):
        return enc_int(0) + enc_int(32002)
    if math.isinf(value):
        return enc_int(0) + enc_int(32000 if value > 0 else 32001)
    fraction, exponent = math.frexp(value)
    mantissa, exponent = int(fraction * (1 << 24)), exponent - 24
    while mantissa and mantissa & 0xFF == 0:  # dlib drops zero low bytes
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_column(values: np.ndarray) -> bytes:
    """A ``matrix<float,0,1>``: rows and columns negated, then the values."""
    return enc_int(-len(values)) + enc_int(-1) + b"".join(enc_float(v) for v in values)


def enc_tree(idx1, idx2, thresh, leaves) -> bytes:
    """A regression tree: its splits (idx1, idx2, thresh), then its leaf vectors."""
    out = [enc_int(len(idx1), False)]
    for a, b, c in zip(idx1, idx2, thresh, strict=True):
        out += [enc_int(int(a), False), enc_int(int(b), False), enc_float(c)]
    out.append(enc_int(len(leaves), False))
    return b"".join(out + [enc_column(leaf) for leaf in leaves])


def enc_tables(anchors, deltas) -> bytes:
    """``anchor_idx`` and ``deltas`` (per level, per feature pixel)."""
    out = [enc_int(len(anchors), False)]
    for row in anchors:
        out += [enc_int(len(row), False)] + [enc_int(int(a), False) for a in row]
    out.append(enc_int(len(deltas), False))
    for row in deltas:
        out += [enc_int(len(row), False)] + [enc_float(x) + enc_float(y) for x, y in row]
    return b"".join(out)


def enc_model(initial, idx1, idx2, thresh, leaves, anchors, deltas) -> bytes:
    """A version-1 ``shape_predictor``."""
    out = [enc_int(1), enc_column(initial), enc_int(idx1.shape[0], False)]
    for lv in range(idx1.shape[0]):
        out.append(enc_int(idx1.shape[1], False))
        for t in range(idx1.shape[1]):
            out.append(enc_tree(idx1[lv, t], idx2[lv, t], thresh[lv, t], leaves[lv, t]))
    return b"".join(out) + enc_tables(anchors, deltas)


def tiny_model(rng: np.random.Generator, parts: int = 5, levels: int = 3, trees: int = 7):
    """Random arrays of a complete-tree model (depth 2)."""
    features, splits = 24, 3
    initial = rng.uniform(0.1, 0.9, 2 * parts).astype(np.float32)
    idx1 = rng.integers(0, features, (levels, trees, splits)).astype(np.int32)
    idx2 = rng.integers(0, features, (levels, trees, splits)).astype(np.int32)
    thresh = rng.normal(0, 40, (levels, trees, splits)).astype(np.float32)
    leaves = rng.normal(0, 0.02, (levels, trees, splits + 1, 2 * parts)).astype(np.float32)
    anchors = rng.integers(0, parts, (levels, features)).astype(np.int32)
    deltas = rng.normal(0, 0.3, (levels, features, 2)).astype(np.float32)
    return initial, idx1, idx2, thresh, leaves, anchors, deltas


# --- the decoder ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 136, 255, 256, -1, -136, 2**40 + 5, -(2**62)])
def test_integers_decode_as_encoded(value):
    assert decode_int(enc_int(value)) == value
    if value >= 0:
        assert decode_int(enc_int(value, False), signed=False) == value


def test_known_integer_bytes():
    assert decode_int(bytes([0x01, 0x00])) == 0
    assert decode_int(bytes([0x81, 0x88])) == -136  # a matrix's negated row count
    assert decode_int(bytes([0x02, 0x34, 0x12]), signed=False) == 0x1234
    # The 3 reserved bits of the control byte are ignored.
    assert decode_int(bytes([0x71, 0x05]), signed=False) == 5


@pytest.mark.parametrize(
    "data",
    [b"", bytes([0x00]), bytes([0x09]) + bytes(9), bytes([0x02, 0x01]), bytes([0x81, 0x01])],
)
def test_malformed_integers_are_refused(data):
    with pytest.raises(ValueError, match="bytes"):
        decode_int(data, signed=False)


def test_floats_decode_as_encoded():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.normal(0, 1, 200),
            rng.normal(0, 1e-30, 20),
            [0.0, 1.0, -1.5, 0.1, 63.999706, 1e38, 1e-45, 2.0**-130],
        ]
    ).astype(np.float32)
    for v in values:
        assert np.float32(decode_float(enc_float(v))) == v
    assert decode_float(enc_float(np.inf)) == np.inf
    assert decode_float(enc_float(-np.inf)) == -np.inf
    assert np.isnan(decode_float(enc_float(np.nan)))


def test_uncompacted_and_double_mantissas_round_like_dlib():
    # 1.5 with its zero low bytes kept: 0xC00000·2^-23.
    assert decode_float(enc_int(0xC00000) + enc_int(-23)) == 1.5
    # A 53-bit (double) mantissa is cast to float first, rounding to nearest.
    mantissa = (1 << 52) + (1 << 28) + 1
    expected = float(np.float32(mantissa)) * 2.0**-52
    assert decode_float(enc_int(mantissa) + enc_int(-52)) == expected


def test_a_model_parses_to_its_arrays(tmp_path):
    arrays = tiny_model(np.random.default_rng(1))
    model = parse_dlib_shape_predictor(enc_model(*arrays))
    model_tables = (model.anchors, model.deltas)
    for got, want in zip(
        (model.initial, model.idx1, model.idx2, model.thresh, model.leaves, *model_tables),
        arrays,
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.flags.c_contiguous


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda b: b[:-3], "ends inside a value"),
        (lambda b: enc_int(2) + b[2:], "version-1"),
        (lambda b: b + enc_int(0), "bytes left after the model"),
    ],
)
def test_damaged_models_are_refused_with_the_file_name(damage, problem):
    data = damage(enc_model(*tiny_model(np.random.default_rng(2))))
    with pytest.raises(ValueError, match=f"model.dat: .*{problem}"):
        parse_dlib_shape_predictor(data, "model.dat")


def test_trees_of_unequal_depth_are_refused():
    """A valid dlib file (a depth-2 tree, then a depth-1 one) that the arrays cannot hold."""
    initial, idx1, idx2, thresh, leaves, anchors, deltas = tiny_model(
        np.random.default_rng(3), levels=1, trees=2
    )
    trees = [
        enc_tree(idx1[0, 0], idx2[0, 0], thresh[0, 0], leaves[0, 0]),
        enc_tree(idx1[0, 1, :1], idx2[0, 1, :1], thresh[0, 1, :1], leaves[0, 1, :2]),
    ]
    data = b"".join([enc_int(1), enc_column(initial), enc_int(1, False), enc_int(2, False), *trees])
    with pytest.raises(ValueError, match="unequal sizes"):
        parse_dlib_shape_predictor(data + enc_tables(anchors, deltas), "ragged.dat")


def test_corrupted_models_parse_or_are_refused_never_crash():
    rng = np.random.default_rng(5)
    data = enc_model(*tiny_model(rng))
    refused = 0
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            damaged[int(rng.integers(len(damaged)))] = int(rng.integers(256))
        try:
            model = parse_dlib_shape_predictor(bytes(damaged), "damaged.dat")
        except ValueError as exc:
            assert str(exc).startswith("damaged.dat: ")
            refused += 1
            continue
        # What parses is in range: predicting cannot read outside its arrays.
        assert model.idx1.max() < model.anchors.shape[1] and model.anchors.max() < 5
        assert ERTPredictor(model).predict(np.zeros((20, 20), np.uint8), (2, 2, 15, 15)).shape
    assert 0 < refused < 300


# --- against dlib ---------------------------------------------------------------------------


def _dlib_parts(predictor, image: np.ndarray, box) -> np.ndarray:
    import dlib

    shape = predictor(image, dlib.rectangle(*(int(v) for v in box)))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("leaf_scale", [1.0, 10.0])
def test_a_tiny_model_predicts_what_dlib_predicts(tmp_path, seed, leaf_scale):
    """Random trees on a random image; large leaves scramble the shapes (mirrored ones
    too, as on crops without a face), which exercises every branch of the transforms."""
    dlib = pytest.importorskip("dlib")
    rng = np.random.default_rng([4, seed])
    arrays = list(tiny_model(rng, levels=6, trees=12))
    arrays[4] = (arrays[4] * leaf_scale).astype(np.float32)
    path = tmp_path / "tiny.dat"
    path.write_bytes(enc_model(*arrays))
    theirs = dlib.shape_predictor(str(path))  # dlib reads the file we wrote: the format
    ours = ERTPredictor.from_dlib_file(path)
    image = rng.integers(0, 256, (90, 120, 3), np.uint8)
    boxes = [(10, 10, 60, 60), (-20, 30, 40, 95), (70, 5, 130, 70), (0, 0, 119, 89)]
    for img in (image, np.ascontiguousarray(image[..., 1])):
        expected = [_dlib_parts(theirs, img, b) for b in boxes]
        for box, want in zip(boxes, expected, strict=True):
            np.testing.assert_array_equal(ours.predict(img, box), want)
        np.testing.assert_array_equal(ours.predict_many(img, np.array(boxes)), expected)
    # Boxes on several images of different sizes (RGB and grey) through the cascade
    # together, in chunks of any size: each box gets what dlib gives it alone.
    images = [image, np.ascontiguousarray(image[10:70, 20:, 2]), image[::-1, ::2].copy()]
    index = [0, 1, 2, 0, 1, 2, 2, 1]
    batch_boxes = [boxes[i % len(boxes)] for i in range(len(index))]
    expected = [_dlib_parts(theirs, images[i], b) for i, b in zip(index, batch_boxes, strict=True)]
    for chunk in (1, 3, 256):
        got = ours.predict_batch(images, np.array(batch_boxes), index, chunk=chunk)
        np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def predictors():
    dlib = pytest.importorskip("dlib")
    try:
        from maskgen.landmarks.backends.dlib import face_recognition_models_dir

        path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
    except RuntimeError:
        pytest.skip("face_recognition_models is not installed")
    if not Path(path).is_file():
        pytest.skip(f"{path} is absent")
    return ERTPredictor.from_dlib_file(path), dlib.shape_predictor(str(path))


def _compare(ours, theirs, cases) -> tuple[int, int, float]:
    """Predictions compared, predictions with any landmark off, largest difference."""
    differing, worst = 0, 0.0
    for image, box in cases:
        d = np.abs(ours.predict(image, box) - _dlib_parts(theirs, image, box)).max()
        differing += int(d > 0)
        worst = max(worst, float(d))
    return len(cases), differing, worst


def _check(counts: tuple[int, int, float], what: str) -> None:
    n, differing, worst = counts
    print(f"{what}: {n} predictions, {differing} with a landmark off, largest {worst} px")
    # The float32 arithmetic is dlib's, operation by operation; what is not reproduced
    # bit for bit is dlib's double-precision solve of the box transform (pinv) and its
    # SVD for the similarity transform, which can only matter at an exact half-pixel tie.
    # Such ties are rare (none in these cases when written); allow one in 200 predictions
    # and a one-pixel difference.
    assert differing <= n // 200 and worst <= 1.0


def test_aligned_crops_get_dlibs_landmarks(predictors):
    ours, theirs = predictors
    ds = SyntheticFaces(40, 3, seed=11, kind="aligned")
    box = fit_box(112)
    cases = []
    for i in range(len(ds)):
        image = ds[i][0]
        for shift in (-3.0, 0.0, 3.0):
            cases.append((image, tuple(round(v + shift) for v in box)))
    cases += [(np.ascontiguousarray(img.mean(2).astype(np.uint8)), b) for img, b in cases[::7]]
    _check(_compare(ours, theirs, cases), "aligned crops")


def test_wild_faces_get_dlibs_landmarks(predictors):
    ours, theirs = predictors
    cases = []
    for seed in range(12):
        rng = np.random.default_rng([seed, 5])
        image, exact = draw_wild_face(sample_identity(rng), rng, (240, 320))
        (x0, y0), (x1, y1) = exact.min(0), exact.max(0)
        pad = 0.1 * (x1 - x0)
        cases.append((image, (round(x0 - pad), round(y0 - pad), round(x1 + pad), round(y1))))
        # A box hanging off the image: feature pixels outside read 0.
        cases.append((image, (-40, -30, 100, 110)))
    _check(_compare(ours, theirs, cases), "wild faces")


def test_aligned_fit_gives_what_it_gave_with_dlibs_predictor(predictors):
    """The backend's landmarks and verdicts are unchanged by the compiled predictor."""
    import cv2

    from maskgen.landmarks import ARCFACE_112, similarity_transform, to_five
    from maskgen.landmarks.backends.aligned_fit import AlignedFit

    crops = [SyntheticFaces(8, 2, seed=12, kind="aligned")[i][0] for i in range(16)]
    for seed in range(8):
        rng = np.random.default_rng([seed, 9])
        image, exact = draw_wild_face(sample_identity(rng), rng, yaw=float(rng.uniform(-45, 45)))
        M = similarity_transform(to_five(exact), ARCFACE_112)
        crops.append(cv2.warpAffine(image, M, (112, 112), flags=cv2.INTER_LINEAR))
    crops += [
        np.full((112, 112, 3), 128, np.uint8),
        np.random.default_rng(0).integers(0, 256, (112, 112, 3), np.uint8),
        np.ascontiguousarray(crops[0].mean(2).astype(np.uint8)),  # grey input
        cv2.resize(crops[1], (224, 224)),  # a larger aligned crop
    ]
    for verify in (True, False):
        ours, theirs = AlignedFit(verify=verify), AlignedFit(verify=verify, engine="dlib")
        assert (ours.engine, theirs.engine) == ("ert", "dlib")
        verdicts = set()
        for crop in crops:
            (a,), (b,) = ours.detect(crop), theirs.detect(crop)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert (a.fit, a.fit_reason) == (b.fit, b.fit_reason)
            verdicts.add(a.fit)
        assert verdicts == ({"fitted", "fallback"} if verify else {"fitted"})


def test_aligned_fit_falls_back_to_dlib_when_the_file_does_not_parse(monkeypatch, tmp_path):
    pytest.importorskip("dlib")
    from maskgen.landmarks.backends import aligned_fit
    from maskgen.landmarks.backends import dlib as dlib_backend

    (tmp_path / "shape_predictor_68_face_landmarks.dat").write_bytes(b"\x01\x02junk")
    monkeypatch.setattr(dlib_backend, "face_recognition_models_dir", lambda: tmp_path)
    monkeypatch.setattr(dlib_backend, "_dlib_model", lambda kind: "dlib's own")
    with pytest.warns(UserWarning, match="aligned-fit uses dlib's predictor"):
        fit = aligned_fit.AlignedFit()
    assert fit.engine == "dlib" and "not a readable dlib shape_predictor" in fit.engine_note
    assert fit._predictor == "dlib's own"
    with pytest.raises(ValueError, match=r"shape_predictor_68_face_landmarks\.dat: not a readable"):
        aligned_fit.AlignedFit(engine="ert")


def test_a_batch_gives_each_box_what_it_gets_alone(predictors):
    """``predict_batch`` over crops of different images and sizes (RGB, grey, a uniform
    grey crop, a box hanging off the image) equals ``predict`` box by box and dlib."""
    ours, theirs = predictors
    ds = SyntheticFaces(6, 2, seed=21, kind="aligned")
    crops = [ds[i][0] for i in range(len(ds))]
    crops += [
        np.full((112, 112, 3), 128, np.uint8),
        np.ascontiguousarray(crops[0].mean(2).astype(np.uint8)),
        np.ascontiguousarray(np.repeat(np.repeat(crops[1], 2, 0), 2, 1)),  # 224 × 224
        np.random.default_rng(3).integers(0, 256, (112, 112, 3), np.uint8),
    ]
    images, boxes = [], []
    for i, crop in enumerate(crops):
        box = fit_box(crop.shape[1])
        for shift in (-3.0, 3.0):
            images.append(i)
            boxes.append(tuple(round(v + shift) for v in box))
    images.append(0)
    boxes.append((-60, -50, 40, 60))  # off the image
    alone = np.stack([ours.predict(crops[i], b) for i, b in zip(images, boxes, strict=True)])
    for i, b, got in zip(images, boxes, alone, strict=True):
        np.testing.assert_array_equal(got, _dlib_parts(theirs, crops[i], b))
    for chunk in (1, 2, 7, 256):
        batch = ours.predict_batch(crops, np.array(boxes), images, chunk=chunk)
        np.testing.assert_array_equal(batch, alone)
    # One box per image, the images listed per box.
    pairs = ours.predict_batch([crops[i] for i in images], np.array(boxes))
    np.testing.assert_array_equal(pairs, alone)


def test_a_batch_checks_its_arguments(predictors):
    ours, _ = predictors
    crop = np.zeros((112, 112, 3), np.uint8)
    assert ours.predict_batch([crop], np.zeros((0, 4), np.int64), []).shape == (0, 68, 2)
    with pytest.raises(ValueError, match="2 images for 1 boxes"):
        ours.predict_batch([crop, crop], np.array([[0, 0, 50, 50]]))
    with pytest.raises(ValueError, match="image_index"):
        ours.predict_batch([crop], np.array([[0, 0, 50, 50]]), [1])
    with pytest.raises(ValueError, match="uint8"):
        ours.predict_batch([crop.astype(np.float32)], np.array([[0, 0, 50, 50]]))
