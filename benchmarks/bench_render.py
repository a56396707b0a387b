"""Throughput of ``maskgen render`` (end to end: read, decode, detect, render, encode, write).

1. A folder of 1–2 megapixel JPEG photos (synthetic in-the-wild faces at 1280×960 and the
   astronaut photo upscaled to 1280×1280) with the ``dlib`` backend at 1 and 2 workers:
   images/s and the 2-worker speed-up.
2. A ``.rec`` of 112×112 ArcFace-aligned synthetic faces with the ``aligned`` backend on one
   worker: images/s per core.

Usage: ``python benchmarks/bench_render.py [--photos 40] [--crops 6000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from maskgen.io import RecordWriter, write_image
from maskgen.pipeline import RenderOptions, render_dataset
from maskgen.synthetic import render_aligned, render_wild, sample_identity


def make_photos(root: Path, n: int) -> None:
    """``n`` JPEG photos of 1.2–1.6 megapixels."""
    rng = np.random.default_rng(0)
    astro = cv2.resize(skimage.data.astronaut(), (1280, 1280), interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        if i % 4 == 0:
            image = astro
        else:
            ident = sample_identity(rng)
            image, _ = render_wild(ident, rng, (960, 1280), face_frac=float(rng.uniform(0.2, 0.4)))
        write_image(root / f"{i // 10:02d}" / f"photo_{i:04d}.jpg", image, quality=92)


def make_rec(path: Path, n: int) -> None:
    """A RecordIO set of ``n`` aligned 112×112 faces (100 identities) with a header."""
    rng = np.random.default_rng(1)
    idents = [sample_identity(rng) for _ in range(100)]
    per = max(1, n // len(idents))
    with RecordWriter(path) as writer:
        for i in range(n):
            image, _ = render_aligned(idents[min(i // per, 99)], rng)
            writer.write_image(i + 1, image, min(i // per, 99))
        writer.write_header_record()


def timed(src: Path, out: Path, options: RenderOptions, workers: int) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / (out.name + ".maskgen"), ignore_errors=True)
    if out.suffix:
        out.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = render_dataset(src, out, options, workers=workers, progress=False)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--crops", type=int, default=6000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    try:
        photos = tmp / "photos"
        make_photos(photos, args.photos)
        options = RenderOptions(landmarks="dlib", block_size=2, seed=0)
        timed(photos, tmp / "warm", options, 2)  # start the worker pool, load the models
        rates = {}
        for workers in (1, 2):
            seconds, summary = timed(photos, tmp / f"photos_w{workers}", options, workers)
            rates[workers] = args.photos / seconds
            print(
                f"photos 1280x960/1280x1280, dlib, {workers} worker(s): "
                f"{rates[workers]:.2f} images/s ({summary['faces']} faces, "
                f"{summary['failed']} failed, {seconds:.1f} s)"
            )
        print(f"speed-up at 2 workers: {rates[2] / rates[1]:.2f}x (cores: {os.cpu_count()})")

        rec = tmp / "crops" / "train.rec"
        make_rec(rec, args.crops)
        options = RenderOptions(landmarks="aligned", block_size=512, seed=0)
        seconds, summary = timed(rec, tmp / "masked" / "train.rec", options, 1)
        print(
            f".rec of {args.crops} aligned 112x112 faces, aligned backend, 1 worker: "
            f"{args.crops / seconds:.0f} images/s per core ({seconds:.2f} s end to end)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
