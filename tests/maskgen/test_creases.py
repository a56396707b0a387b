"""Cloth creases on the posed fabric: soft folds laid in surface coordinates whose slopes tilt
the normal the fabric shading lights (``MaskParams.creases``, :func:`maskgen.fabric.crease_lines`).

``data/creases_zero.json`` holds hashes of renders and painting-kernel calls with creases 0
made by the code of commit 450af55, before creases existed (:func:`_kernel_cases` rebuilds its
kernel calls): a draw without creases must still paint exactly as then.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgen import appearance as app
from maskgen import fabric
from maskgen.appearance import fill_polygon
from maskgen.paint import paint_mask
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import mask_outline
from maskgen.synthetic import draw_wild_face, sample_identity

FIXTURE = Path(__file__).parent / "data" / "creases_zero.json"


def _face(yaw: float = 0.0, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    ident = sample_identity(np.random.default_rng([seed, 1]))
    return draw_wild_face(ident, np.random.default_rng([seed, 2]), size=(320, 320), yaw=yaw,
                          pitch=0.0, roll=0.0, face_frac=0.5, postprocess=False)  # fmt: skip


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _box(outline, size: int = 320) -> tuple[int, int, int, int]:
    pts = outline.polygon
    return (int(pts[:, 0].min()) - 2, int(pts[:, 1].min()) - 2,
            min(int(pts[:, 0].max()) + 3, size), min(int(pts[:, 1].max()) + 3, size))  # fmt: skip


def _kernel_cases() -> list[tuple[float, str, np.ndarray]]:
    """The fixture's painting-kernel calls: a surgical mask's box on turned faces, fabric
    shading from the face's light, untextured and pleated (relief), creases 0."""
    out = []
    for yaw in (-30.0, 0.0, 30.0):
        image, lm = _face(yaw)
        outline = mask_outline(lm, "surgical", "high", geometry=3)
        x0, y0, x1, y1 = box = _box(outline)
        maps = fabric.surface_maps(outline.surface(), box)
        alpha = np.ones((y1 - y0, x1 - x0), np.float32)
        for texture in ("none", "pleats"):
            roi = image[y0:y1, x0:x1].copy()
            light = fabric.light_direction(roi, alpha, outline.frame.ax, 255.0)
            tile = None if texture == "none" else app.padded_tile(texture, 3, True)
            m = None if tile is None else fabric.surface_tile_map(outline.posed.scale, 40.0, 3.0)
            paint_mask(roi, alpha, colours=np.array([[150, 170, 200], [250, 250, 250]], np.float32),
                       tile=tile, tile_map=m, shading=0.7, surface_uv=maps[..., :2],
                       normals=maps[..., 2:], light=light, fabric=0.9,
                       relief=app.TEXTURE_RELIEF.get(texture, 0.0),
                       down=outline.posed.rotation[:, 1])  # fmt: skip
            out.append((yaw, texture, roi))
    return out


def test_without_creases_every_render_is_byte_identical_to_before_them():
    fixture = json.loads(FIXTURE.read_text())
    faces: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    changed = []
    for case in fixture["renders"]:
        yaw = case["yaw"]
        image, lm = faces.setdefault(yaw, _face(yaw))
        params = MaskParams.from_dict(case["params"])
        assert params.creases == 0.0 and params.fabric > 0
        if _sha(render(image, lm, params).image) != case["image_sha256"]:
            changed.append((yaw, params.family, params.texture))
    for (yaw, texture, roi), case in zip(_kernel_cases(), fixture["kernel"], strict=True):
        assert (yaw, texture) == (case["yaw"], case["texture"])
        if _sha(roi) != case["image_sha256"]:
            changed.append((yaw, "kernel", texture))
    assert not changed, changed


def _posed(yaw: float = 0.0, family: str = "surgical"):
    _, lm = _face(yaw)
    outline = mask_outline(lm, family, "high", geometry=3)
    box = _box(outline)
    maps = fabric.surface_maps(outline.surface(), box)
    cover = (fill_polygon(maps.shape[:2], outline.polygon, box[:2]) > 127).astype(np.float32)
    return outline, maps, cover


def _relief(outline, maps, cover, light, creases: float, seed: int = 3) -> np.ndarray:
    """The painting kernel's fabric shading of a flat grey mask: its factor on the colour."""
    grey = 0.5
    out = np.zeros((*maps.shape[:2], 3), np.float32)
    light = np.asarray(light, float) / np.linalg.norm(light)
    paint_mask(out, cover, colours=np.array([[grey] * 3, [0.0] * 3], np.float32), max_value=1.0,
               surface_uv=maps[..., :2], normals=maps[..., 2:], light=light, fabric=1.0,
               down=outline.posed.rotation[:, 1], creases=creases,
               crease_lines=fabric.crease_lines(seed, outline.surface()))  # fmt: skip
    return out[..., 0] / grey


def test_the_kernel_bends_the_normal_by_the_reference_crease_field():
    """paint_mask's creases equal ambient + Lambert at the normal bent by crease_slopes:
    n − ∂h/∂v·t_v − ∂h/∂u·t_u (t_v down the face, t_u = t_v × n), over the plain mean."""
    outline, maps, cover = _posed(25.0)
    light = np.array([0.5, -0.3, 0.81]) / np.linalg.norm([0.5, -0.3, 0.81])
    got = _relief(outline, maps, cover, light, 0.8, seed=4)
    n = maps[..., 2:].astype(np.float64)
    slope = fabric.crease_slopes(maps[..., :2], fabric.crease_lines(4, outline.surface()), 0.8)
    down = outline.posed.rotation[:, 1]
    t = down - (n * down).sum(-1, keepdims=True) * n
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    bent = n - slope[..., 1:] * t - slope[..., :1] * np.cross(t, n)
    d = (bent * light).sum(-1) / np.sqrt(1 + (slope**2).sum(-1))
    plain = fabric.AMBIENT + (1 - fabric.AMBIENT) * np.maximum((n * light).sum(-1), 0)
    expected = (fabric.AMBIENT + (1 - fabric.AMBIENT) * np.maximum(d, 0)) / plain[cover > 0].mean()
    inside = cover > 0
    assert np.abs(slope[inside]).max() > 0.2  # there are creases to check
    assert np.abs(got[inside] - expected[inside]).max() < 1e-4


@pytest.mark.parametrize("seed", [3, 8, 20])
def test_creases_are_relief_that_answers_the_light(seed):
    """On a solid mask the creases are bands (a fifth of the mask or so) of light and shade
    that swap when the light moves from above to below: folds of the surface, not a stain
    (which would darken the same pixels whatever the light)."""
    outline, maps, cover = _posed()
    core = cv2.erode(cover.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    above, below = (0.0, -0.6, 0.8), (0.0, 0.6, 0.8)
    smooth = _relief(outline, maps, cover, above, 0.0, seed)
    lit = _relief(outline, maps, cover, above, 1.0, seed) - smooth
    flipped = _relief(outline, maps, cover, below, 1.0, seed) - _relief(
        outline, maps, cover, below, 0.0, seed)  # fmt: skip
    assert np.array_equal(smooth, _relief(outline, maps, cover, above, 0.0, seed + 1))
    touched = (np.abs(lit[core]) > 0.005).mean()
    assert 0.05 < touched < 0.5, touched
    assert np.abs(lit[core]).max() > 0.1
    assert np.corrcoef(lit[core], flipped[core])[0, 1] < 0.0
    assert (lit - flipped)[core].std() > 0.03
    # Half the depth, about half the tilt (and the shading's first-order part with it).
    half = _relief(outline, maps, cover, above, 0.5, seed) - smooth
    assert 0.35 < np.abs(half[core]).mean() / np.abs(lit[core]).mean() < 0.65


def _solid(**fields) -> MaskParams:
    base = MaskParams(geometry=3, shading=0.6, fabric=1.0, color=(200, 200, 200), texture_seed=3)
    return replace(base, **fields)


def test_a_rendered_solid_mask_shows_its_creases_only_under_the_mask():
    image, lm = _face(20.0)
    smooth = render(image, lm, _solid())
    creased = render(image, lm, _solid(creases=1.0))
    assert np.array_equal(smooth.alpha, creased.alpha)
    diff = np.abs(creased.image.astype(int) - smooth.image.astype(int)).max(2)
    assert not diff[smooth.alpha == 0].any()
    inner = smooth.alpha > 0.99
    assert (diff[inner] > 2).mean() > 0.05 and diff[inner].max() > 15
    # Creases need the fabric's shading on a posed surface.
    for fields in ({"fabric": 0.0}, {"geometry": 2}):
        assert np.array_equal(render(image, lm, _solid(**fields)).image,
                              render(image, lm, _solid(creases=1.0, **fields)).image)  # fmt: skip


def test_creases_follow_the_surface():
    """The creases are laid on the fabric: as the head turns, where they shade moves in the
    image but stays within their supports in surface coordinates."""
    x_centres, noses, lines = [], [], []
    for yaw in (-25.0, 0.0, 25.0):
        image, lm = _face(yaw)
        effect = np.abs(render(image, lm, _solid(creases=1.0)).image.astype(float)
                        - render(image, lm, _solid()).image).mean(2)  # fmt: skip
        outline = mask_outline(lm, "surgical", "high", geometry=3)
        maps = fabric.surface_maps(outline.surface(), (0, 0, 320, 320))
        lines.append(fabric.crease_lines(3, outline.surface()))
        support = np.abs(fabric.crease_slopes(maps[..., :2], lines[-1])).sum(-1) > 0
        weight = effect / effect.sum()
        assert weight[support].sum() > 0.97, (yaw, weight[support].sum())
        assert support.mean() < 0.15
        x_centres.append((weight * np.arange(320)[None, :]).sum())
        noses.append(lm[30, 0])
    # Laid on the fabric of the same face: about the same lines whatever the pose.
    assert all(np.abs(a[:, :2] - lines[1][:, :2]).max() < 0.08 for a in lines)
    # ... and they turn with the face (its nose tip).
    moved, turned = x_centres[2] - x_centres[0], noses[2] - noses[0]
    assert moved * turned > 0 and abs(moved) > 8, (x_centres, noses)


def test_creases_are_laid_in_face_units():
    """The same face at four times the size: the same creases (surface coordinates, widths
    and lengths are in face units), on a 112 crop as on a large photo."""
    _, lm = _face()
    small = fabric.crease_lines(5, mask_outline(lm, "cloth", "high", geometry=3).surface())
    large = fabric.crease_lines(5, mask_outline(lm * 4, "cloth", "high", geometry=3).surface())
    assert np.abs(small - large).max() < 1e-6
    used = small[small[:, 6] != 0]
    assert 3 <= len(used) <= fabric.MAX_CREASES
    assert (used[:, 5] > 0.05).all() and (used[:, 5] < 0.2).all()  # half-widths
    assert (used[:, 4] > 0.1).all() and (used[:, 4] < 1.5).all()  # half-lengths
    assert (np.abs(used[:, 6]) <= fabric.CREASE_TILT).all()
    assert fabric.crease_lines(5, None).shape == (fabric.MAX_CREASES, fabric.CREASE_FIELDS)
    assert not fabric.crease_lines(5, None).any()


def test_each_texture_seed_lays_its_own_creases_reproducibly():
    _, lm = _face()
    surface = mask_outline(lm, "surgical", "high", geometry=3).surface()
    lines = [fabric.crease_lines(s, surface) for s in range(16)]
    assert all(np.array_equal(a, fabric.crease_lines(s, surface)) for s, a in enumerate(lines))
    distinct = {a.round(6).tobytes() for a in lines}
    assert len(distinct) == 16
    image, _ = _face()
    plain = {"noise": 0.0, "creases": 1.0}  # texture_seed also seeds the photo's grain
    first = render(image, lm, _solid(**plain)).image
    assert np.array_equal(first, render(image, lm, _solid(**plain)).image)
    assert not np.array_equal(first, render(image, lm, _solid(texture_seed=4, **plain)).image)
    assert np.array_equal(render(image, lm, _solid(noise=0.0)).image,
                          render(image, lm, _solid(noise=0.0, texture_seed=4)).image)  # fmt: skip


def test_drawn_creases_replay_from_json_and_old_records_have_none():
    image, lm = _face(15.0)
    spec = MaskSpec()
    draws = [spec.sample(np.random.default_rng(i)) for i in range(40)]
    assert all(spec.creases[0] <= d.creases <= spec.creases[1] for d in draws)
    draw = next(d for d in draws if d.geometry == 3 and d.fabric > 0 and d.creases > 0.5)
    replayed = MaskParams.from_json(draw.to_json())
    assert replayed.creases == draw.creases
    assert np.array_equal(render(image, lm, draw).image, render(image, lm, replayed).image)
    old = {k: v for k, v in draw.to_dict().items() if k != "creases"}
    assert MaskParams.from_dict(old).creases == 0.0
    assert np.array_equal(render(image, lm, MaskParams.from_dict(old)).image,
                          render(image, lm, replace(draw, creases=0.0)).image)  # fmt: skip
    assert MaskParams().creases == 0.0


def test_the_batched_augmentation_paints_the_same_creases():
    """RandomFaceMask lays each sample's creases with the CPU renderer's crease_lines: on the
    pixels the creases change, the batched masks match the CPU renders far better than the
    renders match their own crease-less versions."""
    torch = pytest.importorskip("torch")
    from maskgen.augment import RandomFaceMask

    faces = [_face(yaw) for yaw in (-35.0, 0.0, 30.0)]
    images = np.stack([f[0] for f in faces])
    lms = np.stack([f[1] for f in faces])
    draws = [MaskParams(family=family, texture=texture, texture_seed=seed, shading=0.6, fabric=1.0,
                        creases=1.0, color=(120, 160, 210), secondary_color=(250, 250, 250))
             for family, texture, seed in (("surgical", "pleats", 3), ("cloth", "checks", 9),
                                           ("n95", "none", 21))]  # fmt: skip
    aug = RandomFaceMask(p=1.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = aug(x, params=aug.params_from_mask_params(draws, landmarks=lms))
    out = out.permute(0, 2, 3, 1).numpy().astype(np.float64) * 255
    for i, d in enumerate(draws):
        ref = render(images[i], lms[i], d).image.astype(np.float64)
        smooth = render(images[i], lms[i], replace(d, creases=0.0)).image
        changed = np.abs(ref - smooth).max(2) > 4
        assert changed.mean() > 0.01, d.family
        effect = np.abs(ref - smooth)[changed].mean()
        assert np.abs(ref - out[i])[changed].mean() < 0.25 * effect, d.family
