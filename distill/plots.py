"""Verification plots: ROC curves (log-scale FMR) and genuine/impostor score histograms.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no GUI,
no global state, safe in headless jobs and worker threads) and saved atomically: the PNG is
written through :func:`maskgen.io.atomic_open` (a temporary file in the destination folder,
then ``os.replace``), so a reader never sees a half-written image.

Example:

>>> import os, tempfile
>>> import numpy as np
>>> from distill.metrics import roc_curve
>>> from distill.plots import plot_roc
>>> scores = np.array([0.9, 0.7, 0.4, 0.2])
>>> issame = np.array([True, False, True, False])
>>> fmr, tmr, _ = roc_curve(scores, issame)
>>> with tempfile.TemporaryDirectory() as d:
...     out = plot_roc({"model": (fmr, tmr)}, os.path.join(d, "roc.png"))
...     out.read_bytes()[:4] == b"\\x89PNG"
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from distill.metrics import eer, fdr
from maskgen.io.atomic import atomic_open

__all__ = ["plot_roc", "plot_score_histograms", "save_figure_atomic"]


def save_figure_atomic(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (:func:`maskgen.io.atomic_open`).

    The parent folder is created if needed; the file gets the usual ``0o666 & ~umask`` mode.
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    FigureCanvasAgg(fig)  # attach an Agg canvas whatever the global backend is
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return out


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    title: str = "ROC",
) -> Path:
    """Plot one or more ROC curves (TMR vs FMR, FMR on a log axis) and save a PNG.

    Args:
        curves: ``name -> (fmr, tmr)``, e.g. from :func:`distill.metrics.roc_curve`.
        path: destination PNG.
        title: figure title.

    Points with FMR = 0 cannot be shown on a log axis; they are drawn at the left edge of the
    plot (one decade below the smallest positive FMR over all curves, at most 1e-4), so each
    curve still starts at its true zero-FMR TMR. Dotted vertical lines mark FMR = 1e-2 and
    1e-3 (the FMR100 / FMR1000 operating points).
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (fmr, tmr) in curves.items():
        f = np.asarray(fmr, dtype=np.float64)
        t = np.asarray(tmr, dtype=np.float64)
        if f.ndim != 1 or f.shape != t.shape or f.size == 0:
            raise ValueError(f"curve {name!r}: fmr and tmr must be non-empty 1-D of equal length")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(t))):
            raise ValueError(f"curve {name!r} contains NaN or infinite values")
        data[name] = (f, t)

    positive = [f[f > 0].min() for f, _ in data.values() if np.any(f > 0)]
    smallest = min(positive) if positive else 1.0
    x_min = min(1e-4, 10.0 ** (math.floor(math.log10(smallest)) - 1))

    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.add_subplot()
    for name, (f, t) in data.items():
        ax.plot(np.clip(f, x_min, None), t, label=name, linewidth=1.5)
    for x in (1e-3, 1e-2):
        ax.axvline(x, color="0.6", linestyle=":", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xlim(x_min, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False match rate (FMR)")
    ax.set_ylabel("True match rate (TMR = 1 - FNMR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_score_histograms(
    scores_by_name: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    bins: int = 60,
) -> Path:
    """Genuine vs impostor score histograms, one panel per name, saved as a PNG.

    Args:
        scores_by_name: ``name -> (scores, issame)`` (e.g. ``"M-NM" -> (cosine scores, flags)``).
        path: destination PNG.
        bins: number of histogram bins (shared by both distributions of a panel).

    Histograms are density-normalised so that unequal genuine/impostor counts compare; each
    panel title carries the EER and FDR of its scores.
    """
    if not scores_by_name:
        raise ValueError("scores_by_name is empty: nothing to plot")
    panels = []
    for name, (scores, issame) in scores_by_name.items():
        # eer/fdr validate (shapes, NaN, 0/1 flags, both classes present) with clear messages.
        try:
            panel_eer, panel_fdr = eer(scores, issame), fdr(scores, issame)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from exc
        s = np.asarray(scores, dtype=np.float64)
        same = np.asarray(issame).astype(bool)
        panels.append((name, s, same, panel_eer, panel_fdr))

    n = len(panels)
    fig = Figure(figsize=(6.0, 2.6 * n))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (name, s, same, panel_eer, panel_fdr) in zip(axes, panels, strict=True):
        lo, hi = float(s.min()), float(s.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        ax.hist(s[~same], bins=edges, density=True, alpha=0.6, label="impostor", color="tab:red")
        ax.hist(s[same], bins=edges, density=True, alpha=0.6, label="genuine", color="tab:blue")
        ax.set_title(f"{name}  (EER {100 * panel_eer:.2f} %, FDR {panel_fdr:.2f})")
        ax.set_xlabel("similarity score")
        ax.set_ylabel("density")
        ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure_atomic(fig, path)
