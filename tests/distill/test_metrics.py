"""Tests for distill.metrics and distill.plots, with hand-derived expected values."""

from __future__ import annotations

import json
import math
import os
import stat

import matplotlib.image as mpimg
import numpy as np
import pytest

from distill.metrics import (
    INSIGHTFACE_THRESHOLDS,
    eer,
    fdr,
    fnmr_at_fmr,
    genuine_impostor_stats,
    kfold_indices,
    l2_normalize,
    pair_distances,
    pair_scores,
    roc_curve,
    threshold_at_fmr,
    verification_accuracy,
    verification_report,
)
from distill.plots import plot_roc, plot_score_histograms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Unit vectors in 2-D: with A fixed, GEN_B is at squared distance 0.5 (cosine 0.75) and IMP_B at
# squared distance 2.0 (cosine 0); FAR_B at squared distance 3.0 (cosine -0.5).
A = np.array([1.0, 0.0])
GEN_B = np.array([0.75, math.sqrt(1 - 0.75**2)])
IMP_B = np.array([0.0, 1.0])
FAR_B = np.array([-0.5, math.sqrt(0.75)])


def _random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q


def _embed_2d(b_rows: np.ndarray, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Lift 2-D pairs (A, b) into `dim` dims, rotate them, and rescale every row randomly:
    distances after normalisation are unchanged, so the metrics must be too."""
    n = len(b_rows)
    a = np.zeros((n, dim))
    b = np.zeros((n, dim))
    a[:, :2] = A
    b[:, :2] = b_rows
    rot = _random_rotation(dim, rng)
    a = (a @ rot) * rng.uniform(0.5, 20.0, size=(n, 1))
    b = (b @ rot) * rng.uniform(0.5, 20.0, size=(n, 1))
    return a, b


# ----------------------------------------------------------------------------------------------
# Folds, normalisation, distances
# ----------------------------------------------------------------------------------------------


def test_kfold_indices_match_unshuffled_sklearn_kfold_layout() -> None:
    folds = kfold_indices(23, 10)
    sizes = [len(test) for _, test in folds]
    # sklearn KFold: 23 // 10 = 2 per fold, the first 23 % 10 = 3 folds get one more.
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.array_equal(np.concatenate([t for _, t in folds]), np.arange(23))
    for train, test in folds:
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(23))
        assert np.all(np.diff(test) == 1)  # contiguous block
        assert np.all(np.diff(train) > 0)  # sorted
    assert [len(t) for _, t in kfold_indices(6000, 10)] == [600] * 10
    train, test = kfold_indices(4, 1)[0]
    assert np.array_equal(train, np.arange(4)) and np.array_equal(test, np.arange(4))


def test_insightface_threshold_grid() -> None:
    assert INSIGHTFACE_THRESHOLDS.size == 400
    assert INSIGHTFACE_THRESHOLDS[0] == 0.0
    assert INSIGHTFACE_THRESHOLDS[-1] == pytest.approx(3.99)
    assert not INSIGHTFACE_THRESHOLDS.flags.writeable


def test_scores_are_cosine_and_distances_squared_l2() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 16))
    b = rng.normal(size=(50, 16))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(pair_scores(a, b), np.sum(an * bn, axis=1), atol=1e-12)
    np.testing.assert_allclose(pair_distances(a, b), np.sum((an - bn) ** 2, axis=1), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(a), axis=1), 1.0)


# ----------------------------------------------------------------------------------------------
# 10-fold accuracy
# ----------------------------------------------------------------------------------------------


def _reference_accuracy(
    dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray, n_folds: int
) -> tuple[list[float], list[float]]:
    """Deliberately naive re-statement of the protocol: loop over thresholds, strict `<`,
    first maximum wins, np.array_split gives the same contiguous fold sizes as KFold."""
    accs, best = [], []
    for test in np.array_split(np.arange(dist.size), n_folds):
        # One fold: insightface's LFold trains and tests on all pairs.
        train = test if n_folds == 1 else np.setdiff1d(np.arange(dist.size), test)
        best_acc, best_t = -1.0, None
        for t in thresholds:
            acc = np.mean((dist[train] < t) == same[train])
            if acc > best_acc:
                best_acc, best_t = acc, t
        best.append(best_t)
        accs.append(float(np.mean((dist[test] < best_t) == same[test])))
    return accs, best


def test_accuracy_perfect_separation() -> None:
    rng = np.random.default_rng(1)
    same = np.tile([True, False], 60)
    b_rows = np.where(same[:, None], GEN_B, IMP_B)
    a, b = _embed_2d(b_rows, dim=8, rng=rng)
    mean, std, best = verification_accuracy(a, b, same)
    assert mean == 1.0 and std == 0.0
    # Every threshold in (0.5, 2.0] is perfect on the training folds; the first one in the
    # grid (0.51) must win the tie.
    np.testing.assert_allclose(best, 0.51)
    assert best.shape == (10,)


def test_accuracy_known_errors_per_fold() -> None:
    # 100 pairs -> 10 folds of 10 (positions 0-4 genuine, 5-9 impostor in each fold).
    # In fold f, errors[f] pairs get embeddings of the wrong kind (alternately a genuine pair
    # that looks like an impostor and an impostor pair that looks genuine). The training folds
    # still prefer a threshold in (0.5, 2.0], so each fold's test accuracy is 1 - errors[f]/10.
    errors = [0, 1, 2, 3, 0, 1, 2, 0, 1, 0]
    same = np.tile([True] * 5 + [False] * 5, 10)
    looks_genuine = same.copy()
    for f, e in enumerate(errors):
        for j in range(e):
            pos = f * 10 + (j // 2 if j % 2 == 0 else 5 + j // 2)
            looks_genuine[pos] = not same[pos]
    b_rows = np.where(looks_genuine[:, None], GEN_B, IMP_B)
    a, b = _embed_2d(b_rows, dim=4, rng=np.random.default_rng(2))
    mean, std, best = verification_accuracy(a, b, same)
    fold_acc = 1 - np.array(errors) / 10
    assert mean == pytest.approx(np.mean(fold_acc), abs=1e-12)  # 0.9
    assert mean == pytest.approx(0.9, abs=1e-12)
    assert std == pytest.approx(np.std(fold_acc), abs=1e-12)  # population std
    np.testing.assert_allclose(best, 0.51)


def test_accuracy_uses_strict_less_than() -> None:
    # Impostor pairs at squared distance exactly 2.0: with the single threshold 2.0,
    # `dist < 2.0` is False, so they are correctly rejected.
    same = np.array([True, False] * 5)
    b_rows = np.where(same[:, None], A, IMP_B)
    a = np.tile(A, (10, 1))
    assert np.all(pair_distances(a, b_rows)[~same] == 2.0)
    mean, _, _ = verification_accuracy(a, b_rows, same, n_folds=5, thresholds=[2.0])
    assert mean == 1.0
    mean, _, _ = verification_accuracy(a, b_rows, same, n_folds=5, thresholds=[2.0 + 1e-9])
    assert mean == 0.5


def test_accuracy_matches_naive_reference_on_random_data() -> None:
    rng = np.random.default_rng(3)
    for n, n_folds in [(137, 10), (60, 10), (41, 3), (20, 1)]:
        a = rng.normal(size=(n, 5))
        b = a + rng.normal(scale=1.2, size=(n, 5))
        same = rng.random(n) < 0.5
        same[:2] = [True, False]
        b[~same] = rng.normal(size=(int((~same).sum()), 5))
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        dist = np.sum((an - bn) ** 2, axis=1)
        ref_accs, ref_best = _reference_accuracy(dist, same, INSIGHTFACE_THRESHOLDS, n_folds)
        mean, std, best = verification_accuracy(a, b, same, n_folds=n_folds)
        assert mean == pytest.approx(np.mean(ref_accs), abs=1e-12)
        assert std == pytest.approx(np.std(ref_accs), abs=1e-12)
        np.testing.assert_array_equal(best, ref_best)


# ----------------------------------------------------------------------------------------------
# ROC, EER, FNMR@FMR
# ----------------------------------------------------------------------------------------------


def test_roc_hand_built_with_ties() -> None:
    genuine = [0.9, 0.8, 0.8, 0.4]
    impostor = [0.8, 0.5, 0.3, 0.3]
    scores = np.array(genuine + impostor)
    same = np.array([True] * 4 + [False] * 4)
    perm = np.random.default_rng(4).permutation(8)  # order of pairs must not matter
    fmr, tmr, thr = roc_curve(scores[perm], same[perm])
    # Accept when score >= t. Distinct thresholds, high to low, with (genuine, impostor)
    # accepted counts:
    #   +inf: (0, 0)   0.9: (1, 0)   0.8: (3, 1)  <- the 0.8 tie (2 gen + 1 imp) enters at once
    #   0.5: (3, 2)    0.4: (4, 2)   0.3: (4, 4)  <- impostor tie at 0.3
    # FMR = imp / 4, TMR = gen / 4.
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.5, 0.4, 0.3])
    np.testing.assert_array_equal(fmr, [0.0, 0.0, 0.25, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(tmr, [0.0, 0.25, 0.75, 0.75, 1.0, 1.0])
    # FNMR = [1, .75, .25, .25, 0, 0]; FMR - FNMR = [-1, -.75, 0, ...]: crossing exactly at
    # the 0.8 point, EER = 0.25.
    assert eer(scores, same) == 0.25
    # FNMR at the lowest threshold with FMR <= target:
    assert fnmr_at_fmr(scores, same, 0.0) == 0.75  # t = 0.9
    assert fnmr_at_fmr(scores, same, 0.2) == 0.75  # t = 0.9 (0.8 would give FMR .25)
    assert fnmr_at_fmr(scores, same, 0.25) == 0.25  # t = 0.8
    assert fnmr_at_fmr(scores, same, 0.5) == 0.0  # t = 0.4 (lowest with FMR .5)
    assert threshold_at_fmr(scores, same, 0.5) == 0.4
    assert threshold_at_fmr(scores, same, 1.0) == 0.3


def test_eer_interpolates_inside_a_tie_group() -> None:
    # genuine [0.9, 0.5], impostor [0.5, 0.1]. Points (FMR, FNMR): +inf (0, 1), 0.9 (0, .5),
    # 0.5 (.5, 0), 0.1 (1, 0). FMR - FNMR goes -0.5 -> +0.5 between 0.9 and 0.5, so the
    # crossing is half-way: FMR = FNMR = 0.25.
    assert eer([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.25)


def test_perfect_and_inverted_separation() -> None:
    scores = np.array([0.99, 0.9, 0.8, 0.3, 0.2, 0.1])
    same = np.array([True, True, True, False, False, False])
    assert eer(scores, same) == 0.0
    assert fnmr_at_fmr(scores, same, 1e-3) == 0.0
    assert fnmr_at_fmr(scores, same, 0.0) == 0.0
    assert threshold_at_fmr(scores, same, 0.0) == 0.8
    # Every impostor scores above every genuine pair: the worst possible ranking.
    assert eer(scores, ~same) == 1.0
    assert fnmr_at_fmr(scores, ~same, 0.5) == 1.0


def test_identical_distributions() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=20_000)
    same = rng.random(20_000) < 0.5
    assert eer(scores, same) == pytest.approx(0.5, abs=0.02)
    assert fdr(scores, same) < 0.005
    fmr, tmr, _ = roc_curve(scores, same)
    assert np.all(np.diff(fmr) >= 0) and np.all(np.diff(tmr) >= 0)
    assert fmr[-1] == 1.0 and tmr[-1] == 1.0


def test_fmr100_fmr1000_hand_built() -> None:
    impostor = np.arange(1000) / 1000  # 0.000 .. 0.999, distinct
    # 10 genuine at 0.9985 (only the 0.999 impostor is above), 40 at 0.995,
    # 30 at 0.9895 (between the 11th and 10th highest impostors, 0.989 and 0.990), 20 at 0.5.
    genuine = np.repeat([0.9985, 0.995, 0.9895, 0.5], [10, 40, 30, 20])
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(100, bool), np.zeros(1000, bool)])
    # FMR <= 1e-2 allows 10 false matches; the lowest such threshold is 0.9895 (accepts the
    # impostors 0.990 .. 0.999 and 80 genuine pairs): FNMR = 20/100.
    assert fnmr_at_fmr(scores, same, 1e-2) == pytest.approx(0.2)
    assert threshold_at_fmr(scores, same, 1e-2) == 0.9895
    # FMR <= 1e-3 allows 1 false match: threshold 0.9985 accepts 10 genuine: FNMR = 0.9.
    assert fnmr_at_fmr(scores, same, 1e-3) == pytest.approx(0.9)
    assert threshold_at_fmr(scores, same, 1e-3) == 0.9985


# ----------------------------------------------------------------------------------------------
# FDR and score statistics
# ----------------------------------------------------------------------------------------------


def test_fdr_and_stats_hand_computed() -> None:
    # genuine [1, 3]: mean 2, population var 1; impostor [0, 0, 0, 4]: mean 1, var 3.
    # FDR = (2 - 1)^2 / (1 + 3) = 0.25 (sample variances would give 1 / 6 instead).
    scores = [1.0, 3.0, 0.0, 0.0, 0.0, 4.0]
    same = [1, 1, 0, 0, 0, 0]
    assert fdr(scores, same) == 0.25
    st = genuine_impostor_stats(scores, same)
    assert (st.genuine_mean, st.genuine_std) == (2.0, 1.0)
    assert st.impostor_mean == 1.0 and st.impostor_std == pytest.approx(math.sqrt(3))
    assert (st.num_genuine, st.num_impostor) == (2, 4)
    assert st.as_dict()["num_impostor"] == 4


def test_fdr_degenerate_zero_variance() -> None:
    assert fdr([1.0, 1.0, 0.0], [True, True, False]) == math.inf
    assert fdr([1.0, 1.0, 1.0], [True, True, False]) == 0.0


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def test_verification_report_keys_types_and_consistency() -> None:
    rng = np.random.default_rng(6)
    n = 400
    ids = rng.normal(size=(n, 32))
    same = np.tile([True, False], n // 2)
    a = ids + 0.6 * rng.normal(size=(n, 32))
    b = np.where(same[:, None], ids, rng.normal(size=(n, 32))) + 0.6 * rng.normal(size=(n, 32))
    report = verification_report(a, b, same)
    assert set(report) == {
        "accuracy_mean",
        "accuracy_std",
        "eer",
        "fmr100",
        "fmr1000",
        "fdr",
        "genuine_mean",
        "impostor_mean",
        "num_pairs",
        "threshold",
    }
    assert type(report["num_pairs"]) is int and report["num_pairs"] == n
    for key, value in report.items():
        if key != "num_pairs":
            assert type(value) is float, key
    json.loads(json.dumps(report))
    scores = pair_scores(a, b)
    mean, std, best = verification_accuracy(a, b, same)
    assert report["accuracy_mean"] == mean and report["accuracy_std"] == std
    assert report["threshold"] == pytest.approx(float(np.mean(best)))
    assert report["eer"] == eer(scores, same)
    assert report["fmr100"] == fnmr_at_fmr(scores, same, 0.01)
    assert report["fmr1000"] == fnmr_at_fmr(scores, same, 0.001)
    assert report["fdr"] == fdr(scores, same)
    assert report["genuine_mean"] > report["impostor_mean"]
    assert 0.5 < report["accuracy_mean"] <= 1.0 and 0.0 <= report["eer"] < 0.5


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

_E = np.eye(4)[[0, 1, 0, 1]] + 0.1
_SAME = [True, False, True, False]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: verification_accuracy(_E, _E[:3], _SAME, n_folds=2), "shapes differ"),
        (lambda: verification_accuracy(_E, _E, _SAME[:3], n_folds=2), "length mismatch"),
        (lambda: verification_accuracy(np.zeros((0, 4)), np.zeros((0, 4)), []), "empty"),
        (lambda: verification_accuracy(_E[0], _E[0], [True]), "2-D"),
        (lambda: verification_accuracy(_E * np.nan, _E, _SAME, n_folds=2), "NaN"),
        (lambda: verification_accuracy(_E, _E, [True] * 4, n_folds=2), "no impostor"),
        (lambda: verification_accuracy(_E, _E, [False] * 4, n_folds=2), "no genuine"),
        (lambda: verification_accuracy(_E, _E, _SAME, n_folds=10), "folds"),
        (lambda: verification_accuracy(_E, _E, _SAME, n_folds=0), "n_folds"),
        (lambda: verification_accuracy(_E, _E, _SAME, n_folds=2, thresholds=[]), "threshold"),
        (lambda: verification_accuracy(_E * 0, _E, _SAME, n_folds=2), "zero norm"),
        (lambda: verification_report(_E, _E, [1, 0, 2, 0], n_folds=2), "0/1"),
        (lambda: verification_report(_E, _E, [True] * 4, n_folds=2), "no impostor"),
        (lambda: roc_curve([], []), "empty"),
        (lambda: roc_curve([0.1, 0.2], [True]), "length mismatch"),
        (lambda: eer([0.1, np.nan], [True, False]), "NaN"),
        (lambda: eer([0.1, 0.2], [True, True]), "no impostor"),
        (lambda: fdr([0.1, 0.2], [False, False]), "no genuine"),
        (lambda: fnmr_at_fmr([0.1, 0.2], [True, False], 1.5), "fmr_target"),
        (lambda: fnmr_at_fmr([0.1, 0.2], [True, False], -0.1), "fmr_target"),
        (lambda: genuine_impostor_stats([[0.1, 0.2]], [True, False]), "1-D"),
    ],
)
def test_validation_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_issame_accepts_0_1_numbers() -> None:
    scores = [0.9, 0.1, 0.8, 0.2]
    assert eer(scores, [1, 0, 1, 0]) == eer(scores, [True, False, True, False]) == 0.0


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _check_png(path, min_h: int, min_w: int) -> None:
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] >= min_h and img.shape[1] >= min_w
    assert float(img.std()) > 0.0  # not a blank canvas


def test_plot_roc_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(7)
    same = rng.random(3000) < 0.5
    good = rng.normal(size=3000) + 3.0 * same
    weak = rng.normal(size=3000) + 1.0 * same
    perfect = np.where(same, 1.0, 0.0) + 0.01 * rng.random(3000)  # FMR 0 up to TMR 1
    curves = {name: roc_curve(s, same)[:2] for name, s in [("good", good), ("weak", weak)]}
    curves["perfect"] = roc_curve(perfect, same)[:2]
    out = tmp_path / "sub" / "roc.png"
    assert plot_roc(curves, out) == out
    _check_png(out, 400, 500)
    # Overwrite in place, no temporary files left behind.
    plot_roc({"good": curves["good"]}, str(out))
    _check_png(out, 400, 500)
    assert os.listdir(out.parent) == ["roc.png"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(ValueError, match="empty"):
        plot_roc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="equal length"):
        plot_roc({"bad": ([0.0, 1.0], [0.0])}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_score_histograms_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(8)
    same = rng.random(2000) < 0.5
    data = {
        "NM-NM": (rng.normal(size=2000) * 0.1 + 0.5 * same, same),
        "M-M": (rng.normal(size=2000) * 0.1 + 0.2 * same, same.astype(int)),
        "constant": (np.ones(4), [True, False, True, False]),
    }
    out = tmp_path / "hist.png"
    plot_score_histograms(data, out)
    _check_png(out, 3 * 200, 500)
    assert os.listdir(tmp_path) == ["hist.png"]
    with pytest.raises(ValueError, match=r"'bad'.*no impostor"):
        plot_score_histograms({"bad": ([0.1, 0.2], [True, True])}, tmp_path / "y.png")
    with pytest.raises(ValueError, match="empty"):
        plot_score_histograms({}, tmp_path / "y.png")
