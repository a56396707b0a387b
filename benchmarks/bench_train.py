"""Training and data-loader throughput of ``distill train``.

Prints images/s for:

* training steps of the ``tiny`` backbone on the CPU: teacher step (ElasticFace CE) and
  student step (CE + distillation, including the frozen teacher's forward pass);
* the training data loader (synthetic faces cached in memory, flip, uint8 tensors), without
  masking and with online masking in the workers (p = 0.5 and p = 1);
* with ``--gpu`` and CUDA available: iresnet50 / iresnet100 student steps at batch 128 with
  AMP.

The loader should deliver at least twice the model's step rate. Example::

    python benchmarks/bench_train.py --threads 2 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from distill.backbones import create_backbone
from distill.data import (
    GlobalBatchSampler,
    SyntheticSource,
    TrainDataset,
    normalize,
)
from distill.heads import create_head
from distill.training import apply_step, backward, compute_loss
from distill.training.loss import Net
from maskgen.augment import MaskedPairs


def bench_step(
    backbone: str,
    batch: int,
    steps: int,
    device: torch.device,
    student: bool,
    amp: torch.dtype | None = None,
    embedding_size: int = 128,
) -> float:
    """Images/s of full optimizer steps on random data (after 3 warm-up steps)."""
    net = Net(
        create_backbone(backbone, embedding_size),
        create_head("elasticcosface+", embedding_size, 1000),
    ).to(device)
    teacher = create_backbone(backbone, embedding_size).to(device).eval() if student else None
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    x = torch.rand(batch, 3, 112, 112, device=device) * 2 - 1
    y = torch.randint(0, 1000, (batch,), device=device)
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = compute_loss(net, teacher, x, x, y, 100.0)
        backward(loss, opt, scaler, net.backbone.parameters(), 5.0)
        apply_step(opt, scaler)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def bench_loader(source: SyntheticSource, p: float | None, workers: int, batches: int) -> float:
    """Images/s of the training loader (``p=None``: no masking)."""
    base = source if p is None else MaskedPairs(source, p=p, seed=0)
    dataset = TrainDataset(base, flip=True, seed=0)
    sampler = GlobalBatchSampler(len(dataset), 64, seed=0, max_steps=batches)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, prefetch_factor=4 if workers else None
    )
    t0 = time.perf_counter()
    n = 0
    for s_img, _, _, _, _ in loader:
        normalize(s_img)
        n += s_img.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--gpu", action="store_true", help="also iresnet50/100 on CUDA")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {args.threads} CPU threads")
    teacher = bench_step("tiny", 64, args.steps, cpu, student=False)
    student = bench_step("tiny", 64, args.steps, cpu, student=True)
    print(f"train tiny (128-d) batch 64, teacher step : {teacher:8.1f} img/s")
    print(f"train tiny (128-d) batch 64, student step : {student:8.1f} img/s")
    source = SyntheticSource(40, 40, seed=0, cache="memory")
    print("masking in the workers with maskgen.augment.MaskedPairs")
    for workers in (0, 1):
        for p in (None, 0.5, 1.0):
            rate = bench_loader(source, p, workers, args.batches)
            what = "no masking" if p is None else f"masking p={p}"
            print(
                f"loader {workers} worker(s), {what:14s}: {rate:8.1f} img/s "
                f"({rate / student:4.1f}× the student step)"
            )
    if args.gpu and torch.cuda.is_available():
        gpu = torch.device("cuda")
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        for name in ("iresnet50", "iresnet100"):
            rate = bench_step(name, 128, args.steps, gpu, student=True, amp=amp, embedding_size=512)
            print(f"train {name} batch 128 AMP {amp}, student step: {rate:8.1f} img/s")


if __name__ == "__main__":
    main()
