"""Image templates: a picture of a real mask (RGBA) warped onto the mask's surface.

A template is a JSON file beside its image::

    {"format": "maskgen-mask-template", "version": 1,
     "image": "my_mask.png",
     "anchors": {"left": [12, 118], "right": [500, 118]}}

``image`` is an RGBA picture of the mask seen from the front (alpha 0 around it), relative
to the JSON. ``anchors`` are the pixels of its left and right corners (where the ear loops
start). The mask's contour (alpha > 127) is split at the corners into a top edge (over the
nose) and a bottom edge (under the chin), and both are parametrised like the face's mask
(:func:`maskgen.mesh.chain_grid`): template cell (i, j) lands on the face's cell (i, j), so
the picture follows each face's outline, coverage and pose piecewise-affinely.

A template is used as a family named ``template:<ref>`` (``ref``: the JSON's path, or the
name of a template shipped under ``templates/``: ``floral_cloth``, ``pleated_print``), e.g.
``maskgen render in out --families template:my_mask.json``, or registered under a name of
one's own with ``register_family(name, FamilyGeometry(template=ref))``. The draw's colour,
texture, seam and valve do not apply; its shading, edge softness, opacity and ear loops do.
``maskgen template check TEMPLATE`` draws the anchors, edges and grid for authoring.

Example:
    >>> t = load_template("floral_cloth")
    >>> t.rgba.shape[2], t.grid.shape
    (4, (24, 9, 2))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from maskgen.mesh import DEFAULT_ROWS, chain_grid, grid_triangles, outline_grid
from maskgen.shapes import Outline

FORMAT = "maskgen-mask-template"
VERSION = 1
#: Grid columns shared by a template and the face it is warped onto.
COLUMNS = 24


class TemplateError(ValueError):
    """A template that cannot be used (one line naming the file and the problem)."""


@dataclass(frozen=True)
class MaskTemplate:
    """A loaded template.

    Attributes:
        source: where it was read from.
        rgba: (H, W, 4) uint8, read-only.
        left, right: the corner anchors (pixels).
        top, bottom: the contour's top and bottom edges, left → right (pixels).
        grid: (:data:`COLUMNS`, rows + 1, 2) grid between them (pixels).
    """

    source: str
    rgba: np.ndarray
    left: tuple[float, float]
    right: tuple[float, float]
    top: np.ndarray
    bottom: np.ndarray
    grid: np.ndarray


def _shipped(name: str) -> Path | None:
    path = resources.files("maskgen.templates").joinpath(f"template_{name}.json")
    return Path(str(path)) if path.is_file() else None


def _resolve(ref: str | os.PathLike[str]) -> Path:
    text = str(ref)
    shipped = None if text.endswith(".json") else _shipped(text)
    path = shipped or Path(text)
    if not path.is_file():
        raise TemplateError(f"{text}: no such template (a .json file or a shipped name)")
    return path


def load_template(ref: str | os.PathLike[str]) -> MaskTemplate:
    """Read a template (cached per path): a template JSON path or a shipped name.

    Raises:
        TemplateError: the file is missing, malformed, or its picture has no usable mask.
    """
    return _load(str(_resolve(ref).resolve()))


def _field(data: dict, key: str, where: Path) -> object:
    if key not in data:
        raise TemplateError(f"{where}: missing {key!r}")
    return data[key]


def _point(value: object, what: str, where: Path) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"{where}: anchors.{what} must be [x, y], got {value!r}") from exc
    return x, y


@cache
def _load(path_text: str) -> MaskTemplate:
    path = Path(path_text)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{path}: unreadable template ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TemplateError(f"{path}: not a {FORMAT} file")
    if data.get("version") != VERSION:
        raise TemplateError(
            f"{path}: version {data.get('version')!r}, this maskgen reads {VERSION}"
        )
    image_path = path.parent / str(_field(data, "image", path))
    rgba = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    if rgba is None:
        raise TemplateError(f"{path}: cannot read its image {image_path}")
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise TemplateError(f"{image_path}: a template image must be 8-bit RGBA")
    rgba = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    rgba.setflags(write=False)
    anchors = _field(data, "anchors", path)
    if not isinstance(anchors, dict):
        raise TemplateError(f"{path}: anchors must be a mapping with left and right")
    left = _point(_field(anchors, "left", path), "left", path)
    right = _point(_field(anchors, "right", path), "right", path)
    top, bottom = template_edges(rgba, left, right, where=str(image_path))
    grid = chain_grid(top, bottom, COLUMNS, DEFAULT_ROWS)
    return MaskTemplate(str(path), rgba, left, right, top, bottom, grid)


def template_edges(
    rgba: np.ndarray, left: tuple[float, float], right: tuple[float, float], where: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """The top and bottom edges (left → right, float64 pixels) of the largest opaque region of
    a template picture, split at the contour points nearest the two corner anchors; the top
    edge is the one that lies higher."""
    opaque = (rgba[..., 3] > 127).astype(np.uint8)
    contours, _ = cv2.findContours(opaque, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise TemplateError(f"{where}: the alpha channel holds no mask (nothing above 127)")
    contour = max(contours, key=cv2.contourArea)[:, 0].astype(np.float64)
    if cv2.contourArea(contour.astype(np.float32)) < 0.02 * opaque.size:
        raise TemplateError(f"{where}: the mask covers under 2 % of the picture")
    i = int(np.argmin(np.hypot(*(contour - left).T)))
    j = int(np.argmin(np.hypot(*(contour - right).T)))
    if i == j:
        raise TemplateError(f"{where}: the left and right anchors meet the same contour point")
    n = len(contour)
    forward = contour[(i + np.arange((j - i) % n + 1)) % n]
    backward = contour[(j + np.arange((i - j) % n + 1)) % n][::-1]
    top, bottom = (forward, backward) if forward[:, 1].mean() < backward[:, 1].mean() else (
        backward, forward)  # fmt: skip
    return top, bottom


def _affines(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle, the affine map ``dst → src`` (T, 2, 3), and which triangles are proper
    (not collapsed) in ``dst``."""
    a, b, c = dst[:, 0], dst[:, 1], dst[:, 2]
    area = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    ok = np.abs(area) > 1e-6
    ones = np.ones((len(dst), 3, 1))
    lhs = np.concatenate([dst, ones], 2)[ok]  # (T', 3, 3): rows x, y, 1
    maps = np.zeros((len(dst), 2, 3))
    maps[ok] = np.transpose(np.linalg.solve(lhs, src[ok]), (0, 2, 1))
    return maps, ok


def face_grid(outline: Outline, rows: int) -> np.ndarray:
    """The ``(COLUMNS, rows + 1, 2)`` pixel grid a template's grid is laid onto: the posed
    surface's (geometry 3) or the flat outline's."""
    surface = outline.surface(COLUMNS, rows)
    grid = outline_grid(outline, COLUMNS, rows) if surface is None else surface.vertices
    return grid.astype(np.float64)


def warp_template(
    template: MaskTemplate, outline: Outline, shape: tuple[int, int], offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The template laid onto ``outline`` over a box of ``shape`` = (h, w) at ``offset`` =
    (x0, y0): its colour (h, w, 3) float32 in 0–255 and its coverage (h, w) float32 in 0–1."""
    rows = template.grid.shape[1] - 1
    face = face_grid(outline, rows).reshape(-1, 2) - np.asarray(offset, np.float64)
    tris = grid_triangles(COLUMNS, rows)
    maps, ok = _affines(template.grid.reshape(-1, 2)[tris], face[tris])
    a, b, c = (face[tris[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok &= area * np.sign(area.sum()) > 0  # folded cells lie behind a posed silhouette
    owner = np.full(shape, -1, np.int32)
    for t in np.flatnonzero(ok):  # later triangles win on shared edges; folds are slivers
        pts = np.round(face[tris[t]] * 16).astype(np.int32)
        cv2.fillConvexPoly(owner, pts, int(t), cv2.LINE_8, 4)
    ys, xs = np.nonzero(owner >= 0)
    m = maps[owner[ys, xs]]
    map_x = np.full(shape, -1.0, np.float32)
    map_y = np.full(shape, -1.0, np.float32)
    map_x[ys, xs] = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    map_y[ys, xs] = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    warped = cv2.remap(np.asarray(template.rgba), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))  # fmt: skip
    colour = warped[..., :3].astype(np.float32)
    return colour, warped[..., 3].astype(np.float32) * np.float32(1 / 255)


def check_sheet(template: MaskTemplate, scale: float = 1.0) -> np.ndarray:
    """An authoring picture (RGB uint8): the template over a checkerboard, its top edge in
    green, bottom edge in red, the grid in white and the corner anchors as blue rings."""
    h, w = template.rgba.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    board = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 150).astype(np.float32)
    a = template.rgba[..., 3:4].astype(np.float32) / 255
    sheet = (template.rgba[..., :3] * a + board * (1 - a)).astype(np.uint8)
    if scale != 1.0:
        sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

    def px(points: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(points) * scale * 16).astype(np.int32)

    for line in (*template.grid, *template.grid.transpose(1, 0, 2)):
        cv2.polylines(sheet, [px(line)], False, (255, 255, 255), 1, cv2.LINE_AA, 4)
    cv2.polylines(sheet, [px(template.top)], False, (0, 200, 0), 2, cv2.LINE_AA, 4)
    cv2.polylines(sheet, [px(template.bottom)], False, (220, 0, 0), 2, cv2.LINE_AA, 4)
    for anchor in (template.left, template.right):
        centre = tuple(int(v) for v in px(anchor))
        cv2.circle(sheet, centre, int(8 * 16 * max(scale, 0.5)), (0, 0, 255), 2, cv2.LINE_AA, 4)
    return sheet


def template_faces(family: str, height: int) -> np.ndarray:
    """A row of built-in synthetic faces (frontal, turned both ways; high and low coverage)
    wearing ``family``, ``height`` pixels tall (RGB uint8)."""
    from maskgen.render import MaskParams, render
    from maskgen.synthetic import draw_wild_face, sample_identity

    tiles = []
    for yaw, coverage in ((0.0, "high"), (-35.0, "high"), (35.0, "medium"), (0.0, "low")):
        rng = np.random.default_rng(4)
        image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=yaw,
                                   pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
        params = MaskParams(family=family, coverage=coverage, shading=0.6, straps=True)
        tiles.append(cv2.resize(render(image, lm, params).image, (height, height)))
    return np.concatenate(tiles, axis=1)
