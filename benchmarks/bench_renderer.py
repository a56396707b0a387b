"""Renderer throughput on one thread.

Cases (issue: foundation renderer):
- aligned 112×112 crops, solid-colour masks (target ≥ 10,000 images/s);
- aligned 112×112 crops, texture + shading (target ≥ 4,000 images/s);
- a 1024×1024 image with given landmarks (target ≥ 500 images/s);
- for reference, a full-frame homography warp of a mask template per image, the approach of
  the public MaskInv routine.

Each case renders a pool of 64 distinct draws over 64 synthetic faces. "Canonical layout" is
what the ``aligned`` backend gives every crop (the renderer's geometry cache then hits);
"new landmarks every image" clears the caches before each call (the in-the-wild worst case).
Run: ``python benchmarks/bench_renderer.py [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from maskgen.landmarks import aligned_landmarks, perturb_shape
from maskgen.render import MaskParams, MaskSpec, render, render_state
from maskgen.synthetic import SyntheticFaces


def _rate(fn, items, seconds: float) -> float:
    for item in items[:5]:
        fn(*item)  # warm caches (texture tiles) and code paths
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            fn(*item)
        n += len(items)
    return n / (time.perf_counter() - start)


def _params(spec: MaskSpec, count: int, **overrides) -> list[MaskParams]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        p = spec.sample(rng)
        out.append(MaskParams.from_dict({**p.to_dict(), **overrides}))
    return out


def _no_look(params: MaskParams) -> MaskParams:
    """The draw without the photo's noise, blur, colour and compression
    (``--no-photo-look``)."""
    return MaskParams.from_dict({**params.to_dict(), "noise": 0.0, "blur": 0.0,
                                 "color_match": 0.0, "compression": 0.0})  # fmt: skip


def _flat(params: MaskParams) -> MaskParams:
    """The draw as stop 12 made it: flat outline (geometry 2), no fabric, creases or
    contact shadow, no photo's look (the realism's price is the difference to the plain
    rows)."""
    return MaskParams.from_dict({**_no_look(params).to_dict(), "geometry": 2, "fabric": 0.0,
                                 "contact_shadow": 0.0, "creases": 0.0})  # fmt: skip


def _uncached(image: np.ndarray, lm: np.ndarray, params: MaskParams) -> None:
    render_state().clear()
    render(image, lm, params)


def _uncached_inplace(image: np.ndarray, lm: np.ndarray, params: MaskParams) -> None:
    render_state().clear()
    render(image, lm, params, inplace=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    faces = SyntheticFaces(32, 2, seed=0, kind="aligned")
    images = [faces[i][0] for i in range(len(faces))]
    spec = MaskSpec()
    rng = np.random.default_rng(1)
    canonical = [aligned_landmarks()] * len(images)
    perturbed = [
        perturb_shape(aligned_landmarks(), rng.uniform(0.92, 1.08), rng.uniform(0.92, 1.08))
        for _ in range(len(images))
    ]
    solid = _params(spec, len(images), texture="none", shading=0.0, straps=False, valve=False)
    textured = []
    for p in _params(spec, len(images), shading=0.8):
        texture = p.texture if p.texture != "none" else "pleats"
        textured.append(MaskParams.from_dict({**p.to_dict(), "texture": texture}))

    def items(layouts, params):
        return list(zip(images, layouts, params, strict=True))

    stream = _params(spec, 4000)
    stream_items = [(images[i % len(images)], canonical[0], p) for i, p in enumerate(stream)]
    results = {
        "aligned 112, canonical layout, 4000 fresh default-spec draws": _rate(
            render, stream_items, args.seconds
        ),
        "aligned 112, canonical layout, solid": _rate(
            render, items(canonical, solid), args.seconds
        ),
        "aligned 112, canonical layout, solid, without the photo's look": _rate(
            render, items(canonical, [_no_look(p) for p in solid]), args.seconds
        ),
        "aligned 112, canonical layout, solid, flat, no look/fabric/shadow (stop 12)": _rate(
            render, items(canonical, [_flat(p) for p in solid]), args.seconds
        ),
        "aligned 112, canonical layout, texture+shading": _rate(
            render, items(canonical, textured), args.seconds
        ),
        "aligned 112, new landmarks every image, solid": _rate(
            _uncached, items(perturbed, solid), args.seconds
        ),
        "aligned 112, new landmarks every image, solid, flat, no look/fabric/shadow": _rate(
            _uncached, items(perturbed, [_flat(p) for p in solid]), args.seconds
        ),
        "aligned 112, new landmarks every image, texture+shading": _rate(
            _uncached, items(perturbed, textured), args.seconds
        ),
    }

    big = cv2.resize(images[0], (1024, 1024), interpolation=cv2.INTER_CUBIC)
    # A face ~280 px wide somewhere in a 1024×1024 photo, new landmarks every image.
    wild = [(big, lm * 2.5 + np.float32([300, 250]), p) for lm, p in zip(perturbed, textured,
                                                                         strict=True)]  # fmt: skip
    results["1024x1024 photo, 280 px face, solid"] = _rate(
        _uncached, [(b, lm, p) for (b, lm, _), p in zip(wild, solid, strict=True)], args.seconds
    )
    results["1024x1024 photo, 280 px face, texture+shading"] = _rate(_uncached, wild, args.seconds)
    results["1024x1024 photo, 280 px face, texture+shading, inplace"] = _rate(
        _uncached_inplace, wild, args.seconds
    )
    full = [(big, lm * (1024 / 112), p) for lm, p in zip(perturbed, textured, strict=True)]
    results["1024x1024 face filling the frame, texture+shading"] = _rate(
        _uncached, full[:8], args.seconds
    )

    template = np.full((600, 800, 3), 200, np.uint8)
    corners = np.float32([[0, 0], [799, 0], [799, 599], [0, 599]])

    def homography_warp(image: np.ndarray, lm: np.ndarray, _p: object) -> np.ndarray:
        dst = np.float32([lm[1], lm[15], lm[10], lm[6]])
        H = cv2.getPerspectiveTransform(corners, dst)
        warped = cv2.warpPerspective(template, H, (image.shape[1], image.shape[0]))
        mask = cv2.warpPerspective(np.full((600, 800), 255, np.uint8), H, image.shape[1::-1])
        out = image.copy()
        out[mask > 127] = warped[mask > 127]
        return out

    results["reference: full template homography warp, 112"] = _rate(
        homography_warp, items(perturbed, solid), args.seconds
    )
    width = max(len(k) for k in results)
    for name, rate in results.items():
        print(f"{name:<{width}}  {rate:10.0f} images/s")


if __name__ == "__main__":
    main()
