"""The posed fabric's appearance: surface-following textures, Lambert shading from the face's
light, contact shadows; replay and sampling of their parameters."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen import fabric
from maskgen.paint import paint_mask
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import mask_outline
from maskgen.synthetic import draw_wild_face, sample_identity


def _face(yaw: float = 0.0, seed: int = 5):
    ident = sample_identity(np.random.default_rng([seed, 1]))
    return draw_wild_face(ident, np.random.default_rng([seed, 2]), size=(320, 320), yaw=yaw,
                          pitch=0.0, roll=0.0, face_frac=0.5, postprocess=False)  # fmt: skip


def _maps(lm: np.ndarray, family: str = "surgical") -> tuple[np.ndarray, tuple[int, ...]]:
    outline = mask_outline(lm, family, "high", geometry=3)
    pts = outline.polygon
    box = (int(pts[:, 0].min()) - 2, int(pts[:, 1].min()) - 2,
           int(pts[:, 0].max()) + 3, int(pts[:, 1].max()) + 3)  # fmt: skip
    return fabric.surface_maps(outline.surface(), box), box


def test_textures_are_foreshortened_on_the_far_side():
    """On a face turned 35° (far side: image right) one pixel spans more texture on the far
    cheek than on the near one; on a frontal face both sides match."""

    def spans(yaw: float) -> tuple[float, float]:
        _, lm = _face(yaw)
        maps, (x0, y0, _, _) = _maps(lm)
        m = fabric.surface_tile_map(40.0, 20.0, 0.0)
        du = np.abs(np.diff(m[0] * maps[..., 0] + m[1] * maps[..., 1] + m[2], axis=1))
        row = (lm[30, 1] + lm[57, 1]) / 2 - y0  # between nose tip and lower lip
        r = int(row)
        mid = int(lm[30, 0] - x0)
        left = du[r, max(mid - 60, 0) : mid - 30].mean()
        right = du[r, mid + 30 : mid + 60].mean()
        return left, right

    left, right = spans(0.0)
    assert abs(left - right) < 0.15 * max(left, right)
    near, far = spans(35.0)
    assert far > 1.3 * near, (near, far)


def test_the_surface_faces_the_camera_in_the_middle_and_turns_at_the_sides():
    _, lm = _face()
    maps, (x0, y0, _, _) = _maps(lm)
    y = int((lm[33, 1] + lm[51, 1]) / 2 - y0)
    nx = maps[y, :, 2]
    centre = int(lm[30, 0] - x0)
    # The middle faces the camera (tilted down a little: the fabric runs from nose to chin).
    assert maps[y, centre, 4] > 0.8 and abs(maps[y, centre, 2]) < 0.1
    assert nx[5] < -0.3 and nx[-6] > 0.3  # the sides turn away, left and right


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_the_light_direction_comes_from_the_brighter_side(side):
    """A face lit from one side (a luminance ramp over the box) gives a light leaning that
    way, and Lambert shading then darkens the fabric on the other side."""
    h, w = 80, 100
    ramp = 120 + side * 60 * np.linspace(-1, 1, w)[None, :]
    roi = np.repeat(np.repeat(ramp, h, 0)[..., None], 3, 2).astype(np.uint8)
    alpha = np.ones((h, w), np.float32)
    light = fabric.light_direction(roi, alpha, np.array([1.0, 0.0]), 255.0)
    assert np.sign(light[0]) == side and light[2] > 0
    _, lm = _face()
    maps, _ = _maps(lm)
    cover = np.ones(maps.shape[:2], np.float32)
    # The painting kernel's fabric shading on a flat grey mask: its factor on the colour.
    grey = 0.4
    painted = np.zeros((*maps.shape[:2], 3), np.float32)
    paint_mask(painted, cover, colours=np.array([[grey] * 3, [0.0] * 3], np.float32),
               max_value=1.0, surface_uv=np.ascontiguousarray(maps[..., :2]),
               normals=np.ascontiguousarray(maps[..., 2:]), light=light, fabric=1.0)  # fmt: skip
    relief = painted[..., 0] / grey
    half = relief.shape[1] // 2
    lit, shadowed = (
        (relief[:, half:], relief[:, :half]) if side > 0 else (relief[:, :half], relief[:, half:])
    )
    assert lit.mean() > shadowed.mean() + 0.05
    assert abs(float(relief.mean()) - 1.0) < 0.05  # the face's own light sets the brightness


def test_fabric_shading_darkens_the_mask_towards_its_silhouette():
    image, lm = _face(yaw=35)
    params = MaskParams(geometry=3, shading=0.0, color=(200, 200, 200))
    flat = render(image, lm, params)
    shaded = render(image, lm, MaskParams(**{**params.to_dict(), "fabric": 1.0}))
    inside = (flat.alpha > 0.99) & (shaded.alpha > 0.99)
    luma = shaded.image.astype(float).mean(2)
    assert np.ptp(flat.image.astype(float).mean(2)[inside]) < 2  # a flat colour
    assert np.ptp(luma[inside]) > 40


def test_the_contact_shadow_darkens_the_skin_just_outside_the_mask():
    image, lm = _face()
    base = MaskParams(geometry=3)
    plain = render(image, lm, base)
    shadowed = render(image, lm, MaskParams(**{**base.to_dict(), "contact_shadow": 1.0}))
    band = fabric.contact_shadow((plain.alpha > 0.5).astype(np.uint8) * 255, 60.0) > 0.3
    band &= plain.alpha < 0.01
    darker = plain.image.astype(float)[band].mean() - shadowed.image.astype(float)[band].mean()
    assert darker > 5
    far = plain.alpha == 0
    far[band] = False
    far &= ~(fabric.contact_shadow((plain.alpha > 0.01).astype(np.uint8) * 255, 60.0) > 0)
    assert np.array_equal(plain.image[far], shadowed.image[far])


def test_old_records_replay_without_the_fabric_and_new_draws_have_it():
    old = {k: v for k, v in MaskParams(geometry=2).to_dict().items()
           if k not in ("fabric", "contact_shadow", "creases")}  # fmt: skip
    replayed = MaskParams.from_dict(old)
    assert replayed.fabric == 0.0 and replayed.contact_shadow == 0.0 and replayed.creases == 0.0
    spec = MaskSpec()
    draws = [spec.sample(np.random.default_rng(i)) for i in range(50)]
    assert all(spec.fabric[0] <= d.fabric <= spec.fabric[1] for d in draws)
    assert all(spec.contact_shadow[0] <= d.contact_shadow <= spec.contact_shadow[1] for d in draws)
    assert all(spec.creases[0] <= d.creases <= spec.creases[1] for d in draws)
    with pytest.raises(ValueError, match="fabric"):
        MaskParams(fabric=1.5)


def test_the_batched_augmentation_paints_the_same_fabric():
    """Surface textures, fabric shading and the contact shadow: RandomFaceMask on a batch of
    turned faces matches the CPU renderer inside the mask and in the shadow band."""
    torch = pytest.importorskip("torch")
    from maskgen.augment import RandomFaceMask

    faces = [_face(yaw) for yaw in (-35.0, 0.0, 30.0)]
    images = np.stack([f[0] for f in faces])
    lms = np.stack([f[1] for f in faces])
    draws = [MaskParams(family=family, texture=texture, shading=0.6, fabric=1.0,
                        contact_shadow=1.0, color=(120, 160, 210), secondary_color=(250, 250, 250))
             for family, texture in (("surgical", "pleats"), ("cloth", "checks"),
                                     ("n95", "none"))]  # fmt: skip
    aug = RandomFaceMask(p=1.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = aug(x, params=aug.params_from_mask_params(draws, landmarks=lms))
    out = (out.permute(0, 2, 3, 1).numpy() * 255).astype(np.float64)
    for i, d in enumerate(draws):
        ref = render(images[i], lms[i], d)
        inner = ref.alpha > 0.99
        assert np.abs(ref.image[inner] - out[i][inner]).mean() < 3.0, d.family
        band = fabric.contact_shadow((ref.alpha > 0.5).astype(np.uint8) * 255, 50.0) > 0.2
        band &= ref.alpha < 0.01
        darkened = images[i].astype(float)[band].mean() - ref.image[band].mean()
        assert darkened > 3  # there is a shadow to compare
        assert abs(out[i][band].mean() - ref.image[band].mean()) < 0.25 * darkened, d.family


def _lit_face(direction: float) -> tuple[np.ndarray, np.ndarray]:
    """A frontal face lit from above (+1) or below (−1): a vertical luminance ramp."""
    image, lm = _face()
    ramp = 1.0 + 0.35 * direction * np.linspace(1, -1, image.shape[0])[:, None, None]
    return np.clip(image * ramp, 0, 255).astype(np.uint8), lm


def _fold_profile(texture: str, direction: float) -> np.ndarray:
    """Row profile of what the fabric shading does inside the mask, its smooth trend removed."""
    image, lm = _lit_face(direction)
    base = MaskParams(texture=texture, texture_scale=0.6, shading=0.0, color=(200, 200, 200))
    flat = render(image, lm, base)
    shaded = render(image, lm, MaskParams(**{**base.to_dict(), "fabric": 1.0}))
    inner = flat.alpha > 0.99
    rows = np.flatnonzero(inner.sum(1) > 20)
    ratio = shaded.image.astype(float).mean(2) / np.maximum(flat.image.astype(float).mean(2), 1)
    profile = np.array([ratio[r][inner[r]].mean() for r in rows])
    trend = np.polyval(np.polyfit(rows, profile, 3), rows)
    return profile - trend


def test_pleats_are_relief_that_answers_the_light():
    """Pleats are folds of the surface: their shading changes with the light's direction
    (lit from above, the faces of the folds turned up are brighter; from below, those turned
    down), well beyond what the smooth fabric under a texture without relief does."""
    pleats = _fold_profile("pleats", 1.0) - _fold_profile("pleats", -1.0)
    grain = _fold_profile("grain", 1.0) - _fold_profile("grain", -1.0)
    assert pleats.std() > 3 * grain.std(), (pleats.std(), grain.std())
    assert np.abs(_fold_profile("pleats", 1.0)).max() > 0.05
