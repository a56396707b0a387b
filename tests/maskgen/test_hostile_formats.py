"""``maskgen render`` on hostile inputs, part 2 (issue 15 g and l): damaged ``.rec`` sets
(unreadable records, wrong ``.idx`` offsets, record ids that are not their keys, a broken
header record, labels that are no class index) and images with more than one 8-bit RGB
frame (16-bit depth, alpha, several frames, GIF, unreadable subfolders)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgen.dataset import RenderOptions, meta_dir, render_dataset
from maskgen.io import (
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordSet,
    RecordWriter,
    decode_full,
    decode_image,
    decode_image_raw,
    encode_image,
    frame_count,
    frame_image_records,
    iter_image_files,
    lost_in,
    may_hold_more,
    read_face_record,
    unpack,
)
from maskgen.synthetic import draw_aligned_face, sample_identity

ALIGNED = RenderOptions(landmarks="aligned", block_size=2, seed=3)
LABELS = [0, 0, 1, 1, 2, 2]


def _crops(n: int, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    idents = [sample_identity(rng) for _ in range(3)]
    return [draw_aligned_face(idents[i % 3], rng)[0] for i in range(n)]


def _render(src: Path, out: Path, options: RenderOptions = ALIGNED, **kw) -> dict:
    return render_dataset(src, out, options, workers=1, progress=False, **kw)


def _failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (meta_dir(out) / "failures.jsonl").open("rb")]


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (meta_dir(out) / "manifest.jsonl").open("rb")]


# -- .rec sets -------------------------------------------------------------------------------


def _write_set(path: Path, *, header: bool = True, identities: bool = True) -> Path:
    """Six JPEG crops, keys 1..6 with an insightface header and identity records, or
    keys 0..5 without a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with RecordWriter(path) as writer:
        for i, crop in enumerate(_crops(6)):
            key = i + 1 if header else i
            writer.write(key, IRHeader(0, float(LABELS[i]), key, 0), encode_image(crop, ".jpg"))
        if header:
            writer.write_header_record(identities=identities)
    return path


def _offsets(rec: Path) -> dict[int, int]:
    rows = (line.split("\t") for line in rec.with_suffix(".idx").read_text().splitlines())
    return {int(k): int(o) for k, o in rows}


def _set_offset(rec: Path, key: int, offset: int) -> None:
    table = _offsets(rec)
    table[key] = offset
    rec.with_suffix(".idx").write_text("".join(f"{k}\t{o}\n" for k, o in table.items()))


def _patch(rec: Path, at: int, data: bytes) -> None:
    raw = bytearray(rec.read_bytes())
    raw[at : at + len(data)] = data
    rec.write_bytes(bytes(raw))


def _records(rec: Path) -> dict[int, bytes]:
    reader = RecordReader(rec)
    try:
        return {key: reader.read(key) for key in reader.keys.tolist()}
    finally:
        reader.close()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The undamaged sets and their renders, each damage test is compared with."""
    root = tmp_path_factory.mktemp("clean")
    sets = {
        "header": _write_set(root / "h" / "in.rec"),
        "headerless": _write_set(root / "n" / "in.rec", header=False),
    }
    for name, rec in sets.items():
        _render(rec, root / f"{name}.rec")
    return {**sets, **{f"{name}_out": root / f"{name}.rec" for name in sets}}


def _damaged(tmp_path: Path, clean: dict[str, Path], kind: str = "header") -> Path:
    rec = tmp_path / "in.rec"
    rec.write_bytes(clean[kind].read_bytes())
    rec.with_suffix(".idx").write_bytes(clean[kind].with_suffix(".idx").read_bytes())
    return rec


def _bad_magic(rec: Path, key: int) -> None:
    _patch(rec, _offsets(rec)[key], b"\xde\xad\xbe\xef")


def _length_past_eof(rec: Path, key: int) -> None:
    _patch(rec, _offsets(rec)[key] + 4, struct.pack("<I", 10**8))


@pytest.mark.parametrize("damage", [_bad_magic, _length_past_eof])
def test_an_unreadable_record_is_kept_as_found_and_the_rest_is_rendered(
    tmp_path: Path, clean: dict[str, Path], damage
) -> None:
    rec = _damaged(tmp_path, clean)
    damage(rec, 3)
    span = rec.read_bytes()[_offsets(rec)[3] : _offsets(rec)[4]]
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"], summary["assembled"]) == (5, 1, True)
    [fail] = _failures(out)
    assert (fail["key"], fail["category"]) == ("3", "unreadable")
    assert "in.rec#3" in fail["reason"] and "kept as found" in fail["reason"]
    records = RecordSet(out)
    assert (records.num_images, records.num_classes) == (6, 3)
    got, ref = _records(out), _records(clean["header_out"])
    assert got[3] == span  # the bytes that were there, in a frame of their own
    with pytest.raises(RecordIOError):  # never an empty image with an invented label
        read_face_record(records.reader, 3)
    assert {k: v for k, v in got.items() if k not in (3, 0, 7, 8, 9)} == {
        k: v for k, v in ref.items() if k not in (3, 0, 7, 8, 9)
    }
    # key 3 has no known class: counted in the identity record of key 2 (class 0)
    assert [records.identity_range(i) for i in range(3)] == [(1, 4), (4, 5), (5, 7)]


@pytest.mark.parametrize("where", ["next record", "inside its record", "past the end"])
def test_a_wrong_idx_offset_is_found_right_after_the_key_before(
    tmp_path: Path, clean: dict[str, Path], where: str
) -> None:
    rec = _damaged(tmp_path, clean)
    offsets = _offsets(rec)
    wrong = {
        "next record": offsets[4],  # key 3 points at record 4: image 4 twice, 3 lost
        "inside its record": offsets[3] + 8,
        "past the end": rec.stat().st_size + 64,
    }[where]
    _set_offset(rec, 3, wrong)
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"]) == (6, 0)
    assert out.read_bytes() == clean["header_out"].read_bytes()
    assert (
        out.with_suffix(".idx").read_bytes() == clean["header_out"].with_suffix(".idx").read_bytes()
    )
    [line] = [m for m in _manifest(out) if m["key"] == "3"]
    assert f"read at offset {offsets[3]}" in line["note"] and str(wrong) in line["note"]


def test_a_record_whose_id_is_not_its_key_fails_alone(
    tmp_path: Path, clean: dict[str, Path]
) -> None:
    rec = _damaged(tmp_path, clean)
    offsets = _offsets(rec)
    _set_offset(rec, 1, offsets[2])  # nothing before key 1 to look behind (key 0 is last)
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"]) == (5, 1)
    [fail] = _failures(out)
    assert fail["key"] == "1" and "header id 2, not 1" in fail["reason"]
    got, ref = _records(out), _records(clean["header_out"])
    assert got[2] == ref[2]
    with pytest.raises(RecordIOError):
        unpack(got[1])  # record 2's frame kept as found: not a second copy of image 2
    image2 = unpack(_records(rec)[2])[1]
    assert sum(image2 in data for data in got.values()) == 1


def test_an_unreadable_header_record_is_rebuilt_from_the_identity_records(
    tmp_path: Path, clean: dict[str, Path]
) -> None:
    rec = _damaged(tmp_path, clean)
    _bad_magic(rec, 0)
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"]) == (6, 0)
    assert out.read_bytes() == clean["header_out"].read_bytes()
    assert any("rebuilt from the identity records: images 1..6" in n for n in summary["notes"])


def test_an_unreadable_header_without_identity_records_is_reported(tmp_path: Path) -> None:
    rec = _write_set(tmp_path / "in.rec", identities=False)
    _bad_magic(rec, 0)
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert any("read as a set without a header record" in n for n in summary["notes"])
    [fail] = _failures(out)
    assert fail["key"] == "0" and fail["category"] == "unreadable"


def test_a_headerless_set_keeps_an_unreadable_record_as_found(
    tmp_path: Path, clean: dict[str, Path]
) -> None:
    rec = _damaged(tmp_path, clean, "headerless")
    _bad_magic(rec, 2)
    span = rec.read_bytes()[_offsets(rec)[2] : _offsets(rec)[3]]
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"]) == (5, 1)
    got, ref = _records(out), _records(clean["headerless_out"])
    assert got[3] == span  # input key 2 is output key 3; not an empty image with label 0
    assert {k: v for k, v in got.items() if k != 3} == {k: v for k, v in ref.items() if k != 3}


def test_an_identity_record_among_headerless_images_is_no_image(tmp_path: Path) -> None:
    rec = tmp_path / "in.rec"
    crops = _crops(3)
    with RecordWriter(rec) as writer:
        writer.write(0, IRHeader(0, 0.0, 0, 0), encode_image(crops[0], ".jpg"))
        writer.write(1, IRHeader(2, [1.0, 3.0], 1, 0), b"")  # an identity record
        writer.write(2, IRHeader(0, 1.0, 2, 0), encode_image(crops[1], ".jpg"))
    out = tmp_path / "out.rec"
    _render(rec, out)
    [fail] = _failures(out)
    assert fail["key"] == "1" and "identity record" in fail["reason"]
    assert _records(out)[2] == _records(rec)[1]  # kept as it was, no invented label


@pytest.mark.parametrize("label", [1.7, float("inf"), float("nan"), -1.0])
def test_a_label_that_is_no_class_index_fails_its_record_by_name(
    tmp_path: Path, clean: dict[str, Path], label: float
) -> None:
    rec = _damaged(tmp_path, clean)
    _patch(rec, _offsets(rec)[2] + 8 + 4, struct.pack("<f", label))  # IRHeader.label
    out = tmp_path / "out.rec"
    summary = _render(rec, out)
    assert (summary["done"], summary["failed"]) == (5, 1)
    [fail] = _failures(out)
    shown = {1.7: "1.7", -1.0: "-1"}.get(label, str(label))
    assert fail["category"] == "bad_label"
    assert fail["reason"].startswith(f"in.rec#2: label {shown} is not a class index")
    got, ref = _records(out), _records(clean["header_out"])
    assert got[2] == _records(rec)[2]  # the record as it was: its label is not made 1
    assert {k: v for k, v in got.items() if k != 2} == {k: v for k, v in ref.items() if k != 2}


def test_kept_records_do_not_depend_on_blocks_or_shards(
    tmp_path: Path, clean: dict[str, Path]
) -> None:
    rec = _damaged(tmp_path, clean)
    _bad_magic(rec, 3)
    _patch(rec, _offsets(rec)[5] + 12, struct.pack("<f", 0.5))
    outputs = []
    for name, options, shards in [
        ("b2", ALIGNED, [(0, 1)]),
        ("b4", RenderOptions(landmarks="aligned", block_size=4, seed=3), [(0, 1)]),
        ("s2", ALIGNED, [(0, 2), (1, 2)]),
    ]:
        out = tmp_path / f"{name}.rec"
        for shard in shards:
            _render(rec, out, options, shard=shard)
        outputs.append((out.read_bytes(), out.with_suffix(".idx").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]


def test_reader_bad_offsets_fail_their_record_alone(tmp_path: Path) -> None:
    rec = _write_set(tmp_path / "in.rec")
    _set_offset(rec, 2, -8)
    _set_offset(rec, 4, 6)
    with pytest.raises(RecordIOError, match="offset -8"):
        RecordReader(rec)  # strict by default
    reader = RecordReader(rec, check_offsets=False)
    for key in (2, 4):
        with pytest.raises(RecordIOError, match="not a record position"):
            reader.read(key)
    assert unpack(reader.read(3))[0].id == 3
    assert reader.span(2) == b""
    for key in reader.keys.tolist():
        _set_offset(rec, key, 2)
    with pytest.raises(RecordIOError, match="another"):
        RecordReader(rec, check_offsets=False)  # every offset bad: the index of another file


def test_writer_counts_unknown_classes_in_the_run_before(tmp_path: Path) -> None:
    rec = tmp_path / "w.rec"
    with RecordWriter(rec) as writer:
        blob, lengths = frame_image_records([(0, 1, b"a"), (0, 2, b"b"), (0, 3, b"c")])
        writer.write_framed([1, 2, 3], blob, lengths, [-1, 5, -1])
        writer.write_header_record()
    records = RecordSet(rec)
    assert (records.num_images, records.num_classes) == (3, 1)
    assert records.identity_range(0) == (1, 4)


# -- images beyond one 8-bit RGB frame ------------------------------------------------------


def _bgr(image: np.ndarray) -> np.ndarray:
    code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
    return cv2.cvtColor(image, code)


def _cv_encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, _bgr(image))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(pixels: np.ndarray, colour_type: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (grey+alpha has no OpenCV encoder; eXIf chunks neither)."""
    h, w = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr), extra,
                     _chunk(b"IDAT", zlib.compress(raw)), _chunk(b"IEND", b"")])  # fmt: skip


def _exif_orientation(value: int) -> bytes:
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, value, 0) + struct.pack(">I", 0)
    return _chunk(b"eXIf", tiff)


def _deep(crop: np.ndarray) -> np.ndarray:
    """A 16-bit version of an 8-bit crop whose low bits an 8-bit copy would lose."""
    return crop.astype(np.uint16) * 257 + np.uint16(3)


def _to8(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


MASK_ALL = RenderOptions(landmarks="aligned", seed=1, p=1.0)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_inputs_come_out_16_bit(tmp_path: Path, ext: str) -> None:
    crop = _crops(1)[0]
    for depth, image in (("16", _deep(crop)), ("8", crop)):  # same key: same draw
        (tmp_path / f"in{depth}").mkdir()
        (tmp_path / f"in{depth}" / f"a{ext}").write_bytes(_cv_encode(ext, image))
        _render(tmp_path / f"in{depth}", tmp_path / f"out{depth}", MASK_ALL)
    got = decode_image_raw((tmp_path / "out16" / f"a{ext}").read_bytes())
    twin = decode_image_raw((tmp_path / "out8" / f"a{ext}").read_bytes())
    assert got.dtype == np.uint16 and got.shape == crop.shape
    changed = np.any(got != _deep(crop), axis=2)
    assert 0.1 < changed.mean() < 0.9  # masked, at its depth: the rest is kept bit for bit
    np.testing.assert_array_equal(got[~changed], _deep(crop)[~changed])
    assert np.abs(_to8(got).astype(int) - twin).max() <= 2  # the 8-bit render, deeper


def test_a_16_bit_tiff_decodes_to_its_colours() -> None:
    crop = _crops(1)[0]
    np.testing.assert_array_equal(decode_image(_cv_encode(".tif", _deep(crop))), crop)


@pytest.mark.parametrize("kind", ["grey+alpha png", "rgba tiff", "rgba png 16-bit"])
def test_alpha_is_kept(tmp_path: Path, kind: str) -> None:
    crop = _crops(1)[0]
    alpha = np.tile(np.linspace(10, 250, 112).astype(np.uint8), (112, 1))
    if kind == "grey+alpha png":
        grey = crop.mean(axis=2).astype(np.uint8)
        name, data = "a.png", _png(np.dstack([grey, alpha]), 4)
    elif kind == "rgba tiff":
        name, data = "a.tif", _cv_encode(".tif", np.dstack([crop, alpha]))
    else:
        name, data = (
            "a.png",
            _cv_encode(".png", np.dstack([_deep(crop), alpha.astype(np.uint16) * 257])),
        )
    src = tmp_path / "in"
    src.mkdir()
    (src / name).write_bytes(data)
    out = tmp_path / "out"
    summary = _render(src, out, MASK_ALL)
    assert (summary["done"], summary["failed"]) == (1, 0)
    before, after = decode_image_raw(data), decode_image_raw((out / name).read_bytes())
    assert after.shape == (112, 112, 4) and after.dtype == before.dtype
    np.testing.assert_array_equal(after[..., 3], before[..., 3])
    assert np.any(after[..., :3] != (before[..., :3] if before.ndim == 3 else 0))


def test_a_format_that_would_drop_depth_or_alpha_is_refused_per_item(tmp_path: Path) -> None:
    crop = _crops(1)[0]
    src = tmp_path / "in"
    src.mkdir()
    (src / "deep.png").write_bytes(_cv_encode(".png", _deep(crop)))
    (src / "alpha.png").write_bytes(
        _cv_encode(".png", np.dstack([crop, np.full((112, 112), 9, np.uint8)]))
    )
    (src / "plain.png").write_bytes(_cv_encode(".png", crop))
    out = tmp_path / "out"
    summary = _render(src, out, RenderOptions(landmarks="aligned", seed=1, format=".jpg"))
    assert (summary["done"], summary["failed"]) == (1, 2)
    reasons = {f["key"]: (f["category"], f["reason"]) for f in _failures(out)}
    assert reasons["deep.png"] == ("unsupported", "deep.png: 16-bit depth cannot be kept in a "
                                   ".jpg output; choose --format png or tiff (16-bit and alpha) "
                                   "or webp (alpha)")  # fmt: skip
    assert reasons["alpha.png"][1].startswith("alpha.png: the alpha channel cannot be kept")
    assert sorted(p.name for p in out.iterdir()) == ["plain.jpg"]
    _render(src, tmp_path / "tif", RenderOptions(landmarks="aligned", seed=1, format=".tif"))
    assert decode_image_raw((tmp_path / "tif" / "deep.tif").read_bytes()).dtype == np.uint16


def test_exif_orientation_is_applied_to_16_bit_images(tmp_path: Path) -> None:
    crop = _crops(1)[0][:, :100]  # not square: the turn shows in the shape
    data = _png(_deep(crop), 2, _exif_orientation(6))
    plain = decode_image(data)
    assert plain.shape == (100, 112, 3)  # OpenCV turns it (orientation 6: 90° clockwise)
    full = decode_full(data, plain=plain)
    assert full is not None and full.dtype == np.uint16
    np.testing.assert_array_equal(_to8(full), plain)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(data)
    _render(src, tmp_path / "out", MASK_ALL)
    assert decode_image_raw((tmp_path / "out" / "a.png").read_bytes()).shape == (100, 112, 3)


def _animation(ext: str, frames: list[np.ndarray]) -> bytes:
    anim = cv2.Animation()
    anim.frames = [_bgr(f) for f in frames]
    anim.durations = [100] * len(frames)
    ok, buf = cv2.imencodeanimation(ext, anim)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", [".tif", ".gif", ".png", ".webp"])
def test_multi_frame_images_are_refused_per_item(tmp_path: Path, ext: str) -> None:
    a, b = _crops(2)
    if ext == ".tif":
        ok, buf = cv2.imencodemulti(".tiff", [_bgr(a), _bgr(b), _bgr(a)])
        assert ok
        data = buf.tobytes()
    else:
        data = _animation(ext, [a, b, a])
    assert frame_count(data) == 3
    src = tmp_path / "in"
    src.mkdir()
    (src / f"anim{ext}").write_bytes(data)
    (src / "still.png").write_bytes(_cv_encode(".png", a))
    out = tmp_path / "out"
    summary = _render(src, out, MASK_ALL)
    assert (summary["done"], summary["failed"]) == (1, 1)
    [fail] = _failures(out)
    assert (fail["category"], fail["reason"]) == (
        "unsupported",
        f"anim{ext}: multi-frame image (3 frames): only the first frame would be masked",
    )


def test_gif_files_are_listed_and_masked(tmp_path: Path) -> None:
    crop = _crops(1)[0]
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    data = _cv_encode(".gif", crop)
    (src / "sub" / "face.GIF").write_bytes(data)
    out = tmp_path / "out"
    summary = _render(src, out, MASK_ALL)
    assert (summary["total"], summary["done"]) == (1, 1)
    got = decode_image((out / "sub" / "face.GIF").read_bytes())
    assert got.shape == crop.shape and np.mean(np.any(got != decode_image(data), axis=2)) > 0.1


def test_unlistable_subfolders_are_reported(tmp_path: Path, monkeypatch) -> None:
    # The tests run as root, whom chmod does not stop: the listing of one folder fails by
    # a patched os.scandir (what os.walk calls) instead.
    src = tmp_path / "in"
    for sub in ("ok", "locked"):
        (src / sub).mkdir(parents=True)
        (src / sub / "a.png").write_bytes(_cv_encode(".png", _crops(1)[0]))
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)).name == "locked":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError):
        list(iter_image_files(src))  # no silent skipping without an on_error
    out = tmp_path / "out"
    summary = _render(src, out, MASK_ALL)
    assert (summary["done"], summary["unlisted"]) == (1, 1)
    assert any("cannot be listed" in n and "locked" in n for n in summary["notes"])
    rows = [json.loads(line) for line in (meta_dir(out) / "unlisted.jsonl").open()]
    assert rows == [{"folder": str(src / "locked"), "reason": "Permission denied"}]


def test_header_probes() -> None:
    crop = _crops(1)[0]
    assert not may_hold_more(_cv_encode(".png", crop))
    assert not may_hold_more(_cv_encode(".jpg", crop))
    assert may_hold_more(_cv_encode(".png", _deep(crop)))
    assert may_hold_more(_png(np.dstack([crop[..., 0], crop[..., 1]]), 4))
    assert may_hold_more(_cv_encode(".webp", np.dstack([crop, crop[..., :1]])))
    assert frame_count(_cv_encode(".tif", crop)) == frame_count(b"not an image") == 1
    assert frame_count(_cv_encode(".gif", crop)) == 1
    assert decode_full(_cv_encode(".png", crop)) is None  # nothing more than 8-bit RGB
    rgba16 = np.zeros((2, 2, 4), np.uint16)
    assert lost_in(".jpg", rgba16) == "16-bit depth and the alpha channel"
    assert lost_in(".webp", rgba16) == "16-bit depth"
    assert lost_in(".tiff", rgba16) is None
