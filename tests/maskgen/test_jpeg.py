"""The photo's JPEG compression read from its pixels and given to the mask (maskgen.jpeg)."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from maskgen.jpeg import (
    JpegGrid,
    compress,
    estimate_jpeg,
    grid_of_file,
    luma_table_of_file,
    noise_survival,
    scale_of_quality,
    tables,
)
from maskgen.render import MaskParams, MaskSpec, render


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])  # fmt: skip
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def _luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)


def _grid_jump(luma: np.ndarray, inside: np.ndarray) -> float:
    """How much more the luminance jumps across the 8×8 grid's boundaries than beside
    them, inside a region (0: no grid shows), both axes."""
    jumps = []
    for plane, region in ((luma, inside), (luma.T, inside.T)):
        d = np.abs(np.diff(plane, axis=1))
        both = region[:, 1:] & region[:, :-1]
        x = (np.arange(d.shape[1]) + 1) % 8
        across, beside = x == 0, (x == 1) | (x == 7)
        jumps.append(d[:, across][both[:, across]].mean() - d[:, beside][both[:, beside]].mean())
    return float(np.mean(jumps))


@pytest.mark.parametrize("quality", [25, 50, 75])
@pytest.mark.parametrize("offset", [(0, 0), (3, 5)])
def test_the_quality_and_grid_of_a_jpeg_are_read_from_its_pixels(astronaut, quality, offset):
    image, _ = astronaut
    dy, dx = offset
    region = _jpeg(image, quality)[100 + dy : 260 + dy, 150 + dx : 310 + dx]
    found = estimate_jpeg(region)
    assert found is not None
    assert abs(found.quality - quality) <= 2
    assert found.phase == ((-100 - dy) % 8, (-150 - dx) % 8)


def test_photos_that_show_no_jpeg_grid_get_none(astronaut):
    image, _ = astronaut
    assert estimate_jpeg(image[100:260, 150:310]) is None  # never compressed
    resized = cv2.resize(_jpeg(image, 40), (384, 384), interpolation=cv2.INTER_AREA)
    assert estimate_jpeg(resized[80:240, 110:270]) is None  # compressed, then resized
    flat = np.full((96, 96, 3), 128, np.uint8)
    assert estimate_jpeg(_jpeg(flat, 30)) is None  # nothing to tell it by


def test_compress_is_the_codec_on_the_photos_grid(astronaut):
    image, _ = astronaut
    whole = _jpeg(image, 50)
    # A region cut off the grid and compressed on its phase gives the codec's own pixels.
    region = image[37:165, 43:171]
    out = compress(region, scale_of_quality(50), ((-37) % 16, (-43) % 16))
    assert np.abs(out - whole[37:165, 43:171]).mean() < 0.6
    off_grid = compress(region, scale_of_quality(50))
    assert np.abs(off_grid - whole[37:165, 43:171]).mean() > 1.5


def test_noise_survival_falls_with_the_quality():
    low, high = noise_survival(scale_of_quality(30), 6.0), noise_survival(scale_of_quality(90), 6.0)
    assert 0 < low < high <= 1


_CLOTH = {"family": "cloth", "coverage": "high", "color": (60, 90, 160),
          "secondary_color": (230, 230, 230), "texture_scale": 0.5, "shading": 0.7,
          "edge_softness": 0.01, "texture_seed": 3}  # fmt: skip


@pytest.mark.parametrize("texture", ["none", "checks", "pleats"])
@pytest.mark.parametrize("quality", [30, 60])
def test_the_mask_gets_the_compression_a_photo_of_a_mask_would_have(astronaut, texture, quality):
    """The truth: the mask drawn on the clean photo, then the photo compressed."""
    image, lm = astronaut
    params = MaskParams(**_CLOTH, texture=texture)
    truth = _luma(_jpeg(render(image, lm, params).image, quality))
    photo = _jpeg(image, quality)
    sticker = render(photo, lm, params)
    matched = render(photo, lm, MaskParams(**{**params.to_dict(), "compression": 1.0}))
    inside = cv2.erode((matched.alpha > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    jump = _grid_jump(truth, inside)
    assert abs(_grid_jump(_luma(matched.image), inside) - jump) < 0.25 * jump + 0.15
    error = np.abs(_luma(matched.image) - truth)[inside].mean()
    assert error < 0.5 * np.abs(_luma(sticker.image) - truth)[inside].mean()


def test_compression_changes_only_what_the_mask_covers_and_replays(astronaut):
    image, lm = astronaut
    photo = _jpeg(image, 40)
    params = MaskParams(**_CLOTH, texture="checks", compression=1.1, noise=1.0)
    out = render(photo, lm, params)
    changed = np.any(out.image != photo, axis=-1)
    assert changed.any() and not (changed & (out.alpha == 0)).any()
    again = render(photo, lm, MaskParams.from_json(params.to_json()))
    assert np.array_equal(again.image, out.image)
    # Off, or a photo that shows no compression: as without the field.
    plain = MaskParams(**_CLOTH, texture="checks", noise=1.0)
    assert np.array_equal(render(image, lm, params).image, render(image, lm, plain).image)
    assert not np.array_equal(out.image, render(photo, lm, plain).image)


def test_default_draws_match_the_compression_and_recorded_draws_do_not():
    spec = MaskSpec()
    draws = [spec.sample(np.random.default_rng(i)) for i in range(50)]
    assert all(spec.compression[0] <= d.compression <= spec.compression[1] for d in draws)
    recorded = {k: v for k, v in draws[0].to_dict().items() if k not in ("compression", "creases")}
    assert MaskParams.from_dict(recorded).compression == 0.0


@pytest.mark.parametrize("per_sample", [True, False])
def test_the_batched_path_compresses_the_mask_as_the_cpu_renderer_does(astronaut, per_sample):
    torch = pytest.importorskip("torch")
    from maskgen.augment import draws_to_params
    from maskgen.augment.functional import (
        apply_look,
        batch_geometry,
        mask_batch,
        match_look_colours,
        measure_looks,
    )

    image, lm = astronaut
    photo = _jpeg(image, 25)
    draws = [MaskParams(**{**_CLOTH, "color": c}, noise=1.0, compression=1.0)
             for c in ((60, 90, 160), (235, 235, 230))]  # fmt: skip
    x = torch.from_numpy(np.stack([photo, photo])).permute(0, 3, 1, 2).float() / 255
    lms = np.stack([lm, lm])
    geometry = batch_geometry(lms, draws, *photo.shape[:2])
    params = draws_to_params(draws)
    looks = measure_looks(x, geometry, params)
    assert all(look is not None and look.jpeg is not None for look in looks)
    painted, alpha = mask_batch(x, geometry, match_look_colours(params, looks))
    out, _ = apply_look(painted, alpha, geometry, params, looks, per_sample=per_sample)
    plain = draws_to_params([MaskParams(**{**d.to_dict(), "compression": 0.0}) for d in draws])
    sticker, _ = apply_look(painted, alpha, geometry, plain, looks, per_sample=per_sample)
    for i, draw in enumerate(draws):
        ref = render(photo, lm, draw)
        inside = cv2.erode((ref.alpha > 0.99).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        batched = out[i].permute(1, 2, 0).numpy() * 255
        unmatched = sticker[i].permute(1, 2, 0).numpy() * 255
        cpu_plain = render(photo, lm, MaskParams(**{**draw.to_dict(), "compression": 0.0}))
        # The batched path's compression (a torch simulation of the codec) brings it as
        # close to the CPU renderer's as the plain paths are.
        gap = np.abs(ref.image - batched)[inside].mean()
        change = np.abs(ref.image.astype(np.float64) - cpu_plain.image)[inside].mean()
        assert change > 1.5, change
        assert gap < 1.5 and gap < 0.6 * np.abs(ref.image - unmatched)[inside].mean(), gap


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95])
def test_a_jpeg_files_own_table_gives_its_scale_exactly(astronaut, quality):
    image, _ = astronaut
    _, data = cv2.imencode(".jpg", image[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    table, orientation = luma_table_of_file(data.tobytes())
    assert np.array_equal(table, tables(scale_of_quality(quality))[0]) and orientation == 1
    grid = grid_of_file(data.tobytes(), decoded)
    assert grid == JpegGrid(scale_of_quality(quality), (0, 0))


def test_a_rotated_or_progressive_jpeg_and_other_files(astronaut):
    from PIL import Image

    image, _ = astronaut
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down: decoders turn it upright, and the grid moves
    buffer = io.BytesIO()
    Image.fromarray(image[:301, :333]).save(buffer, "JPEG", quality=40, exif=exif.tobytes())
    decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    grid = grid_of_file(buffer.getvalue(), decoded[..., ::-1])
    assert grid == JpegGrid(scale_of_quality(40), (293 % 8, 325 % 8))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=60, progressive=True)
    assert grid_of_file(buffer.getvalue(), image) == JpegGrid(scale_of_quality(60), (0, 0))
    _, png = cv2.imencode(".png", image)
    assert grid_of_file(png.tobytes(), image) is None
    _, lossless = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert grid_of_file(lossless.tobytes(), image) is None
    assert luma_table_of_file(b"\xff\xd8\xff\xdb\x00") is None  # truncated: no table


def test_maskgen_render_takes_the_compression_from_the_files_and_records_it(tmp_path, astronaut):
    from maskgen.dataset import RenderOptions, render_dataset
    from maskgen.dataset.paths import meta_dir
    from maskgen.dataset.replay import replay_record

    image, _ = astronaut
    src = tmp_path / "in"
    src.mkdir()
    for name, quality in (("a.jpg", 35), ("b.jpg", 80)):
        cv2.imwrite(str(src / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    cv2.imwrite(str(src / "c.png"), _jpeg(image, 35)[..., ::-1])  # a JPEG's pixels in a PNG
    out = tmp_path / "out"
    options = RenderOptions(landmarks="dlib", seed=1, format=".png")
    render_dataset(src, out, options, workers=1, progress=False)
    lines = (meta_dir(out) / "manifest.jsonl").read_text().splitlines()
    records = {r["input"].split("/")[-1]: r for r in map(json.loads, lines)}
    assert records["a.jpg"]["jpeg"] == {"scale": scale_of_quality(35), "phase": [0, 0]}
    assert records["b.jpg"]["jpeg"] == {"scale": scale_of_quality(80), "phase": [0, 0]}
    assert records["c.png"]["jpeg"] is None  # its file is no JPEG: nothing is matched
    for name in ("a.jpg", "b.jpg"):
        clean = cv2.imread(str(src / name))[..., ::-1]
        written = cv2.imread(str(out / (name[:-4] + ".png")))[..., ::-1]
        assert np.array_equal(replay_record(clean, records[name]), written)


@pytest.mark.parametrize(("quality", "expected"), [(95, "output"), (99, "grid")])
def test_a_rec_output_leaves_the_compression_to_its_encoder_when_it_compresses_enough(
    tmp_path, astronaut, quality, expected
):
    """Input crops at quality 95: an output at 95 compresses the masks like the faces by
    itself; one at 99 compresses less, so the renderer gives the masks the input's."""
    from maskgen.dataset import RenderOptions, render_dataset
    from maskgen.dataset.paths import meta_dir
    from maskgen.io import RecordWriter
    from maskgen.landmarks import ARCFACE_112, similarity_transform, to_five

    image, lm = astronaut
    crop = cv2.warpAffine(image, similarity_transform(to_five(lm), ARCFACE_112), (112, 112))
    with RecordWriter(tmp_path / "train.rec") as writer:
        for i in range(3):
            writer.write_image(i + 1, np.roll(crop, i, axis=1), label=0, quality=95)
        writer.write_header_record()
    out = tmp_path / "masked" / "train.rec"
    options = RenderOptions(landmarks="aligned", seed=3, quality=quality)
    render_dataset(tmp_path / "train.rec", out, options, workers=1, progress=False)
    records = [
        json.loads(line) for line in (meta_dir(out) / "manifest.jsonl").read_text().splitlines()
    ]
    for record in records:
        if expected == "output":
            assert record["jpeg"] == "output"
        else:
            assert record["jpeg"] == {"scale": scale_of_quality(95), "phase": [0, 0]}


def test_float_and_rgba_photos_get_the_same_compression(astronaut):
    image, lm = astronaut
    photo = _jpeg(image, 30)
    params = MaskParams(**_CLOTH, texture="checks", compression=1.0)
    grid = JpegGrid(scale_of_quality(30), (0, 0))
    plain = render(photo, lm, params, jpeg=grid).image.astype(np.float64)
    as_float = render(photo / 255.0, lm, params, jpeg=grid).image * 255.0
    rgba = render(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]), lm, params,
                  jpeg=grid).image  # fmt: skip
    sticker = render(photo, lm, MaskParams(**_CLOTH, texture="checks"))
    inside = sticker.alpha > 0.99
    changed = np.abs(plain - sticker.image)[inside].mean()
    assert changed > 2.0
    assert np.abs(as_float - plain)[inside].mean() < 0.1 * changed
    assert np.array_equal(rgba[..., :3], plain.astype(np.uint8)) and (rgba[..., 3] == 255).all()


def test_distill_eval_masks_a_jpeg_pack_with_its_files_compression(astronaut):
    pytest.importorskip("torch")
    from distill.eval.inputs import _build_entry, _Materialiser
    from maskgen.io import BinPack
    from maskgen.landmarks import ARCFACE_112, similarity_transform, to_five
    from maskgen.protocol import dataset_sha256, protocol_landmarks

    image, lm = astronaut
    crop = cv2.warpAffine(image, similarity_transform(to_five(lm), ARCFACE_112), (112, 112))
    images = []
    for i in range(4):
        _, data = cv2.imencode(".jpg", np.roll(crop, 3 * i, axis=1)[..., ::-1].copy(),
                               [cv2.IMWRITE_JPEG_QUALITY, 40])  # fmt: skip
        images.append(data.tobytes())
    pack = BinPack(images, [True, False])
    spec = MaskSpec(compression=(1.0, 1.0))
    entry = _build_entry("p", pack, ("m-m",), 5, spec, "auto", dataset_sha256(pack))
    make = _Materialiser(pack, entry, None)
    grid = JpegGrid(scale_of_quality(40), (0, 0))
    for i, draw in enumerate(entry.draws["m-m"]):
        clean = pack.decode(i)
        masked = make.masked_image(i, draw)
        assert np.array_equal(masked, render(clean, protocol_landmarks(clean.shape), draw,
                                             jpeg=grid).image)  # fmt: skip
        sticker = render(clean, protocol_landmarks(clean.shape), draw, jpeg=False).image
        assert not np.array_equal(masked, sticker)
