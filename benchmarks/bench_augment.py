"""Throughput of online masking: batched ``RandomFaceMask`` vs the per-sample ``MaskFace``.

Prints images/s for ``RandomFaceMask`` on a ``B×3×112×112`` batch of synthetic faces (with
their own landmarks) on ``--device``, images/s for ``MaskFace`` applied to every image of the
same batch on the CPU (as DataLoader workers would, one process), and the ratio. With
``--device cuda`` it also measures how much masking adds to an iresnet50 forward+backward step
at ``--step-batch`` (default 128).

Usage::

    python benchmarks/bench_augment.py                    # CPU, batch 256
    python benchmarks/bench_augment.py --device cuda --batch 512
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--step-batch", type=int, default=128)
    parser.add_argument("--skip-cpu-transform", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    x, lm = _faces(args.batch)
    xd, lmd = x.to(device), lm.to(device)
    aug = RandomFaceMask(p=1.0).to(device)
    with torch.no_grad():
        t_batch = _time(lambda: aug(xd, landmarks=lmd), device, args.repeat)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({name}), torch threads {torch.get_num_threads()}")
    print(f"RandomFaceMask  batch {args.batch}: {t_batch * 1e3:8.1f} ms  "
          f"{args.batch / t_batch:10.0f} images/s")  # fmt: skip

    if not args.skip_cpu_transform:
        mask = MaskFace(p=1.0)
        rng = np.random.default_rng(0)
        images, marks = list(x), list(lm.numpy())

        def per_sample() -> None:
            for img, m in zip(images, marks, strict=True):
                mask(img, m, rng=rng)

        t_single = _time(per_sample, torch.device("cpu"), max(1, args.repeat // 2))
        print(f"MaskFace        batch {args.batch}: {t_single * 1e3:8.1f} ms  "
              f"{args.batch / t_single:10.0f} images/s")  # fmt: skip
        print(f"speed-up (batched / per-sample): {t_single / t_batch:.1f}x")

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
