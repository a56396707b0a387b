"""The fast paths of the ``.rec`` render give what the general code gives: batched record
reads, the JPEG size memo behind the pixel limit, and unquoted journal keys."""

from __future__ import annotations

import os
import struct
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from maskgen.dataset.items import _checked_frames, jpeg_size
from maskgen.dataset.journal import _SAFE, ProgressEntry, quote_key
from maskgen.dataset.state import worker_state
from maskgen.io import (
    ImageTooLargeError,
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    encode_image,
    image_size,
)
from maskgen.io.recordio import MAGIC


def _jpeg(h: int, w: int, seed: int = 0, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_image(rng.integers(0, 255, (h, w, 3), np.uint8), ".jpg", quality)


def _write(path: Path, payloads: dict[int, bytes]) -> None:
    with RecordWriter(path) as writer:
        for key, data in payloads.items():
            writer.write(key, IRHeader(0, 0.0, key, 0), data)


def test_read_many_gives_what_read_gives(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payloads = {
        1: b"plain record",
        2: b"abcd" + magic + b"split here" + magic,  # aligned magic words: several frames
        3: b"",
        5: bytes(range(256)) * 40,
        9: b"x",
    }
    _write(tmp_path / "a.rec", payloads)
    reader = RecordReader(tmp_path / "a.rec")
    keys = [5, 1, 2, 2, 9, 3, 7]
    got = reader.read_many(keys)
    for key, value in zip(keys, got, strict=True):
        if key in payloads:
            assert value == reader.read(key)
        else:
            assert isinstance(value, RecordIOError) and "no record with key 7" in str(value)
    assert reader.read_many([1]) == [reader.read(1)]
    assert reader.read_many([2**70, -1])[0].__class__.__name__ == "MissingRecordError"


def test_read_many_with_a_bad_offset_fails_that_record_alone(tmp_path: Path) -> None:
    _write(tmp_path / "a.rec", {1: b"one", 2: b"two", 3: b"three"})
    idx = tmp_path / "a.idx"
    lines = idx.read_text().splitlines()
    key, offset = lines[1].split("\t")
    lines[1] = f"{key}\t{int(offset) + 4}"  # inside record 2: no frame there
    idx.write_text("\n".join(lines) + "\n")
    reader = RecordReader(tmp_path / "a.rec", check_offsets=False)
    first, second, third = reader.read_many([1, 2, 3])
    assert isinstance(second, RecordIOError)
    assert (first, third) == (reader.read(1), reader.read(3))


def test_read_many_of_unsorted_keys(tmp_path: Path) -> None:
    payloads = {10: b"ten", 4: b"four", 7: b"seven"}  # written out of key order
    _write(tmp_path / "a.rec", payloads)
    reader = RecordReader(tmp_path / "a.rec")
    assert reader.read_many([7, 4, 10]) == [reader.read(k) for k in (7, 4, 10)]


def test_jpeg_size_memo_agrees_with_the_header_parse() -> None:
    state = worker_state()
    state.reset()
    shapes = [(112, 112), (112, 112), (30, 41), (600, 8), (112, 112)]
    datas = [_jpeg(h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    datas.append(_jpeg(112, 112, quality=50))  # other tables: another header
    for _ in range(300):  # learning happens once in a while: go past it
        for data in datas:
            assert jpeg_size(data) == image_size(data)
    assert state.jpeg_heads  # something was learnt
    for prefix, size in state.jpeg_heads:
        assert image_size(prefix) == size
    state.reset()


def test_the_pixel_limit_holds_with_the_memo() -> None:
    state = worker_state()
    state.reset()
    small, big = _jpeg(112, 112), _jpeg(400, 300)
    for _ in range(3):
        assert _checked_frames(small, 112 * 112, "a.rec#1") == 1
        with pytest.raises(ImageTooLargeError, match=r"a\.rec#2: too large: 300×400"):
            _checked_frames(big, 112 * 112, "a.rec#2")
    state.reset()


@pytest.mark.parametrize(
    "key", ["17", "a b/c.jpg", "tab\there", "caf\u00e9.jpg", "%41", "x\ny", "-_.~!$", ""]
)
def test_quote_key_as_percent_escaping_does(key: str) -> None:
    assert quote_key(key) == urllib.parse.quote_from_bytes(os.fsencode(key), safe=_SAFE)
    entry = ProgressEntry(3, key, 10, 0, 1, 2)
    assert ProgressEntry.parse(entry.line()) == entry
