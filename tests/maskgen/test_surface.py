"""Posed 3D mask surfaces (geometry version 3): pose, frontal view, lifting and silhouettes."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen import appearance as app
from maskgen.landmarks import aligned_landmarks, mirror_landmarks
from maskgen.render import MaskParams, render
from maskgen.shapes import GEOMETRY, FaceFrame, mask_outline
from maskgen.surface import posed_faces
from maskgen.synthetic import draw_wild_face, sample_identity

FAMILIES = [name for name, g in GEOMETRY.items() if not g.template]


def _face(yaw: float = 0.0, roll: float = 0.0, pitch: float = 0.0, seed: int = 5):
    ident = sample_identity(np.random.default_rng([seed, 1]))
    return draw_wild_face(ident, np.random.default_rng([seed, 2]), size=(320, 320), yaw=yaw,
                          pitch=pitch, roll=roll, face_frac=0.5, postprocess=False)  # fmt: skip


def _fill(polygon: np.ndarray, size: int = 320) -> np.ndarray:
    return app.fill_polygon((size, size), polygon, (0, 0)) > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance between point sets after the best similarity transform of a onto b,
    in units of b's inter-ocular distance."""
    ca, cb = a - a.mean(0), b - b.mean(0)
    za, zb = ca[:, 0] + 1j * ca[:, 1], cb[:, 0] + 1j * cb[:, 1]
    k = (np.conj(za) @ zb) / (np.conj(za) @ za)
    iod = np.linalg.norm(b[42:48].mean(0) - b[36:42].mean(0))
    return float(np.sqrt(np.mean(np.abs(k * za - zb) ** 2)) / iod)


def test_the_posed_face_reproduces_the_landmarks():
    _, lm = _face(yaw=35, pitch=-8, roll=12)
    face = posed_faces(lm[None])[0]
    assert np.abs(face.project(face.points) - lm).max() < 1e-3
    assert np.allclose(face.rotation @ face.rotation.T, np.eye(3), atol=1e-9)


@pytest.mark.parametrize("yaw", [-40.0, -25.0, 25.0, 40.0])
def test_the_frontal_landmarks_undo_the_pose(yaw):
    """The frontal view of a turned face is closer (up to a similarity) to the same face
    photographed from the front than the turned landmarks are."""
    _, frontal = _face()
    _, turned = _face(yaw=yaw, roll=10)
    seen = posed_faces(turned[None])[0].frontal_landmarks()
    before, after = _similarity_residual(turned, frontal), _similarity_residual(seen, frontal)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("family", FAMILIES)
def test_frontal_and_rolled_faces_keep_the_flat_construction(family):
    """Without yaw or pitch the posed surface places the mask where version 2 does."""
    for lm in (aligned_landmarks() * 2.5 + 20, _face()[1], _face(roll=25)[1]):
        a = _fill(mask_outline(lm, family, "high", geometry=2).polygon)
        b = _fill(mask_outline(lm, family, "high", geometry=3).polygon)
        assert _iou(a, b) > 0.97, family


def _across(lm: np.ndarray, points: np.ndarray) -> np.ndarray:
    return FaceFrame.from_landmarks(lm).to_face(points)[:, 0]


@pytest.mark.parametrize("yaw", [-45.0, -30.0, 30.0, 45.0])
@pytest.mark.parametrize("family", ["surgical", "cloth", "kn95", "n95", "round"])
def test_the_far_side_ends_at_the_visible_silhouette(family, yaw):
    """On a turned face the far side of the mask stops at the far jaw line (within 2 % of
    the face's width), while the near side still reaches the near jaw."""
    _, lm = _face(yaw=yaw)
    outline = mask_outline(lm, family, "high", geometry=3)
    u, jaw = _across(lm, outline.polygon), _across(lm, lm[0:17])
    width = jaw.max() - jaw.min()
    far_is_right = yaw > 0
    if far_is_right:
        assert u.max() <= jaw.max() + 0.02 * width
        assert u.min() <= jaw.min() + 0.02 * width
    else:
        assert u.min() >= jaw.min() - 0.02 * width
        assert u.max() >= jaw.max() - 0.02 * width


def test_a_turned_mask_wraps_towards_the_near_ear():
    """Seen turned, the fabric beyond the near jaw (the side of the face) shows; the flat
    construction cannot show it."""
    _, lm = _face(yaw=40)
    jaw = _across(lm, lm[0:17])
    flat = _across(lm, mask_outline(lm, "surgical", "high", geometry=2).polygon)
    posed = _across(lm, mask_outline(lm, "surgical", "high", geometry=3).polygon)
    assert posed.min() < flat.min() - 0.01 * (jaw.max() - jaw.min())


def test_seams_follow_the_surface():
    """A KN95's centre seam is straight on a frontal face and bends on a turned one."""

    def bend(lm: np.ndarray) -> float:
        seam = mask_outline(lm, "kn95", "high", geometry=3).seam
        chord = seam[-1] - seam[0]
        normal = np.array([-chord[1], chord[0]]) / np.linalg.norm(chord)
        return float(np.abs((seam - seam[0]) @ normal).max() / np.linalg.norm(chord))

    assert bend(_face()[1]) < 0.01
    assert bend(_face(yaw=35)[1]) > 0.03


def test_mirrored_faces_get_mirrored_masks():
    image, lm = _face(yaw=30)
    mirrored = mirror_landmarks(lm, image.shape[1])
    a = _fill(mask_outline(lm, "cloth", "high", geometry=3).polygon)
    b = _fill(mask_outline(mirrored, "cloth", "high", geometry=3).polygon)
    assert _iou(a, b[:, ::-1]) > 0.97


def test_the_surface_faces_the_viewer_and_is_foreshortened():
    """Mesh normals point towards the camera; on a turned face a step of surface arc covers
    fewer pixels on the far side than on the near side."""
    _, lm = _face(yaw=35)
    surface = mask_outline(lm, "surgical", "high", geometry=3).surface(columns=24, rows=8)
    assert surface is not None
    middle = surface.normals[:, 4]
    assert (middle[2:-2, 2] > 0).all()
    pixels = surface.vertices[:, 4]
    arc = surface.arc[:, 4, 0]
    steps = np.linalg.norm(np.diff(pixels, axis=0), axis=1) / np.diff(arc)
    near, far = steps[2:8].mean(), steps[-8:-2].mean()  # far side: image right for yaw > 0
    assert far < 0.8 * near, (near, far)
    assert mask_outline(lm, "surgical", "high", geometry=2).surface() is None


def test_new_draws_are_posed_and_old_records_replay_flat():
    image, lm = _face(yaw=35)
    assert MaskParams().geometry == 3
    old = render(image, lm, MaskParams(geometry=2)).alpha
    again = render(image, lm, MaskParams.from_dict(MaskParams(geometry=2).to_dict())).alpha
    assert np.array_equal(old, again)
    assert not np.array_equal(old, render(image, lm, MaskParams()).alpha)


@pytest.mark.parametrize("yaw", [-40.0, 30.0])
@pytest.mark.parametrize("family", ["surgical", "cloth", "gaiter", "kn95"])
def test_the_surface_facing_the_camera_covers_the_outline(family, yaw):
    """The posed mesh's triangles that face the camera (the folded ones lie behind the
    silhouette) cover the pixels the outline covers."""
    from maskgen.mesh import grid_triangles

    _, lm = _face(yaw=yaw)
    outline = mask_outline(lm, family, "high", geometry=3)
    mesh = outline.surface()
    vertices = mesh.vertices.reshape(-1, 2)
    tris = grid_triangles(mesh.vertices.shape[0], mesh.vertices.shape[1] - 1)
    a, b, c = (vertices[tris[:, k]].astype(np.float64) for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    coverage = np.zeros((320, 320), np.int32)
    for tri in tris[area * np.sign(area.sum()) > 0]:
        coverage += app.fill_polygon((320, 320), vertices[tri], (0, 0))
    assert _iou(coverage > 127, _fill(outline.polygon)) > 0.96
