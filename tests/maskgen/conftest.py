"""Shared fixtures: a real photo with detected landmarks and synthetic faces with exact ones."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from maskgen.landmarks import DlibDetector
from maskgen.synthetic import draw_wild_face, sample_identity


@pytest.fixture(scope="session")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """``skimage.data.astronaut()`` and the 68 landmarks dlib's predictor finds on it."""
    image = data.astronaut()
    faces = DlibDetector(upsample=1).detect(image)
    face = max(faces, key=lambda f: f.box_area)
    return image, face.landmarks


def synthetic_face(yaw: float = 0.0, roll: float = 0.0, seed: int = 3) -> tuple[np.ndarray, ...]:
    """A 320×320 synthetic face (exact landmarks), face ~55 % of the width."""
    ident = sample_identity(np.random.default_rng([seed, 1]))
    return draw_wild_face(
        ident,
        np.random.default_rng([seed, 2]),
        size=(320, 320),
        yaw=yaw,
        pitch=0.0,
        roll=roll,
        face_frac=0.55,
    )


@pytest.fixture(scope="session")
def frontal_face() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_face()


@pytest.fixture(scope="session")
def posed_faces() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "yaw+35": synthetic_face(yaw=35.0),
        "yaw-30": synthetic_face(yaw=-30.0),
        "roll+25": synthetic_face(roll=25.0),
        "roll-20": synthetic_face(roll=-20.0),
    }
