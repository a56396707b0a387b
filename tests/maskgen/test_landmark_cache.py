"""Landmark caches: ``maskgen landmarks`` fits once; renders and datasets read the cache."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from maskgen.cli import app
from maskgen.dataset.landmark_job import fit_landmarks, parts_dir
from maskgen.dataset.options import meta_dir
from maskgen.io import IRHeader, RecordWriter
from maskgen.landmarks import (
    ARCFACE_112,
    LandmarkCache,
    LandmarkCacheError,
    WithLandmarks,
    create_backend,
    similarity_transform,
    to_five,
)
from maskgen.landmarks.cache import STATUS
from maskgen.synthetic import SyntheticFaces

pytest.importorskip("dlib", reason="the caches here are fitted with dlib's predictor")
runner = CliRunner()


@pytest.fixture(scope="module")
def crops(astronaut) -> list[np.ndarray]:
    """The astronaut aligned to 112 (and turned by small rotations), synthetic aligned faces
    and a blank crop."""
    image, lm = astronaut
    out = []
    for angle in (0.0, -6.0, 6.0):
        M = similarity_transform(to_five(lm), ARCFACE_112)
        R = cv2.getRotationMatrix2D((56, 56), angle, 1.0)
        M = np.vstack([R, [0, 0, 1]]) @ np.vstack([M, [0, 0, 1]])
        out.append(cv2.warpAffine(image, M[:2], (112, 112), flags=cv2.INTER_LINEAR))
    faces = SyntheticFaces(3, 1, seed=4)
    out += [faces[i][0] for i in range(3)]
    out.append(np.full((112, 112, 3), 100, np.uint8))
    return out


def _folder(path: Path, crops: list[np.ndarray]) -> Path:
    path.mkdir(parents=True)
    for i, crop in enumerate(crops):
        cv2.imwrite(str(path / f"{i:02d}.png"), crop[:, :, ::-1])
    return path


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (meta_dir(out) / "manifest.jsonl").open("rb")]


def test_the_cli_fits_a_folder_once_and_the_cache_holds_what_the_backend_finds(
    tmp_path: Path, crops
) -> None:
    folder = _folder(tmp_path / "crops", crops)
    cache_dir = tmp_path / "crops.landmarks"
    result = runner.invoke(
        app, ["landmarks", str(folder), str(cache_dir), "--workers", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert f"cache:{cache_dir}" in result.output
    cache = LandmarkCache(cache_dir)
    assert cache.keys == [f"{i:02d}.png" for i in range(len(crops))]
    assert cache.backend == "aligned-fit" and not parts_dir(cache_dir).exists()
    fit = create_backend("aligned-fit")
    for key, crop in zip(cache.keys, crops, strict=True):
        (face,) = fit.detect(crop)
        entry = cache.get(key)
        assert entry.status == face.fit and entry.reason == face.fit_reason
        np.testing.assert_array_equal(entry.landmarks, face.landmarks)
    assert cache.get("00.png").status == "fitted"
    assert cache.get(f"{len(crops) - 1:02d}.png").status == "fallback"
    assert sum(cache.meta["counts"].values()) == len(crops)


def test_shards_fill_one_cache_and_a_lost_part_is_refitted(tmp_path: Path, crops) -> None:
    folder = _folder(tmp_path / "crops", crops)
    whole = fit_landmarks(folder, tmp_path / "whole", workers=1, block=2, progress=False)
    assert whole["complete"] and whole["blocks_total"] == 4
    out = tmp_path / "sharded"
    first = fit_landmarks(folder, out, workers=1, block=2, shard=(0, 2), progress=False)
    assert not first["complete"] and first["blocks_done"] == 2 and not out.exists()
    # A part lost (or torn by a crash) is fitted again by the next run of its shard.
    parts = sorted(parts_dir(out).glob("block_*.npz"))
    parts[0].write_bytes(parts[0].read_bytes()[:50])
    again = fit_landmarks(folder, out, workers=1, block=2, shard=(0, 2), progress=False)
    assert again["blocks_done"] == 2 and not again["complete"]
    last = fit_landmarks(folder, out, workers=1, block=2, shard=(1, 2), progress=False)
    assert last["complete"] and last["counts"] == whole["counts"]
    a, b = LandmarkCache(tmp_path / "whole"), LandmarkCache(out)
    assert a.keys == b.keys and a.reasons == b.reasons
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    np.testing.assert_array_equal(a.status, b.status)


def test_a_changed_input_listing_is_refused_while_parts_remain(tmp_path: Path, crops) -> None:
    folder = _folder(tmp_path / "crops", crops)
    out = tmp_path / "c.landmarks"
    fit_landmarks(folder, out, workers=1, block=2, shard=(0, 2), progress=False)
    cv2.imwrite(str(folder / "new.png"), crops[0][:, :, ::-1])
    result = runner.invoke(
        app, ["landmarks", str(folder), str(out), "--workers", "1", "--no-progress"]
    )
    assert result.exit_code == 2
    assert "started with another items, keys_sha256" in result.output
    assert "Traceback" not in result.output


def test_a_rec_rendered_from_the_cache_equals_one_fitted_on_the_fly(tmp_path: Path, crops):
    rec = tmp_path / "train.rec"
    with RecordWriter(rec) as writer:
        for i, crop in enumerate(crops):
            writer.write_image(i + 1, crop, label=2 * i // len(crops))
        writer.write_header_record()
    cache_dir = tmp_path / "train.landmarks"
    assert fit_landmarks(rec, cache_dir, workers=1, progress=False)["complete"]
    common = ["--workers", "1", "--no-progress", "--seed", "5"]
    fly, cached = tmp_path / "fly.rec", tmp_path / "cached.rec"
    for out, how in ((fly, "aligned-fit"), (cached, f"cache:{cache_dir}")):
        result = runner.invoke(app, ["render", str(rec), str(out), "--landmarks", how, *common])
        assert result.exit_code == 0, result.output
    assert fly.read_bytes() == cached.read_bytes()
    fly_faces = [r["faces"] for r in _manifest(fly)]
    cached_faces = [r["faces"] for r in _manifest(cached)]
    assert fly_faces == cached_faces
    assert {f[0]["fit"] for f in cached_faces} == {"fitted", "fallback"}


def test_faces_without_landmarks_are_marked_never_given_the_canonical_layout(
    tmp_path: Path, crops
) -> None:
    folder = _folder(tmp_path / "photos", [crops[0], crops[-1]])
    cache_dir = tmp_path / "photos.landmarks"
    # dlib's detector finds no face on the blank crop (nor on these small crops at all
    # without upsampling): those items are no_face, with the detector's reason.
    summary = fit_landmarks(folder, cache_dir, landmarks="dlib", workers=1, progress=False)
    cache = LandmarkCache(cache_dir)
    blank = cache.get("01.png")
    assert blank.status == "no_face" and blank.landmarks is None and "no face" in blank.reason
    assert np.isnan(cache.landmarks[1]).all()
    assert summary["counts"]["no_face"] >= 1 and "01.png" in cache.without_landmarks()
    # Rendering from the cache records the item as a failure, and so does an item the cache
    # does not hold.
    cv2.imwrite(str(folder / "02.png"), crops[1][:, :, ::-1])
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["render", str(folder), str(out), "--landmarks", f"cache:{cache_dir}", "--workers",
         "1", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    failures = {
        json.loads(line)["input"].split("/")[-1]: json.loads(line)
        for line in (meta_dir(out) / "failures.jsonl").read_text().splitlines()
    }
    assert "01.png" in failures and "02.png" in failures
    assert "not in the landmark cache" in json.dumps(failures["02.png"])
    # A dataset wrapper refuses an item without landmarks, naming it.
    pairs = WithLandmarks([(c, 0) for c in (crops[0], crops[-1])], cache)
    with pytest.raises(LandmarkCacheError, match=r"01\.png has no landmarks"):
        pairs[1]


def test_an_unreadable_cache_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(LandmarkCacheError, match="not a landmark cache"):
        create_backend(f"cache:{tmp_path / 'x'}")
    with pytest.raises(ValueError, match="needs a path"):
        create_backend("cache")


def test_with_landmarks_gives_a_dataset_the_cached_points(tmp_path: Path, crops) -> None:
    folder = _folder(tmp_path / "crops", crops[:3])
    cache_dir = tmp_path / "crops.landmarks"
    fit_landmarks(folder, cache_dir, workers=1, progress=False)
    data = WithLandmarks([(c, 7) for c in crops[:3]], cache_dir)
    image, label, lm = data[2]
    assert label == 7 and image is crops[2] and lm.shape == (68, 2)
    np.testing.assert_array_equal(lm, LandmarkCache(cache_dir).at(2).landmarks)
    with pytest.raises(LandmarkCacheError, match="3 items, the dataset has 2"):
        WithLandmarks([(c, 0) for c in crops[:2]], cache_dir)


# --- batched fits: the same files as item by item ------------------------------------------


@pytest.fixture(scope="module")
def batch_crops(crops) -> list[np.ndarray]:
    """Faces, crops that fall back (blank, noise) and, at index 4, a record that is no image."""
    faces = SyntheticFaces(6, 2, seed=13, kind="aligned")
    noise = np.random.default_rng(5).integers(0, 256, (112, 112, 3), np.uint8)
    return [*crops, *(faces[i][0] for i in range(12)), noise]


def _batch_rec(path: Path, crops: list[np.ndarray]) -> Path:
    with RecordWriter(path) as writer:
        for i, crop in enumerate(crops):
            if i == 4:
                writer.write(i + 1, IRHeader(0, 0.0, i + 1, 0), b"not an image")
            else:
                writer.write_image(i + 1, crop, label=3 * i // len(crops))
        writer.write_header_record()
    return path


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` and its siblings named ``root.*`` (outputs, manifests,
    part files), by relative path; ``skip``: names whose content holds timings."""
    found = {}
    for top in [root, *root.parent.glob(root.name + ".*")]:
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for p in paths:
            if p.is_file() and p.name not in skip:
                found[str(p.relative_to(root.parent))] = p.read_bytes()
    return found


def _one_by_one(monkeypatch) -> None:
    """Take ``detect_many`` from ``aligned-fit``: the jobs then detect item by item."""
    from maskgen.landmarks.backends.aligned_fit import AlignedFit

    monkeypatch.delattr(AlignedFit, "detect_many")


@pytest.mark.parametrize("kind", ["rec", "folder"])
def test_a_batched_render_writes_what_item_by_item_wrote(tmp_path, monkeypatch, batch_crops, kind):
    """``maskgen render --landmarks aligned-fit``: outputs, manifest, failures and part
    files byte for byte as with the fit item by item (an unreadable item among them)."""
    if kind == "rec":
        source = _batch_rec(tmp_path / "in.rec", batch_crops)
    else:
        source = _folder(tmp_path / "in", batch_crops)
        (source / "04.png").write_bytes(b"not an image")
    name = "out.rec" if kind == "rec" else "out"
    args = ["--landmarks", "aligned-fit", "--workers", "1", "--no-progress", "--seed", "7"]
    outs = {}
    for how in ("batched", "one_by_one"):
        if how == "one_by_one":
            _one_by_one(monkeypatch)
        out = tmp_path / how / name
        out.parent.mkdir()
        result = runner.invoke(app, ["render", str(source), str(out), *args])
        assert result.exit_code == 0, result.output
        outs[how] = _files(out, skip=("summary.json", "progress.log"))
    assert outs["batched"] == outs["one_by_one"] and len(outs["batched"]) >= 3
    records = _manifest(tmp_path / "batched" / name)
    fits = {r["faces"][0]["fit"] for r in records if r.get("faces")}
    assert fits == {"fitted", "fallback"}
    assert any(r.get("failure") for r in records) or kind == "folder"


@pytest.mark.parametrize("kind", ["rec", "folder"])
def test_a_batched_landmarks_job_writes_what_item_by_item_wrote(
    tmp_path, monkeypatch, batch_crops, kind
):
    """``maskgen landmarks``: the cache (and the part files of an unfinished shard) byte for
    byte as with the fit item by item; the unreadable item fails alone."""
    if kind == "rec":
        source = _batch_rec(tmp_path / "in.rec", batch_crops)
    else:
        source = _folder(tmp_path / "in", batch_crops)
        (source / "04.png").write_bytes(b"not an image")
    caches, parts = {}, {}
    for how in ("batched", "one_by_one"):
        if how == "one_by_one":
            _one_by_one(monkeypatch)
        out = tmp_path / how / "c.landmarks"
        out.parent.mkdir()
        result = runner.invoke(
            app, ["landmarks", str(source), str(out), "--workers", "1", "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        caches[how] = _files(out)
        shard = tmp_path / how / "s.landmarks"
        fit_landmarks(source, shard, workers=1, block=5, shard=(0, 2), progress=False)
        parts[how] = _files(parts_dir(shard))
    assert caches["batched"] == caches["one_by_one"] and caches["batched"]
    assert parts["batched"] == parts["one_by_one"] and len(parts["batched"]) == 3
    cache = LandmarkCache(tmp_path / "batched" / "c.landmarks")
    statuses = [cache.get(key).status for key in cache.keys]
    assert statuses[4] == "failed" and statuses.count("failed") == 1
    assert {"fitted", "fallback"} <= set(statuses)


def test_a_batch_that_raises_is_fitted_item_by_item(batch_crops) -> None:
    """An image the fit refuses (float pixels) makes the batch raise: each item is then
    fitted alone, the refused one fails with the reason, the others are as one by one."""
    from maskgen.dataset.landmark_job import _fit_batch, _fit_item
    from maskgen.dataset.options import RenderOptions
    from maskgen.dataset.sources import Item

    options = RenderOptions(landmarks="aligned-fit")
    images = [batch_crops[0], batch_crops[1].astype(np.float32), batch_crops[6], OSError("gone")]
    items = [Item(i, f"{i}.png", None) for i in range(len(images))]
    rows = _fit_batch(None, items, options, images)
    assert [r[1] for r in rows] == [
        STATUS.index(s) for s in ("fitted", "failed", "fallback", "failed")
    ]
    assert "uint8" in rows[1][2] and rows[3][2] == "gone"
    for i in (0, 2):
        alone = _fit_item(None, items[i], options, images[i])
        np.testing.assert_array_equal(rows[i][0], alone[0])
        assert rows[i][1:] == alone[1:]
