"""The mask surface (maskgen.mesh) and the versioned outline construction it spans."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen import appearance as app
from maskgen.landmarks import aligned_landmarks
from maskgen.mesh import corner_indices, mask_mesh, mask_meshes
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.seeding import item_rng
from maskgen.shapes import (
    COVERAGES,
    GEOMETRY,
    GEOMETRY_VERSION,
    FaceFrame,
    FamilyGeometry,
    mask_outline,
    mask_outlines,
    register_family,
)
from maskgen.synthetic import draw_wild_face, sample_identity


@pytest.fixture(scope="module", autouse=True)
def registered_family():
    """A family registered at test time: the mesh must follow the live registry."""
    register_family("test_cup", FamilyGeometry(outset=0.04, chin_drop=0.1, smooth=True))
    yield "test_cup"
    GEOMETRY.pop("test_cup")


def _short_turned_face(seed: int, yaw: float) -> np.ndarray:
    """Landmarks of a synthetic in-the-wild face whose chin sits close under the lip."""
    rng = np.random.default_rng(seed)
    return draw_wild_face(sample_identity(rng), rng, yaw=yaw)[1]


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    return {
        "aligned": aligned_landmarks(),
        "yaw-40": _short_turned_face(0, -40.0),
        "yaw+20": _short_turned_face(2, 20.0),
        "yaw+30": _short_turned_face(5, 30.0),
    }


def _shoelace(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of every point to the closed polygon's nearest segment."""
    a = polygon.astype(np.float64)
    b = np.roll(a, -1, axis=0)
    ab = b - a
    ap = points[:, None, :].astype(np.float64) - a[None]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    nearest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def _cases() -> list[tuple[str, str]]:
    """Every family of the live registry (the test's own registered one included) × coverage."""
    families = [*(f for f in GEOMETRY if f != "test_cup"), "test_cup"]
    return [(f, c) for f in families for c in COVERAGES]


@pytest.mark.parametrize("face", ["aligned", "yaw-40", "yaw+20", "yaw+30"])
@pytest.mark.parametrize(("family", "coverage"), _cases())
def test_the_mesh_boundary_is_the_outline(faces, face, family, coverage):
    outline = mask_outline(faces[face], family, coverage)
    mesh = mask_mesh(outline)
    polygon = outline.polygon
    # Every polygon vertex lies on the boundary, in the polygon's cyclic order from the left
    # corner; every boundary point lies on the polygon.
    left, _ = corner_indices(outline)
    rotated = np.roll(polygon, -left, axis=0)
    boundary = mesh.outline
    cursor = 0
    for vertex in rotated:
        hits = np.flatnonzero(np.all(boundary[cursor:] == vertex, axis=1))
        assert len(hits), f"outline vertex {vertex} missing from the mesh boundary"
        cursor += int(hits[0])
    assert _distance_to_polygon(boundary, polygon).max() < 1e-3
    # The triangles tile the outline: their signed areas add up to its area (Green), and the
    # folded part (triangles wound against the outline) is a sliver.
    areas = mesh.triangle_areas()
    area = _shoelace(polygon)
    assert areas.sum() == pytest.approx(area, rel=1e-6, abs=1e-3)
    folded = -areas[np.sign(areas) == -np.sign(area)].sum() * np.sign(area)
    assert folded <= 0.05 * abs(area), f"{folded / abs(area):.1%} of the mesh is folded"
    # Surface coordinates: u from the left to the right corner, v = 0 on the top edge and 1
    # on the bottom edge.
    assert mesh.uv.min() >= 0 and mesh.uv.max() <= 1
    assert mesh.uv[mesh.boundary[0], 0] == 0.0
    top_row = mesh.boundary[: np.flatnonzero(mesh.boundary == 1)[0] + 1]
    assert np.all(np.diff(mesh.uv[top_row, 0]) > 0)
    assert np.all(mesh.uv[top_row[1:-1], 1] == 0.0)
    bottom_row = mesh.boundary[len(top_row) :]
    assert np.all(mesh.uv[bottom_row, 1] == 1.0)


def test_meshes_are_almost_fold_free_over_a_batch(faces):
    """Over every family, coverage and face, folds of the flat ruled grid stay below 0.1 % of
    the fabric. (The flat construction: a posed outline's own surface is
    ``Outline.surface()``, whose folds are the fabric behind the silhouette: test_surface.)"""
    folded = total = 0.0
    for lm in faces.values():
        draws = _cases()
        outlines = mask_outlines(
            np.stack([lm] * len(draws)), [f for f, _ in draws], [c for _, c in draws],
            *([np.ones(len(draws))] + [np.zeros(len(draws))] * 2), [False] * len(draws),
            [False] * len(draws), geometry=[2] * len(draws),
        )  # fmt: skip
        for mesh in mask_meshes(outlines):
            a = mesh.triangle_areas()
            s = np.sign(a.sum())
            folded += -a[np.sign(a) == -s].sum() * s
            total += abs(a.sum())
    assert folded / total < 1e-3


def test_rasterised_triangles_cover_the_outline_pixels():
    """Drawn triangle by triangle (anti-aliased coverages summed), the mesh covers the pixels
    the outline covers."""
    lm = aligned_landmarks() * 2  # a 224 crop: edge pixels weigh less
    for family in ("surgical", "round", "kn95", "gaiter"):
        outline = mask_outline(lm, family, "high")
        mesh = mask_mesh(outline, rows=6)
        reference = app.fill_polygon((224, 224), outline.polygon, (0, 0)) > 127
        coverage = np.zeros((224, 224), np.int32)
        for tri in mesh.triangles:
            coverage += app.fill_polygon((224, 224), mesh.vertices[tri], (0, 0))
        union = coverage > 127
        iou = (union & reference).sum() / (union | reference).sum()
        assert iou >= 0.98, (family, iou)


def test_rows_must_be_positive():
    with pytest.raises(ValueError, match="rows"):
        mask_mesh(mask_outline(aligned_landmarks()), rows=0)


def test_a_recorded_draw_without_a_version_keeps_the_old_construction():
    data = MaskParams(family="kn95", coverage="chin").to_dict()
    assert data["geometry"] == GEOMETRY_VERSION
    data.pop("geometry")
    assert MaskParams.from_dict(data).geometry == 1
    drawn = MaskSpec().sample(item_rng(0, "x"))
    assert drawn.geometry == GEOMETRY_VERSION
    assert MaskParams.from_json(drawn.to_json()) == drawn
    with pytest.raises(ValueError, match="geometry version"):
        MaskParams(geometry=99)


@pytest.mark.parametrize("family", ["kn95", "round", "n95"])
def test_low_masks_on_short_faces_keep_their_corners_apart(faces, family):
    """Version 1 let a chin mask's side corners fall onto the chin of a short, turned face (a
    bow-tie outline with its cheeks outside its corners); version 2 keeps them apart."""
    lm = faces["yaw-40"]
    frame = FaceFrame.from_landmarks(lm)

    def corners_and_cheeks(version: int) -> np.ndarray:
        outline = mask_outline(lm, family, "chin", geometry=version)
        k = outline.top_count // 4  # top-edge vertices sit every quarter of the top edge
        return frame.to_face(outline.polygon[[0, k, 3 * k, 4 * k]])[:, 0]

    old, new = corners_and_cheeks(1), corners_and_cheeks(2)
    assert new[3] - new[0] >= 0.15  # face units between the corners
    assert new[0] <= new[1] + 1e-6 and new[2] <= new[3] + 1e-6  # cheeks between the corners
    assert old[3] - old[0] < new[3] - new[0]


def test_the_renderer_draws_either_version(faces):
    image = np.full((480, 640, 3), 128, np.uint8)
    lm = faces["yaw-40"]
    a = render(image, lm, MaskParams(family="kn95", coverage="chin", geometry=1)).alpha
    b = render(image, lm, MaskParams(family="kn95", coverage="chin", geometry=2)).alpha
    assert a.any() and b.any() and not np.array_equal(a, b)
