"""Contact sheets: every shape family × coverage × a few colours on built-in faces.

Example:
    >>> sheet = contact_sheet(families=("surgical",), coverages=("high",), colours=1, cell=64)
    >>> sheet.shape[2], sheet.dtype.name
    (3, 'uint8')
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from maskgen.appearance import palette_colors
from maskgen.render import MaskParams, render
from maskgen.shapes import COVERAGES, FAMILIES, GEOMETRY
from maskgen.synthetic import draw_wild_face, sample_identity

#: (palette, texture) per colour column of the sheet.
SHEET_LOOKS: tuple[tuple[str, str], ...] = (
    ("medical_blue", "pleats"),
    ("black", "grain"),
    ("white", "none"),
    ("pink", "dots"),
    ("khaki", "checks"),
    ("navy", "print"),
)


def builtin_faces(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Square crops of synthetic "in the wild" faces with their 68 landmarks.

    Poses alternate between frontal, yawed and rolled so the sheet shows how masks follow
    the head.
    """
    poses = [(0.0, 0.0), (28.0, 0.0), (0.0, 18.0), (-22.0, -10.0)]
    faces = []
    for i in range(count):
        ident = sample_identity(np.random.default_rng([seed, i, 11]))
        yaw, roll = poses[i % len(poses)]
        image, lm = draw_wild_face(
            ident, np.random.default_rng([seed, i, 12]), size=(480, 480), yaw=yaw, roll=roll,
            face_frac=0.3,
        )  # fmt: skip
        faces.append((image, lm))
    return faces


def _crop_to_face(image: np.ndarray, lm: np.ndarray, cell: int) -> np.ndarray:
    centre = lm[27:68].mean(0)
    half = 0.95 * float(np.ptp(lm[:, 0]))
    x0, y0 = centre - half
    M = np.array([[cell / (2 * half), 0, -x0 * cell / (2 * half)],
                  [0, cell / (2 * half), -y0 * cell / (2 * half)]])  # fmt: skip
    return cv2.warpAffine(image, M, (cell, cell), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(245, 245, 245))  # fmt: skip


def contact_sheet(
    families: Sequence[str] = FAMILIES,
    coverages: Sequence[str] = COVERAGES,
    colours: int = 3,
    cell: int = 160,
    seed: int = 0,
) -> np.ndarray:
    """One row per family, one column per (coverage, colour); returns an RGB image."""
    looks = SHEET_LOOKS[: max(1, colours)]
    columns = [(cov, look) for cov in coverages for look in looks]
    faces = builtin_faces(len(families) * len(columns), seed)
    label_h = 22
    sheet = np.full((len(families) * cell + label_h, len(columns) * cell, 3), 255, np.uint8)
    for c, (cov, (palette, _)) in enumerate(columns):
        label = f"{cov} / {palette}"
        cv2.putText(sheet, label, (c * cell + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (40, 40, 40))
    k = 0
    for r, family in enumerate(families):
        for c, (cov, (palette, texture)) in enumerate(columns):
            image, lm = faces[k]
            k += 1
            geo = GEOMETRY[family]
            params = MaskParams(
                family=family, coverage=cov, color=palette_colors(palette)[0],
                texture=geo.pleats_as if texture == "pleats" else texture,
                texture_seed=k, shading=0.8, straps=geo.ear_loops, valve=geo.valve and c % 2 == 0,
            )  # fmt: skip
            masked = render(image, lm, params).image
            tile = _crop_to_face(masked, lm, cell)
            cv2.putText(tile, family, (4, cell - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255),
                        2, cv2.LINE_AA)  # fmt: skip
            cv2.putText(tile, family, (4, cell - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20),
                        1, cv2.LINE_AA)  # fmt: skip
            y0, x0 = label_h + r * cell, c * cell
            sheet[y0 : y0 + cell, x0 : x0 + cell] = tile
    return sheet
