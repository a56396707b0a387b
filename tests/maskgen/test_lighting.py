"""Light, not features: the mask takes the face's low-frequency light, not its mouth,
nostrils and beard (lighting model 2), in both rendering paths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from maskgen.augment.draws import draws_to_params
from maskgen.augment.functional import batch_geometry, mask_batch
from maskgen.render import MaskParams, render
from maskgen.synthetic import draw_wild_face, sample_identity


def _luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)


def _band_pass(luma: np.ndarray, face_width: float) -> np.ndarray:
    """Luminance between 2 % and 12 % of the face width (features, not light)."""
    return cv2.GaussianBlur(luma, (0, 0), 0.02 * face_width) - cv2.GaussianBlur(
        luma, (0, 0), 0.12 * face_width
    )


def _grey_mask(lighting: int, shading: float = 1.0) -> MaskParams:
    return MaskParams(family="surgical", coverage="high", color=(150, 150, 150),
                      shading=shading, lighting=lighting, edge_softness=0.01)  # fmt: skip


def imprint(image: np.ndarray, landmarks: np.ndarray, lighting: int) -> tuple[float, float]:
    """How much of the covered face shows through a solid grey mask.

    Returns the correlation of the band-pass luminance of the masked and the original image
    inside the mask (edges left out), and the same for the mask's shading field (masked ÷
    unshaded luminance) once its best-fitting plane, i.e. the light, is taken away.
    """
    fw = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    shaded = render(image, landmarks, _grey_mask(lighting))
    flat = render(image, landmarks, _grey_mask(lighting, shading=0.0))
    inside = cv2.distanceTransform((shaded.alpha > 0.99).astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(inside > 0.03 * fw)
    face_bp = _band_pass(_luma(image), fw)[ys, xs]
    plain = np.corrcoef(_band_pass(_luma(shaded.image), fw)[ys, xs], face_bp)[0, 1]
    field = (_luma(shaded.image) / np.maximum(_luma(flat.image), 1))[ys, xs]
    design = np.stack([np.ones_like(xs), xs, ys], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, field, rcond=None)
    residual = field - design @ coef
    detrended = np.corrcoef(residual, face_bp)[0, 1] if residual.std() > 1e-9 else 0.0
    return float(plain), float(detrended)


def test_the_astronauts_features_no_longer_show_through(astronaut) -> None:
    image, lm = astronaut
    old_plain, old_features = imprint(image, lm, lighting=1)
    new_plain, new_features = imprint(image, lm, lighting=2)
    assert old_features > 0.2  # model 1 paints her mouth and nostrils into the mask
    assert abs(new_features) < 0.05
    assert new_plain < old_plain - 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_faces_features_do_not_show_through(seed: int) -> None:
    rng = np.random.default_rng([seed, 9])
    image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), face_frac=0.55)
    assert abs(imprint(image, lm, lighting=2)[1]) < 0.05


def _side_lit(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic face lit from the image's right: luminance ×0.55 at the left edge, ×1.2
    at the right edge."""
    rng = np.random.default_rng([seed, 4])
    image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=0.0,
                               pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
    ramp = np.linspace(0.55, 1.2, image.shape[1])[None, :, None]
    return np.clip(image * ramp, 0, 255).astype(np.uint8), lm


@pytest.mark.parametrize("lighting", [1, 2])
def test_the_mask_darkens_on_the_shadowed_side(lighting: int) -> None:
    image, lm = _side_lit()
    result = render(image, lm, _grey_mask(lighting))
    cx = float(lm[30, 0])
    covered = result.alpha > 0.99
    left = covered & (np.arange(image.shape[1])[None, :] < cx - 20)
    right = covered & (np.arange(image.shape[1])[None, :] > cx + 20)
    luma = _luma(result.image)
    assert luma[left].mean() < 0.8 * luma[right].mean()


def test_the_batched_path_lights_the_mask_as_the_renderer_does() -> None:
    image, lm = _side_lit()
    draws = [_grey_mask(2), _grey_mask(1), _grey_mask(2, shading=0.5)]
    images = np.stack([image] * 3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    geometry = batch_geometry(np.stack([lm] * 3), draws, 320, 320)
    out, _ = mask_batch(x, geometry, draws_to_params(draws))
    for i, draw in enumerate(draws):
        cpu = render(image, lm, draw)
        inside = cpu.alpha > 0.99
        batched = (out[i].permute(1, 2, 0).numpy() * 255)[inside]
        diff = np.abs(batched - cpu.image[inside].astype(np.float64))
        assert diff.mean() < 1.0 and np.quantile(diff, 0.99) < 4.0, (i, diff.mean())


def test_a_recorded_draw_without_a_lighting_model_keeps_model_1() -> None:
    data = MaskParams(shading=0.8).to_dict()
    assert data["lighting"] == 2
    data.pop("lighting")
    assert MaskParams.from_dict(data).lighting == 1
    with pytest.raises(ValueError, match="unknown lighting model"):
        MaskParams(lighting=7)
