"""One prepared GPU check: every GPU target of the project measured in a single short run.

Parts (``--parts``, comma-separated; default all, in this order):

* ``device``: device name, torch / CUDA / cuDNN versions, bf16 support.
* ``mask``: :class:`maskgen.RandomFaceMask` on the device at batch 512, 112×112, with the
  occlusion maps (``return_alpha=True``): images/s for the default spec and for solid colours
  (no texture, no shading), on the aligned layout and on per-sample synthetic landmarks; and
  parity with the CPU renderer :func:`maskgen.render` on the same draws (IoU of the occlusion
  maps, mean colour difference where both are opaque, as in
  ``tests/maskgen/test_random_face_mask.py``), plus the largest difference between the device
  and the CPU run of ``RandomFaceMask`` on the same parameters.
* ``share``: masking's share of an iresnet50 forward+backward step (ElasticFace CE, the
  ``configs/ms1mv2_r50.yaml`` head) at batch 128 with AMP: device masking
  (:class:`distill.training.masking.DeviceMasker`) against masking in DataLoader workers
  (:class:`maskgen.MaskedPairs`), both fed by the training loader
  (:class:`distill.data.TrainDataset`), against the same loader without masking.
* ``throughput``: training steps of iresnet50 and iresnet100 at batch 128, AMP bf16 and fp16
  (with the gradient scaler), teacher step (CE) and student step (CE + distillation, frozen
  teacher forward): images/s, loss finite on every step, scaler scale and skipped steps.
* ``train``: ``distill train`` end to end on the device (synthetic data, tiny config, masking on
  the device): a full run; a second run interrupted right after its first student checkpoint and
  resumed with ``--resume``, which must end at the same step; the NM-NM / M-NM / M-M report.
* ``eval``: ``distill eval`` of a 12,000-image synthetic pack (6,000 pairs) under the three
  protocols with a freshly initialised iresnet50: wall time and pairs scored.

Every part catches its own failure (printed with its traceback) and the script goes on. Each
figure is printed on one line (``part  name = value unit``), then the JSON summary (also written
to ``--json PATH``); the peak GPU memory of each part is ``torch.cuda.max_memory_allocated``
after a reset (``null`` on the CPU). The exit status is 1 when a part failed.

The full run is sized for about 5 minutes on one modern GPU (8 at most: loops stop at their
time budget). ``--smoke`` runs every part at tiny sizes (the ``tiny`` backbone stands in for
iresnet50/100) in well under a minute on a CPU; ``tests/test_gpu_check.py`` runs it.

Usage::

    python benchmarks/gpu_check.py --json gpu_check.json              # on a GPU machine
    python benchmarks/gpu_check.py --smoke --device cpu               # anywhere
    python benchmarks/gpu_check.py --parts mask,share --device cuda:0
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("device", "mask", "share", "throughput", "train", "eval")
#: The tiny backbone of the tests (a few thousand parameters): the smoke run's stand-in.
TINY_KWARGS = "{widths: [8, 8, 16, 16], blocks: [0, 0, 0, 0]}"
MS1MV2_CLASSES = 85_742


@dataclass(frozen=True)
class Sizes:
    """How much each part does (the full run or the smoke run)."""

    mask_batch: int = 512
    mask_faces: int = 64  # distinct synthetic faces tiled over the batch
    mask_seconds: float = 3.0  # per timed case
    parity_samples: int = 64
    step_backbone: str = "iresnet50"
    step_kwargs: dict[str, Any] = field(default_factory=dict)  # backbone arguments
    step_batch: int = 128
    embedding: int = 512
    classes: int = MS1MV2_CLASSES
    share_steps: int = 30
    share_warmup: int = 5
    share_images: tuple[int, int] = (64, 32)  # identities × images per identity
    share_workers: int = 8
    throughput_backbones: tuple[str, ...] = ("iresnet50", "iresnet100")
    throughput_steps: int = 200
    throughput_warmup: int = 10
    throughput_seconds: float = 20.0  # per configuration, after warm-up
    train_images: tuple[int, int] = (32, 8)
    train_batch: int = 64
    train_backbone_kwargs: str = "{}"
    train_workers: int = 2
    eval_pairs: int = 6000
    eval_images: tuple[int, int] = (600, 8)
    eval_backbone: str = "iresnet50"
    eval_batch: int = 256
    smoke: bool = False


SMOKE = Sizes(
    mask_batch=8,
    mask_faces=8,
    mask_seconds=0.2,
    parity_samples=8,
    step_backbone="tiny",
    step_kwargs={"widths": [8, 8, 16, 16], "blocks": [0, 0, 0, 0]},
    step_batch=8,
    embedding=16,
    classes=16,
    share_steps=3,
    share_warmup=1,
    share_images=(4, 8),
    share_workers=1,
    throughput_backbones=("tiny",),
    throughput_steps=8,  # fp16 skips the first 4-5 steps while the scale falls
    throughput_warmup=1,
    throughput_seconds=1.0,
    train_images=(8, 4),
    train_batch=16,
    train_backbone_kwargs=TINY_KWARGS,
    train_workers=0,
    eval_pairs=20,
    eval_images=(10, 2),
    eval_backbone="tiny",
    eval_batch=16,
    smoke=True,
)


class CheckFailedError(AssertionError):
    """A measured result that is wrong (not merely slow): the part fails."""


class Context:
    """What every part needs: the device, the sizes, a scratch folder and the figures."""

    def __init__(self, device: torch.device, sizes: Sizes, workdir: Path) -> None:
        self.device = device
        self.sizes = sizes
        self.workdir = workdir
        self.part = ""
        self.figures: dict[str, Any] = {}

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def figure(self, name: str, value: Any, unit: str = "") -> Any:
        """Record and print one figure of the current part."""
        if isinstance(value, float | np.floating):
            value = float(value)
            shown = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        else:
            shown = str(value)
        print(f"{self.part:10s} {name:52s} = {shown} {unit}".rstrip(), flush=True)
        self.figures[name] = value
        return value

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ---- shared helpers -----------------------------------------------------------------------------


def _faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` aligned synthetic faces (uint8 N×112×112×3) and their own landmarks (N×68×2)."""
    from maskgen.synthetic import SyntheticFaces

    per = 4
    ds = SyntheticFaces(max(1, -(-n // per)), per, seed=seed)
    items = [ds[i] for i in range(n)]
    return np.stack([im for im, _, _ in items]), np.stack([lm for _, _, lm in items])


def _timed_calls(fn: Callable[[], object], ctx: Context, seconds: float, min_calls: int) -> float:
    """Seconds per call of ``fn`` (two warm-up calls, then until ``seconds`` and
    ``min_calls`` are both reached; the device is synchronised before reading the clock)."""
    for _ in range(2):
        fn()
    ctx.sync()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
        if calls % 8 == 0:
            ctx.sync()
    ctx.sync()
    return (time.perf_counter() - start) / calls


def _amp(name: str, device: torch.device) -> tuple[torch.dtype, torch.amp.GradScaler | None]:
    """Autocast dtype and scaler of ``train.amp = name``, as ``distill train`` sets them up
    (:func:`distill.training.step.amp_setup`). On a CPU (smoke runs) fp16 autocast gets a CPU
    gradient scaler, which ``distill train`` refuses."""
    from distill.training.step import amp_setup

    if device.type == "cuda":
        dtype, use_scaler = amp_setup(name, device)
    else:
        dtype, use_scaler = (torch.float16, True) if name == "fp16" else (torch.bfloat16, False)
    assert dtype is not None
    return dtype, torch.amp.GradScaler(device.type) if use_scaler else None


def _step_amp(device: torch.device) -> str:
    """The AMP ``distill train`` picks by default on CUDA (bf16 where supported)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


class _Trainer:
    """A training step of ``distill train`` (Net, ElasticFace head of the MS1MV2 config, SGD,
    autocast, :func:`backward` with clipping, :func:`apply_step`), on one device."""

    def __init__(self, ctx: Context, backbone: str, amp: str, student: bool) -> None:
        from distill import create_backbone, load_config
        from distill.heads import create_head
        from distill.training.loss import Net
        from distill.training.schedule import build_optimizer

        s = ctx.sizes
        cfg = load_config(ROOT / "configs" / "ms1mv2_r50.yaml", [f"model.backbone={backbone}"])
        self.cfg = cfg
        self.device = ctx.device
        head = create_head(cfg.model.head, s.embedding, s.classes, **cfg.model.head_kwargs)
        net = create_backbone(backbone, s.embedding, **s.step_kwargs)
        self.net = Net(net, head).to(ctx.device).train()
        self.teacher = None
        if student:
            self.teacher = create_backbone(backbone, s.embedding, **s.step_kwargs)
            self.teacher = self.teacher.to(ctx.device).eval()
            self.teacher.requires_grad_(False)
        lr = cfg.student.lr * s.step_batch / cfg.optim.base_batch_size
        self.optimizer = build_optimizer(self.net, lr, cfg.optim)
        self.dtype, self.scaler = _amp(amp, ctx.device)
        self.losses: list[torch.Tensor] = []

    def step(self, x_student: torch.Tensor, x_teacher: torch.Tensor, labels: torch.Tensor) -> None:
        from distill.training import apply_step, backward, compute_loss

        with torch.autocast(self.device.type, dtype=self.dtype):
            loss, _ = compute_loss(self.net, self.teacher, x_student, x_teacher, labels,
                                   self.cfg.student.distill_weight)  # fmt: skip
        backward(loss, self.optimizer, self.scaler, self.net.backbone.parameters(),
                 self.cfg.optim.clip_grad_norm)  # fmt: skip
        apply_step(self.optimizer, self.scaler)
        self.losses.append(loss.detach())

    def all_losses_finite(self) -> bool:
        return bool(torch.isfinite(torch.stack(self.losses).float()).all())


def _random_batch(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(ctx.sizes.step_batch, 3, 112, 112, generator=g) * 2 - 1
    y = torch.randint(0, ctx.sizes.classes, (ctx.sizes.step_batch,), generator=g)
    return x.to(ctx.device), y.to(ctx.device)


# ---- part: device -------------------------------------------------------------------------------


def part_device(ctx: Context) -> None:
    """Device name and versions."""
    ctx.figure("torch", torch.__version__)
    ctx.figure("python", platform.python_version())
    ctx.figure("cpu_count", os.cpu_count())
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        ctx.figure("name", torch.cuda.get_device_name(ctx.device))
        ctx.figure("cuda", torch.version.cuda)
        ctx.figure("cudnn", torch.backends.cudnn.version())
        ctx.figure("capability", f"{props.major}.{props.minor}")
        ctx.figure("memory_gib", props.total_memory / 2**30, "GiB")
        ctx.figure("bf16_supported", torch.cuda.is_bf16_supported())
    else:
        ctx.figure("name", platform.processor() or platform.machine())
        ctx.figure("cuda", None)


# ---- part: mask ---------------------------------------------------------------------------------


def _mask_specs() -> dict[str, Any]:
    from maskgen import MaskSpec

    return {"default": MaskSpec(), "solid": MaskSpec(textures={"none": 1}, shading=(0.0, 0.0))}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def _parity(ctx: Context, name: str, spec: Any, images: np.ndarray, lms: np.ndarray) -> None:
    """IoU and colour difference against ``maskgen.render`` on the device's own draws, split
    by whether the draw has ear loops (the batched path strokes them as polygons, OpenCV as
    anti-aliased lines), and the device run against the CPU run of ``RandomFaceMask`` on the
    same parameters. Only the device gap and the draws without ear loops can fail the part."""
    from maskgen import RandomFaceMask, render

    n = ctx.sizes.parity_samples
    x = torch.from_numpy(images[:n]).permute(0, 3, 1, 2).float().div(255)
    aug = RandomFaceMask(spec, p=1.0, seed=7).to(ctx.device)
    out, alpha = aug(x.to(ctx.device), landmarks=torch.from_numpy(lms[:n]).to(ctx.device),
                     return_alpha=True, keys=range(n))  # fmt: skip
    draws = aug.to_mask_params(aug._params)
    out_np = out.float().permute(0, 2, 3, 1).cpu().numpy()
    alpha_np = alpha[:, 0].float().cpu().numpy()
    ious: dict[bool, list[float]] = {False: [], True: []}
    diffs: dict[bool, list[float]] = {False: [], True: []}
    low: dict[bool, int] = {False: 0, True: 0}
    for i, draw in enumerate(draws):
        ref = render(images[i], lms[i], draw)
        iou = _iou(ref.alpha, alpha_np[i])
        ious[draw.straps].append(iou)
        low[draw.straps] += iou < (0.9 if draw.coverage == "chin" else 0.95)  # the test's bounds
        inner = (ref.alpha > 0.99) & (alpha_np[i] > 0.99)
        if inner.any():
            diff = np.abs(ref.image[inner] / 255.0 - out_np[i][inner]).mean() * 255
            diffs[draw.straps].append(float(diff))
    ctx.figure(f"{name}.parity_iou_mean", float(np.mean(ious[False] + ious[True])), f"({n} draws)")
    for straps, label in ((False, "no_ear_loops"), (True, "ear_loops")):
        if not ious[straps]:
            continue
        ctx.figure(f"{name}.{label}.draws", len(ious[straps]))
        ctx.figure(f"{name}.{label}.parity_iou_min", float(np.min(ious[straps])))
        ctx.figure(f"{name}.{label}.parity_below_iou_bound", int(low[straps]),
                   "draws (test bounds: 0.95, chin 0.9)")  # fmt: skip
        ctx.figure(f"{name}.{label}.parity_colour_diff_mean", float(np.mean(diffs[straps])),
                   "/255")  # fmt: skip
        ctx.figure(f"{name}.{label}.parity_colour_diff_max", float(np.max(diffs[straps])),
                   "/255 (test bound 3)")  # fmt: skip
    params = aug.params_from_mask_params(draws, lms[:n])
    on_cpu = RandomFaceMask(spec, p=1.0)(x, params=params)
    on_dev = aug(x.to(ctx.device), params=params).float().cpu()
    gap = ctx.figure(f"{name}.device_vs_cpu_max_abs_diff", float((on_dev - on_cpu).abs().max()),
                     "(same params, RandomFaceMask on the CPU)")  # fmt: skip
    worst = max(diffs[False], default=0.0)
    if low[False] or worst >= 3.0 or gap > 1e-2:
        raise CheckFailedError(f"{name}: parity lost (draws without ear loops: {low[False]} "
                               f"below the IoU bound, colour diff up to {worst:.2f}; device gap "
                               f"{gap:.3g})")  # fmt: skip


def part_mask(ctx: Context) -> None:
    """RandomFaceMask images/s at batch 512 and parity with the CPU renderer."""
    from maskgen import RandomFaceMask

    s = ctx.sizes
    faces, marks = _faces(s.mask_faces)
    reps = -(-s.mask_batch // s.mask_faces)
    images = np.concatenate([faces] * reps)[: s.mask_batch]
    lms = np.concatenate([marks] * reps)[: s.mask_batch]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(ctx.device).float().div(255)
    own = torch.from_numpy(lms).to(ctx.device)
    for name, spec in _mask_specs().items():
        aug = RandomFaceMask(spec, p=1.0, seed=0).to(ctx.device)  # fresh keys every call
        for layout, lm in (("aligned", None), ("synthetic", own)):
            per_call = _timed_calls(
                lambda aug=aug, lm=lm: aug(x, landmarks=lm, return_alpha=True),
                ctx, s.mask_seconds, 3,
            )  # fmt: skip
            ctx.figure(f"{name}.{layout}_landmarks.images_per_s", s.mask_batch / per_call,
                       f"(batch {s.mask_batch}; goal >= 500,000)")  # fmt: skip
        _parity(ctx, name, spec, faces, marks)


# ---- part: share --------------------------------------------------------------------------------


def _batches(n: int, batch: int, steps: int) -> list[list[int]]:
    """``steps`` global batches over ``n`` items, epoch after epoch (the training sampler)."""
    from distill.data import GlobalBatchSampler

    sampler, out, epoch = GlobalBatchSampler(n, batch, seed=0), [], 0
    while len(out) < steps:
        sampler.set_epoch(epoch)
        out += list(sampler)
        epoch += 1
    return out[:steps]


def _workers(s: Sizes) -> int:
    return min(s.share_workers, os.cpu_count() or 1)


def _loader_step_time(ctx: Context, trainer: _Trainer, source: Any, mode: str) -> float:
    """Seconds per training step fed by the training DataLoader; ``mode`` is ``none`` (no
    masking), ``workers`` (MaskedPairs in the workers) or ``device`` (DeviceMasker)."""
    from torch.utils.data import DataLoader

    from distill.data import TrainDataset, normalize
    from distill.training.masking import DeviceMasker
    from maskgen import MaskedPairs, MaskSpec

    s = ctx.sizes
    base = MaskedPairs(source, MaskSpec(), p=0.5, seed=1234) if mode == "workers" else source
    # As distill train builds it (its RandomFaceMask stays where it was made).
    masker = DeviceMasker(MaskSpec(), 0.5, 1234) if mode == "device" else None
    loader = DataLoader(
        TrainDataset(base, flip=True, seed=0),
        batch_sampler=_batches(len(source), s.step_batch, s.share_warmup + s.share_steps),
        num_workers=_workers(s),
        pin_memory=ctx.cuda,
        prefetch_factor=4 if _workers(s) else None,
    )
    start = 0.0
    for k, (s_img, t_img, labels, _, landmarks, indices) in enumerate(loader):
        if k == s.share_warmup:
            ctx.sync()
            start = time.perf_counter()
        t_img = t_img.to(ctx.device, non_blocking=True)
        labels = labels.to(ctx.device, non_blocking=True)
        if masker is not None:
            masked01, _ = masker(t_img.float() / 255, landmarks.to(ctx.device), indices.tolist(), 0)
            x_student = normalize(masked01)
        else:
            x_student = normalize(s_img.to(ctx.device, non_blocking=True))
        trainer.step(x_student, normalize(t_img), labels)
    ctx.sync()
    return (time.perf_counter() - start) / s.share_steps


def part_share(ctx: Context) -> None:
    """Masking's share of an iresnet50 fwd+bwd step: on the device vs in DataLoader workers."""
    from distill.data import SyntheticSource, normalize
    from distill.training.masking import DeviceMasker
    from maskgen import MaskSpec

    s = ctx.sizes
    amp = _step_amp(ctx.device)
    ctx.figure("step", f"{s.step_backbone} batch {s.step_batch} AMP {amp}, teacher-stage step")
    trainer = _Trainer(ctx, s.step_backbone, amp, student=False)
    faces, marks = _faces(s.step_batch)
    clean = torch.from_numpy(faces).permute(0, 3, 1, 2).to(ctx.device)
    lms = torch.from_numpy(marks).to(ctx.device)
    labels = torch.randint(0, s.classes, (s.step_batch,), device=ctx.device)
    x = normalize(clean)
    step = _timed_calls(lambda: trainer.step(x, x, labels), ctx, 0.0, s.share_steps)
    ctx.figure("fixed_batch.step_ms", step * 1e3, "ms")
    masker = DeviceMasker(MaskSpec(), 0.5, 1234)  # as distill train builds it
    moved = DeviceMasker(MaskSpec(), 0.5, 1234)
    moved.aug.to(ctx.device)  # its texture bank on the device too
    calls = itertools.count()

    def mask_next(m: DeviceMasker) -> None:  # new item keys every call: new draws, as in training
        first = next(calls) * s.step_batch
        m(clean.float() / 255, lms, list(range(first, first + s.step_batch)), 0)

    for label, m in (("device_masking", masker), ("device_masking_moved", moved)):
        mask = _timed_calls(lambda m=m: mask_next(m), ctx, 0.0, s.share_steps)
        ctx.figure(f"fixed_batch.{label}_ms", mask * 1e3, "ms (p = 0.5, default spec)")
        ctx.figure(f"fixed_batch.{label}_share_pct", 100 * mask / (mask + step),
                   "% (goal <= 2 %)")  # fmt: skip

    source = SyntheticSource(*s.share_images, seed=0, cache="memory")
    times = {mode: _loader_step_time(ctx, trainer, source, mode)
             for mode in ("none", "workers", "device")}  # fmt: skip
    ctx.figure("loader.workers", _workers(s))
    for mode, t in times.items():
        ctx.figure(f"loader.{mode}_masking.step_ms", t * 1e3, "ms")
    for mode in ("workers", "device"):
        share = 100 * max(times[mode] - times["none"], 0.0) / times[mode]
        ctx.figure(f"loader.{mode}_masking_share_pct", share, "% of the fed step")
    if not trainer.all_losses_finite():
        raise CheckFailedError("a loss was not finite")


# ---- part: throughput ---------------------------------------------------------------------------


def _throughput_one(ctx: Context, backbone: str, amp: str, student: bool) -> None:
    s = ctx.sizes
    tag = f"{backbone}.{amp}.{'student' if student else 'teacher'}"
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    trainer = _Trainer(ctx, backbone, amp, student)
    x, y = _random_batch(ctx)
    first = next(trainer.net.backbone.parameters()).detach().clone()
    init_scale = trainer.scaler.get_scale() if trainer.scaler is not None else 1.0
    for _ in range(s.throughput_warmup):
        trainer.step(x, x, y)
    ctx.sync()
    steps, start = 0, time.perf_counter()
    while steps < s.throughput_steps:
        trainer.step(x, x, y)
        steps += 1
        if steps % 10 == 0 and time.perf_counter() - start > s.throughput_seconds:
            break  # the time budget; the step count is reported
    ctx.sync()
    seconds = time.perf_counter() - start
    ctx.figure(f"{tag}.images_per_s", steps * s.step_batch / seconds,
               f"({steps} steps of {s.step_batch})")  # fmt: skip
    finite = trainer.all_losses_finite()
    ctx.figure(f"{tag}.loss_finite", finite)
    ctx.figure(f"{tag}.final_loss", float(trainer.losses[-1].float()))
    moved = not torch.equal(first, next(trainer.net.backbone.parameters()).detach())
    ctx.figure(f"{tag}.weights_updated", moved)
    if trainer.scaler is not None:
        scale = float(trainer.scaler.get_scale())
        # No growth within growth_interval (2000) steps: every skipped step halved the scale.
        skipped = math.log2(init_scale / scale) if scale > 0 else math.inf
        ctx.figure(f"{tag}.scaler_scale", scale)
        ctx.figure(f"{tag}.scaler_skipped_steps", skipped, f"of {len(trainer.losses)}")
        if not (math.isfinite(scale) and scale > 0 and skipped < len(trainer.losses)):
            raise CheckFailedError(f"{tag}: gradient scaler stuck (scale {scale})")
    if ctx.cuda:
        ctx.figure(f"{tag}.peak_gpu_memory_gib",
                   torch.cuda.max_memory_allocated(ctx.device) / 2**30, "GiB")  # fmt: skip
    if not (finite and moved):
        raise CheckFailedError(f"{tag}: loss finite {finite}, weights updated {moved}")


def part_throughput(ctx: Context) -> None:
    """iresnet50/100 training images/s at batch 128, bf16 and fp16, teacher and student step."""
    failures = []
    for backbone in ctx.sizes.throughput_backbones:
        for amp in ("bf16", "fp16"):
            for student in (False, True):
                try:
                    _throughput_one(ctx, backbone, amp, student)
                except Exception as exc:  # one configuration must not hide the others
                    failures.append(f"{backbone} {amp}: {type(exc).__name__}: {exc}")
                    print(f"{ctx.part:10s} FAILED {failures[-1]}", flush=True)
                if ctx.cuda:
                    torch.cuda.empty_cache()
    if failures:
        raise CheckFailedError("; ".join(failures))


# ---- part: train --------------------------------------------------------------------------------


class _SimulatedCrashError(Exception):
    """Raised right after a chosen checkpoint was written (an interrupted run)."""


@contextmanager
def _crash_after_checkpoints(count: int) -> Iterator[None]:
    """Make ``distill train`` stop right after its ``count``-th checkpoint is written, as
    ``tests/distill/test_train.py`` interrupts a run."""
    import distill.training.stage as stage

    original, written = stage.save_checkpoint, []

    def save_then_crash(path: Path, ckpt: dict[str, Any]) -> Path:
        result = original(path, ckpt)
        written.append(path)
        if len(written) == count:
            raise _SimulatedCrashError(f"after checkpoint {len(written)}: {path}")
        return result

    stage.save_checkpoint = save_then_crash
    try:
        yield
    finally:
        stage.save_checkpoint = original


def _train_config(ctx: Context, out: Path) -> Path:
    """A tiny ``distill train`` config for the device, written as YAML."""
    from distill.config import Config, apply_overrides, save_config

    s = ctx.sizes
    ids, per = s.train_images
    cfg = apply_overrides(Config(), [
        f"train.output={out}", f"train.device={ctx.device.type}", "train.amp=auto",
        f"data.num_identities={ids}", f"data.images_per_identity={per}",
        f"data.num_workers={s.train_workers}", "model.embedding_size=16",
        f"model.kwargs={s.train_backbone_kwargs}", f"train.batch_size={s.train_batch}",
        f"optim.base_batch_size={s.train_batch}", "teacher.epochs=1", "student.epochs=2",
        "masking.mode=device", "train.log_every=1", "eval.num_identities=10",
        "eval.images_per_identity=2", "eval.num_pairs=20", "eval.batch_size=16",
    ])  # fmt: skip
    return save_config(cfg, out.parent / f"{out.name}.yaml")


def _cli(args: list[str]) -> str:
    """Run a ``distill`` command in this process; its output, or an error with its tail."""
    from typer.testing import CliRunner

    from distill.cli import app

    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        tail = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        raise CheckFailedError(f"distill {args[0]} exited {result.exit_code}: "
                          f"{result.output[-2000:]}{tail[-2000:]}")  # fmt: skip
    return result.output


def _steps_in_csv(path: Path) -> list[int]:
    with path.open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def part_train(ctx: Context) -> None:
    """``distill train`` end to end: a run interrupted after its first student checkpoint,
    resumed to the same step, evaluated; outside smoke runs also an uninterrupted run."""
    from distill.checkpoint import load_checkpoint
    from distill.config import load_config
    from distill.demo import run
    from distill.eval import PROTOCOLS

    s = ctx.sizes
    root = ctx.scratch("train")
    cut = root / "resumed"
    cut_cfg = _train_config(ctx, cut)
    cfg = load_config(cut_cfg)
    per_epoch = s.train_images[0] * s.train_images[1] // s.train_batch
    expected = per_epoch * cfg.student.epochs
    t0 = time.perf_counter()
    with _crash_after_checkpoints(cfg.teacher.epochs + 1):  # the first student checkpoint
        try:
            run(cfg)
        except _SimulatedCrashError:
            pass
        else:
            raise CheckFailedError("the interrupted run did not stop")
    mid = load_checkpoint(cut / "student" / "last.pt")
    ctx.figure("interrupted_at_step", int(mid["step"]), f"(epoch {mid['epoch']})")
    _cli(["train", str(cut_cfg), "--resume"])
    ctx.figure("interrupted_and_resumed_s", time.perf_counter() - t0, "s")
    final = load_checkpoint(cut / "student" / "last.pt")
    ctx.figure("resumed_final_step", int(final["step"]), f"(expected {expected})")
    steps = _steps_in_csv(cut / "student" / "metrics.csv")
    report = json.loads((cut / "report.json").read_text())
    stages = {st["role"]: st for st in report["stages"]}
    ctx.figure("resumed.teacher_skipped", bool(stages["teacher"]["skipped"]))
    for model in ("teacher", "student"):
        for p in PROTOCOLS:
            acc = report["results"][model][p]["accuracy_mean"]
            ctx.figure(f"{model}.{p}.accuracy", float(acc), "(tiny run: not a quality figure)")
    if int(final["step"]) != expected or steps != list(range(1, expected + 1)):
        raise CheckFailedError(f"resumed to step {final['step']} (metrics rows {steps}), "
                          f"expected steps 1..{expected}")  # fmt: skip
    if not stages["teacher"]["skipped"]:
        raise CheckFailedError("the finished teacher stage was trained again on resume")
    if not s.smoke:
        full = root / "full"
        t0 = time.perf_counter()
        _cli(["train", str(_train_config(ctx, full))])
        ctx.figure("uninterrupted_run_s", time.perf_counter() - t0, "s")
        a = load_checkpoint(full / "student" / "last.pt")["model"]
        diff = max(float((a[k].float() - final["model"][k].float()).abs().max()) for k in a)
        ctx.figure("resumed_vs_uninterrupted_max_weight_diff", diff,
                   "(0 where the device is deterministic)")  # fmt: skip
    if not all(math.isfinite(v) for v in ctx.figures.values() if isinstance(v, float)):
        raise CheckFailedError("a training or evaluation figure is not finite")


# ---- part: eval ---------------------------------------------------------------------------------


def part_eval(ctx: Context) -> None:
    """``distill eval`` of a 12,000-image pack under NM-NM, M-NM and M-M on the device."""
    from distill import create_backbone
    from distill.checkpoint import make_checkpoint, save_checkpoint
    from distill.data import build_synthetic_pack
    from distill.eval import PROTOCOLS

    s = ctx.sizes
    root = ctx.scratch("eval")
    t0 = time.perf_counter()
    pack, _ = build_synthetic_pack(root / "pack.bin", *s.eval_images, num_pairs=s.eval_pairs)
    ctx.figure("pack_images", 2 * s.eval_pairs)
    ctx.figure("pack_build_s", time.perf_counter() - t0, "s (not part of the eval time)")
    torch.manual_seed(0)
    model = create_backbone(s.eval_backbone, 512)
    ckpt = save_checkpoint(root / "model.pt", make_checkpoint(model, s.eval_backbone, 512, {},
                                                              role="student"))  # fmt: skip
    out = root / "report"
    t0 = time.perf_counter()
    _cli(["eval", f"{s.eval_backbone}={ckpt}", "--data", str(pack), "--out", str(out),
          "--device", str(ctx.device), "--batch-size", str(s.eval_batch),
          "--no-progress"])  # fmt: skip
    wall = ctx.figure("wall_s", time.perf_counter() - t0, f"s ({s.eval_backbone}, 3 protocols)")
    ctx.figure("images_per_s", 2 * s.eval_pairs * len(PROTOCOLS) / wall,
               "(pack images × protocols / wall)")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    ctx.figure("report_seconds", float(report["seconds"]), "s (evaluate_models itself)")
    scored = {r["protocol"]: r for r in report["results"]}
    for p in PROTOCOLS:
        ctx.figure(f"{p}.pairs_scored", int(scored[p]["num_pairs_scored"]), f"of {s.eval_pairs}")
        ctx.figure(f"{p}.accuracy", float(scored[p]["metrics"]["accuracy_mean"]),
                   "(untrained model: about 0.5)")  # fmt: skip
    missing = [p for p in PROTOCOLS if scored[p]["num_pairs_scored"] != s.eval_pairs]
    if missing:
        raise CheckFailedError(f"pairs skipped under {missing}")


# ---- driver -------------------------------------------------------------------------------------

_RUNNERS: dict[str, Callable[[Context], None]] = {
    "device": part_device,
    "mask": part_mask,
    "share": part_share,
    "throughput": part_throughput,
    "train": part_train,
    "eval": part_eval,
}


def run_part(ctx: Context, name: str) -> dict[str, Any]:
    """Run one part; its figures, time, peak GPU memory, and the failure if it failed."""
    ctx.part, ctx.figures = name, {}
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    error = None
    try:
        _RUNNERS[name](ctx)
    except Exception as exc:  # a part's failure is reported, and the next part runs
        error = f"{type(exc).__name__}: {exc}"
        print(f"{name:10s} FAILED {error}\n{traceback.format_exc()}", flush=True)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(ctx.device) if ctx.cuda else None
    print(f"{name:10s} {'ok' if error is None else 'FAILED'} in {seconds:.1f} s"
          + (f", peak GPU memory {peak / 2**30:.2f} GiB" if peak is not None else ""),
          flush=True)  # fmt: skip
    return {
        "ok": error is None,
        "seconds": round(seconds, 3),
        "peak_gpu_memory_bytes": peak,
        "figures": ctx.figures,
        "error": error,
    }


def _parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds on a CPU)")
    parser.add_argument("--parts", type=_parse_parts, default=list(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep runs and packs here (default: a temporary folder)")  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu)")
    sizes = SMOKE if args.smoke else Sizes()
    if sizes.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # tiny tensors: a second thread only spins on a shared machine
    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = args.workdir or Path(tmp)
        ctx = Context(device, sizes, workdir)
        parts = {name: run_part(ctx, name) for name in args.parts}
    summary = {
        "format": "distill-gpu-check",
        "version": 1,
        "device": str(device),
        "smoke": sizes.smoke,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "total_s": round(time.perf_counter() - start, 3),
        "ok": all(p["ok"] for p in parts.values()),
        "parts": parts,
    }
    text = json.dumps(summary, indent=1, default=str)
    print(f"total {summary['total_s']:.1f} s; failed parts: "
          f"{[n for n, p in parts.items() if not p['ok']] or 'none'}")  # fmt: skip
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
