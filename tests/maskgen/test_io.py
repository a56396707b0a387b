"""Tests for maskgen.io: images, atomic writes, .bin verification packs and RecordIO sets."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from maskgen.io import (
    IMAGE_EXTENSIONS,
    BinPackError,
    ImageReadError,
    IRHeader,
    MissingRecordError,
    RecordIOError,
    RecordReader,
    RecordSet,
    RecordWriter,
    UnsafePickleError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    decode_image,
    encode_image,
    frame_image_records,
    frame_record,
    iter_image_files,
    load_bin,
    pack,
    read_face_record,
    read_image,
    read_image_raw,
    rgb_to_bgr,
    save_bin,
    unpack,
    write_image,
)

try:
    from PIL import Image as PILImage
except ImportError:  # pragma: no cover - Pillow is optional
    PILImage = None

MAGIC_LE = struct.pack("<I", 0xCED7230A)


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    """A real RGB photo, small enough to keep the tests fast."""
    return cv2.resize(skimage.data.astronaut(), (96, 80), interpolation=cv2.INTER_AREA)


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# -- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTENSIONS))
def test_image_round_trip_each_extension(tmp_path: Path, astro: np.ndarray, ext: str) -> None:
    path = write_image(tmp_path / f"face{ext}", astro, quality=95)
    back = read_image(path)
    assert back.shape == astro.shape and back.dtype == np.uint8
    diff = np.abs(back.astype(int) - astro.astype(int))
    if ext in {".png", ".bmp", ".tif", ".tiff"}:
        assert diff.max() == 0
    else:
        assert diff.mean() < 4.0
    # RGB order is kept: channel means match the source, not a swapped version.
    assert np.allclose(back.mean(axis=(0, 1)), astro.mean(axis=(0, 1)), atol=2.0)
    assert decode_image(path.read_bytes()).shape == astro.shape


def test_upper_case_extension_and_red_stays_red(tmp_path: Path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    back = read_image(write_image(tmp_path / "RED.PNG", red))
    assert back[0, 0].tolist() == [255, 0, 0]


def test_grayscale_png_becomes_rgb(tmp_path: Path, astro: np.ndarray) -> None:
    gray = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    path = write_image(tmp_path / "gray.png", gray)
    rgb = read_image(path)
    assert rgb.shape == (*gray.shape, 3)
    for c in range(3):
        assert np.array_equal(rgb[..., c], gray)
    raw = read_image_raw(path)
    assert raw.shape == gray.shape and np.array_equal(raw, gray)


def test_rgba_png_alpha_dropped_raw_keeps_rgba(tmp_path: Path, astro: np.ndarray) -> None:
    alpha = np.linspace(0, 255, astro.shape[1], dtype=np.uint8)[None, :].repeat(80, axis=0)
    rgba = np.dstack([astro, alpha])
    path = write_image(tmp_path / "rgba.png", rgba)
    assert np.array_equal(read_image(path), astro)
    raw = read_image_raw(path)
    assert raw.shape == rgba.shape and np.array_equal(raw, rgba)


@pytest.mark.skipif(PILImage is None, reason="Pillow is needed to write a gray+alpha PNG")
def test_gray_alpha_png(tmp_path: Path, astro: np.ndarray) -> None:
    gray = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    PILImage.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    rgb = read_image(tmp_path / "la.png")
    assert rgb.shape == (*gray.shape, 3) and np.array_equal(rgb[..., 1], gray)


def test_16bit_png_is_scaled_not_truncated(tmp_path: Path) -> None:
    levels = np.array([0, 257, 128 * 257, 65535, 32768, 200], dtype=np.uint16)
    img16 = np.stack([levels, levels // 2, levels // 3], axis=-1)[None].repeat(3, axis=0)
    path = tmp_path / "deep.png"
    path.write_bytes(encode_image(img16, ".png"))
    rgb = read_image(path)
    expected = np.round(img16.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, expected)
    raw = read_image_raw(path)
    assert raw.dtype == np.uint16 and np.array_equal(raw, img16)


def test_cmyk_jpeg_is_returned_as_rgb(tmp_path: Path, astro: np.ndarray) -> None:
    if PILImage is None:
        pytest.skip("Pillow is needed to write a CMYK JPEG (OpenCV cannot)")
    path = tmp_path / "cmyk.jpg"
    PILImage.fromarray(astro).convert("CMYK").save(path, "JPEG", quality=95)
    with PILImage.open(path) as check:
        assert check.mode == "CMYK"
    rgb = read_image(path)
    assert rgb.shape == astro.shape
    assert np.abs(rgb.astype(int) - astro.astype(int)).mean() < 6.0


@pytest.mark.skipif(PILImage is None, reason="Pillow is needed to write EXIF orientation")
def test_jpeg_exif_orientation_applied(tmp_path: Path, astro: np.ndarray) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    PILImage.fromarray(astro).save(path, "JPEG", quality=95, exif=exif)
    shown = read_image(path)
    stored = read_image_raw(path)
    assert stored.shape == astro.shape
    assert shown.shape == (astro.shape[1], astro.shape[0], 3)
    assert np.abs(shown.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 1.0


def test_empty_file_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_text_named_jpg_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageReadError, match=r"not an image \(first bytes") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_error(tmp_path: Path, astro: np.ndarray) -> None:
    data = encode_image(astro, ".jpg")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:100])  # cut inside the headers: nothing decodable
    with pytest.raises(ImageReadError, match="corrupt or truncated") as info:
        read_image(path)
    assert str(path) in str(info.value) and "JPEG" in str(info.value)


def test_partially_truncated_jpeg_is_either_decoded_or_reported(
    tmp_path: Path, astro: np.ndarray
) -> None:
    path = tmp_path / "half.jpg"
    path.write_bytes(encode_image(astro, ".jpg")[:2000])
    try:
        image = read_image(path)  # OpenCV 4 fills the missing part
    except ImageReadError as exc:  # OpenCV 5 refuses it
        assert str(path) in str(exc)
    else:
        assert image.shape == astro.shape


def test_missing_file_and_bad_encode_arguments(tmp_path: Path, astro: np.ndarray) -> None:
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="alpha"):
        encode_image(np.dstack([astro, astro[..., :1]]), ".jpg")
    with pytest.raises(ValueError, match="unsupported image extension"):
        encode_image(astro, ".gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(astro.astype(np.float32), ".jpg")


def test_iter_image_files_sorted_recursive_case_insensitive(tmp_path: Path) -> None:
    names = ["b/z.JPG", "b/a.png", "a.Jpeg", "c/d/e.webp", "B2.tif", "x/notes.txt", ".hidden.jpg"]
    for name in names:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "k.jpg").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["B2.tif", "a.Jpeg", "b/a.png", "b/z.JPG", "c/d/e.webp"]
    with_hidden = [p.name for p in iter_image_files(tmp_path, include_hidden=True)]
    assert ".hidden.jpg" in with_hidden and "k.jpg" in with_hidden
    with pytest.raises(NotADirectoryError):
        iter_image_files(tmp_path / "a.Jpeg")


# -- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert target.read_bytes() == b"two"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert _no_temp_files(tmp_path)
    reference = tmp_path / "plain.bin"
    reference.write_bytes(b"")  # permissions as open() gives them under the current umask
    assert target.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_atomic_open_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as f:
        f.write("new, half written")
        temps = [p.name for p in tmp_path.iterdir() if p.name != "keep.txt"]
        assert len(temps) == 1 and temps[0].startswith(".") and temps[0].endswith(".tmp")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_open_final_name_appears_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "late.bin"
    with atomic_open(target) as f:
        f.write(b"abc")
        assert not target.exists()
    assert target.read_bytes() == b"abc"


def test_write_image_failure_keeps_old_file(tmp_path: Path, astro: np.ndarray) -> None:
    target = write_image(tmp_path / "keep.jpg", astro)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_image(target, np.zeros((4, 4, 7), np.uint8))
    assert target.read_bytes() == before and _no_temp_files(tmp_path)


# -- .bin verification packs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def jpegs(astro: np.ndarray) -> list[bytes]:
    crops = [astro[i : i + 40, i : i + 40] for i in range(0, 48, 8)]  # 6 different images
    return [encode_image(c, ".jpg") for c in crops]


def test_bin_round_trip(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = save_bin(tmp_path / "lfw.bin", jpegs, [True, False, True])
    pack_ = load_bin(path)
    assert pack_.images == jpegs and pack_.issame == [True, False, True]
    assert pack_.num_pairs == 3 and pack_.num_images == 6 and pack_.path == path
    a, b, same = pack_.pair(1)
    assert same is False and a.shape == (40, 40, 3) and b.dtype == np.uint8
    assert np.array_equal(a, decode_image(jpegs[2]))
    with open(path, "rb") as f:  # plain pickle (what insightface does) reads it too
        images, issame = pickle.load(f, encoding="bytes")
    assert images == jpegs and issame == [True, False, True]


def test_bin_protocol2_from_python3_loads(tmp_path: Path, jpegs: list[bytes]) -> None:
    # Python 3 pickles bytes under protocol 2 via _codecs.encode: must still load.
    path = tmp_path / "p2.bin"
    path.write_bytes(pickle.dumps(([*jpegs[:2], b"", *jpegs[:1]], [True, False]), protocol=2))
    pack_ = load_bin(path)
    assert pack_.images[:2] == jpegs[:2] and pack_.images[2] == b""


def _python2_pickle(images: list[bytes], flags: list[bool]) -> bytes:
    """Hand-assemble what Python 2's pickle.dump(..., protocol=2) writes (str = BINSTRING)."""
    out = bytearray(b"\x80\x02]q\x00(")
    for data in images:
        out += b"T" + struct.pack("<i", len(data)) + data
    out += b"e]q\x01("
    out += b"".join(b"\x88" if f else b"\x89" for f in flags)
    out += b"e\x86q\x02."
    return bytes(out)


def test_bin_python2_pack_loads_as_bytes(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = tmp_path / "py2.bin"
    path.write_bytes(_python2_pickle(jpegs[:4], [False, True]))
    pack_ = load_bin(path)
    assert pack_.images == jpegs[:4] and pack_.issame == [False, True]
    assert all(isinstance(b, bytes) for b in pack_.images)


def test_bin_odd_number_of_images(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(((jpegs + jpegs)[:7], [True, True, False]), protocol=4))
    with pytest.raises(BinPackError, match=r"odd number of images \(7\)") as info:
        load_bin(path)
    assert str(path) in str(info.value)


def test_bin_flag_count_mismatch(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = tmp_path / "mismatch.bin"
    path.write_bytes(pickle.dumps((jpegs + jpegs, [True] * 5), protocol=4))
    with pytest.raises(BinPackError, match="12 images but 5 same/different flags: expected 6"):
        load_bin(path)
    with pytest.raises(BinPackError):
        save_bin(tmp_path / "never.bin", jpegs, [True])
    assert not (tmp_path / "never.bin").exists()


def test_bin_wrong_structure_and_garbage(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = tmp_path / "three.bin"
    path.write_bytes(pickle.dumps((jpegs, [True] * 3, "extra"), protocol=4))
    with pytest.raises(BinPackError, match="tuple of length 3"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([1, 2], [True]), protocol=4))
    with pytest.raises(BinPackError, match="image 0 is a int"):
        load_bin(path)
    path.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(BinPackError, match="not a readable pickle"):
        load_bin(path)
    path.write_bytes(b"")
    with pytest.raises(BinPackError, match="empty file"):
        load_bin(path)


class _Exploit:
    """Pickles to a call of os.system that would create a marker file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _EvalExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_bin_malicious_pickle_never_runs(tmp_path: Path, jpegs: list[bytes], protocol: int) -> None:
    marker = tmp_path / "pwned"
    for i, payload in enumerate([_Exploit(f"touch '{marker}'"), _EvalExploit(marker)]):
        path = tmp_path / f"evil{i}.bin"
        path.write_bytes(pickle.dumps(([jpegs[0], payload], [True]), protocol=protocol))
        with pytest.raises(UnsafePickleError, match="refused to load") as info:
            load_bin(path)
        message = str(info.value)
        assert str(path) in message
        assert ("system" in message) if i == 0 else ("eval" in message)
        assert isinstance(info.value, BinPackError) and isinstance(info.value, ValueError)
        assert not marker.exists()


def test_bin_decode_error_names_pack_and_index(tmp_path: Path, jpegs: list[bytes]) -> None:
    path = save_bin(tmp_path / "broken.bin", [jpegs[0], jpegs[1], jpegs[2], b"garbage!"], [1, 0])
    pack_ = load_bin(path)
    with pytest.raises(ImageReadError) as info:
        pack_.decode(3)
    assert str(path) in str(info.value) and "image 3" in str(info.value)
    with pytest.raises(IndexError):
        pack_.pair(2)


def test_bgr_storage_decodes_the_same_rgb_and_encodes_without_conversion(
    astro: np.ndarray,
) -> None:
    for ext in (".jpg", ".png"):
        data = encode_image(astro, ext)
        plain, view = decode_image(data), decode_image(data, bgr_storage=True)
        assert view.strides[2] < 0 and np.array_equal(view, plain)
        assert encode_image(view, ext) == encode_image(plain, ext)
    gray = encode_image(astro[..., 0], ".png")  # expanded to three channels, as always
    assert np.array_equal(decode_image(gray, bgr_storage=True), decode_image(gray))
    deep = encode_image(astro.astype(np.uint16) * 257, ".png")  # scaled: a plain RGB array
    view = decode_image(deep, bgr_storage=True)
    assert view.flags.c_contiguous and np.array_equal(view, decode_image(deep))
    # the BGR array behind a reversed view is handed over as it is; anything else converted
    view = decode_image(encode_image(astro, ".png"), bgr_storage=True)
    assert np.shares_memory(rgb_to_bgr(view), view)
    for rgb in (astro, astro[:, ::-1, ::-1]):  # packed RGB; reversed but not packed
        bgr = rgb_to_bgr(rgb)
        assert not np.shares_memory(bgr, rgb) and np.array_equal(bgr, rgb[..., ::-1])


# -- RecordIO --------------------------------------------------------------------------------


def test_frame_record_layout_and_magic_split() -> None:
    # a whole record: magic, lrecord = length, data, zero padding to 4 bytes
    assert frame_record(b"abcde") == MAGIC_LE + struct.pack("<I", 5) + b"abcde\x00\x00\x00"
    # the magic word at an aligned position splits the record and is left out
    data = b"abcd" + MAGIC_LE + b"xy"
    expected = (
        MAGIC_LE
        + struct.pack("<I", (1 << 29) | 4)
        + b"abcd"
        + MAGIC_LE
        + struct.pack("<I", (3 << 29) | 2)
        + b"xy\x00\x00"
    )
    assert frame_record(data) == expected
    # unaligned occurrences are data
    unaligned = b"ab" + MAGIC_LE + b"cd"
    assert frame_record(unaligned) == MAGIC_LE + struct.pack("<I", 8) + unaligned


def test_batch_framing_equals_pack_then_frame_record_by_record() -> None:
    rng = np.random.default_rng(0)
    jpeg = encode_image(skimage.data.astronaut()[:64, :64], ".jpg")
    clean = [b"", b"abc", jpeg, b"ab" + MAGIC_LE + b"cd"]  # an unaligned magic is data
    split = [b"abcd" + MAGIC_LE + b"xy"] + [
        jpeg[:i] + MAGIC_LE + jpeg[i:] for i in rng.integers(0, len(jpeg), 8)
    ]
    for payloads in (clean, clean + split, split[:1]):
        records = [(key % 3, key, p) for key, p in enumerate(payloads, start=1)]
        expected = [frame_record(pack(IRHeader(0, float(lb), k, 0), p)) for lb, k, p in records]
        blob, lengths = frame_image_records(records)
        assert blob == b"".join(expected)
        assert lengths == [len(f) for f in expected]
    assert frame_image_records([]) == (b"", [])


def test_writer_appends_a_framed_batch(tmp_path: Path, faces: list[np.ndarray]) -> None:
    jpegs = [encode_image(f, ".jpg") for f in faces[:4]]
    records = [
        (label, key, jpeg)
        for key, (label, jpeg) in enumerate(zip(LABELS[:4], jpegs, strict=True), 1)
    ]
    blob, lengths = frame_image_records(records)
    rec = tmp_path / "batch.rec"
    with RecordWriter(rec) as writer:
        writer.write(9, IRHeader(0, 5.0, 9, 0), b"first")  # single records mix with batches
        writer.write_framed([1, 2, 3, 4], blob, lengths, [0, 0, 1, None])
        with pytest.raises(RecordIOError, match="written twice"):
            writer.write_framed([2], blob[: lengths[0]], lengths[:1], [0])
        with pytest.raises(RecordIOError, match="not framed"):
            writer.write_framed([5, 6], blob, [lengths[0], lengths[1] + 4], [0, 0])
        with pytest.raises(RecordIOError, match="not framed"):
            writer.write_framed([5], b"x" * 8, [8], [0])
    with RecordReader(rec) as reader:
        assert sorted(reader.keys.tolist()) == [1, 2, 3, 4, 9]
        for key, (label, _, face) in enumerate(records, 1):
            header, payload = unpack(reader.read(key))
            assert header.label == label and payload == face
    with RecordReader(rec, use_index=False) as scanned:  # the framing itself is valid
        assert len(scanned.keys) == 5


def test_pack_unpack_labels() -> None:
    header, payload = unpack(pack(IRHeader(0, 7.0, 42, 0), b"img"))
    assert header == IRHeader(0, 7.0, 42, 0) and payload == b"img"
    raw = pack(IRHeader(0, [3.0, 1.0], 5, 0), b"jpg")
    assert len(raw) == 24 + 8 + 3 and struct.unpack_from("<IfQQ", raw) == (2, 0.0, 5, 0)
    header, payload = unpack(raw)
    assert header.flag == 2 and header.label.tolist() == [3.0, 1.0] and payload == b"jpg"
    with pytest.raises(RecordIOError):
        unpack(b"short")


def _write_set(path: Path, images: list[np.ndarray], labels: list[int]) -> None:
    with RecordWriter(path) as writer:
        for key, (image, label) in enumerate(zip(images, labels, strict=True), start=1):
            writer.write_image(key, image, label, ext=".png")
        writer.write_header_record()


@pytest.fixture(scope="module")
def faces(astro: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(astro[i : i + 32, 2 * i : 2 * i + 32]) for i in range(7)]


LABELS = [0, 0, 0, 1, 1, 2, 2]


def test_recordio_round_trip_with_header(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces, LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.idx", "train.rec"]
    lines = (tmp_path / "train.idx").read_text().splitlines()
    assert all(len(line.split("\t")) == 2 for line in lines) and len(lines) == 7 + 1 + 3
    with RecordSet(rec) as records:
        assert len(records) == 7 and records.num_classes == 3
        assert records.image_keys.tolist() == [1, 2, 3, 4, 5, 6, 7]
        assert records.header is not None and records.header.label.tolist() == [8.0, 11.0]
        for i in range(7):
            image, label = records[i]
            assert np.array_equal(image, faces[i]) and label == LABELS[i]
        assert [records.identity_range(c) for c in range(3)] == [(1, 4), (4, 6), (6, 8)]
    reader = RecordReader(rec)
    assert reader.key_source == "idx" and 0 in reader and 99 not in reader
    with pytest.raises(MissingRecordError, match="no record with key 99"):
        reader.read(99)
    keys = [key for key, _ in reader]
    assert keys == [1, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10]
    reader.close()


def test_recordio_magic_inside_payload_round_trips(tmp_path: Path) -> None:
    payload = b"\x01\x02\x03\x04" + MAGIC_LE * 3 + b"tail" + MAGIC_LE + b"x"
    rec = tmp_path / "m.rec"
    with RecordWriter(rec) as writer:
        writer.write(3, IRHeader(0, 1.0, 3, 0), payload)
        writer.write(4, IRHeader(0, 2.0, 4, 0), b"plain")
    with RecordReader(rec) as reader:
        assert unpack(reader.read(3)) == (IRHeader(0, 1.0, 3, 0), payload)
        assert unpack(reader.read(4))[1] == b"plain"
    with RecordReader(rec, use_index=False) as scanned:  # scanning copes with split records
        assert scanned.keys.tolist() == [3, 4] and unpack(scanned.read(3))[1] == payload


def test_recordio_header_disagrees_with_records(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "bad.rec"
    with RecordWriter(rec) as writer:
        for key in (1, 2, 3):
            writer.write_image(key, faces[key], 0, ext=".png")
        writer.write_header_record((5.0, 5.0))  # claims images 1..4
    with pytest.raises(RecordIOError, match=r"announces 4 images .* missing") as info:
        RecordSet(rec)
    assert str(rec) in str(info.value)

    rec2 = tmp_path / "extra.rec"
    with RecordWriter(rec2) as writer:
        for key in (1, 2, 3):
            writer.write_image(key, faces[key], 0, ext=".png")
        writer.write_header_record((3.0, 3.0))  # claims images 1..2 only
    with pytest.raises(RecordIOError, match="outside the ranges announced by the header"):
        RecordSet(rec2)


def test_recordio_without_idx(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces, LABELS)
    (tmp_path / "train.idx").unlink()
    records = RecordSet(rec)
    assert records.reader.idx_path is None and records.reader.key_source == "header-id"
    assert len(records) == 7 and records.num_classes == 3
    image, label = records[4]
    assert np.array_equal(image, faces[4]) and label == 1


def test_recordio_plain_set_without_header(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "plain.rec"
    with RecordWriter(rec, tmp_path / "plain.idx") as writer:
        for key in range(4):
            payload = encode_image(faces[key], ".png")
            # face2rec2 stores [label, aligned] arrays: the class is label[0]
            writer.write(key, IRHeader(0, [float(key % 2), 1.0], key, 0), payload)
    records = RecordSet(rec)
    assert records.header is None and records.num_classes is None
    assert records.image_keys.tolist() == [0, 1, 2, 3]
    image, label = records[3]
    assert label == 1 and np.array_equal(image, faces[3])


def test_recordio_reader_is_picklable(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces, LABELS)
    reader = RecordReader(rec)
    first = reader.read(2)  # opens the file
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(2) == first and clone.keys.tolist() == reader.keys.tolist()
    records = pickle.loads(pickle.dumps(RecordSet(reader)))
    assert records[1][1] == 0 and read_face_record(clone, 5)[1] == 1
    clone.close()
    reader.close()


def _read_labels_in_child(reader: RecordReader) -> list[int]:
    return [read_face_record(reader, key)[1] for key in range(1, 8)]


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_recordio_reader_after_fork(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces, LABELS)
    reader = RecordReader(rec)
    reader.read(1)  # parent has the file open before forking
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_read_labels_in_child, [reader, reader])
    assert results == [LABELS, LABELS]
    assert read_face_record(reader, 7)[1] == 2


def test_recordio_writer_is_atomic(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces[:2], [0, 1])
    before = rec.read_bytes(), (tmp_path / "train.idx").read_bytes()
    with pytest.raises(RuntimeError, match="interrupted"), RecordWriter(rec) as writer:
        writer.write_image(1, faces[3], 0)
        assert rec.read_bytes() == before[0]  # the final name still holds the old set
        raise RuntimeError("interrupted")
    assert (rec.read_bytes(), (tmp_path / "train.idx").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.idx", "train.rec"]


def test_recordio_writer_checks(tmp_path: Path, faces: list[np.ndarray]) -> None:
    with RecordWriter(tmp_path / "a.rec") as writer:
        writer.write_image(1, faces[0], 0)
        with pytest.raises(RecordIOError, match="written twice"):
            writer.write_image(1, faces[0], 0)
        writer.write_image(2, faces[1], 1)
        writer.write_image(3, faces[2], 0)
        with pytest.raises(RecordIOError, match="spread over several runs"):
            writer.write_header_record()
        writer.write_header_record(identities=False)
    records = RecordSet(tmp_path / "a.rec")
    assert len(records) == 3 and records.num_classes is None
    with RecordWriter(tmp_path / "b.rec") as writer:
        writer.write_image(2, faces[0], 0)
        with pytest.raises(RecordIOError, match=r"exactly 1\.\.1"):
            writer.write_header_record()


def test_recordio_corrupt_files(tmp_path: Path, faces: list[np.ndarray]) -> None:
    rec = tmp_path / "train.rec"
    _write_set(rec, faces, LABELS)
    idx = tmp_path / "train.idx"
    data = rec.read_bytes()
    lines = idx.read_text().splitlines()
    rec.write_bytes(data[:-4])  # the last record (identity record 10) cut short
    with pytest.raises(RecordIOError, match="truncated") as info:
        RecordReader(rec).read(10)
    assert str(rec) in str(info.value)
    rec.write_bytes(data)
    idx.write_text("\n".join([*lines[:2], "3\t6", *lines[3:]]) + "\n")
    with pytest.raises(RecordIOError, match="offset 6"):
        RecordReader(rec)
    idx.write_text("\n".join([*lines[:2], "three\t16", *lines[3:]]) + "\n")
    with pytest.raises(RecordIOError, match="line 3"):
        RecordReader(rec)
    idx.write_text("\n".join([*lines[:2], lines[0], *lines[3:]]) + "\n")
    with pytest.raises(RecordIOError, match="more than once"):
        RecordReader(rec)
    inside = int(lines[2].split("\t")[1]) + 4  # 4 bytes into record 3: no magic there
    idx.write_text("\n".join([*lines[:2], f"3\t{inside}", *lines[3:]]) + "\n")
    with pytest.raises(RecordIOError, match=f"no RecordIO record at offset {inside}"):
        RecordReader(rec).read(3)


def test_recordio_written_idx_is_mxnet_text_format(tmp_path: Path) -> None:
    rec = tmp_path / "t.rec"
    with RecordWriter(rec) as writer:
        writer.write(0, IRHeader(0, 1.0, 0, 0), b"a" * 5)
        writer.write(1, IRHeader(0, 2.0, 1, 0), b"b")
    assert (tmp_path / "t.idx").read_text() == "0\t0\n1\t40\n"  # 8 + pad4(24 + 5) = 40
    assert rec.stat().st_size == 40 + 8 + 28
    assert io.BytesIO(rec.read_bytes()).read(4) == MAGIC_LE
