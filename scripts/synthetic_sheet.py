"""Save a contact sheet of synthetic faces: identities × aligned images, plus wild images.

Run: ``python scripts/synthetic_sheet.py /tmp/synthetic_sheet.png [--ids 8] [--per 6]``
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from maskgen.synthetic import SyntheticFaces


def _draw_landmarks(img: np.ndarray, lm: np.ndarray, scale: int) -> np.ndarray:
    out = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for x, y in lm * scale + (scale - 1) / 2:
        cv2.circle(out, (round(x), round(y)), 1, (0, 255, 0), -1)
    return out


def make_sheet(ids: int, per: int, seed: int, scale: int, landmarks: bool) -> np.ndarray:
    """Rows: one identity each (``per`` aligned crops), then a row of wild images."""
    aligned = SyntheticFaces(ids, per, seed=seed)
    rows = []
    for label in range(ids):
        tiles = []
        for k in range(per):
            img, _, lm = aligned[label * per + k]
            tile = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            if landmarks and k == per - 1:
                tile = _draw_landmarks(img, lm, scale)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    width = rows[0].shape[1]
    wild = SyntheticFaces(ids, 1, seed=seed, kind="wild")
    n_wild = 4
    tile_w = width // n_wild
    tiles = []
    for i in range(n_wild):
        img, _, lm = wild[i]
        if landmarks and i == 0:
            for x, y in lm:
                cv2.circle(img, (round(x), round(y)), 2, (0, 255, 0), -1)
        tile_h = round(img.shape[0] * tile_w / img.shape[1])
        tiles.append(cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA))
    wild_row = np.concatenate(tiles, axis=1)
    pad = np.zeros((wild_row.shape[0], width - wild_row.shape[1], 3), np.uint8)
    rows.append(np.concatenate([wild_row, pad], axis=1))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", help="PNG path to write")
    parser.add_argument("--ids", type=int, default=8)
    parser.add_argument("--per", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--landmarks", action="store_true", help="overlay landmarks on one tile")
    args = parser.parse_args()
    sheet = make_sheet(args.ids, args.per, args.seed, args.scale, args.landmarks)
    cv2.imwrite(args.output, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.output} ({sheet.shape[1]}×{sheet.shape[0]})")


if __name__ == "__main__":
    main()
