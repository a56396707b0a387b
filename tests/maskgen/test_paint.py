"""The fused painting kernel against a plain NumPy/OpenCV restatement of the same maths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskgen import appearance as app
from maskgen import paint


def reference_lighting(
    roi: np.ndarray, alpha: np.ndarray, strength: float, model: int = 2
) -> np.ndarray:
    """Model 1: cell means of luminance (every other pixel) relative to the alpha-weighted
    mean. Model 2: the cell means of the pixels at least FEATURE_TRIM × their cell's mean,
    a weighted least-squares plane through them (ridge on the slopes), evaluated on a grid of
    at most PLANE_GRID per side, relative to the trimmed alpha-weighted mean."""
    h, w = alpha.shape
    rows, cols = paint.lighting_grid(h, w)
    luma = roi[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    cell_luma, cell_alpha = np.zeros((rows, cols)), np.zeros((rows, cols))
    for i in range(rows):
        y0, y1 = i * h // rows, max((i + 1) * h // rows, i * h // rows + 1)
        for j in range(cols):
            x0, x1 = j * w // cols, max((j + 1) * w // cols, j * w // cols + 1)
            cell = luma[y0:y1:2, x0:x1:2]
            cell_luma[i, j] = cell.mean()
            cell_alpha[i, j] = alpha[y0:y1:2, x0:x1:2].mean()
            if model == 2:
                kept = cell[cell >= paint.FEATURE_TRIM * cell.mean()]
                cell_luma[i, j] = kept.mean() if kept.size else cell.mean()
    mean = (cell_luma * cell_alpha).sum() / cell_alpha.sum()
    if model == 1:
        return np.clip(cell_luma / mean, *paint.LIGHT_RANGE) ** strength
    yc, xc = np.meshgrid((2 * np.arange(rows) + 1) / rows - 1, (2 * np.arange(cols) + 1) / cols - 1,
                         indexing="ij")  # fmt: skip
    design = np.stack([np.ones_like(xc), xc, yc], -1).reshape(-1, 3)
    wt = cell_alpha.ravel()
    normal = design.T @ (design * wt[:, None])
    normal[1, 1] += 1e-3 * normal[0, 0]
    normal[2, 2] += 1e-3 * normal[0, 0]
    coef = np.linalg.solve(normal, design.T @ (wt * cell_luma.ravel()))
    out_r, out_c = min(h, paint.PLANE_GRID), min(w, paint.PLANE_GRID)
    oy, ox = np.meshgrid((2 * np.arange(out_r) + 1) / out_r - 1,
                         (2 * np.arange(out_c) + 1) / out_c - 1, indexing="ij")  # fmt: skip
    plane = coef[0] + coef[1] * ox + coef[2] * oy
    return np.clip(plane / mean, *paint.LIGHT_RANGE) ** strength


def reference_paint(
    roi: np.ndarray,
    alpha: np.ndarray,
    colours: np.ndarray,
    opacity: float,
    tile: np.ndarray,
    placement: tuple[float, ...],
    light: np.ndarray,
    overlays: np.ndarray,
    overlay_colours: np.ndarray,
    max_value: float,
) -> np.ndarray:
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a, b, c, d, e, f = placement
    u, v = a * xs + b * ys + c, d * xs + e * ys + f
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    tu, tv = (u - iu)[..., None], (v - iv)[..., None]
    core = tile[: app.TILE, : app.TILE].astype(np.float64)  # the tile without its padding

    def texel(du: int, dv: int) -> np.ndarray:
        return core[(iv + dv) % app.TILE, (iu + du) % app.TILE]

    upper = texel(0, 0) + tu * (texel(1, 0) - texel(0, 0))
    lower = texel(0, 1) + tu * (texel(1, 1) - texel(0, 1))
    sampled = upper + tv * (lower - upper)
    shade = sampled[..., -1]
    mix = sampled[..., 0] if tile.shape[2] == 2 else np.zeros_like(shade)  # one-tone tile
    shade = shade * cv2.resize(light.astype(np.float64), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = shade[..., None] * (colours[0] + mix[..., None] * (colours[1] - colours[0]))
    for cover, tone in zip(overlays, overlay_colours, strict=True):
        t = cover[..., None] / 255.0
        colour = colour + t * (tone - colour)
    colour = np.clip(colour, 0, max_value)
    base = roi.astype(np.float64)
    return base + (alpha * opacity)[..., None] * (colour - base)


def _view(frame: np.ndarray, layout: str) -> np.ndarray:
    """The box of ``frame`` as an RGB view: of RGBA pixels (the kernel paints a copy), of
    packed RGB, or of packed BGR reversed (both painted in place)."""
    box = frame[17:72, 9:101]
    return {"rgba": box[..., :3], "rgb": box, "bgr": box[..., ::-1]}[layout]


@pytest.mark.parametrize(
    ("dtype", "layout"),
    [(np.uint8, "rgba"), (np.uint16, "rgba"), (np.float32, "rgba"), (np.uint8, "rgb"),
     (np.uint8, "bgr"), (np.float32, "bgr")],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["stripes", "grain"])
@pytest.mark.parametrize("model", paint.LIGHTING_MODELS)
def test_paint_matches_the_reference(dtype: type, layout: str, kind: str, model: int) -> None:
    rng = np.random.default_rng(3)
    max_value = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    channels = 4 if layout == "rgba" else 3
    frame = rng.uniform(0, max_value, (90, 120, channels)).astype(dtype)
    roi = _view(frame, layout)
    h, w = roi.shape[:2]
    alpha = np.clip(rng.uniform(-0.3, 1.3, (h, w)), 0, 1).astype(np.float32)
    colours = (rng.uniform(0, 1, (2, 3)) * max_value).astype(np.float32)
    tile = app.padded_tile(kind, 5, shade_only=kind == "grain")
    placement = (1.7, -0.4, 13.2, 0.4, 1.7, 60.9)
    light = reference_lighting(roi, alpha, 0.7, model)
    overlays = np.zeros((2, h, w), np.uint8)
    cv2.line(overlays[0], (3, 5), (80, 50), 255, 3, cv2.LINE_AA)
    cv2.circle(overlays[1], (40, 30), 12, 200, -1, cv2.LINE_AA)
    overlay_colours = (rng.uniform(0, 1, (2, 3)) * max_value).astype(np.float32)
    expected = reference_paint(roi, alpha, colours, 0.8, tile, placement, light, overlays,
                               overlay_colours, max_value)  # fmt: skip
    outside = frame.copy()
    paint.paint_mask(roi, alpha, colours=colours, opacity=0.8, tile=tile, tile_map=placement,
                     shading=0.7, overlays=overlays, overlay_colours=overlay_colours,
                     max_value=max_value, lighting=model)  # fmt: skip
    got = roi.astype(np.float64)
    if dtype == np.float32:
        assert np.abs(got - expected).max() < 1e-4
    else:  # rounded to nearest (the kernel rounds float32 sums, hence a rare off-by-one)
        assert np.abs(got - np.rint(expected)).max() <= 1
        assert (got == np.rint(expected)).mean() > 0.99
    untouched = np.ones(frame.shape, bool)
    untouched[17:72, 9:101, :3] = False
    assert np.array_equal(frame[untouched], outside[untouched])  # alpha channel, outside box
    zero = alpha == 0
    assert np.array_equal(roi[zero], _view(outside, layout)[zero])


def test_flat_colour_is_exact_and_unlit_untextured_paint_is_a_plain_blend() -> None:
    roi = np.full((20, 30, 3), 100, np.uint8)
    alpha = np.zeros((20, 30), np.float32)
    alpha[:, 10:] = 1.0
    alpha[:, 5:10] = 0.5
    paint.paint_mask(roi, alpha, colours=np.array([[200, 0, 51], [0, 0, 0]], np.float32))
    assert roi[0, 0].tolist() == [100, 100, 100]
    assert roi[0, 7].tolist() == [150, 50, 76]  # 75.5 rounds up
    assert roi[0, 20].tolist() == [200, 0, 51]


@pytest.mark.parametrize("model", paint.LIGHTING_MODELS)
def test_lighting_ratio_matches_the_reference(model: int) -> None:
    rng = np.random.default_rng(1)
    roi = rng.integers(0, 256, (53, 87, 3), dtype=np.uint8)
    roi[:, :40] //= 3  # a shadowed side
    alpha = rng.uniform(0, 1, (53, 87)).astype(np.float32)
    got = paint.lighting_ratio(roi, alpha, 0.7, model)
    expected = reference_lighting(roi, alpha, 0.7, model)
    grid = (6, 6) if model == 1 else (24, 24)
    assert paint.lighting_grid(53, 87) == (6, 6) and got.shape == grid
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[:, 0].mean() < got[:, -1].mean()
    # BGR pixels seen through a reversed view weigh their channels as the RGB ones
    bgr_view = np.ascontiguousarray(roi[..., ::-1])[..., ::-1]
    np.testing.assert_array_equal(paint.lighting_ratio(bgr_view, alpha, 0.7, model), got)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        paint.paint_mask(
            np.zeros((4, 5, 3), np.uint8),
            np.zeros((4, 4), np.float32),
            colours=np.zeros((2, 3), np.float32),
        )
