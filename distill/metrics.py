"""Face-verification metrics for pair protocols (NM-NM, M-NM, M-M), in pure numpy.

Two families of metrics live here:

* **10-fold accuracy** (:func:`verification_accuracy`), following the protocol of insightface's
  ``recognition/arcface_torch/eval/verification.py`` so that numbers are comparable with the
  published LFW / CFP / AgeDB tables. It works on *squared L2 distances* of L2-normalised
  embeddings and a fixed threshold grid.
* **Score-based metrics** (:func:`roc_curve`, :func:`eer`, :func:`fnmr_at_fmr`, :func:`fdr`,
  :func:`genuine_impostor_stats`) on *similarity scores*: the cosine similarity of the
  normalised embeddings, ``s = 1 - d**2 / 2`` (higher = more similar). A pair is accepted as a
  match when ``score >= threshold``. These are the ISO/IEC 19795-1 style numbers reported by
  the MaskInv paper (EER, FMR100, FMR1000, FDR).

:func:`verification_report` computes all of them at once and returns a JSON-serialisable dict.

Vocabulary: a *genuine* pair shows the same identity (``issame`` true), an *impostor* pair two
different identities. FMR = fraction of impostor pairs accepted; FNMR = fraction of genuine
pairs rejected; TMR = 1 - FNMR.

Example:

>>> import numpy as np
>>> from distill.metrics import eer, fnmr_at_fmr, roc_curve
>>> scores = np.array([0.9, 0.7, 0.4, 0.2])
>>> issame = np.array([True, True, False, False])
>>> fmr, tmr, thr = roc_curve(scores, issame)
>>> fmr.tolist(), tmr.tolist()
([0.0, 0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0])
>>> eer(scores, issame), fnmr_at_fmr(scores, issame, 1e-3)
(0.0, 0.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "INSIGHTFACE_THRESHOLDS",
    "ScoreStats",
    "eer",
    "fdr",
    "fnmr_at_fmr",
    "genuine_impostor_stats",
    "kfold_indices",
    "l2_normalize",
    "pair_distances",
    "pair_scores",
    "roc_curve",
    "threshold_at_fmr",
    "verification_accuracy",
    "verification_report",
]

#: insightface's accuracy threshold grid on squared L2 distance: 0.00, 0.01, ..., 3.99.
#: (Squared distances of unit vectors lie in [0, 4].) Read-only; copy before modifying.
INSIGHTFACE_THRESHOLDS: np.ndarray = np.arange(0, 4, 0.01)
INSIGHTFACE_THRESHOLDS.setflags(write=False)


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def _as_issame(issame: ArrayLike, n: int, name: str = "issame") -> np.ndarray:
    """Return ``issame`` as a 1-D bool array of length ``n`` (accepts bools or 0/1 numbers)."""
    arr = np.asarray(issame)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"length mismatch: {n} pairs but {arr.size} {name} flags")
    if arr.dtype == bool:
        return arr
    if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.all((arr == 0) | (arr == 1))):
        raise ValueError(f"{name} must contain only booleans or 0/1 values")
    return arr.astype(bool)


def _require_both_classes(issame: np.ndarray) -> None:
    n_gen = int(issame.sum())
    if n_gen == 0:
        raise ValueError("no genuine pairs (issame is all False): metrics are undefined")
    if n_gen == issame.size:
        raise ValueError("no impostor pairs (issame is all True): metrics are undefined")


def _check_embeddings(embeddings_a: ArrayLike, embeddings_b: ArrayLike) -> tuple[np.ndarray, ...]:
    a = np.asarray(embeddings_a, dtype=np.float64)
    b = np.asarray(embeddings_b, dtype=np.float64)
    for name, e in (("embeddings_a", a), ("embeddings_b", b)):
        if e.ndim != 2:
            raise ValueError(f"{name} must be 2-D (pairs, dim), got shape {e.shape}")
        if e.shape[0] == 0 or e.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {e.shape})")
        if not np.all(np.isfinite(e)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _check_scores(scores: ArrayLike, issame: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if s.size == 0:
        raise ValueError("scores is empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    same = _as_issame(issame, s.size)
    _require_both_classes(same)
    return s, same


# ----------------------------------------------------------------------------------------------
# Embeddings -> distances / scores
# ----------------------------------------------------------------------------------------------


def l2_normalize(embeddings: ArrayLike) -> np.ndarray:
    """L2-normalise each row (float64), as ``sklearn.preprocessing.normalize`` does.

    Unlike sklearn, which silently leaves all-zero rows at zero, a zero-norm row raises
    ``ValueError``: it means the model produced no embedding and any score would be arbitrary.

    >>> l2_normalize([[3.0, 4.0]]).tolist()
    [[0.6, 0.8]]
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise ValueError(f"{bad.size} embedding(s) have zero norm (first at row {bad[0]})")
    return e / norms


def pair_distances(embeddings_a: ArrayLike, embeddings_b: ArrayLike) -> np.ndarray:
    """Squared L2 distance of the L2-normalised embeddings of each pair (range [0, 4]).

    >>> pair_distances([[1.0, 0.0]], [[0.0, 2.0]]).tolist()
    [2.0]
    """
    a, b = _check_embeddings(embeddings_a, embeddings_b)
    diff = l2_normalize(a) - l2_normalize(b)
    return np.sum(diff * diff, axis=1)


def pair_scores(embeddings_a: ArrayLike, embeddings_b: ArrayLike) -> np.ndarray:
    """Cosine similarity of each pair, computed as ``1 - d**2 / 2`` from :func:`pair_distances`.

    Deriving the score from the same distance the accuracy protocol uses guarantees that both
    rank the pairs identically.

    >>> pair_scores([[1.0, 0.0]], [[0.0, 2.0]]).tolist()
    [0.0]
    """
    return 1.0 - 0.5 * pair_distances(embeddings_a, embeddings_b)


# ----------------------------------------------------------------------------------------------
# insightface-style 10-fold accuracy
# ----------------------------------------------------------------------------------------------


def kfold_indices(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unshuffled K-fold ``(train, test)`` index splits, identical to sklearn's
    ``KFold(n_splits=n_folds, shuffle=False)``: contiguous test blocks in order, the first
    ``n % n_folds`` blocks one element larger. ``n_folds == 1`` gives ``train == test == all``
    (insightface's ``LFold`` fallback).

    >>> [test.tolist() for _, test in kfold_indices(5, 2)]
    [[0, 1, 2], [3, 4]]
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if n < n_folds:
        raise ValueError(f"cannot split {n} pairs into {n_folds} folds")
    idx = np.arange(n)
    if n_folds == 1:
        return [(idx, idx)]
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [
        (np.concatenate([idx[:lo], idx[hi:]]), idx[lo:hi]) for lo, hi in pairwise(bounds.tolist())
    ]


def _correct_counts(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold t, the number of pairs classified correctly by ``dist < t``."""
    gen = np.sort(dist[same])
    imp = np.sort(dist[~same])
    true_accepts = np.searchsorted(gen, thresholds, side="left")  # genuine with d < t
    true_rejects = imp.size - np.searchsorted(imp, thresholds, side="left")  # impostor d >= t
    return true_accepts + true_rejects


def verification_accuracy(
    embeddings_a: ArrayLike,
    embeddings_b: ArrayLike,
    issame: ArrayLike,
    n_folds: int = 10,
    thresholds: ArrayLike | None = None,
) -> tuple[float, float, np.ndarray]:
    """K-fold verification accuracy, insightface protocol.

    The protocol, matching ``calculate_roc`` / ``calculate_accuracy`` / ``test`` in insightface's
    ``recognition/arcface_torch/eval/verification.py``:

    1. The caller passes *flip-summed* embeddings (embedding(image) + embedding(flipped image));
       here each row is L2-normalised (float64).
    2. Distance = squared L2 distance of the normalised pair, in [0, 4].
    3. A pair is predicted "same" when ``distance < threshold`` (strict). Accuracy is
       ``(TP + TN) / number of pairs`` of the set being scored.
    4. Pairs are split into ``n_folds`` *unshuffled*, contiguous folds (sklearn ``KFold``
       without shuffling; see :func:`kfold_indices`).
    5. For each fold, the threshold with the highest accuracy on the other folds is chosen
       (``np.argmax``: on ties the *first* best threshold in grid order, i.e. the smallest for
       an ascending grid), and the accuracy of that threshold on the held-out fold is recorded.
    6. Reported: mean and *population* standard deviation (``np.std``, ddof=0) of the per-fold
       test accuracies.

    Differences from insightface: mismatched lengths raise instead of being truncated, and a
    zero-norm embedding raises instead of being kept at zero.

    Args:
        embeddings_a: (N, D) embeddings of the first image of each pair.
        embeddings_b: (N, D) embeddings of the second image of each pair.
        issame: (N,) bool, True for genuine pairs.
        n_folds: number of folds (insightface: 10). 1 means train = test = all pairs.
        thresholds: squared-distance threshold grid; default ``np.arange(0, 4, 0.01)``
            (insightface's grid for accuracy: 400 values 0.00 .. 3.99).

    Returns:
        ``(mean_accuracy, std_accuracy, best_thresholds)``, the last of shape ``(n_folds,)``.

    >>> a = np.array([[1.0, 0.0]] * 4)
    >>> b = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    >>> mean, std, thr = verification_accuracy(a, b, [True, False, True, False], n_folds=2)
    >>> mean, std, thr.round(2).tolist()
    (1.0, 0.0, [0.01, 0.01])
    """
    a, b = _check_embeddings(embeddings_a, embeddings_b)
    same = _as_issame(issame, a.shape[0])
    _require_both_classes(same)
    thr = INSIGHTFACE_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
    if thr.ndim != 1 or thr.size == 0:
        raise ValueError("thresholds must be a non-empty 1-D array")
    if np.any(np.isnan(thr)):
        raise ValueError("thresholds contain NaN")

    dist = pair_distances(a, b)
    folds = kfold_indices(dist.size, n_folds)
    accuracies = np.empty(len(folds))
    best = np.empty(len(folds))
    for k, (train, test) in enumerate(folds):
        best_idx = int(np.argmax(_correct_counts(dist[train], same[train], thr)))
        best[k] = thr[best_idx]
        correct = _correct_counts(dist[test], same[test], thr[best_idx : best_idx + 1])[0]
        accuracies[k] = correct / test.size
    return float(np.mean(accuracies)), float(np.std(accuracies)), best


# ----------------------------------------------------------------------------------------------
# Score-based metrics
# ----------------------------------------------------------------------------------------------


def _roc_counts(
    s: np.ndarray, same: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Cumulative (false matches, true matches) at ``+inf`` and every distinct score."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    g_sorted = same[order]
    # Last position of each group of tied scores: the whole tie group is accepted together.
    ends = np.concatenate([np.flatnonzero(np.diff(s_sorted) != 0), [s.size - 1]])
    tm = np.concatenate([[0], np.cumsum(g_sorted)[ends]])
    fm = np.concatenate([[0], ends + 1 - tm[1:]])
    thresholds = np.concatenate([[np.inf], s_sorted[ends]])
    n_gen = int(same.sum())
    return fm, tm, thresholds, n_gen, s.size - n_gen


def roc_curve(scores: ArrayLike, issame: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC of similarity scores: one point per distinct score.

    A pair is accepted when ``score >= threshold``. ``thresholds`` starts with ``+inf``
    (nothing accepted: FMR = TMR = 0) followed by every distinct score in decreasing order, so
    the last point is (1, 1). Tied scores are accepted together, hence form one point (no
    artificial staircase through a tie group). FMR and TMR are non-decreasing.

    Returns:
        ``(fmr, tmr, thresholds)``, each of shape ``(number of distinct scores + 1,)``.

    >>> fmr, tmr, thr = roc_curve([0.5, 0.5, 0.1], [True, False, False])
    >>> fmr.tolist(), tmr.tolist(), thr.tolist()
    ([0.0, 0.5, 1.0], [0.0, 1.0, 1.0], [inf, 0.5, 0.1])
    """
    s, same = _check_scores(scores, issame)
    fm, tm, thresholds, n_gen, n_imp = _roc_counts(s, same)
    return fm / n_imp, tm / n_gen, thresholds


def eer(scores: ArrayLike, issame: ArrayLike) -> float:
    """Equal error rate: where FMR and FNMR cross on the exact ROC.

    Walking the ROC from the strictest threshold, FMR rises from 0 and FNMR falls from 1. The
    EER is taken at the first ROC point where ``FMR >= FNMR``; if they are not equal there, the
    crossing is linearly interpolated on the segment from the previous point (the operating
    point reachable by randomly mixing the two thresholds, i.e. the ROC convex-combination
    line). Perfect separation gives 0; identical genuine/impostor distributions give ~0.5.

    >>> eer([0.9, 0.5, 0.5, 0.1], [True, True, False, False])
    0.25
    """
    s, same = _check_scores(scores, issame)
    fm, tm, _, n_gen, n_imp = _roc_counts(s, same)
    fmr = fm / n_imp
    fnmr = (n_gen - tm) / n_gen
    gap = fmr - fnmr  # -1 at the first point, +1 at the last: a crossing always exists
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(fmr[i])
    alpha = -gap[i - 1] / (gap[i] - gap[i - 1])
    at_fmr = fmr[i - 1] + alpha * (fmr[i] - fmr[i - 1])
    at_fnmr = fnmr[i - 1] + alpha * (fnmr[i] - fnmr[i - 1])
    return float(0.5 * (at_fmr + at_fnmr))


def _operating_point(s: np.ndarray, same: np.ndarray, fmr_target: float) -> tuple[float, float]:
    if not (np.isfinite(fmr_target) and 0.0 <= fmr_target <= 1.0):
        raise ValueError(f"fmr_target must be in [0, 1], got {fmr_target}")
    fm, tm, thresholds, n_gen, n_imp = _roc_counts(s, same)
    # FMR is non-decreasing along the ROC, so the admissible points are a prefix; the last one
    # is the lowest threshold (largest TMR). Point 0 (+inf, FMR 0) is always admissible.
    i = int(np.flatnonzero(fm / n_imp <= fmr_target)[-1])
    return float((n_gen - tm[i]) / n_gen), float(thresholds[i])


def fnmr_at_fmr(scores: ArrayLike, issame: ArrayLike, fmr_target: float) -> float:
    """FNMR at the lowest threshold whose FMR is at most ``fmr_target``.

    This is the ISO/IEC 19795-1 style "FNMR @ FMR = x" used by the MaskInv paper:
    ``fmr_target=1e-2`` gives FMR100, ``1e-3`` gives FMR1000. The threshold is chosen among the
    exact ROC thresholds (:func:`roc_curve`), so the realised FMR never exceeds the target
    (no interpolation). With fewer than ``1 / fmr_target`` impostor pairs the only admissible
    FMR is 0, so the value is then the FNMR at zero false matches.

    >>> fnmr_at_fmr([0.9, 0.8, 0.85, 0.1], [True, True, False, False], 0.0)
    0.5
    """
    s, same = _check_scores(scores, issame)
    return _operating_point(s, same, fmr_target)[0]


def threshold_at_fmr(scores: ArrayLike, issame: ArrayLike, fmr_target: float) -> float:
    """Score threshold used by :func:`fnmr_at_fmr` (``+inf`` if no pair can be accepted).

    >>> threshold_at_fmr([0.9, 0.8, 0.85, 0.1], [True, True, False, False], 0.0)
    0.9
    """
    s, same = _check_scores(scores, issame)
    return _operating_point(s, same, fmr_target)[1]


@dataclass(frozen=True)
class ScoreStats:
    """Means, population standard deviations and counts of genuine and impostor scores."""

    genuine_mean: float
    genuine_std: float
    impostor_mean: float
    impostor_std: float
    num_genuine: int
    num_impostor: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def genuine_impostor_stats(scores: ArrayLike, issame: ArrayLike) -> ScoreStats:
    """Summary statistics of the genuine and impostor score distributions (std: ddof=0).

    >>> genuine_impostor_stats([1.0, 3.0, 0.0], [True, True, False])
    ScoreStats(genuine_mean=2.0, genuine_std=1.0, impostor_mean=0.0, impostor_std=0.0, num_genuine=2, num_impostor=1)
    """  # noqa: E501
    s, same = _check_scores(scores, issame)
    gen, imp = s[same], s[~same]
    return ScoreStats(
        genuine_mean=float(gen.mean()),
        genuine_std=float(gen.std()),
        impostor_mean=float(imp.mean()),
        impostor_std=float(imp.std()),
        num_genuine=int(gen.size),
        num_impostor=int(imp.size),
    )


def fdr(scores: ArrayLike, issame: ArrayLike) -> float:
    """Fisher discriminant ratio ``(mu_G - mu_I)**2 / (sigma_G**2 + sigma_I**2)``.

    Variances are *population* variances (``np.var``, ddof=0), matching
    :func:`genuine_impostor_stats`.
    Higher = better separated genuine and impostor distributions. Degenerate case: if both
    variances are 0, the result is ``inf`` when the means differ and 0.0 when they are equal.

    >>> fdr([1.0, 3.0, 0.0, 0.0, 0.0, 4.0], [True, True, False, False, False, False])
    0.25
    """
    s, same = _check_scores(scores, issame)
    gen, imp = s[same], s[~same]
    num = (gen.mean() - imp.mean()) ** 2
    den = gen.var() + imp.var()
    if den == 0:
        return float("inf") if num > 0 else 0.0
    return float(num / den)


# ----------------------------------------------------------------------------------------------
# One-call report
# ----------------------------------------------------------------------------------------------


def verification_report(
    emb_a: ArrayLike, emb_b: ArrayLike, issame: ArrayLike, n_folds: int = 10
) -> dict[str, float | int]:
    """All verification metrics for one pair set, as a JSON-serialisable dict.

    ``emb_a`` / ``emb_b`` are the (flip-summed) embeddings of the first / second image of each
    pair. Keys:

    - ``accuracy_mean``, ``accuracy_std``: insightface K-fold accuracy
      (:func:`verification_accuracy`), on squared L2 distance;
    - ``threshold``: mean of the per-fold best squared-distance thresholds;
    - ``eer``, ``fmr100`` (FNMR at FMR = 1e-2), ``fmr1000`` (FNMR at FMR = 1e-3), ``fdr``,
      ``genuine_mean``, ``impostor_mean``: on cosine-similarity scores (:func:`pair_scores`);
    - ``num_pairs``.

    Values are Python floats / ints (``fdr`` may be ``inf`` for perfectly separated, zero-spread
    scores).

    >>> a = np.array([[1.0, 0.0]] * 4)
    >>> b = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    >>> r = verification_report(a, b, [True, False, True, False], n_folds=2)
    >>> r["accuracy_mean"], r["eer"], r["fmr1000"], r["num_pairs"]
    (1.0, 0.0, 0.0, 4)
    """
    a, b = _check_embeddings(emb_a, emb_b)
    same = _as_issame(issame, a.shape[0])
    _require_both_classes(same)
    acc_mean, acc_std, best = verification_accuracy(a, b, same, n_folds=n_folds)
    scores = pair_scores(a, b)
    stats = genuine_impostor_stats(scores, same)
    return {
        "accuracy_mean": float(acc_mean),
        "accuracy_std": float(acc_std),
        "eer": eer(scores, same),
        "fmr100": fnmr_at_fmr(scores, same, 1e-2),
        "fmr1000": fnmr_at_fmr(scores, same, 1e-3),
        "fdr": fdr(scores, same),
        "genuine_mean": stats.genuine_mean,
        "impostor_mean": stats.impostor_mean,
        "num_pairs": int(same.size),
        "threshold": float(np.mean(best)),
    }
