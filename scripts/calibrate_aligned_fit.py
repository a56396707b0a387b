"""Derive the face box of the ``aligned-fit`` landmark backend (templates/aligned_fit.json).

dlib's 68-point predictor expects the box its HOG detector draws around a face. On an
ArcFace-aligned crop there is no detector: the backend uses the box the detector *would*
draw around the canonical layout. This script measures how the detector's boxes sit around
the 68 points it predicts in them (box corners relative to the points' centroid, in units of
their RMS radius), on every face dlib finds in the given photos, and maps that relation onto
the canonical 112×112 layout.

The stored numbers come from 13 faces: ``skimage.data.astronaut()`` (always available) plus
the photos of the face_recognition 1.3.0 source distribution (``tests/test_images``) and the
group photo ``t1.jpg`` of the insightface 0.7.3 source distribution, which are not part of
this repository::

    pip download --no-deps --no-binary :all: face_recognition==1.3.0
    pip download --no-deps insightface==0.7.3   # an sdist; unpack it
    python scripts/calibrate_aligned_fit.py face_recognition-1.3.0/tests/test_images/*.jpg \
        insightface-0.7.3/insightface/data/images/t1.jpg

Run without arguments it uses the astronaut alone; ``--check`` compares with the stored file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from maskgen.io import read_image
from maskgen.landmarks import DlibDetector, canonical_68, select_faces

OUT = Path(__file__).resolve().parents[1] / "templates" / "aligned_fit.json"


def _centre_and_radius(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    centre = landmarks.mean(0)
    return centre, float(np.sqrt(((landmarks - centre) ** 2).sum(1).mean()))


def relative_box(box: tuple[float, ...], landmarks: np.ndarray) -> np.ndarray:
    """A box's corners (x0, y0, x1, y1) relative to its landmarks' centroid and RMS radius."""
    centre, radius = _centre_and_radius(landmarks)
    x0, y0, x1, y1 = box
    return np.array([x0 - centre[0], y0 - centre[1], x1 - centre[0], y1 - centre[1]]) / radius


def box_around(landmarks: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """The box ``relative`` (see :func:`relative_box`) puts around ``landmarks``."""
    centre, radius = _centre_and_radius(landmarks)
    return np.concatenate([centre, centre]) + relative * radius


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="*", type=Path, help="extra photos with faces")
    parser.add_argument("--check", action="store_true", help="compare with the stored file")
    args = parser.parse_args(argv)
    from skimage import data

    images = [("skimage.data.astronaut()", data.astronaut())]
    images += [(p.name, read_image(p)) for p in args.photos]
    detector = DlibDetector(upsample=1)
    rows, sources = [], []
    for name, image in images:
        # The skin check drops false detections (the badge on the astronaut's suit).
        faces, _ = select_faces(image, detector.detect(image), min_face=60)
        for face in faces:
            rows.append(relative_box(face.box, face.landmarks))
            sources.append(name)
    relative = np.mean(rows, axis=0)
    box = box_around(canonical_68().astype(np.float64), relative)
    result = {
        "note": "dlib HOG box around the canonical 68 points (scripts/calibrate_aligned_fit.py)",
        "faces": len(rows),
        "photos": sources,
        "relative_box": [round(float(v), 4) for v in relative],
        "relative_box_std": [round(float(v), 4) for v in np.std(rows, axis=0)],
        "box_112": [round(float(v), 2) for v in box],
    }
    if args.check:
        stored = json.loads(OUT.read_text())
        diff = np.abs(np.array(stored["box_112"]) - box).max()
        print(f"largest difference to the stored box: {diff:.2f} px")
        return 0 if diff < 1.0 else 1
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
