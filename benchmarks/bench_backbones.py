"""CPU throughput of the distill backbones (images per second at 112×112).

Prints forward-only (eval mode, ``torch.inference_mode``) and forward+backward (train mode,
gradient of a scalar loss w.r.t. all parameters) throughput, using the median time of a few
timed iterations after one warm-up iteration.

Usage:
    python benchmarks/bench_backbones.py                       # tiny, mobilefacenet, iresnet50
    python benchmarks/bench_backbones.py --threads 4 --models tiny iresnet18 --batch-size 32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from distill.backbones import create_backbone

DEFAULT_BATCH = {"tiny": 64, "mobilefacenet": 64, "iresnet50": 16}


def _median_seconds(step: Callable[[], None], iters: int) -> float:
    step()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, batch_size: int, iters: int) -> tuple[int, float, float]:
    """Return (parameter count, forward img/s, forward+backward img/s) for one backbone."""
    torch.manual_seed(0)
    model = create_backbone(name)
    n_params = sum(p.numel() for p in model.parameters())
    images = torch.rand(batch_size, 3, 112, 112) * 2 - 1
    weights = torch.randn(batch_size, model.embedding_size)

    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    fwd_rate = batch_size / _median_seconds(forward, iters)

    model.train()

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        (model(images) * weights).sum().backward()

    train_rate = batch_size / _median_seconds(forward_backward, iters)
    return n_params, fwd_rate, train_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_BATCH))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: per model")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads={torch.get_num_threads()}, input 3x112x112, median of {args.iters} iterations"
    )
    print(f"{'backbone':<14} {'params':>8} {'batch':>5} {'fwd img/s':>10} {'fwd+bwd img/s':>14}")
    for name in args.models:
        batch = args.batch_size or DEFAULT_BATCH.get(name, 16)
        n_params, fwd, train = bench(name, batch, args.iters)
        print(f"{name:<14} {n_params / 1e6:>7.2f}M {batch:>5} {fwd:>10.1f} {train:>14.1f}")


if __name__ == "__main__":
    main()
