"""`maskgen render` on webdataset `.tar` shards: keys, extensions and extra members kept,
the same pixels as a folder of the same images, damaged shards, resume after a kill.

Every shard is a real tar archive written here with :mod:`tarfile` from synthetic faces.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from killed_runs import kill_when, render_cli

from maskgen.dataset import RenderOptions, meta_dir, render_dataset
from maskgen.dataset.errors import UnsafeOutputError
from maskgen.dataset.sources import TarSource, expand_braces, open_source
from maskgen.io import decode_image, encode_image
from maskgen.io.formats import decode_full
from maskgen.io.tarshard import Damage, group_samples, member_header, scan_members, split_name
from maskgen.synthetic import draw_aligned_face, sample_identity

REPO = Path(__file__).resolve().parents[2]
ALIGNED = RenderOptions(landmarks="aligned", block_size=3, seed=7)
MTIME = 1_700_000_000


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    idents = [sample_identity(rng) for _ in range(3)]
    return [draw_aligned_face(idents[i % 3], rng)[0] for i in range(n)]


def _add(tf: tarfile.TarFile, name: str, data: bytes | None, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uname, info.gname = MTIME, 0o640, "face", "set"
    info.type = kind
    info.size = len(data) if data is not None else 0
    tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _sample(i: int, crop: np.ndarray, ext: str = "jpg") -> list[tuple[str, bytes]]:
    key = f"{i:06d}"
    image = encode_image(crop, "." + ext)
    meta = json.dumps({"id": i, "caption": f"face {i}"}).encode()
    return [(f"{key}.{ext}", image), (f"{key}.cls", str(i % 3).encode()), (f"{key}.json", meta)]


def _shard(
    path: Path, members: list[tuple[str, bytes | None]], fmt: int = tarfile.GNU_FORMAT
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, data in members:
            kind = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            _add(tf, name, data, kind)
    return path


def _shards(root: Path, n_shards: int = 2, per: int = 5, seed: int = 0) -> list[Path]:
    """``n_shards`` shards of ``per`` samples (jpg, every third png), GNU and pax formats."""
    crops = _crops(n_shards * per, seed)
    paths = []
    for s in range(n_shards):
        members: list[tuple[str, bytes | None]] = []
        for i in range(s * per, (s + 1) * per):
            members += _sample(i, crops[i], "png" if i % 3 == 2 else "jpg")
        fmt = tarfile.PAX_FORMAT if s % 2 else tarfile.GNU_FORMAT
        paths.append(_shard(root / f"data-{s:06d}.tar", members, fmt))
    return paths


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tf:
        return [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_members_group_into_samples_by_webdataset_keys() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "train", None, tarfile.DIRTYPE)  # no sample: goes with the first one
        for name in ["train/a.jpg", "train/a.seg.png", "train/a.cls", "README", "train/b.jpg",
                     "train/b.jpg", "v1.0/c.txt"]:  # fmt: skip
            _add(tf, name, name.encode())
    raw = buf.getvalue()
    samples = list(group_samples(scan_members(io.BytesIO(raw), len(raw))))
    assert [(s.key, [m.name for m in s.members]) for s in samples] == [
        ("train/a", ["train", "train/a.jpg", "train/a.seg.png", "train/a.cls", "README"]),
        ("train/b", ["train/b.jpg"]),
        ("train/b", ["train/b.jpg"]),  # a repeated extension starts a new sample
        ("v1.0/c", ["v1.0/c.txt"]),
    ]
    # every byte of the archive belongs to exactly one sample
    assert samples[0].offset == 0 and all(a.end == b.offset for a, b in itertools.pairwise(samples))
    assert split_name("a/.b.jpg") is None and split_name("a/b.") is None
    assert expand_braces("x-{8..10}.tar") == ["x-8.tar", "x-9.tar", "x-10.tar"]


def test_a_rewritten_header_keeps_owner_times_and_format() -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        long = "d/" + "n" * 120 + ".jpg"  # longer than ustar's 100 characters
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            _add(tf, "short.jpg" if fmt == tarfile.USTAR_FORMAT else long, b"abc")
        raw = buf.getvalue()
        head = raw[: raw.index(b"abc")]
        new = member_header(head, long + ".x", 5) + b"hello" + bytes(507) + bytes(1024)
        with tarfile.open(fileobj=io.BytesIO(new)) as tf:
            (info,) = tf.getmembers()
            assert (info.name, info.size, tf.extractfile(info).read()) == (long + ".x", 5, b"hello")
            assert (info.mtime, info.mode, info.uname, info.gname) == (MTIME, 0o640, "face", "set")


def test_keys_extensions_and_extra_members_round_trip(tmp_path: Path) -> None:
    crops = _crops(3, seed=4)
    long_key = "deep/" + "k" * 110  # a pax "path" header
    members: list[tuple[str, bytes | None]] = [("deep", None)]
    members += _sample(0, crops[0]) + _sample(1, crops[1], "png")
    members += [(f"{long_key}.jpeg", encode_image(crops[2], ".jpg")), (f"{long_key}.txt", b"x")]
    src = _shard(tmp_path / "in" / "part.tar", members, tarfile.PAX_FORMAT)
    out = tmp_path / "out.tar"
    summary = render_dataset(src, out, ALIGNED, workers=1, progress=False)
    assert (summary["done"], summary["failed"], summary["outputs"]) == (3, 0, 3)
    before, after = _members(src), _members(out)
    assert [m.name for m, _ in after] == [m.name for m, _ in before]
    for (m_in, d_in), (m_out, d_out) in zip(before, after, strict=True):
        assert (m_out.mtime, m_out.mode, m_out.uname, m_out.type) == (
            m_in.mtime, m_in.mode, m_in.uname, m_in.type)  # fmt: skip
        ext = m_in.name.rpartition(".")[2]
        if ext in ("jpg", "jpeg", "png"):
            a, b = decode_image(d_in), decode_image(d_out)
            assert a.shape == b.shape and np.abs(a.astype(int) - b).max() > 40  # masked
            assert d_out[:4] == d_in[:4]  # same format (JPEG / PNG signature)
        else:
            assert d_out == d_in  # cls, json, txt: byte for byte
    records = _lines(meta_dir(out) / "manifest.jsonl")
    assert [r["output"] for r in records] == [
        "out.tar#000000.jpg", "out.tar#000001.png", f"out.tar#{long_key}.jpeg"]  # fmt: skip
    assert records[0]["key"] == "part/000000.jpg" and records[0]["input"] == "part.tar#000000.jpg"


def test_shards_give_the_pixels_of_the_same_images_in_a_folder(tmp_path: Path) -> None:
    shards = _shards(tmp_path / "shards", 2, 4)
    deep = np.clip(_crops(1, 9)[0].astype(np.uint16) * 257 + 100, 0, 65535).astype(np.uint16)
    _shard(tmp_path / "shards" / "deep.tar", [("d16.png", encode_image(deep, ".png"))])
    folder = tmp_path / "folder"
    for shard in [*shards, tmp_path / "shards" / "deep.tar"]:
        with tarfile.open(shard) as tf:
            tf.extractall(folder / shard.stem, filter="data")
    options = RenderOptions(landmarks="aligned", seed=3, p=0.5, block_size=2)
    render_dataset(folder, tmp_path / "from_folder", options, workers=1, progress=False)
    render_dataset(tmp_path / "shards", tmp_path / "from_tars", options, workers=1,
                   progress=False)  # fmt: skip
    for shard in sorted((tmp_path / "from_tars").glob("*.tar")):
        for member, data in _members(shard):
            if member.name.endswith((".jpg", ".png")):
                assert data == (tmp_path / "from_folder" / shard.stem / member.name).read_bytes()
    full = decode_full(dict((m.name, d) for m, d in _members(tmp_path / "from_tars" / "deep.tar"))
                       ["d16.png"])  # fmt: skip
    assert full is not None and full.dtype == np.uint16  # 16-bit kept, as in folders
    a = _lines(meta_dir(tmp_path / "from_folder") / "manifest.jsonl")
    b = _lines(meta_dir(tmp_path / "from_tars") / "manifest.jsonl")
    assert [(r["key"], r["params"]) for r in a] == [(r["key"], r["params"]) for r in b]
    assert 0 < sum(r["params"] is None for r in b) < len(b)  # some unmasked by --p


def test_unmasked_samples_are_copied_byte_for_byte(tmp_path: Path) -> None:
    (src,) = _shards(tmp_path, 1, 4)
    out = tmp_path / "clean.tar"
    render_dataset(src, out, RenderOptions(landmarks="aligned", p=0.0), workers=1,
                   progress=False)  # fmt: skip
    raw_in, raw_out = src.read_bytes(), out.read_bytes()
    body = raw_in.rstrip(b"\0")
    assert raw_out.startswith(body) and not raw_out[len(body) :].strip(b"\0")


def test_variants_rename_every_member_of_a_sample(tmp_path: Path) -> None:
    src = _shard(tmp_path / "v.tar", [("dir", None), *_sample(0, _crops(1)[0])])
    out = tmp_path / "masked"
    options = RenderOptions(landmarks="aligned", variants=2, format="png")
    render_dataset(src, out, options, workers=1, progress=False)
    got = _members(out / "v.tar")
    names = [f"000000_v{v}.{ext}" for v in (0, 1) for ext in ("png", "cls", "json")]
    assert [m.name for m, _ in got] == ["dir", *names]
    data = dict((m.name, d) for m, d in got)
    assert data["000000_v0.cls"] == data["000000_v1.cls"] == b"0"
    assert data["000000_v0.png"] != data["000000_v1.png"]  # two draws
    records = _lines(meta_dir(out) / "manifest.jsonl")
    assert [r["output"] for r in records] == ["v.tar#000000_v0.png", "v.tar#000000_v1.png"]


def test_damaged_shards_fail_sample_by_sample_and_the_job_goes_on(tmp_path: Path) -> None:
    crops = _crops(8, seed=2)
    good = [m for i in range(4) for m in _sample(i, crops[i])]
    broken = encode_image(crops[4], ".jpg")
    members = [*good[:6], ("000004.jpg", broken[: len(broken) // 3]), ("000004.cls", b"1")]
    members += [("000005.cls", b"2"), ("000005.json", b"{}"), *good[6:]]
    bad = _shard(tmp_path / "in" / "bad.tar", members)
    raw = bytearray(bad.read_bytes())
    # garbage over the header of sample 000003's jpg: the scan resynchronises after it
    with tarfile.open(bad) as tf:
        hit = next(m for m in tf.getmembers() if m.name == "000003.jpg")
    raw[hit.offset : hit.offset + 512] = b"\xff" * 512
    bad.write_bytes(bytes(raw))
    tail = _shard(
        tmp_path / "in" / "cut.tar", [m for i in range(6, 8) for m in _sample(i, crops[i])]
    )
    with tarfile.open(tail) as tf:
        last = next(m for m in tf.getmembers() if m.name == "000007.jpg")
    tail.write_bytes(tail.read_bytes()[: last.offset_data + 100])  # cut inside 000007.jpg
    out = tmp_path / "out"
    summary = render_dataset(tmp_path / "in", out, ALIGNED, workers=1, progress=False)
    fails = {f["input"]: f for f in _lines(meta_dir(out) / "failures.jsonl")}
    assert summary["failed"] == len(fails) == 5 and summary["done"] == 4
    corrupt = fails["bad.tar#000004.jpg"]
    assert corrupt["category"] == "unreadable" and corrupt["reason"].startswith(
        "bad.tar#000004.jpg:"
    )
    assert "no image member" in fails["bad.tar#000005"]["reason"]
    assert "no image member" in fails["bad.tar#000003"]["reason"]  # its jpg was damaged
    damaged = next(f for k, f in fails.items() if k.startswith("bad.tar@"))
    assert "no tar member" in damaged["reason"] and "\n" not in damaged["reason"]
    cut = fails["cut.tar#000007.jpg"]
    assert "000007.jpg is cut short" in cut["reason"] and "left out" in cut["reason"]
    names = [m.name for m, _ in _members(out / "bad.tar")]
    # failed samples are kept as they were; the damaged bytes (and the 000003.cls/json they
    # orphaned, now a sample without image) are not copied
    assert names[:6] == [n for n, _ in good[:6]] and "000003.jpg" not in names
    kept = dict((m.name, d) for m, d in _members(out / "bad.tar"))
    assert kept["000004.jpg"] == broken[: len(broken) // 3] and kept["000005.json"] == b"{}"
    assert [m.name for m, _ in _members(out / "cut.tar")] == ["000006.jpg", "000006.cls",
                                                              "000006.json"]  # fmt: skip
    again = render_dataset(tmp_path / "in", out, ALIGNED, workers=1, progress=False)
    assert again["done"] == 0 and again["skipped"] == 9


def test_inputs_by_pattern_and_refused_outputs(tmp_path: Path) -> None:
    _shards(tmp_path / "s", 3, 2)
    braces = open_source(str(tmp_path / "s" / "data-{000000..000001}.tar"))
    globbed = open_source(str(tmp_path / "s" / "data-*.tar"))
    folder = open_source(tmp_path / "s")
    assert isinstance(braces, TarSource) and len(braces) == 4
    assert [it.key for it in globbed.items()] == [it.key for it in folder.items()]
    assert next(folder.items()).key == "data-000000/000000.jpg"
    with pytest.raises(FileNotFoundError, match=r"data-000003\.tar: input not found"):
        open_source(str(tmp_path / "s" / "data-{000002..000003}.tar"))
    with pytest.raises(ValueError, match="3 input shards need a folder output"):
        render_dataset(tmp_path / "s", tmp_path / "one.tar", ALIGNED, workers=1, progress=False)
    with pytest.raises(UnsafeOutputError, match="inside the input folder"):
        render_dataset(tmp_path / "s", tmp_path / "s" / "out", ALIGNED, workers=1, progress=False)
    with pytest.raises(UnsafeOutputError, match="is the input shard"):
        render_dataset(str(tmp_path / "s" / "*.tar"), tmp_path / "s", ALIGNED, workers=1,
                       progress=False)  # fmt: skip
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(encode_image(_crops(1)[0], ".png"))
    with pytest.raises(ValueError, match=r"a \.tar output needs \.tar shards"):
        render_dataset(tmp_path / "imgs", tmp_path / "x.tar", ALIGNED, workers=1, progress=False)
    scanned = list(scan_members(io.BytesIO(b"\x01" * 1500), 1500))
    assert len(scanned) == 1 and isinstance(scanned[0], Damage)


def test_webdataset_reads_the_output_with_the_input_keys(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    _shards(tmp_path / "s", 2, 3)
    render_dataset(tmp_path / "s", tmp_path / "o", ALIGNED, workers=1, progress=False)

    def samples(pattern: str) -> list[tuple[str, list[str], bytes]]:
        ds = wds.WebDataset(pattern, shardshuffle=False, empty_check=False)
        return [(s["__key__"], sorted(k for k in s if not k.startswith("__")), s["json"])
                for s in ds]  # fmt: skip

    a = samples(str(tmp_path / "s" / "data-{000000..000001}.tar"))
    b = samples(str(tmp_path / "o" / "data-{000000..000001}.tar"))
    assert a == b and len(a) == 6


def test_killed_and_resumed_run_gives_the_same_shards(tmp_path: Path) -> None:
    _shards(tmp_path / "in", 3, 80, seed=5)
    args = ["--landmarks", "aligned", "--block-size", "4", "--workers", "1", "--seed", "4",
            "--save-occlusion"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref, out = tmp_path / "ref", tmp_path / "resumed"
    subprocess.run(render_cli(str(tmp_path / "in"), str(ref), *args), check=True, env=env,
                   capture_output=True)  # fmt: skip
    for cut in (40, 130):
        proc = subprocess.Popen(render_cli(str(tmp_path / "in"), str(out), *args), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        kill_when(proc, meta_dir(out) / "progress.log", cut)
        assert not out.exists() or not list(out.glob("*.tar"))  # no shard before all parts
    subprocess.run(render_cli(str(tmp_path / "in"), str(out), *args), check=True, env=env,
                   capture_output=True)  # fmt: skip
    shards = sorted(p.name for p in ref.glob("*.tar"))
    assert shards == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]
    for name in shards:
        assert (ref / name).read_bytes() == (out / name).read_bytes()
    for name in ("manifest.jsonl", "failures.jsonl", "progress.log"):
        assert (meta_dir(ref) / name).read_bytes() == (meta_dir(out) / name).read_bytes()
    occ = sorted(p.relative_to(meta_dir(ref)) for p in meta_dir(ref).rglob("occlusion/**/*.png"))
    assert len(occ) == 240 and all(
        (meta_dir(ref) / p).read_bytes() == (meta_dir(out) / p).read_bytes() for p in occ
    )
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_a_lost_shard_and_a_killed_assembly_are_rewritten_the_same(tmp_path: Path) -> None:
    _shards(tmp_path / "in", 2, 3)
    out = tmp_path / "out"
    render_dataset(tmp_path / "in", out, ALIGNED, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    (out / "data-000001.tar").unlink()
    stale = out / ".data-000000.tar.k2j4_x9q.tmp"  # what a killed assembly leaves
    stale.write_bytes(b"half a shard")
    again = render_dataset(tmp_path / "in", out, ALIGNED, workers=1, progress=False)
    assert again["done"] == 0 and again["assembled"]
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    assert not stale.exists()


def test_shards_and_workers_give_the_bytes_of_one_run(tmp_path: Path) -> None:
    _shards(tmp_path / "in", 2, 5)
    one, split = tmp_path / "one", tmp_path / "split"
    render_dataset(tmp_path / "in", one, ALIGNED, workers=1, progress=False)
    first = render_dataset(tmp_path / "in", split, ALIGNED, workers=2, shard=(0, 2),
                           progress=False)  # fmt: skip
    assert not first["assembled"] and not list(split.glob("*.tar"))
    last = render_dataset(tmp_path / "in", split, ALIGNED, workers=2, shard=(1, 2),
                          progress=False)  # fmt: skip
    assert last["assembled"]
    for shard in ("data-000000.tar", "data-000001.tar"):
        assert (one / shard).read_bytes() == (split / shard).read_bytes()
    lines = sorted(
        line
        for i in range(2)
        for line in (meta_dir(split) / f"manifest.shard-{i}-of-2.jsonl").read_text().splitlines()
    )
    assert lines == sorted((meta_dir(one) / "manifest.jsonl").read_text().splitlines())
