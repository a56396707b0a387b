"""Draw the documentation pictures of the realism work (``docs/images/``), from data anyone
has: ``skimage.data.astronaut()`` and the built-in synthetic faces.

- ``realism_astronaut.png``: the astronaut as photographed, in grey, and blurred with noise;
  each with a mask drawn as stop 11 drew it (lighting model 1, no look) and as now
  (lighting model 2 with the photo's noise, blur and colour), at full resolution and
  aligned to 112×112 (shown ×2).
- ``templates.png``: the two shipped image templates and a drawn cloth mask on a synthetic
  face at three poses and two coverages.
- ``families_by_yaw.png``: every built-in family and shipped template at yaw −45…45° on one
  synthetic identity (exact landmarks), high coverage, with ear loops, on the posed surface
  with fabric shading and contact shadows.
- ``posed_vs_flat.png``: four families with textures, flat in the image plane (geometry 2)
  and on the posed 3D surface with fabric shading (geometry 3), yaw −45…45°.
- ``creases.png``: cloth creases (``creases`` 0 against 1) on solid and textured masks, on a
  synthetic face lit from the left at yaw −30, 0 and 30°, and on the astronaut at full size
  (creases 0, 0.6, 1) and aligned to 112 (0, 1).

- ``jpeg_astronaut.png``: the astronaut saved as JPEG at qualities 25 and 50, with a mask
  masked before saving (the truth), drawn on the saved photo without its compression, and
  with it (1:1 pixels shown ×2).

Run: ``python scripts/docs_sheets.py`` (writes every file) or name the files to write, e.g.
``python scripts/docs_sheets.py jpeg_astronaut.png``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from maskgen.landmarks import (
    ARCFACE_112,
    DlibDetector,
    similarity_transform,
    to_five,
)
from maskgen.render import MaskParams, render
from maskgen.synthetic import draw_wild_face, sample_identity

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def realism_sheet() -> np.ndarray:
    image = data.astronaut()
    face = max(DlibDetector(upsample=1).detect(image), key=lambda f: f.box_area)
    lm = face.landmarks
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    noisy = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.6)
    noisy += np.random.default_rng(0).normal(0, 8, image.shape[:2])[..., None]
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    draw = MaskParams(family="surgical", color=(141, 191, 226), texture="pleats",
                      shading=0.8, straps=True, texture_seed=5)  # fmt: skip
    old = MaskParams(**{**draw.to_dict(), "lighting": 1, "geometry": 2})
    new = MaskParams(**{**draw.to_dict(), "noise": 1.0, "blur": 1.0, "color_match": 1.0,
                        "fabric": 0.8, "contact_shadow": 0.5})  # fmt: skip
    x0, y0, x1, y1 = (int(v) for v in face.box)
    pad = (x1 - x0) // 2
    crop = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
    M = similarity_transform(to_five(lm), ARCFACE_112)
    rows = []
    for name, photo in (("photo", image), ("grey photo", grey), ("blur 1.6 + noise 8", noisy)):
        tiles = []
        for tag, params in (("stop 11", old), ("now", new)):
            out = render(photo, lm, params).image
            full = cv2.resize(out[crop], (224, 224), interpolation=cv2.INTER_AREA)
            tiles.append(_label(full, f"{name}: {tag}"))
        for tag, params in (("stop 11", old), ("now", new)):
            out = render(photo, lm, params).image
            small = cv2.warpAffine(out, M, (112, 112), flags=cv2.INTER_AREA)
            tiles.append(_label(cv2.resize(small, (224, 224), interpolation=cv2.INTER_NEAREST),
                                f"112: {tag}"))  # fmt: skip
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def template_sheet() -> np.ndarray:
    rows = []
    for family in ("template:floral_cloth", "template:pleated_print", "cloth"):
        tiles = []
        for yaw, coverage in ((-35.0, "high"), (0.0, "high"), (30.0, "medium"), (0.0, "low")):
            rng = np.random.default_rng(4)
            image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=yaw,
                                       pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
            params = MaskParams(family=family, coverage=coverage, shading=0.6, straps=True,
                                color=(40, 60, 110))  # fmt: skip
            out = cv2.resize(render(image, lm, params).image, (224, 224), cv2.INTER_AREA)
            tiles.append(_label(out, f"{family.split(':')[-1]} {coverage} yaw {yaw:+.0f}"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def yaw_sheet() -> np.ndarray:
    from maskgen.shapes import FAMILIES

    families = [*FAMILIES, "template:floral_cloth", "template:pleated_print"]
    rows = []
    for family in families:
        tiles = []
        for yaw in (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0):
            rng = np.random.default_rng(11)
            image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=yaw,
                                       pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
            params = MaskParams(family=family, coverage="high", shading=0.7, straps=True,
                                color=(120, 170, 215), texture_seed=3, fabric=0.8,
                                contact_shadow=0.5)  # fmt: skip
            out = cv2.resize(render(image, lm, params).image[20:300, 20:300], (144, 144),
                             interpolation=cv2.INTER_AREA)  # fmt: skip
            tiles.append(_label(out, f"{family.split(':')[-1]} {yaw:+.0f}"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def posed_sheet() -> np.ndarray:
    """Flat outlines (geometry 2) against posed surfaces with fabric shading (geometry 3)."""
    cases = (("surgical", "pleats"), ("kn95", "none"), ("cloth", "checks"),
             ("gaiter", "stripes"))  # fmt: skip
    rows = []
    for family, texture in cases:
        for version, tag in ((2, "flat"), (3, "posed")):
            tiles = []
            for yaw in (-45.0, -25.0, 0.0, 25.0, 45.0):
                rng = np.random.default_rng(11)
                image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=yaw,
                                           pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
                extra = {"fabric": 0.9, "contact_shadow": 0.6} if version == 3 else {}
                params = MaskParams(family=family, coverage="high", shading=0.7, straps=True,
                                    color=(120, 170, 215), texture=texture, texture_seed=3,
                                    texture_scale=0.6, geometry=version, **extra)  # fmt: skip
                out = cv2.resize(render(image, lm, params).image[20:300, 20:300], (168, 168),
                                 interpolation=cv2.INTER_AREA)  # fmt: skip
                tiles.append(_label(out, f"{family} {tag} {yaw:+.0f}"))
            rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def creases_sheet() -> np.ndarray:
    """Creases 0 against 1: synthetic faces lit from the left, then the astronaut."""
    cases = (("surgical", "none", (141, 191, 226), 3), ("n95", "none", (236, 236, 236), 7),
             ("cloth", "none", (45, 45, 50), 11), ("surgical", "pleats", (120, 170, 215), 3),
             ("cloth", "checks", (200, 60, 60), 9))  # fmt: skip
    ramp = 1.0 + 0.45 * np.linspace(-1, 1, 320)[None, :, None]
    rows = []
    for family, texture, colour, seed in cases:
        tiles = []
        for yaw in (-30.0, 0.0, 30.0):
            rng = np.random.default_rng(11)
            image, lm = draw_wild_face(sample_identity(rng), rng, size=(320, 320), yaw=yaw,
                                       pitch=0.0, roll=0.0, face_frac=0.55)  # fmt: skip
            image = np.clip(image * ramp, 0, 255).astype(np.uint8)
            draw = MaskParams(family=family, shading=0.7, straps=True, color=colour,
                              secondary_color=(250, 250, 250), texture=texture,
                              texture_seed=seed, texture_scale=0.6, fabric=0.9,
                              contact_shadow=0.6)  # fmt: skip
            for creases in (0.0, 1.0):
                out = render(image, lm, replace(draw, creases=creases)).image[60:300, 40:280]
                out = cv2.resize(out, (168, 168), interpolation=cv2.INTER_AREA)
                tiles.append(_label(out, f"{family} {yaw:+.0f} creases {creases:.0f}"))
        rows.append(np.concatenate(tiles, axis=1))
    image = data.astronaut()
    face = max(DlibDetector(upsample=1).detect(image), key=lambda f: f.box_area)
    lm = face.landmarks
    x0, y0, x1, y1 = (int(v) for v in face.box)
    pad = (x1 - x0) // 2
    crop = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
    M = similarity_transform(to_five(lm), ARCFACE_112)
    draw = MaskParams(family="surgical", color=(141, 191, 226), shading=0.8, straps=True,
                      texture_seed=3, noise=1.0, blur=1.0, color_match=1.0, fabric=0.8,
                      contact_shadow=0.5)  # fmt: skip
    tiles = []
    for creases in (0.0, 0.6, 1.0):
        out = render(image, lm, replace(draw, creases=creases)).image
        full = cv2.resize(out[crop], (201, 201), interpolation=cv2.INTER_AREA)
        tiles.append(_label(full, f"astronaut: creases {creases:.1f}"))
    for creases in (0.0, 1.0):
        out = render(image, lm, replace(draw, creases=creases)).image
        small = cv2.warpAffine(out, M, (112, 112), flags=cv2.INTER_AREA)
        tiles.append(_label(cv2.resize(small, (201, 201), interpolation=cv2.INTER_NEAREST),
                            f"112: creases {creases:.0f}"))  # fmt: skip
    astronaut = np.concatenate(tiles, axis=1)
    synthetic = np.concatenate(rows, axis=0)
    width = max(synthetic.shape[1], astronaut.shape[1])
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)))
                           for a in (synthetic, astronaut)], axis=0)  # fmt: skip


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    _, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])  # fmt: skip
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def jpeg_sheet() -> np.ndarray:
    image = data.astronaut()
    face = max(DlibDetector(upsample=1).detect(image), key=lambda f: f.box_area)
    lm = face.landmarks
    x0, y0 = int(lm[:, 0].min()) - 12, int(lm[27, 1])
    crop = (slice(y0, y0 + 112), slice(x0, x0 + 144))
    rows = []
    for params in (MaskParams(family="surgical", color=(141, 191, 226), shading=0.8,
                              texture_seed=5, straps=True),
                   MaskParams(family="cloth", color=(60, 90, 160), secondary_color=(230, 230, 230),
                              texture="checks", texture_scale=0.5, shading=0.7)):  # fmt: skip
        matched = MaskParams(**{**params.to_dict(), "compression": 1.0})
        for quality in (25, 50):
            photo = _jpeg(image, quality)
            tiles = [
                (
                    _jpeg(render(image, lm, params).image, quality),
                    f"q{quality}: masked, then saved",
                ),
                (render(photo, lm, params).image, f"q{quality}: drawn, no compression"),
                (render(photo, lm, matched).image, f"q{quality}: drawn, compression 1"),
            ]
            zoomed = [_label(cv2.resize(t[crop], None, fx=2, fy=2,
                                        interpolation=cv2.INTER_NEAREST), text)
                      for t, text in tiles]  # fmt: skip
            rows.append(np.concatenate(zoomed, axis=1))
    return np.concatenate(rows, axis=0)


SHEETS = {
    "realism_astronaut.png": realism_sheet,
    "templates.png": template_sheet,
    "families_by_yaw.png": yaw_sheet,
    "posed_vs_flat.png": posed_sheet,
    "creases.png": creases_sheet,
    "jpeg_astronaut.png": jpeg_sheet,
}


def main(names: list[str]) -> None:
    """Write the named sheets (every one without names)."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or SHEETS:
        sheet = SHEETS[name]()
        cv2.imwrite(str(OUT / name), sheet[:, :, ::-1])
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
