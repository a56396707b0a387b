"""The photo's own look given to the mask: its noise, blur and colour (maskgen.photo)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskgen.photo import photo_look
from maskgen.render import LEGACY, MaskParams, MaskSpec, render
from maskgen.seeding import item_rng
from maskgen.synthetic import draw_wild_face, sample_identity


def _face(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A clean synthetic photo (no camera noise or blur added)."""
    rng = np.random.default_rng([seed, 5])
    return draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=0.0, pitch=0.0,
                          roll=0.0, face_frac=0.6, postprocess=False)  # fmt: skip


def _degrade(image: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    out = image.astype(np.float32)
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    if noise:
        out += np.random.default_rng(seed).normal(0, noise, out.shape[:2])[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _residual(image: np.ndarray) -> np.ndarray:
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return luma.astype(np.float64) - cv2.medianBlur(luma, 5)


def _forehead(lm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Skin between the brows and a little above them."""
    region = np.zeros(shape[:2], bool)
    x0, x1 = int(lm[19, 0]), int(lm[24, 0])
    y1 = int(min(lm[19, 1], lm[24, 1])) - 4
    region[max(0, y1 - 18) : y1, x0:x1] = True
    return region


def _grey(**extra) -> MaskParams:
    values = {"family": "surgical", "coverage": "high", "color": (150, 150, 150),
              "shading": 0.7, "edge_softness": 0.01, "texture_seed": 3}  # fmt: skip
    return MaskParams(**{**values, **extra})


def test_the_estimators_read_the_noise_and_blur_of_a_photo(astronaut) -> None:
    image, lm = astronaut
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)
    box = (x0, y0, x1, y1)
    clean = photo_look(image, box)
    assert clean.noise < 3.5
    noisy = photo_look(_degrade(image, 0, 8), box)
    assert noisy.noise == pytest.approx(8, rel=0.15)
    blurred = photo_look(_degrade(image, 2.0, 0), box)
    assert blurred.blur > clean.blur + 0.8
    assert blurred.noise < 1.0


def test_a_noisy_blurred_photo_gives_the_mask_its_noise() -> None:
    image, lm = _face()
    photo = _degrade(image, 1.2, 8.0)
    skin = _residual(photo)[_forehead(lm, photo.shape)].std()
    matched = render(photo, lm, _grey(noise=1.0, blur=1.0))
    inside = cv2.erode((matched.alpha > 0.99).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    ratio = _residual(matched.image)[inside].std() / skin
    assert 0.7 <= ratio <= 1.3, ratio
    sticker = render(photo, lm, _grey())
    assert _residual(sticker.image)[inside].std() / skin < 0.3
    # A clean photo gets a clean mask.
    clean = render(image, lm, _grey(noise=1.0, blur=1.0))
    assert _residual(clean.image)[inside].std() < 1.0


def test_the_mask_edge_is_no_sharper_than_the_photo() -> None:
    image, lm = _face(4)
    photo = _degrade(image, 2.0, 0.0)
    face = photo_look(photo, (int(lm[0, 0]), int(lm[19, 1]), int(lm[16, 0]), int(lm[8, 1])))
    sharp = render(photo, lm, _grey(shading=0.0))
    soft = render(photo, lm, _grey(shading=0.0, blur=1.0))

    def edge_blur(result) -> float:
        ys, xs = np.nonzero(result.alpha > 0.01)
        box = (xs.min() - 6, ys.min() - 6, xs.max() + 6, ys.max() + 6)
        return photo_look(result.image, box).blur

    assert edge_blur(soft) >= 0.7 * face.blur
    assert edge_blur(soft) > edge_blur(sharp) + 0.5


def test_a_grey_photo_gets_a_colourless_mask(astronaut) -> None:
    image, lm = astronaut
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    blue = MaskParams(color=(70, 140, 230), color_match=1.0)
    out = render(grey, lm, blue)
    inside = out.alpha > 0.99
    px = out.image[inside].astype(np.float64)
    saturation = ((px.max(1) - px.min(1)) / np.maximum(px.max(1), 1)).mean()
    assert saturation <= 0.03
    drawn = render(grey, lm, MaskParams(color=(70, 140, 230))).image[inside].astype(np.float64)
    assert ((drawn.max(1) - drawn.min(1)) / drawn.max(1)).mean() > 0.4


def test_a_warm_photo_gives_a_warm_white_mask(astronaut) -> None:
    image, lm = astronaut
    warm = np.clip(image * np.array([1.1, 1.0, 0.85]), 0, 255).astype(np.uint8)
    white = MaskParams(color=(235, 235, 235), color_match=1.0)
    out = render(warm, lm, white)
    px = out.image[out.alpha > 0.99].astype(np.float64).mean(0)
    assert px[0] / px[2] > 1.1
    neutral = render(warm, lm, MaskParams(color=(235, 235, 235)))
    px = neutral.image[neutral.alpha > 0.99].astype(np.float64).mean(0)
    assert abs(px[0] / px[2] - 1) < 0.01


def test_default_draws_carry_the_look_and_old_records_do_not() -> None:
    draw = MaskSpec().sample(item_rng(0, "a"))
    assert 0.8 <= draw.noise <= 1.2 and 0.6 <= draw.blur <= 1.0 and 0.7 <= draw.color_match <= 1
    again = MaskSpec().sample(item_rng(0, "a"))
    assert again == draw
    old = {k: v for k, v in draw.to_dict().items() if k not in ("noise", "blur", "color_match")}
    restored = MaskParams.from_dict(old)
    assert (restored.noise, restored.blur, restored.color_match) == (0.0, 0.0, 0.0)
    assert "noise" not in LEGACY  # a hand-made MaskParams is literal: the look is off
    with pytest.raises(ValueError, match="noise must be in"):
        MaskParams(noise=-1)


def test_the_noise_replays_exactly() -> None:
    image, lm = _face()
    photo = _degrade(image, 0.0, 6.0)
    a = render(photo, lm, _grey(noise=1.0, blur=1.0, color_match=1.0))
    b = render(photo, lm, _grey(noise=1.0, blur=1.0, color_match=1.0))
    np.testing.assert_array_equal(a.image, b.image)
    c = render(photo, lm, MaskParams(**{**_grey(noise=1.0).to_dict(), "texture_seed": 9}))
    assert not np.array_equal(a.image, c.image)


def test_maskgen_render_draws_the_look_unless_told_not_to(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from maskgen.cli import app
    from maskgen.dataset.options import meta_dir
    from maskgen.synthetic import SyntheticFaces

    src = tmp_path / "in"
    src.mkdir()
    faces = SyntheticFaces(2, 1, seed=1)
    for i in range(2):
        cv2.imwrite(str(src / f"{i}.png"), faces[i][0][:, :, ::-1])
    looks = {}
    for flag in ("--photo-look", "--no-photo-look"):
        out = tmp_path / flag
        args = ["render", str(src), str(out), "--landmarks", "aligned", "--workers", "1",
                "--no-progress", flag]  # fmt: skip
        assert CliRunner().invoke(app, args).exit_code == 0
        lines = (meta_dir(out) / "manifest.jsonl").read_text().splitlines()
        looks[flag] = [json.loads(x)["faces"][0]["params"]["noise"] for x in lines]
    assert all(v >= 0.8 for v in looks["--photo-look"])
    assert looks["--no-photo-look"] == [0.0, 0.0]
