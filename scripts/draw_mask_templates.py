"""Draw the image templates shipped under ``templates/`` (``template_*.png`` + ``.json``).

Both pictures are drawn here, procedurally (no photo of anyone's mask is used): a cloth mask
with a flower print, a hem and a centre seam (``floral_cloth``), and a pleated surgical-style
mask with a dotted print and bound edges (``pleated_print``). Run from the repository root::

    python scripts/draw_mask_templates.py          # rewrite templates/template_*
    python scripts/draw_mask_templates.py --check  # compare with the stored pictures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "templates"
W, H = 512, 320
LEFT, RIGHT = (16.0, 122.0), (496.0, 122.0)


def _spline(points: list[tuple[float, float]], samples: int = 24) -> np.ndarray:
    """Open Catmull-Rom curve through ``points``."""
    p = np.asarray(points, np.float64)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        a, b, c, d = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t**2
                          + (3 * b - a - 3 * c + d) * t**3))  # fmt: skip
    return np.vstack([*out, p[-2][None]])


def outline() -> np.ndarray:
    """The mask's closed outline: top edge left → right, bottom edge back."""
    top = _spline([LEFT, (120, 62), (256, 26), (392, 62), RIGHT])
    bottom = _spline([RIGHT, (474, 214), (384, 284), (256, 308), (128, 284), (38, 214), LEFT])
    return np.vstack([top, bottom[1:-1]])


def _alpha(poly: np.ndarray) -> np.ndarray:
    alpha = np.zeros((H, W), np.uint8)
    cv2.fillPoly(alpha, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return alpha


def _inside(poly: np.ndarray, inset: float) -> np.ndarray:
    """Pixels at least ``inset`` px inside the outline."""
    mask = (_alpha(poly) > 127).astype(np.uint8)
    return cv2.distanceTransform(mask, cv2.DIST_L2, 5) >= inset


def _fabric(rng: np.random.Generator, base: tuple[int, int, int], weave: float) -> np.ndarray:
    """A plain-weave fabric in ``base``: fine threads, slow blotches, a soft vignette."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    threads = 0.5 + 0.25 * (np.sin(xx * 1.9) + np.sin(yy * 1.9))
    blotch = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 18)
    blotch /= max(float(np.abs(blotch).max()), 1e-6)
    shade = 1 + weave * (threads - 0.5) + 0.05 * blotch
    shade *= 1 - 0.12 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - 170) / 170) ** 2)
    return np.array(base, np.float32)[None, None] * shade[..., None]


def _flower(img: np.ndarray, centre: tuple[float, float], r: float, petal, middle) -> None:
    cx, cy = centre
    for k in range(5):
        a = k * 2 * np.pi / 5
        c = (int(16 * (cx + r * np.cos(a))), int(16 * (cy + r * np.sin(a))))
        cv2.circle(img, c, int(16 * r * 0.62), petal, -1, cv2.LINE_AA, 4)
    cv2.circle(img, (int(16 * cx), int(16 * cy)), int(16 * r * 0.45), middle, -1, cv2.LINE_AA, 4)


def floral_cloth() -> np.ndarray:
    rng = np.random.default_rng(7)
    poly = outline()
    img = _fabric(rng, (34, 48, 92), 0.10)
    petals = [(236, 150, 170), (245, 240, 230), (250, 200, 120)]
    for y in range(10, H, 38):
        for x in range(10 + (y // 38 % 2) * 19, W, 38):
            j = rng.uniform(-6, 6, 2)
            _flower(img, (x + j[0], y + j[1]), rng.uniform(5, 8), petals[rng.integers(3)],
                    (250, 210, 90))  # fmt: skip
    hem = np.zeros((H, W), np.uint8)
    inner = _inside(poly, 9) & ~_inside(poly, 11)
    hem[inner] = 255
    dashes = (np.mgrid[:H, :W][1] // 7 + np.mgrid[:H, :W][0] // 7) % 2 == 0
    img[(hem > 0) & dashes] = (210, 215, 225)
    seam = np.abs(np.mgrid[:H, :W][1] - 256) < 2
    img[seam] *= 0.6
    img[np.abs(np.mgrid[:H, :W][1] - 259) < 2] *= 1.15
    return _rgba(img, poly)


def pleated_print() -> np.ndarray:
    rng = np.random.default_rng(11)
    poly = outline()
    img = _fabric(rng, (150, 196, 226), 0.05)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    for y0 in (110.0, 165.0, 220.0):  # folds: highlight above, shadow below
        d = yy - (y0 + 6 * np.sin(xx / 90))
        img *= (1 + 0.10 * np.exp(-((d + 5) ** 2) / 18) - 0.22 * np.exp(-((d - 4) ** 2) / 10))[
            ..., None
        ]
    for y in range(14, H, 22):
        for x in range(14 + (y // 22 % 2) * 11, W, 22):
            cv2.circle(img, (16 * x, 16 * y), 16 * 3, (235, 240, 250), -1, cv2.LINE_AA, 4)
    band = _inside(poly, 1) & ~_inside(poly, 9)
    img[band] = (238, 242, 246)
    img[band] *= (0.9 + 0.1 * np.cos(xx[band] * 0.8))[..., None]
    wire = (np.abs(xx - 256) < 60) & (yy < 60) & band
    img[wire] *= 0.85
    return _rgba(img, poly)


def _rgba(img: np.ndarray, poly: np.ndarray) -> np.ndarray:
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.dstack([rgb, _alpha(poly)])


TEMPLATES = {"floral_cloth": floral_cloth, "pleated_print": pleated_print}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored files")
    args = parser.parse_args(argv)
    worst = 0
    for name, draw in TEMPLATES.items():
        rgba = draw()
        png = OUT / f"template_{name}.png"
        if args.check:
            stored = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]]
            worst = max(worst, int(np.abs(stored.astype(int) - rgba).max()))
            continue
        cv2.imwrite(str(png), rgba[..., [2, 1, 0, 3]])
        meta = {"format": "maskgen-mask-template", "version": 1, "image": png.name,
                "anchors": {"left": list(LEFT), "right": list(RIGHT)},
                "note": "drawn by scripts/draw_mask_templates.py"}  # fmt: skip
        (OUT / f"template_{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {png} and its JSON")
    if args.check:
        print(f"largest difference to the stored pictures: {worst}")
        return 0 if worst <= 1 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
