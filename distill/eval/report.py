"""Results and reports: per model × dataset × protocol results, tables, JSON, Markdown, plots.

:class:`Report` holds everything an evaluation produced; :meth:`Report.write` saves
``report.json``, ``report.md``, ``scores.npz``, the ROC / score-histogram PNGs and the
protocol file next to them.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.metrics import roc_curve
from maskgen.io import atomic_write_text
from maskgen.protocol import PROTOCOLS, EvalProtocol, protocol_label

__all__ = ["REPORT_FORMAT", "EvalResult", "Report"]

_PROTOCOL_LABEL = {p: protocol_label(p) for p in PROTOCOLS}

REPORT_FORMAT = "distill-eval-report"


@dataclass
class EvalResult:
    """Metrics of one model × dataset × protocol.

    ``metrics`` is :func:`distill.metrics.verification_report` over the scored pairs plus
    ``accuracy_skipped_as_errors``. ``skipped`` maps skipped pair index → reason;
    ``scores`` / ``issame`` are the cosine scores and flags of the scored pairs (for plots).
    """

    model: str
    dataset: str
    protocol: str
    num_pairs_total: int
    num_pairs_scored: int
    metrics: dict[str, float | int]
    skipped: dict[int, str]
    scores: np.ndarray
    issame: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no score arrays; non-finite metrics as strings)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "num_pairs_total": self.num_pairs_total,
            "num_pairs_scored": self.num_pairs_scored,
            "num_pairs_skipped": len(self.skipped),
            "skipped_pairs": sorted(self.skipped),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
        }


def _json_number(v: float | int) -> float | int | str:
    """A metric as strict JSON allows it.

    >>> _json_number(float("inf")), _json_number(float("nan")), _json_number(0.5)
    ('inf', 'nan', 0.5)
    """
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def _pct(v: float) -> str:
    """A fraction as a percentage with two decimals.

    >>> _pct(0.98765)
    '98.77'
    """
    return f"{100 * v:.2f}"


_TABLE_HEADER = (
    "model",
    "dataset",
    "protocol",
    "pairs scored/total",
    "acc % (± std)",
    "EER %",
    "FMR100 %",
    "FMR1000 %",
    "FDR",
)


def _row(r: EvalResult) -> tuple[str, ...]:
    """One table row of a result."""
    m = r.metrics
    pairs = f"{r.num_pairs_scored}/{r.num_pairs_total}"
    if r.skipped:
        pairs += f" ({len(r.skipped)} skipped)"
    return (
        r.model,
        r.dataset,
        _PROTOCOL_LABEL[r.protocol],
        pairs,
        f"{_pct(m['accuracy_mean'])} ± {_pct(m['accuracy_std'])}",
        _pct(m["eer"]),
        _pct(m["fmr100"]),
        _pct(m["fmr1000"]),
        f"{m['fdr']:.3f}",
    )


@dataclass
class Report:
    """Everything an evaluation produced; :meth:`write` saves JSON, Markdown and PNGs."""

    results: list[EvalResult]
    protocol: EvalProtocol
    datasets: dict[str, dict[str, Any]]
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def result(self, model: str, dataset: str, protocol: str) -> EvalResult:
        """The result of one model × dataset × protocol."""
        for r in self.results:
            if (r.model, r.dataset, r.protocol) == (model, dataset, protocol):
                return r
        raise KeyError((model, dataset, protocol))

    def rows(self) -> list[tuple[str, ...]]:
        """Table rows, one per result (see ``_TABLE_HEADER``)."""
        return [_row(r) for r in self.results]

    def table(self) -> str:
        """Plain-text table (one row per model × dataset × protocol) plus skipped-pair notes."""
        rows = [_TABLE_HEADER, *self.rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(len(_TABLE_HEADER))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + self._skip_notes() + [f"warning: {w}" for w in self.warnings])

    def _skip_notes(self) -> list[str]:
        """One line per dataset × protocol with skipped pairs (the first 20 pair indices)."""
        notes = []
        for name, info in self.datasets.items():
            for proto, skipped in info["skipped_pairs"].items():
                if skipped:
                    ids = ", ".join(str(s["pair"]) for s in skipped[:20])
                    more = " …" if len(skipped) > 20 else ""
                    notes.append(
                        f"{name} {_PROTOCOL_LABEL[proto]}: skipped {len(skipped)} of "
                        f"{info['num_pairs']} pairs (metrics over the rest): {ids}{more}"
                    )
        return notes

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` content."""
        return {
            "format": REPORT_FORMAT,
            "version": 1,
            "seed": self.protocol.seed,
            "protocol_file": str(self.protocol.path) if self.protocol.path else None,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            "datasets": self.datasets,
            "results": [r.to_dict() for r in self.results],
        }

    def to_markdown(self) -> str:
        """Markdown: the metrics table, then every skipped pair with its reason."""
        lines = [
            "# Masked-face verification report",
            "",
            f"Seed {self.protocol.seed}; protocol file: "
            f"`{self.protocol.path if self.protocol.path else '(not saved)'}`. "
            "Accuracy: insightface 10-fold on squared L2 of flip-summed embeddings; "
            "EER, FMR100/FMR1000 (FNMR at FMR 1e-2 / 1e-3) and FDR on cosine scores. "
            "Metrics are over the scored pairs; skipped pairs are listed below.",
            "",
            "| " + " | ".join(_TABLE_HEADER) + " |",
            "|" + "|".join("---" for _ in _TABLE_HEADER) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        lines += ["", "## Skipped pairs", "", *self._skipped_markdown()]
        if self.warnings:
            lines += ["", "## Warnings", "", *(f"- {w}" for w in self.warnings)]
        return "\n".join(lines) + "\n"

    def _skipped_markdown(self) -> list[str]:
        """The Markdown list of skipped pairs with their reasons (or a line saying none)."""
        lines: list[str] = []
        for name, info in self.datasets.items():
            for proto, skipped in info["skipped_pairs"].items():
                if not skipped:
                    continue
                lines.append(
                    f"- **{name} {_PROTOCOL_LABEL[proto]}**: {len(skipped)} of "
                    f"{info['num_pairs']} pairs skipped"
                )
                lines += [
                    f"  - pair {s['pair']} (images {', '.join(map(str, s['images']))}): "
                    f"{s['reason']}"
                    for s in skipped
                ]
        return lines or ["None: every pair was scored."]

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``scores.npz``, ``roc_<dataset>.png`` and
        ``scores_<dataset>.png`` (plus ``protocol.json``) to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        proto_path = out / "protocol.json"
        if self.protocol.path is None or Path(self.protocol.path).resolve() != proto_path.resolve():
            atomic_write_text(proto_path, self.protocol.to_json())
        files["protocol"] = proto_path
        if self.protocol.path is None:
            self.protocol.path = proto_path
        files["json"] = atomic_write_text(
            out / "report.json", json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        )
        files["markdown"] = atomic_write_text(out / "report.md", self.to_markdown())
        files["scores"] = self._write_scores(out / "scores.npz")
        files.update(self._write_plots(out))
        self.files = files
        return files

    def _write_scores(self, npz: Path) -> Path:
        """``scores.npz``: ``<model>/<dataset>/<protocol>/scores`` and ``…/issame`` arrays."""
        arrays: dict[str, np.ndarray] = {}
        for r in self.results:
            key = f"{r.model}/{r.dataset}/{r.protocol}"
            arrays[f"{key}/scores"] = r.scores
            arrays[f"{key}/issame"] = r.issame
        np.savez_compressed(npz, **arrays)
        return npz

    def _write_plots(self, out: Path) -> dict[str, Path]:
        """``roc_<dataset>.png`` and ``scores_<dataset>.png``: every model × protocol of a set."""
        from distill.plots import plot_roc, plot_score_histograms

        files: dict[str, Path] = {}
        for dataset in dict.fromkeys(r.dataset for r in self.results):
            curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            hists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for r in self.results:
                if r.dataset != dataset:
                    continue
                label = f"{r.model} {_PROTOCOL_LABEL[r.protocol]}"
                fmr, tmr, _ = roc_curve(r.scores, r.issame)
                curves[label] = (fmr, tmr)
                hists[label] = (r.scores, r.issame)
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)
            files[f"roc_{dataset}"] = plot_roc(
                curves, out / f"roc_{safe}.png", title=f"ROC {dataset}"
            )
            files[f"scores_{dataset}"] = plot_score_histograms(hists, out / f"scores_{safe}.png")
        return files
