"""Regenerate ``templates/face_3d.json``: the generic 3D face that head pose is fitted against.

Method (reproducible, offline, seconds on one core):
1. Draw ``IDENTITIES`` identities of the project's synthetic face generator
   (:func:`maskgen.synthetic.sample_identity`, seed ``SEED``), each with the mouth opening
   and smile that :func:`maskgen.synthetic.draw_wild_face` would draw (the generator's own
   pose sampler, pose angles fixed at 0).
2. Take each identity's 68 landmarks in the generator's canonical frontal 3D frame
   (:func:`maskgen.synthetic.landmarks_3d`: inter-ocular units, eye centres at x = ±0.5,
   eye line at y = 0, y down, z towards the viewer; depth from the generator's face surface,
   nose and jaw models). This is the frame the generator rotates by yaw and pitch and
   projects orthographically.
3. Add every identity's mirror image (x → -x, points re-paired by ``MIRROR_68``), so the
   distribution, and with it the mean, is exactly left/right symmetric.
4. Write the mean shape and the leading ``MODES`` principal modes of the shape variation
   (each scaled by its standard deviation, so the covariance is ``Σ m mᵀ``); the pose fit
   (:mod:`maskgen.landmarks.pose`) uses the modes to weight landmarks by how much they vary
   between faces.

Run: ``python scripts/derive_face_3d.py`` (writes templates/face_3d.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskgen.landmarks.mirror import MIRROR_68
from maskgen.synthetic import _sample_pose, landmarks_3d, sample_identity

OUT = Path(__file__).resolve().parents[1] / "templates" / "face_3d.json"
SEED = 13
IDENTITIES = 4000
MODES = 20
WILD_RANGES = (30.0, 12.0, 25.0)  # draw_wild_face's pose ranges (only the expression is used)


def shapes(n: int, seed: int) -> np.ndarray:
    """(2n, 68, 3): ``n`` synthetic identities with sampled expressions, and their mirrors."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ident = sample_identity(rng)
        pose = _sample_pose(rng, (0.0, 0.0, 0.0, None, None), WILD_RANGES)
        out.append(landmarks_3d(ident, pose.mouth_open, pose.smile))
    stack = np.stack(out)
    mirrored = stack[:, MIRROR_68] * np.array([-1.0, 1.0, 1.0])
    return np.concatenate([stack, mirrored])


def modes(stack: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading ``k`` principal modes of ``stack`` scaled by their std, and the variance share."""
    centred = (stack - stack.mean(0)).reshape(len(stack), -1)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    var = sv**2 / (len(stack) - 1)
    scaled = vt[:k] * np.sqrt(var[:k])[:, None]
    return scaled.reshape(k, 68, 3), np.cumsum(var)[:k] / var.sum()


def _rows(points: np.ndarray, digits: int) -> list[list[float]]:
    return [[round(float(v), digits) for v in p] for p in points]


def main() -> None:
    stack = shapes(IDENTITIES, SEED)
    mean = stack.mean(0)
    scaled, share = modes(stack, MODES)
    doc = {
        "description": "Generic 3D face: the 68 iBUG landmarks in the synthetic generator's "
        "canonical frontal frame, averaged over synthetic identities and their mirror images, "
        "with the leading principal modes of their variation. Made by "
        "scripts/derive_face_3d.py from maskgen.synthetic (sample_identity, landmarks_3d).",
        "units": "inter-ocular distance; eye centres at x = -0.5 and 0.5, eye line at y = 0, "
        "x to the image right, y down, z towards the viewer",
        "seed": SEED,
        "identities": IDENTITIES,
        "mirrored": True,
        "points": _rows(mean, 4),
        "mode_variance_share": [round(float(v), 4) for v in share],
        "modes": [_rows(m, 4) for m in scaled],
    }
    text = json.dumps(doc, indent=1)
    OUT.write_text(_compact_rows(text) + "\n")
    print(f"wrote {OUT}: {len(stack)} shapes, {MODES} modes ({share[-1]:.1%} of the variance)")


def _compact_rows(text: str) -> str:
    """Put each [x, y, z] triple on one line (json.dumps with indent puts each number on one)."""
    import re

    return re.sub(r"\[\s+(-?[\d.e-]+),\s+(-?[\d.e-]+),\s+(-?[\d.e-]+)\s+\]", r"[\1, \2, \3]", text)


if __name__ == "__main__":
    main()
