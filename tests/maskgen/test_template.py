"""Image templates: pictures of masks warped onto each face's outline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from maskgen.cli import app
from maskgen.dataset import RenderOptions, render_dataset
from maskgen.dataset.options import meta_dir
from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.shapes import GEOMETRY, FamilyGeometry, mask_outline, register_family
from maskgen.synthetic import SyntheticFaces
from maskgen.template import (
    COLUMNS,
    TemplateError,
    check_sheet,
    face_grid,
    load_template,
    warp_template,
)

runner = CliRunner()


def _write_template(folder: Path, rgba: np.ndarray, anchors: dict | None = None) -> Path:
    """A template JSON + PNG in ``folder``; anchors default to the picture's side middles."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "mask.png"), rgba[..., [2, 1, 0, 3]])
    h, w = rgba.shape[:2]
    anchors = anchors or {"left": [2, h / 2], "right": [w - 3, h / 2]}
    meta = {"format": "maskgen-mask-template", "version": 1, "image": "mask.png",
            "anchors": anchors}  # fmt: skip
    path = folder / "mask.json"
    path.write_text(json.dumps(meta))
    return path


def _gradient_template(folder: Path) -> Path:
    """A lens-shaped mask whose red and green channels encode the picture's x and y."""
    h, w = 200, 320
    yy, xx = np.mgrid[:h, :w]
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = np.round(xx / (w - 1) * 255)
    rgba[..., 1] = np.round(yy / (h - 1) * 255)
    lens = ((xx - w / 2) / (w / 2 - 2)) ** 2 + ((yy - h / 2) / (h / 2 - 2)) ** 2 <= 1
    rgba[..., 3] = np.where(lens, 255, 0)
    return _write_template(folder, rgba)


@pytest.mark.parametrize("name", ["floral_cloth", "pleated_print"])
def test_shipped_templates_load_and_cover_the_outline(name: str) -> None:
    template = load_template(name)
    assert template.grid.shape[0] == COLUMNS and template.rgba.flags.writeable is False
    assert check_sheet(template).shape == (*template.rgba.shape[:2], 3)
    face = np.full((224, 224, 3), 120, np.uint8)
    lm = aligned_landmarks(224)
    alpha = render(face, lm, MaskParams(family=f"template:{name}")).alpha
    outline = mask_outline(lm, f"template:{name}", "high")
    polygon = [np.round(outline.polygon).astype(np.int32)]
    drawn = cv2.fillPoly(np.zeros((224, 224), np.uint8), polygon, 1)
    iou = np.minimum(alpha > 0.5, drawn > 0).sum() / np.maximum(alpha > 0.5, drawn > 0).sum()
    assert iou >= 0.9


def test_template_cells_land_on_the_matching_cells_of_the_face(tmp_path: Path) -> None:
    """Every grid node of the face's mask shows the template pixel of the same node."""
    template = load_template(_gradient_template(tmp_path / "g"))
    lm = aligned_landmarks(224)
    for version in (2, 3):  # flat in the image plane, and on the posed surface
        outline = mask_outline(lm, "surgical", "high", geometry=version)
        colour, cover = warp_template(template, outline, (300, 300), (0, 0))
        nodes = face_grid(outline, template.grid.shape[1] - 1)[1:-1, 1:-1].reshape(-1, 2)
        expected = template.grid[1:-1, 1:-1].reshape(-1, 2)
        h, w = template.rgba.shape[:2]
        for (x, y), (tx, ty) in zip(nodes, expected, strict=True):
            xi, yi = round(float(x)), round(float(y))
            assert cover[yi, xi] > 0.99
            # Rounding to a face pixel moves up to ~1.5 template pixels, the 8-bit colour ~1.3.
            assert abs(colour[yi, xi, 0] / 255 * (w - 1) - tx) <= 4
            assert abs(colour[yi, xi, 1] / 255 * (h - 1) - ty) <= 4


def test_templates_follow_the_draws_coverage_and_shading() -> None:
    face = np.full((224, 224, 3), 160, np.uint8)
    face[:, 112:] = 60  # a dark right half: shading darkens the mask there
    lm = aligned_landmarks(224)
    high = render(face, lm, MaskParams(family="template:pleated_print", coverage="high"))
    low = render(face, lm, MaskParams(family="template:pleated_print", coverage="low"))
    assert high.alpha.sum() > 1.3 * low.alpha.sum()
    flat = render(face, lm, MaskParams(family="template:pleated_print", shading=0.0)).image
    lit = render(face, lm, MaskParams(family="template:pleated_print", shading=1.0)).image
    rows = slice(150, 190)
    assert np.allclose(flat[rows, 60:100].mean(), lit[rows, 60:100].mean(), rtol=0.35)
    assert lit[rows, 130:170].mean() < 0.8 * flat[rows, 130:170].mean()
    again = render(face, lm, MaskParams(family="template:pleated_print", coverage="high"))
    np.testing.assert_array_equal(again.image, high.image)


def test_a_template_file_renders_across_worker_processes(tmp_path: Path) -> None:
    """``template:<path>`` names register themselves in every process that meets them."""
    ref = _gradient_template(tmp_path / "t")
    family = f"template:{ref}"
    assert family in GEOMETRY and family in list(GEOMETRY)  # registered by the lookup
    GEOMETRY.pop(family)  # the workers are fresh processes anyway
    src = tmp_path / "in"
    src.mkdir()
    faces = SyntheticFaces(4, 1, seed=3)
    for i in range(4):
        cv2.imwrite(str(src / f"{i}.png"), faces[i][0][:, :, ::-1])
    out = tmp_path / "out"
    options = RenderOptions(spec=MaskSpec(families={family: 1.0}), landmarks="aligned")
    summary = render_dataset(src, out, options, workers=2, progress=False)
    assert summary["failed"] == 0 and summary["outputs"] == 4
    records = [json.loads(x) for x in (meta_dir(out) / "manifest.jsonl").read_text().splitlines()]
    assert {r["faces"][0]["params"]["family"] for r in records} == {family}


def test_register_family_takes_a_template_and_checks_it(tmp_path: Path) -> None:
    ref = _gradient_template(tmp_path / "t")
    register_family("test_gradient", FamilyGeometry(smooth=True, template=str(ref)))
    try:
        face = np.zeros((112, 112, 3), np.uint8)
        image = render(face, aligned_landmarks(), MaskParams(family="test_gradient")).image
        assert image[90, 40:72, 0].std() > 5  # the red gradient runs across the mask
    finally:
        GEOMETRY.pop("test_gradient")
    with pytest.raises(TemplateError, match="no such template"):
        register_family("test_missing", FamilyGeometry(template=str(tmp_path / "nope.json")))
    assert "test_missing" not in GEOMETRY


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("not json", "unreadable template"),
        ({"format": "other"}, "not a maskgen-mask-template file"),
        ({"format": "maskgen-mask-template", "version": 1, "image": "gone.png",
          "anchors": {"left": [0, 0], "right": [9, 0]}}, "cannot read its image"),
        ({"format": "maskgen-mask-template", "version": 1, "image": "mask.png",
          "anchors": {"left": [0, 0]}}, "missing 'right'"),
        ({"format": "maskgen-mask-template", "version": 1, "image": "mask.png",
          "anchors": {"left": "x", "right": [9, 0]}}, r"anchors\.left must be \[x, y\]"),
        ({"format": "maskgen-mask-template", "version": 1, "image": "rgb.png",
          "anchors": {"left": [0, 0], "right": [9, 0]}}, "must be 8-bit RGBA"),
    ],
)  # fmt: skip
def test_broken_templates_are_one_line_naming_the_file(tmp_path: Path, broken, message) -> None:
    ref = _gradient_template(tmp_path / "t")
    cv2.imwrite(str(ref.parent / "rgb.png"), np.zeros((8, 8, 3), np.uint8))
    bad = ref.parent / "bad.json"
    bad.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(TemplateError, match=message) as info:
        load_template(bad)
    assert str(bad) in str(info.value) or "rgb.png" in str(info.value)
    assert f"template:{bad}" not in GEOMETRY
    result = runner.invoke(app, ["template", "check", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "error:" in result.output


def test_template_check_draws_the_authoring_picture(tmp_path: Path) -> None:
    ref = _gradient_template(tmp_path / "t")
    out = tmp_path / "check.png"
    result = runner.invoke(app, ["template", "check", str(ref), "--out", str(out)])
    assert result.exit_code == 0, result.output
    sheet = cv2.imread(str(out))
    assert sheet.shape[0] == 200 and sheet.shape[1] > 320  # the template, then the faces
    # the top edge is drawn green, the bottom edge red (BGR on disk)
    assert ((sheet[..., 1] > 150) & (sheet[..., 0] < 80) & (sheet[..., 2] < 80)).any()
    assert ((sheet[..., 2] > 180) & (sheet[..., 1] < 60)).any()


def test_the_batched_augmentation_draws_templates_as_the_renderer_does() -> None:
    import torch

    from maskgen.augment import RandomFaceMask

    faces = SyntheticFaces(2, 1, seed=5, size=160)
    images = np.stack([faces[i][0] for i in range(2)])
    lms = np.stack([faces[i][2] for i in range(2)])
    draws = [MaskParams(family="template:floral_cloth", shading=0.6, straps=True),
             MaskParams(family="surgical", color=(20, 40, 200))]  # fmt: skip
    aug = RandomFaceMask(p=1.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = aug(x, params=aug.params_from_mask_params(draws, lms))
    for k, draw in enumerate(draws):
        ref = render(images[k], lms[k], draw)
        got = (out[k].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(got - ref.image).mean() < 1.0
        iou = (
            np.minimum(ref.alpha, aug.last_alpha[k, 0].numpy()).sum()
            / np.maximum(ref.alpha, aug.last_alpha[k, 0].numpy()).sum()
        )
        assert iou > 0.95
