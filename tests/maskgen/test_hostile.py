"""`maskgen render` under hostile conditions: outputs that would clobber their input, two
runs on one output, changed inputs, crafted names, power cuts, crashes and hostile files.

Every case runs the real renderer on real files in a temporary folder; the corpus of
hostile files is generated here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from maskgen.cli import app
from maskgen.dataset import RenderOptions, meta_dir, render_dataset
from maskgen.dataset.errors import JournalError, OutputLockedError, UnsafeOutputError
from maskgen.dataset.journal import PROGRESS_MAGIC, ProgressEntry, quote_key, unquote_key
from maskgen.dataset.locks import run_lock
from maskgen.io import RecordWriter, encode_image, save_bin
from maskgen.synthetic import draw_aligned_face, sample_identity

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
ALIGNED = RenderOptions(landmarks="aligned", block_size=2, seed=3)


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    idents = [sample_identity(rng) for _ in range(3)]
    return [draw_aligned_face(idents[i % 3], rng)[0] for i in range(n)]


def _png(image: np.ndarray) -> bytes:
    return encode_image(image, ".png")


def _folder(root: Path, names: list[bytes | str], seed: int = 0) -> Path:
    """Aligned 112×112 crops under ``root`` with the given (byte) names."""
    os.makedirs(root, exist_ok=True)
    for name, crop in zip(names, _crops(len(names), seed), strict=True):
        raw = os.fsencode(name)
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(_png(crop))
    return root


def _tree(root: Path) -> dict[bytes, bytes]:
    out = {}
    for dirpath, _, files in os.walk(os.fsencode(root)):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, os.fsencode(root))] = fh.read()
    return out


def _meta(out: Path) -> dict[bytes, bytes]:
    return {k: v for k, v in _tree(meta_dir(out)).items() if not k.startswith(b"summary")}


def _render(src: Path, out: Path, options: RenderOptions = ALIGNED, **kw) -> dict:
    return render_dataset(src, out, options, workers=1, progress=False, **kw)


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (meta_dir(out) / "manifest.jsonl").open("rb")]


def _write_rec(path: Path, n: int) -> None:
    with RecordWriter(path) as writer:
        for i, crop in enumerate(_crops(n, seed=7)):
            writer.write_image(i + 1, crop, label=i * 3 // n)
        writer.write_header_record()


# -- data loss: an output that is the input, or inside it --------------------------------


def test_output_equal_to_the_input_is_refused_and_nothing_is_touched(tmp_path: Path) -> None:
    src = _folder(tmp_path / "same", ["a.png", "b/c.png"])
    before = _tree(src)
    result = runner.invoke(app, ["render", str(src), str(src), "--no-progress", "--workers", "1"])
    assert result.exit_code == 2 and "the output is the input" in result.output
    assert result.output.count("\n") == 1
    assert _tree(src) == before and not meta_dir(src).exists()
    _write_rec(tmp_path / "x.rec", 3)
    save_bin(tmp_path / "x.bin", [_png(c) for c in _crops(2)], [True])
    for name in ("x.rec", "x.bin"):
        data = (tmp_path / name).read_bytes()
        with pytest.raises(UnsafeOutputError, match="the output is the input"):
            _render(tmp_path / name, tmp_path / name)
        assert (tmp_path / name).read_bytes() == data
    (tmp_path / "link.rec").symlink_to(tmp_path / "x.rec")
    with pytest.raises(UnsafeOutputError):
        _render(tmp_path / "x.rec", tmp_path / "link.rec")


def test_output_inside_the_input_is_refused_unless_the_listing_skips_it(tmp_path: Path) -> None:
    src = _folder(tmp_path / "in", ["a.png", "b.png"])
    with pytest.raises(UnsafeOutputError, match="inside the input folder"):
        _render(src, src / "masked")
    assert not (src / "masked").exists()
    hidden = src / ".masked"  # the listing skips names starting with "."
    first = _render(src, hidden)
    assert first["done"] == 2
    again = _render(src, hidden)  # its own outputs are not listed as inputs
    assert again["skipped"] == 2 and again["done"] == 0
    assert sorted(p.name for p in hidden.iterdir()) == ["a.png", "b.png"]


# -- data loss: two runs on one output ----------------------------------------------------


def test_a_second_run_on_a_locked_output_fails_at_once(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["a.png", "b.png"])
    out = tmp_path / "out"
    with run_lock(meta_dir(out), str(out), (0, 1)):
        with pytest.raises(OutputLockedError, match="another maskgen render is writing"):
            _render(src, out)
        assert not (out / "a.png").exists()
        with pytest.raises(OutputLockedError):  # a shard cannot start beside it either
            _render(src, out, shard=(0, 2))
    assert _render(src, out)["done"] == 2  # the lock goes with its holder


def test_shards_run_side_by_side_but_one_shard_only_once(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", [f"{i}.png" for i in range(6)])
    out = tmp_path / "out"
    with run_lock(meta_dir(out), str(out), (1, 2)):
        assert _render(src, out, shard=(0, 2))["done"] == 4
        with pytest.raises(OutputLockedError):
            _render(src, out, shard=(1, 2))
        with pytest.raises(OutputLockedError):
            _render(src, out)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "maskgen.cli", "render", *args, "--no-progress"]


def test_two_concurrent_cli_runs_one_fails_with_one_line(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", [f"{i // 50}/{i:03d}.png" for i in range(300)])
    args = ["--landmarks", "aligned", "--block-size", "2", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cli(str(src), str(ref), *args), check=True, env=env, capture_output=True)
    runs = [
        subprocess.Popen(_cli(str(src), str(out), *args, *extra), env=env, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for extra in ([], ["--seed", "1"])
    ]  # fmt: skip
    errors = [run.communicate()[1] for run in runs]
    codes = [run.returncode for run in runs]
    if codes == [0, 0]:
        pytest.skip("one run finished before the other started")
    assert sorted(codes) == [0, 2], errors
    loser = errors[codes.index(2)]
    assert "another maskgen render is writing" in loser and loser.count("\n") == 1
    if codes[0] == 0:  # the run with the reference's seed won
        assert _tree(ref) == _tree(out) and _meta(ref) == _meta(out)
    records = _manifest(out)
    assert len(records) == 300 and len({r["key"] for r in records}) == 300


# -- data loss: resume by key -------------------------------------------------------------


def test_an_added_item_is_rendered_and_nothing_twice(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["b.png", "c.png", "d.png"])
    out = tmp_path / "out"
    assert _render(src, out)["done"] == 3
    _folder(src, ["a0.png"], seed=5)
    summary = _render(src, out)
    assert (summary["done"], summary["skipped"], summary["vanished"]) == (1, 3, 0)
    keys = [r["key"] for r in _manifest(out)]
    assert sorted(keys) == ["a0.png", "b.png", "c.png", "d.png"] and len(set(keys)) == 4
    fresh = tmp_path / "fresh"
    _render(src, fresh)
    assert _tree(out) == _tree(fresh)  # the same pixels as a run over the new listing


def test_vanished_items_are_reported_and_their_outputs_kept(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _render(src, out)
    (src / "b.png").unlink()
    summary = _render(src, out)
    assert (summary["done"], summary["skipped"], summary["vanished"]) == (0, 2, 1)
    assert any("no longer in" in note for note in summary["notes"])
    listed = (meta_dir(out) / "vanished.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in listed] == ["b.png"]
    assert (out / "b.png").is_file()


def test_a_changed_packed_input_is_refused(tmp_path: Path) -> None:
    _write_rec(tmp_path / "train.rec", 6)
    out = tmp_path / "out" / "train.rec"
    _render(tmp_path / "train.rec", out)
    _write_rec(tmp_path / "train.rec", 4)
    with pytest.raises(JournalError, match="the input changed"):
        _render(tmp_path / "train.rec", out)


# -- data loss: names are data ------------------------------------------------------------

HOSTILE_NAMES: list[bytes] = [
    b"plain.png",
    b"tab\there.png",
    b"new\nline.png",
    b"cr\rreturn.png",
    b"bad\xff\xfe.png",
    b"latin\xe9.png",
    b"pct%41%zz.png",
    b"back\\slash.png",
    b"sub dir/space name.png",
    b"x\t0\t0\n1\tplain.png\t99\t0.png",  # reads as extra progress lines in the old format
    "caf\u00e9/\u6f22\u5b57.png".encode(),
]


def test_any_file_name_round_trips_through_render_and_resume(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", HOSTILE_NAMES)
    out = tmp_path / "out"
    summary = _render(src, out)
    assert summary["done"] == len(HOSTILE_NAMES) and summary["failed"] == 0
    assert set(_tree(out)) == set(HOSTILE_NAMES)
    records = _manifest(out)
    assert sorted(os.fsencode(r["key"]) for r in records) == sorted(HOSTILE_NAMES)
    assert {os.fsencode(r["output"]) for r in records} == set(HOSTILE_NAMES)
    again = _render(src, out)
    assert again["skipped"] == len(HOSTILE_NAMES) and again["done"] == 0
    assert again["notes"] == []
    # Kill-like cut after every third line: each resume renders exactly the rest.
    progress = meta_dir(out) / "progress.log"
    lines = progress.read_bytes().splitlines(keepends=True)
    progress.write_bytes(b"".join(lines[:4]))
    (out / records[-1]["output"]).unlink()  # an item after the cut
    resumed = _render(src, out)
    assert resumed["skipped"] == 3 and resumed["done"] == len(HOSTILE_NAMES) - 3
    fresh = tmp_path / "fresh"
    _render(src, fresh)
    assert _tree(out) == _tree(fresh) and _meta(out) == _meta(fresh)


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b))
def test_quoted_keys_are_one_field_and_round_trip(raw: bytes) -> None:
    key = os.fsdecode(raw)
    field = quote_key(key)
    assert field.isascii() and not set(field) & {"\t", "\n", "\r"}
    assert os.fsencode(unquote_key(field)) == raw


@given(
    st.integers(0, 2**40),
    st.text(min_size=1, max_size=30),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_progress_lines_round_trip_and_any_damage_is_caught(
    index: int, key: str, m: int, f: int, mcrc: int, fcrc: int, data: st.DataObject
) -> None:
    key = key.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    entry = ProgressEntry(index, key, m, f, mcrc, fcrc)
    line = entry.line()
    assert ProgressEntry.parse(line) == entry and line.count(b"\n") == 1
    cut = data.draw(st.integers(0, len(line) - 1))
    assert ProgressEntry.parse(line[:cut]) is None
    pos = data.draw(st.integers(0, len(line) - 2))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(line)
    damaged[pos] ^= flip
    assert ProgressEntry.parse(bytes(damaged)) in (None, entry) or damaged[pos] in b"\t\n"


# -- data loss: power cuts ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("powercut")
    names = [f"{i // 4}/{i:02d}.png" for i in range(10)]
    src = _folder(root / "src", names)
    (src / "9" / "broken.png").parent.mkdir()
    (src / "9" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a failure
    ref = root / "ref"
    _render(src, ref)
    return src, ref


def _copy(ref: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(ref, dest)
    shutil.copytree(meta_dir(ref), meta_dir(dest))


def _power_cut(path: Path, keep: int, pad: int) -> None:
    """What a power cut can leave: the file cut to ``keep`` bytes, then ``pad`` NUL bytes
    (allocated blocks whose data never reached the disk)."""
    data = path.read_bytes()[:keep]
    path.write_bytes(data + b"\x00" * pad)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_power_cut_journals_are_repaired_to_the_same_bytes(
    reference: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    src, ref = reference
    out = tmp_path_factory.mktemp("cut") / "out"
    _copy(ref, out)
    meta = meta_dir(out)
    for name in ("progress.log", "manifest.jsonl", "failures.jsonl"):
        size = (meta / name).stat().st_size
        keep = data.draw(st.integers(0, size), label=f"{name} keep")
        pad = data.draw(st.sampled_from([0, 0, 17, 4096]), label=f"{name} NULs")
        _power_cut(meta / name, keep, pad)
    summary = _render(src, out)
    assert summary["total"] == summary["done"] + summary["skipped"] + summary["failed"]
    assert _tree(out) == _tree(ref) and _meta(out) == _meta(ref)
    assert _render(src, out)["skipped"] == summary["total"]


def test_a_nul_padded_manifest_is_reported_and_repaired(reference: tuple[Path, Path],
                                                        tmp_path: Path) -> None:  # fmt: skip
    src, ref = reference
    out = tmp_path / "out"
    _copy(ref, out)
    manifest = meta_dir(out) / "manifest.jsonl"
    size = manifest.stat().st_size
    _power_cut(manifest, size // 2, 4096)  # the log says more was written than survived
    summary = _render(src, out)
    assert any("manifest.jsonl" in note and "rendered again" in note for note in summary["notes"])
    assert summary["done"] > 0
    assert _meta(out) == _meta(ref) and b"\x00" not in manifest.read_bytes()


def test_a_changed_byte_in_the_manifest_is_caught_by_its_crc(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    src, ref = reference
    out = tmp_path / "out"
    _copy(ref, out)
    manifest = meta_dir(out) / "manifest.jsonl"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x01
    manifest.write_bytes(bytes(data))
    summary = _render(src, out)
    assert any("differ (CRC)" in note for note in summary["notes"])
    assert _meta(out) == _meta(ref)


def test_journal_writes_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = getattr(os, "fdatasync", os.fsync)

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy, raising=False)
    monkeypatch.setattr(os, "fsync", spy)
    src = _folder(tmp_path / "src", ["a.png"])
    (src / "b.png").write_bytes(b"broken")
    _render(src, tmp_path / "out")
    names = [Path(p).name for p in synced]
    for name in ("manifest.jsonl", "failures.jsonl", "progress.log"):
        assert name in names, names
    assert names.index("manifest.jsonl") < len(names) - 1 - names[::-1].index("progress.log")


def _v1_journal(out: Path) -> None:
    """Rewrite a finished run's progress log in maskgen's first format."""
    progress = meta_dir(out) / "progress.log"
    lines = progress.read_bytes().splitlines()[1:]
    old = []
    for line in lines:
        index, key, m, f = line.split(b"\t")[:4]
        old.append(b"\t".join([index, os.fsencode(unquote_key(key.decode())), m, f]) + b"\n")
    progress.write_bytes(b"".join(old))


def test_an_output_of_the_first_journal_format_resumes(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    src, ref = reference
    out = tmp_path / "out"
    _copy(ref, out)
    _v1_journal(out)
    progress = meta_dir(out) / "progress.log"
    progress.write_bytes(b"".join(progress.read_bytes().splitlines(keepends=True)[:5]))
    summary = _render(src, out)
    assert summary["skipped"] == 5 and any("converted" in n for n in summary["notes"])
    assert _tree(out) == _tree(ref) and _meta(out) == _meta(ref)


def test_an_unreadable_old_journal_is_refused_with_one_line(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["a.png"])
    out = tmp_path / "out"
    _render(src, out)
    (meta_dir(out) / "progress.log").write_bytes(b"0\tnew\nline.png\t10\t0\n")
    args = ["--no-progress", "--workers", "1", "--landmarks", "aligned", "--block-size", "2"]
    result = runner.invoke(app, ["render", str(src), str(out), *args, "--seed", "3"])
    assert result.exit_code == 2 and "not a progress line of any maskgen version" in result.output


def test_crcs_cover_the_bytes_of_each_item(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["a.png", "b.png"])
    out = tmp_path / "out"
    _render(src, out)
    meta = meta_dir(out)
    progress = (meta / "progress.log").read_bytes()
    assert progress.startswith(PROGRESS_MAGIC)
    entries = [ProgressEntry.parse(line + b"\n") for line in progress.splitlines()[1:]]
    manifest = (meta / "manifest.jsonl").read_bytes()
    start = 0
    for entry in entries:
        assert entry is not None
        assert zlib.crc32(manifest[start : entry.manifest]) == entry.manifest_crc
        start = entry.manifest
    assert start == len(manifest)


# -- silently wrong -----------------------------------------------------------------------


def test_rec_occlusion_maps_are_one_per_record(tmp_path: Path) -> None:
    _write_rec(tmp_path / "train.rec", 4)
    out = tmp_path / "out" / "train.rec"
    options = RenderOptions(landmarks="aligned", save_occlusion=True, variants=2)
    _render(tmp_path / "train.rec", out, options)
    names = [r["occlusion"] for r in _manifest(out)]
    assert len(set(names)) == 8
    assert all((meta_dir(out) / n).is_file() for n in names)


def test_points_outside_the_image_fail_only_their_item_naming_the_file(tmp_path: Path) -> None:
    from maskgen.landmarks import create_backend

    src = _folder(tmp_path / "src", ["good.png", "bad.png"])
    lm = create_backend("aligned").detect(np.zeros((112, 112, 3), np.uint8))[0].landmarks
    (tmp_path / "lm").mkdir()
    np.save(tmp_path / "lm" / "good.npy", lm)
    np.save(tmp_path / "lm" / "bad.npy", lm + 5000)
    options = RenderOptions(landmarks="file", landmarks_dir=str(tmp_path / "lm"))
    summary = _render(src, tmp_path / "out", options)
    assert (summary["done"], summary["failed"]) == (1, 1)
    (fail,) = [json.loads(x) for x in (meta_dir(tmp_path / "out") / "failures.jsonl").open()]
    assert fail["key"] == "bad.png" and fail["category"] == "landmarks"
    assert "bad.npy" in fail["reason"] and "outside" in fail["reason"]


def _huge_png(width: int, height: int) -> bytes:
    """A valid PNG header of a ``width``×``height`` image (IHDR with a correct CRC)."""
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    chunk = (13).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_images_over_the_pixel_limit_fail_as_too_large_before_decoding(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["small.png"])
    (src / "huge.png").write_bytes(_huge_png(40_000, 40_000))
    big = np.zeros((300, 400, 3), np.uint8)
    for ext in (".png", ".jpg", ".webp", ".bmp", ".tiff"):
        (src / f"big{ext}").write_bytes(encode_image(big, ext))
    summary = _render(src, tmp_path / "out", max_pixels=100_000)
    fails = {f["key"]: f for f in map(json.loads, (meta_dir(tmp_path / "out") / "failures.jsonl")
                                      .open())}  # fmt: skip
    assert summary["done"] == 1
    for key in ("huge.png", "big.png", "big.jpg", "big.webp", "big.bmp", "big.tiff"):
        assert fails[key]["category"] == "too_large", key
    assert "40000×40000" in fails["huge.png"]["reason"]
    assert "400×300" in fails["big.jpg"]["reason"]
    # The default limit still reports a huge header as too large, not as corrupt.
    summary = _render(src, tmp_path / "default")
    fails = {f["key"]: f for f in map(json.loads, (meta_dir(tmp_path / "default") /
                                                   "failures.jsonl").open())}  # fmt: skip
    assert fails["huge.png"]["category"] == "too_large"


@given(st.binary(max_size=64))
def test_image_size_never_raises_on_garbage(data: bytes) -> None:
    from maskgen.io import image_size

    for head in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM",
                 b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8X"):  # fmt: skip
        size = image_size(head + data)
        assert size is None or (isinstance(size[0], int) and isinstance(size[1], int))


# -- crashes ------------------------------------------------------------------------------


def test_read_only_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", ["a.png"])
    if os.geteuid() == 0:  # root writes anywhere but into /sys
        out = Path("/sys/maskgen-test-output")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "out"
    result = runner.invoke(app, ["render", str(src), str(out), "--no-progress", "--workers", "1"])
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.output and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", [f"{i:02d}.png" for i in range(24)])
    args = ["--landmarks", "aligned", "--block-size", "2", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cli(str(src), str(ref), *args), check=True, env=env, capture_output=True)
    limited = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
        "from maskgen.cli import app; sys.argv[0] = 'maskgen'; app()"
    )  # every file stops at 20 kB: the manifest fills up mid-run (EFBIG, as ENOSPC would)
    full = subprocess.run([sys.executable, "-c", limited, *_cli(str(src), str(out), *args)[3:]],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert full.returncode == 2, full.stderr
    assert "cannot write" in full.stderr and full.stderr.count("\n") == 1
    assert f"error: {out}" in full.stderr  # the file that could not be written
    subprocess.run(_cli(str(src), str(out), *args), check=True, env=env, capture_output=True)
    assert _tree(ref) == _tree(out) and _meta(ref) == _meta(out)


def test_a_killed_assembly_leaves_no_temporary_files(tmp_path: Path) -> None:
    _write_rec(tmp_path / "train.rec", 5)
    out = tmp_path / "out" / "train.rec"
    _render(tmp_path / "train.rec", out)
    reference = out.read_bytes(), out.with_suffix(".idx").read_bytes()
    (meta_dir(out) / "assembled.json").unlink()  # as if killed while assembling
    out.unlink()
    for name in (".train.rec.x1y2z3.tmp", ".train.idx.a9b8c7.tmp"):
        (out.parent / name).write_bytes(b"half written")
    (out.parent / ".other.rec.a9b8c7.tmp").write_bytes(b"someone else's")
    summary = _render(tmp_path / "train.rec", out)
    assert summary["assembled"] is True
    assert (out.read_bytes(), out.with_suffix(".idx").read_bytes()) == reference
    assert sorted(p.name for p in out.parent.glob(".*.tmp")) == [".other.rec.a9b8c7.tmp"]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


_BUSY_WORKER = """
import os, sys, time
from maskgen.dataset.state import stop_if_orphaned
stop_if_orphaned(os.getppid(), sys.argv[1])
open(sys.argv[2], "w").close()
time.sleep(300)  # one long item: the loop between items never comes round again
"""

_MAIN = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
time.sleep(300)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_worker_busy_with_one_item_stops_when_the_main_process_is_killed(tmp_path: Path) -> None:
    import signal
    import socket
    import sys

    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    main = subprocess.Popen([sys.executable, "-c", _MAIN, _BUSY_WORKER, socket.gethostname(),
                             str(started)], env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (worker,) = _children(main.pid)
    assert started.exists() and _alive(worker)
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_stop_when_the_main_process_is_killed(tmp_path: Path) -> None:
    import signal

    src = _folder(tmp_path / "src", [f"{i:03d}.png" for i in range(200)])
    out = tmp_path / "out"
    args = ["--landmarks", "aligned", "--block-size", "25", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli(str(src), str(out), *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    progress = meta_dir(out) / "progress.log"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.exists() and progress.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    # The rendering workers (not loky's resource tracker, which outlives them by design).
    workers = [p for p in _children(proc.pid)
               if b"LokyProcess" in Path(f"/proc/{p}/cmdline").read_bytes()]  # fmt: skip
    assert proc.poll() is None and workers, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    # Until the killed process is reaped it is a zombie that still parents the workers (they
    # cannot tell it is gone): count from the moment it is reaped.
    proc.wait()
    written_at_kill = len(list(out.glob("*.png")))
    deadline = time.monotonic() + 120
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    # Each worker may finish the image it was writing (and one whose file was still being
    # renamed into place when counted); none goes on with its queued blocks.
    assert len(list(out.glob("*.png"))) - written_at_kill <= 2 * len(workers)
