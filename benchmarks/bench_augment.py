"""Throughput of online masking: batched ``RandomFaceMask`` vs the per-sample ``MaskFace``.

For each thread count of ``--threads`` (default: 1 and torch's default; OpenCV gets the same
count), times ``RandomFaceMask`` on a ``B×3×112×112`` batch of synthetic faces (with their own
landmarks) on ``--device`` and ``MaskFace`` applied to every image of the same batch on the CPU
(one process, as one DataLoader worker would), interleaved, and prints the median wall time per
batch, images/s for both and the ratio, and the same for the process CPU time (the cost of a
call on a machine shared with other work, where wall times are noisy). With ``--device cuda``
it also measures how much masking adds to an iresnet50 forward+backward step at
``--step-batch`` (default 128).

On glibc, a batch output above 32 MB (256×3×112×112 float32 is 38.5 MB) is a fresh ``mmap``
on every call, and its page faults are part of the batched time; where page faults are slow
(VMs, sandboxes) ``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=2000000000`` (or
jemalloc/tcmalloc) removes that cost. The printout says whether these are set.

Usage::

    python benchmarks/bench_augment.py                    # CPU, batch 256, 1 and all threads
    python benchmarks/bench_augment.py --threads 1 --repeat 11
    python benchmarks/bench_augment.py --device cuda --batch 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from maskgen.augment import MaskFace, RandomFaceMask
from maskgen.synthetic import SyntheticFaces


def _faces(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = SyntheticFaces(16, 4, seed=0)
    items = [ds[i % len(ds)] for i in range(batch)]
    x = torch.from_numpy(np.stack([im for im, _, _ in items])).permute(0, 3, 1, 2)
    lm = torch.from_numpy(np.stack([lm for _, _, lm in items]))
    return x.float().div(255), lm


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeat: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _interleaved(
    fns: dict[str, tuple[Callable[[], object], torch.device]], repeat: int
) -> dict[str, tuple[float, float]]:
    """Median wall and process-CPU time of each function, run in turn ``repeat`` times (after
    one warm-up). CPU time is what the call costs on a machine shared with other work."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn, device in fns.values():
        fn()
        _sync(device)
    for _ in range(repeat):
        for name, (fn, device) in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", default="1,0", help="comma-separated; 0: torch's default")
    parser.add_argument("--step-batch", type=int, default=128)
    parser.add_argument("--skip-cpu-transform", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    torch.manual_seed(0)

    x, lm = _faces(args.batch)
    xd, lmd = x.to(device), lm.to(device)
    aug = RandomFaceMask(p=1.0).to(device)
    mask = MaskFace(p=1.0)
    rng = np.random.default_rng(0)
    images, marks = list(x), list(lm.numpy())

    def batched() -> None:
        with torch.no_grad():
            aug(xd, landmarks=lmd)

    def per_sample() -> None:
        for img, m in zip(images, marks, strict=True):
            mask(img, m, rng=rng)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    malloc = "set" if "MALLOC_MMAP_THRESHOLD_" in os.environ else "glibc default"
    print(f"device: {device} ({name}), batch {args.batch} x 3 x 112 x 112 float32, "
          f"median of {args.repeat} interleaved runs, malloc thresholds: {malloc}")  # fmt: skip
    for threads in (int(t) for t in args.threads.split(",")):
        n = threads or default_threads
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
        fns = {"RandomFaceMask": (batched, device)}
        if not args.skip_cpu_transform:
            fns["MaskFace"] = (per_sample, torch.device("cpu"))
        t = _interleaved(fns, args.repeat)
        print(f"threads {n}:")
        for label, (wall, cpu) in t.items():
            where = "per-sample loop, cpu" if label == "MaskFace" else f"batched, {device}"
            print(f"  {label:15s} {wall * 1e3:8.1f} ms/batch {args.batch / wall:8.0f} images/s"
                  f"   (CPU time {cpu * 1e3:7.1f} ms; {where})")  # fmt: skip
        if "MaskFace" in t:
            (wall_b, cpu_b), (wall_s, cpu_s) = t["RandomFaceMask"], t["MaskFace"]
            print(f"  speed-up, MaskFace / RandomFaceMask: {wall_s / wall_b:.2f}x wall, "
                  f"{cpu_s / cpu_b:.2f}x CPU time")  # fmt: skip
    torch.set_num_threads(default_threads)

    if device.type == "cuda":
        _step_overhead(device, args.step_batch, args.repeat)


def _step_overhead(device: torch.device, batch: int, repeat: int) -> None:
    from distill.backbones import create_backbone

    net = create_backbone("iresnet50").to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, lm = _faces(batch)
    x, lm = x.to(device), lm.to(device)
    aug = RandomFaceMask(p=0.5).to(device)

    def step(masked: bool) -> None:
        inp = aug(x, landmarks=lm) if masked else x
        loss = net(inp * 2 - 1).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    plain = _time(lambda: step(False), device, repeat * 4)
    with_mask = _time(lambda: step(True), device, repeat * 4)
    print(f"iresnet50 step batch {batch}: {plain * 1e3:.1f} ms, with masking "
          f"{with_mask * 1e3:.1f} ms (+{(with_mask / plain - 1) * 100:.1f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
