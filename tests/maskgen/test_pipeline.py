"""Dataset rendering: folders with hostile files, .bin and .rec sets, determinism and resume."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from killed_runs import kill_when, render_cli

from maskgen.dataset import (
    RenderOptions,
    meta_dir,
    render_dataset,
    replay_record,
    worker_state,
)
from maskgen.io import (
    RecordSet,
    RecordWriter,
    UnsafePickleError,
    encode_image,
    load_bin,
    read_image,
    save_bin,
    write_image,
)
from maskgen.protocol import EvalProtocol, protocol_path
from maskgen.render import MaskSpec
from maskgen.synthetic import draw_aligned_face, draw_wild_face, sample_identity

try:
    from PIL import Image as PILImage
except ImportError:  # pragma: no cover
    PILImage = None

REPO = Path(__file__).resolve().parents[2]


def _aligned_faces(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    idents = [sample_identity(rng) for _ in range(4)]
    return [draw_aligned_face(idents[i % 4], rng)[0] for i in range(n)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _meta_files(out: Path, skip: tuple[str, ...] = ("summary",)) -> dict[str, bytes]:
    files = _tree(meta_dir(out))
    return {k: v for k, v in files.items() if not k.startswith(skip)}


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real and synthetic photos next to every kind of broken or awkward file."""
    root = tmp_path_factory.mktemp("hostile")
    astro = skimage.data.astronaut()
    write_image(root / "people" / "astronaut.jpg", astro)
    write_image(root / "people" / "gray.png", cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY))
    write_image(root / "people" / "deep16.png", astro.astype(np.uint16) * 257)
    big = cv2.resize(astro, (2400, 2400), interpolation=cv2.INTER_LINEAR)
    write_image(root / "big" / "large.jpg", big, quality=85)
    rng = np.random.default_rng(3)
    wild, _ = draw_wild_face(sample_identity(rng), rng, (360, 480), yaw=0, pitch=0, roll=5,
                          face_frac=0.4)  # fmt: skip
    write_image(root / "synthetic" / "wild.webp", wild, quality=95)
    write_image(root / "synthetic" / "aligned.bmp", _aligned_faces(1)[0])
    if PILImage is not None:
        PILImage.fromarray(astro).convert("CMYK").save(root / "people" / "cmyk.jpg", "JPEG")
    good = encode_image(astro, ".jpg")
    (root / "broken" / "corrupt.jpg").parent.mkdir()
    (root / "broken" / "corrupt.jpg").write_bytes(good[: len(good) // 3])
    (root / "broken" / "empty.png").write_bytes(b"")
    (root / "broken" / "text.jpg").write_text("this is not an image\n")
    write_image(root / "broken" / "noface.tiff", np.full((240, 320, 3), (40, 90, 160), np.uint8))
    (root / "notes.txt").write_text("ignored: not an image extension\n")
    return root


@pytest.fixture(scope="module")
def hostile_run(hostile_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile_out") / "masked"
    # High coverage only, so "the mouth is covered" holds for every draw, not just this seed's.
    spec = MaskSpec(coverages={"high": 1})
    options = RenderOptions(landmarks="dlib", save_occlusion=True, seed=5, spec=spec)
    summary = render_dataset(hostile_folder, out, options, workers=1, progress=False)
    assert summary["total"] == summary["done"] + summary["failed"]
    return out


def test_failures_are_reported_with_reasons(hostile_run: Path) -> None:
    failures = {f["key"]: f for f in _lines(meta_dir(hostile_run) / "failures.jsonl")}
    assert failures["broken/corrupt.jpg"]["category"] == "unreadable"
    assert "corrupt or truncated" in failures["broken/corrupt.jpg"]["reason"]
    assert "empty" in failures["broken/empty.png"]["reason"]
    assert "not an image" in failures["broken/text.jpg"]["reason"]
    assert failures["broken/noface.tiff"]["category"] == "no_face"
    assert set(failures) == {
        "broken/corrupt.jpg", "broken/empty.png", "broken/text.jpg", "broken/noface.tiff",
    }  # fmt: skip


def test_outputs_keep_relative_paths_and_names(hostile_run: Path, hostile_folder: Path) -> None:
    written = {p.relative_to(hostile_run).as_posix() for p in hostile_run.rglob("*")
               if p.is_file()}  # fmt: skip
    expected = {
        "people/astronaut.jpg", "people/gray.png", "people/deep16.png", "big/large.jpg",
        "synthetic/wild.webp", "synthetic/aligned.bmp",
    }  # fmt: skip
    if PILImage is not None:
        expected.add("people/cmyk.jpg")
    assert written == expected
    summary = json.loads((meta_dir(hostile_run) / "summary.json").read_text())
    assert summary["failed"] == 4 and summary["done"] == len(expected)


def test_astronaut_gets_exactly_one_mask_on_the_face(hostile_run: Path) -> None:
    records = {r["key"]: r for r in _lines(meta_dir(hostile_run) / "manifest.jsonl")}
    rec = records["people/astronaut.jpg"]
    assert len(rec["faces"]) == 1
    x0, y0, x1, _ = rec["faces"][0]["box"]
    assert 150 < x0 < 200 and 50 < y0 < 100 and 240 < x1 < 290
    alpha = read_image(meta_dir(hostile_run) / rec["occlusion"])[..., 0]
    assert alpha[380:420, 140:200].max() == 0  # nothing on the badge
    assert alpha[130:170, 200:250].mean() > 200  # the mouth is covered


def test_large_image_is_masked_at_full_resolution(hostile_run: Path) -> None:
    records = {r["key"]: r for r in _lines(meta_dir(hostile_run) / "manifest.jsonl")}
    rec = records["big/large.jpg"]
    out = read_image(hostile_run / "big/large.jpg")
    assert out.shape == (2400, 2400, 3) and len(rec["faces"]) == 1
    x0, _, x1, _ = rec["faces"][0]["box"]
    assert 700 < x0 < 950 and 1000 < x1 < 1300  # ~4.7× the 512-pixel box
    alpha = read_image(meta_dir(hostile_run) / rec["occlusion"])[..., 0]
    assert alpha.shape == (2400, 2400) and alpha[650:800, 950:1200].mean() > 200


def test_gray_cmyk_and_16bit_inputs_are_masked(hostile_run: Path) -> None:
    records = {r["key"]: r for r in _lines(meta_dir(hostile_run) / "manifest.jsonl")}
    keys = ["people/gray.png", "people/deep16.png"] + (["people/cmyk.jpg"] if PILImage else [])
    for key in keys:
        assert len(records[key]["faces"]) == 1, key
    aligned = records["synthetic/aligned.bmp"]  # an aligned crop, found by dlib itself
    assert aligned["backend"] == "dlib" and len(aligned["faces"]) == 1
    assert aligned["faces"][0]["backend"] == "dlib"


def test_manifest_replays_to_the_same_pixels(hostile_run: Path, hostile_folder: Path) -> None:
    records = {r["key"]: r for r in _lines(meta_dir(hostile_run) / "manifest.jsonl")}
    rec = records["people/gray.png"]  # PNG: lossless, so the replay must match exactly
    replayed = replay_record(read_image(hostile_folder / rec["input"]), rec)
    np.testing.assert_array_equal(replayed, read_image(hostile_run / rec["output"]))


def _small_folder(root: Path) -> Path:
    astro = skimage.data.astronaut()
    write_image(root / "a" / "astro.png", cv2.resize(astro, (256, 256)))
    rng = np.random.default_rng(1)
    for i in range(3):
        ident = sample_identity(rng)
        img, _ = draw_wild_face(ident, rng, (240, 320), yaw=0, pitch=0, face_frac=0.45)
        write_image(root / "b" / f"wild{i}.jpg", img)
    for i, crop in enumerate(_aligned_faces(3)):
        write_image(root / "c" / f"crop{i}.png", crop)
    return root


def test_output_is_identical_for_one_and_two_workers(tmp_path: Path) -> None:
    src = _small_folder(tmp_path / "src")
    options = RenderOptions(landmarks="dlib", block_size=2, seed=11, save_occlusion=True)
    render_dataset(src, tmp_path / "w1", options, workers=1, progress=False)
    render_dataset(src, tmp_path / "w2", options, workers=2, progress=False)
    assert _tree(tmp_path / "w1") == _tree(tmp_path / "w2")
    assert _meta_files(tmp_path / "w1") == _meta_files(tmp_path / "w2")


def test_shards_union_equals_a_single_run(tmp_path: Path) -> None:
    src = _small_folder(tmp_path / "src")
    options = RenderOptions(landmarks="auto", block_size=2, seed=2, variants=2, p=0.7)
    render_dataset(src, tmp_path / "one", options, workers=1, progress=False)
    for i in range(3):
        render_dataset(src, tmp_path / "sharded", options, workers=1, shard=(i, 3),
                       progress=False)  # fmt: skip
    assert _tree(tmp_path / "one") == _tree(tmp_path / "sharded")
    single = set((meta_dir(tmp_path / "one") / "manifest.jsonl").read_text().splitlines())
    union: set[str] = set()
    for path in meta_dir(tmp_path / "sharded").glob("manifest.shard-*.jsonl"):
        union |= set(path.read_text().splitlines())
    assert union == single and len(single) == 2 * 7


def _write_bin(path: Path, n_pairs: int) -> list[bytes]:
    images = [encode_image(face, ".jpg") for face in _aligned_faces(2 * n_pairs, seed=4)]
    save_bin(path, images, [k % 2 == 0 for k in range(n_pairs)])
    return images


def test_bin_mnm_masks_exactly_the_second_image_of_every_pair(tmp_path: Path) -> None:
    images = _write_bin(tmp_path / "lfw.bin", 4)
    out = tmp_path / "lfw_mnm.bin"
    options = RenderOptions(protocol="m-nm", seed=1, block_size=3)
    summary = render_dataset(tmp_path / "lfw.bin", out, options, workers=1, progress=False)
    assert summary["assembled"] is True
    pack = load_bin(out)
    assert pack.issame == [True, False, True, False]
    for i, data in enumerate(pack.images):
        assert (data == images[i]) == (i % 2 == 0)  # clean images keep their bytes
    entry = EvalProtocol.load(protocol_path(out)).datasets["lfw"]
    assert list(entry.draws) == ["m-nm"] and entry.landmarks == "aligned"
    assert [p is None for p in entry.draws["m-nm"]] == [True, False] * 4


def test_bin_mm_masks_both_images_with_their_own_draws(tmp_path: Path) -> None:
    images = _write_bin(tmp_path / "agedb.bin", 2)
    out = tmp_path / "agedb_mm.bin"
    render_dataset(tmp_path / "agedb.bin", out, RenderOptions(protocol="m-m"), workers=1,
                   progress=False)  # fmt: skip
    pack = load_bin(out)
    assert all(a != b for a, b in zip(pack.images, images, strict=True))
    params = EvalProtocol.load(protocol_path(out)).datasets["agedb"].draws["m-m"]
    assert all(p is not None for p in params) and params[0] != params[1]


def test_malicious_bin_is_rejected_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Evil(), b""], [True])))
    with pytest.raises(UnsafePickleError):
        render_dataset(tmp_path / "evil.bin", tmp_path / "out.bin", workers=1, progress=False)
    assert not marker.exists()


def _write_rec(path: Path, n: int) -> None:
    faces = _aligned_faces(n, seed=7)
    with RecordWriter(path) as writer:
        for i, face in enumerate(faces):
            writer.write_image(i + 1, face, label=i * 3 // n)
        writer.write_header_record()


def test_rec_is_masked_into_a_new_rec(tmp_path: Path) -> None:
    _write_rec(tmp_path / "train.rec", 12)
    out = tmp_path / "masked" / "train.rec"
    options = RenderOptions(landmarks="aligned", block_size=5, variants=2)
    render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
    source, masked = RecordSet(tmp_path / "train.rec"), RecordSet(out)
    assert masked.num_images == 24 and masked.num_classes == source.num_classes == 3
    for i in range(12):
        image, label = source[i]
        for v in range(2):
            out_image, out_label = masked[2 * i + v]
            changed = np.abs(out_image.astype(int) - image).max(axis=-1) > 25
            assert out_label == label and changed.sum() > 100
    records = _lines(meta_dir(out) / "manifest.jsonl")
    assert [r["output"] for r in records[:3]] == ["train.rec#1", "train.rec#2", "train.rec#3"]


def test_rec_outputs_replay_exactly_from_the_manifest(tmp_path: Path) -> None:
    # Aligned crops are painted in OpenCV's BGR storage; PNG outputs (lossless) must hold
    # exactly what the RGB renderer draws from the manifest.
    _write_rec(tmp_path / "train.rec", 12)
    out = tmp_path / "masked" / "train.rec"
    options = RenderOptions(landmarks="aligned", seed=2, format=".png")
    render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
    source, masked = RecordSet(tmp_path / "train.rec"), RecordSet(out)
    records = _lines(meta_dir(out) / "manifest.jsonl")
    for i, record in enumerate(records):
        assert record["params"] is not None
        np.testing.assert_array_equal(masked[i][0], replay_record(source[i][0], record))


def test_unmasked_variant_keeps_the_clean_image_when_a_later_variant_is_masked(
    tmp_path: Path,
) -> None:
    # Variants are painted in place into the decoded image when they can be: an earlier,
    # unmasked variant re-encoded (PNG here) must not pick up a later variant's mask.
    _write_rec(tmp_path / "train.rec", 12)
    out = tmp_path / "masked" / "train.rec"
    options = RenderOptions(landmarks="aligned", variants=2, p=0.5, seed=1, format=".png")
    render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
    source, masked = RecordSet(tmp_path / "train.rec"), RecordSet(out)
    records = _lines(meta_dir(out) / "manifest.jsonl")
    drawn = [[records[2 * i + v]["params"] is not None for v in range(2)] for i in range(12)]
    assert [False, True] in drawn  # the case under test occurs with this seed
    for i, (first, second) in enumerate(drawn):
        image, _ = source[i]
        for v, was_masked in enumerate((first, second)):
            out_image, _ = masked[2 * i + v]
            assert np.array_equal(out_image, image) != was_masked, (i, v)


def test_default_blocks_are_large_for_packed_outputs_and_small_for_folders(
    tmp_path: Path,
) -> None:
    _write_rec(tmp_path / "train.rec", 3)
    options = RenderOptions(landmarks="aligned")
    for out, expected in ((tmp_path / "a" / "train.rec", 1024), (tmp_path / "b", 64)):
        render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
        run = json.loads((meta_dir(out) / "run.json").read_text())
        assert run["options"]["block_size"] == expected
    with pytest.raises(ValueError, match="block_size"):
        RenderOptions(block_size=-1)


def test_rec_shards_assemble_the_same_file(tmp_path: Path) -> None:
    _write_rec(tmp_path / "train.rec", 9)
    options = RenderOptions(landmarks="aligned", block_size=2, seed=3)
    one = tmp_path / "one" / "train.rec"
    render_dataset(tmp_path / "train.rec", one, options, workers=1, progress=False)
    two = tmp_path / "two" / "train.rec"
    first = render_dataset(tmp_path / "train.rec", two, options, shard=(0, 2), workers=1,
                           progress=False)  # fmt: skip
    assert first["assembled"] is False and not two.exists()
    second = render_dataset(tmp_path / "train.rec", two, options, shard=(1, 2), workers=1,
                            progress=False)  # fmt: skip
    assert second["assembled"] is True
    assert one.read_bytes() == two.read_bytes()
    assert one.with_suffix(".idx").read_bytes() == two.with_suffix(".idx").read_bytes()


def test_worker_state_holds_readers_and_memos_until_reset(tmp_path: Path) -> None:
    # workers=1 renders in this process: its state keeps the open reader, the backend and
    # the aligned layout between blocks; reset() empties it and changes no output.
    _write_rec(tmp_path / "train.rec", 6)
    options = RenderOptions(landmarks="aligned", block_size=2, seed=3)
    state = worker_state()
    state.reset()
    one = tmp_path / "one" / "train.rec"
    render_dataset(tmp_path / "train.rec", one, options, workers=1, progress=False)
    assert list(state.readers) == [str(tmp_path / "train.rec")]
    assert len(state.backends) == 1 and len(state.aligned) == 1 and len(state.landmarks) == 1
    assert state.last_backend[1] is next(iter(state.backends.values()))
    state.reset()
    assert state is worker_state() and state.last_backend == (None, None)
    assert not (state.readers or state.backends or state.aligned or state.landmarks)
    two = tmp_path / "two" / "train.rec"
    render_dataset(tmp_path / "train.rec", two, options, workers=1, progress=False)
    assert one.read_bytes() == two.read_bytes()
    assert _meta_files(one) == _meta_files(two)


def test_part_file_of_another_version_stops_assembly_with_advice(tmp_path: Path) -> None:
    # A run resumed by another maskgen version finds parts it cannot read: say so and
    # what to do, rather than assembling garbage.
    _write_rec(tmp_path / "train.rec", 4)
    options = RenderOptions(landmarks="aligned", block_size=2)
    out = tmp_path / "out" / "train.rec"
    render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
    part = meta_dir(out) / "parts" / "00000001.part"
    part.write_bytes(b"\x10\x00\x00\x00" + part.read_bytes()[20:])  # the stop-9 layout
    (meta_dir(out) / "assembled.json").unlink()
    with pytest.raises(ValueError, match="not a part file of this maskgen version; remove"):
        render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)


def test_rerun_skips_and_tolerates_truncated_journal_lines(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i, crop in enumerate(_aligned_faces(6)):
        write_image(src / f"{i}.png", crop)
    out = tmp_path / "out"
    options = RenderOptions(landmarks="aligned", block_size=2)
    render_dataset(src, out, options, workers=1, progress=False)
    before = _tree(out), _meta_files(out)
    meta = meta_dir(out)
    lines = (meta / "progress.log").read_text().splitlines(keepends=True)  # magic, 6 items
    (meta / "progress.log").write_text("".join(lines[:4]) + lines[4][:5])  # cut mid-line
    with (meta / "manifest.jsonl").open("a") as fh:
        fh.write('{"index": 9, "half a rec')
    (out / "4.png").unlink()
    summary = render_dataset(src, out, options, workers=1, progress=False)
    assert summary["skipped"] == 3 and summary["done"] == 3
    assert (_tree(out), _meta_files(out)) == before
    again = render_dataset(src, out, options, workers=1, progress=False)
    assert again["skipped"] == 6 and again["done"] == 0


def test_resume_with_other_options_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "a.png", _aligned_faces(1)[0])
    render_dataset(src, tmp_path / "out", RenderOptions(landmarks="aligned"), progress=False,
                   workers=1)  # fmt: skip
    with pytest.raises(ValueError, match="different settings"):
        render_dataset(src, tmp_path / "out", RenderOptions(landmarks="aligned", seed=9),
                       progress=False, workers=1)  # fmt: skip


@pytest.mark.parametrize("kind", ["folder", "rec"])
def test_killed_and_resumed_run_gives_the_same_bytes(tmp_path: Path, kind: str) -> None:
    n = 240
    if kind == "rec":
        _write_rec(tmp_path / "train.rec", n)
        src, name = tmp_path / "train.rec", "train.rec"
    else:
        src, name = tmp_path / "src", "masked"
        for i, crop in enumerate(_aligned_faces(n)):
            write_image(src / f"{i // 50}" / f"{i:04d}.jpg", crop)
    args = ["--landmarks", "aligned", "--block-size", "4", "--workers", "1", "--seed", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref = tmp_path / "ref" / name
    subprocess.run(render_cli(str(src), str(ref), *args), check=True, env=env, capture_output=True)
    out = tmp_path / "resumed" / name
    for cut in (40, 130):
        proc = subprocess.Popen(render_cli(str(src), str(out), *args), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        kill_when(proc, meta_dir(out) / "progress.log", cut)
    subprocess.run(render_cli(str(src), str(out), *args), check=True, env=env, capture_output=True)
    if kind == "rec":
        for suffix in (".rec", ".idx"):
            assert ref.with_suffix(suffix).read_bytes() == out.with_suffix(suffix).read_bytes()
    else:
        assert _tree(ref) == _tree(out)
    assert _meta_files(ref) == _meta_files(out)
    leftovers = [p for p in out.parent.rglob(".*.tmp")]
    assert leftovers == []
