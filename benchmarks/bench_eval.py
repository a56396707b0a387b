"""Evaluation throughput: embedding images/s and a full 12,000-image, three-protocol evaluation.

Prints:

1. flip-summed embedding throughput (:func:`distill.eval.embed_images`: each image is
   embedded together with its mirror, i.e. two forward passes) per backbone, in images/s,
   median of a few timed batches after a warm-up;
2. mask materialisation throughput (decode + render + model input) on masked images;
3. wall time of :func:`distill.eval.evaluate_models` on a 12,000-image pack (6,000 pairs:
   3,000 genuine, 3,000 impostor, built from :class:`maskgen.synthetic.SyntheticFaces` and
   cached under ``--cache``) with the ``tiny`` backbone under NM-NM, M-NM and M-M, and an
   extrapolation for the other backbones (5 × 6,000 embedded images: 12,000 clean shared by
   NM-NM and M-NM, 6,000 M-NM second images, 12,000 M-M images).

Usage:
    python benchmarks/bench_eval.py                          # CPU, 2 threads
    python benchmarks/bench_eval.py --device cuda --full-models tiny iresnet50
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distill.backbones import create_backbone
from distill.eval import PROTOCOLS, dataset_sha256, embed_images, evaluate_models
from distill.eval.inputs import _build_entry, _Materialiser
from maskgen.io import encode_image, load_bin, save_bin
from maskgen.render import MaskSpec
from maskgen.synthetic import SyntheticFaces

IDS, PER_ID = 600, 20  # 12,000 images


def _face_chunk(start: int, stop: int) -> list[bytes]:
    ds = SyntheticFaces(IDS, PER_ID, seed=2024)
    return [encode_image(ds[i][0], ".jpg", quality=95) for i in range(start, stop)]


def build_pack(path: Path, jobs: int) -> Path:
    """6,000 pairs; every image is used once. Identity j: images 0–9 form 5 genuine pairs,
    images 10–14 are paired with images 15–19 of identity j + 1 (impostors)."""
    if path.exists():
        return path
    from joblib import Parallel, delayed

    n = IDS * PER_ID
    step = 500
    chunks = Parallel(n_jobs=jobs)(
        delayed(_face_chunk)(s, min(s + step, n)) for s in range(0, n, step)
    )
    faces = [b for chunk in chunks for b in chunk]
    images: list[bytes] = []
    flags: list[bool] = []
    for j in range(IDS):
        base, nxt = j * PER_ID, ((j + 1) % IDS) * PER_ID
        for t in range(5):
            images += [faces[base + 2 * t], faces[base + 2 * t + 1]]
            flags.append(True)
        for t in range(5):
            images += [faces[base + 10 + t], faces[nxt + 15 + t]]
            flags.append(False)
    return save_bin(path, images, flags)


def embed_rate(name: str, batch: int, iters: int, device: str) -> float:
    torch.manual_seed(0)
    model = create_backbone(name).eval().to(device)
    images = np.random.default_rng(0).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)
    embed_images(model, images, device)  # warm-up
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        embed_images(model, images, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def materialise_rate(pack_path: Path, count: int) -> float:
    pack = load_bin(pack_path)
    entry = _build_entry("b", pack, ("m-m",), 0, MaskSpec(), "aligned", "-")
    make = _Materialiser(pack, entry, None)
    start = time.perf_counter()
    for i in range(count):
        make(i, entry.draws["m-m"][i])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["tiny", "iresnet50"])
    parser.add_argument("--full-models", nargs="+", default=["tiny"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/distill_bench_12k.bin"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"device={args.device}, threads={torch.get_num_threads()}"
    )
    rates: dict[str, float] = {}
    print(f"{'backbone':<12} {'batch':>5} {'flip-summed img/s':>18}")
    for name in args.models:
        batch = 64 if name == "tiny" else 32
        rates[name] = embed_rate(name, batch, args.iters, args.device)
        print(f"{name:<12} {batch:>5} {rates[name]:>18.1f}")

    start = time.perf_counter()
    pack_path = build_pack(args.cache, args.threads)
    print(f"pack: {pack_path} ({time.perf_counter() - start:.1f} s to build or find)")
    mat = materialise_rate(pack_path, 600)
    print(f"materialise (decode + render mask + 112x112 input): {mat:.0f} img/s")

    pack = load_bin(pack_path)
    sha_start = time.perf_counter()
    dataset_sha256(pack)
    print(f"sha256 of the pack: {time.perf_counter() - sha_start:.2f} s")
    n_embedded = 5 * pack.num_pairs
    for name in args.full_models:
        torch.manual_seed(0)
        model = create_backbone(name)
        start = time.perf_counter()
        report = evaluate_models(
            {name: model},
            {"bench12k": pack},
            PROTOCOLS,
            seed=0,
            batch_size=args.batch_size,
            device=args.device,
            progress=False,
        )
        wall = time.perf_counter() - start
        print(
            f"full evaluation, {name}, {pack.num_images} images x 3 protocols "
            f"({n_embedded} embedded images): {wall:.1f} s"
        )
        print(report.table())
    for name, rate in rates.items():
        if name in args.full_models:
            continue
        est = n_embedded / rate + 3 * pack.num_pairs / mat
        print(
            f"extrapolated full evaluation, {name}: {est:.0f} s "
            f"({n_embedded} images at {rate:.1f} img/s + {3 * pack.num_pairs} masks)"
        )


if __name__ == "__main__":
    main()
