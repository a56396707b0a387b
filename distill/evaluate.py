"""Masked-face verification: protocols (NM-NM, M-NM, M-M), embeddings, metrics and reports.

A verification set holds 2N images and N same/different flags; pair ``k`` is images ``2k`` and
``2k + 1``. Two kinds of sets are read:

* insightface ``.bin`` packs (``lfw.bin``, ``agedb_30.bin`` …) through the safe loader
  :func:`maskgen.io.load_bin`;
* image folders with a pairs file (:func:`load_pairs`): the LFW ``pairs.txt`` format or a
  simple ``path_a path_b same`` list (MFR2-style sets).

Protocols (see ``docs/evaluation.md``):

* ``nm-nm``: no image masked;
* ``m-nm``: in **every** pair exactly the second image is masked, the first is clean
  (byte-identical to the NM-NM image);
* ``m-m``: both images of every pair are masked, each with its own independent draw.

Protocols, their draws and the protocol file live in :mod:`maskgen.protocol`, shared with
``maskgen render --protocol``: image ``i`` is drawn from (seed, ``f"{i:06d}"``) by
:func:`maskgen.seeding.draw_item`, written to a *protocol file* (:class:`EvalProtocol`), so
every model is scored on identical images and reusing the file reproduces them exactly.

Embeddings are flip-summed (``model(x) + model(flip(x))``) on 112×112 inputs normalised to
``[-1, 1]``; metrics come from :func:`distill.metrics.verification_report`. Pairs that cannot
be scored (unreadable image, no landmarks) are *skipped and reported*, never dropped
silently: every result carries ``num_pairs_total``, ``num_pairs_scored`` and the skipped pair
indices, metrics are computed over the scored pairs, and ``accuracy_skipped_as_errors``
counts every skipped pair as a wrong decision.

Example:
    >>> parse_protocols("m-m, NM-NM")
    ('nm-nm', 'm-m')
    >>> draws = protocol_draws("m-nm", num_images=4, seed=0)
    >>> [d is None for d in draws]
    [True, False, True, False]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from distill.checkpoint import CheckpointError, load_backbone
from distill.metrics import pair_scores, roc_curve, verification_report
from maskgen.io import BinPack, ImageReadError, atomic_write_text, load_bin, read_image
from maskgen.landmarks import ARCFACE_112, similarity_transform, to_five
from maskgen.protocol import (
    PROTOCOLS,
    DatasetProtocol,
    EvalProtocol,
    ProtocolFileError,
    dataset_sha256,
    parse_protocols,
    protocol_draws,
    protocol_label,
    protocol_landmarks,
)
from maskgen.render import MaskParams, MaskSpec, render

__all__ = [
    "PROTOCOLS",
    "CheckpointError",
    "DatasetProtocol",
    "EvalProtocol",
    "EvalResult",
    "PairsFileError",
    "PairsSet",
    "ProtocolFileError",
    "Report",
    "dataset_sha256",
    "embed_images",
    "evaluate_models",
    "load_dataset",
    "load_model",
    "load_pairs",
    "parse_protocols",
    "protocol_draws",
]

_PROTOCOL_LABEL = {p: protocol_label(p) for p in PROTOCOLS}

REPORT_FORMAT = "distill-eval-report"
INPUT_SIZE = 112

#: A landmark function: RGB image → (68, 2) or (5, 2) landmarks, or ``None`` (no face).
LandmarkFn = Callable[[np.ndarray], np.ndarray | None]


class PairsFileError(ValueError):
    """A pairs file that is malformed or names missing images."""


# ----------------------------------------------------------------------------------------------
# Image folders with a pairs file
# ----------------------------------------------------------------------------------------------


@dataclass
class PairsSet:
    """Image files in pairs: ``paths[2k]`` and ``paths[2k + 1]`` form pair ``k``.

    Mirrors :class:`maskgen.io.BinPack` (``num_pairs``, ``num_images``, ``issame``,
    ``decode(i)``), so both kinds of set are evaluated the same way.
    """

    paths: list[Path]
    issame: list[bool]
    path: Path | None = None

    @property
    def num_pairs(self) -> int:
        """Number of pairs (= ``len(issame)``)."""
        return len(self.issame)

    @property
    def num_images(self) -> int:
        """Number of images (= ``2 * num_pairs``)."""
        return len(self.paths)

    def decode(self, i: int) -> np.ndarray:
        """Read image ``i`` as H×W×3 ``uint8`` RGB (:class:`ImageReadError` if unreadable)."""
        return read_image(self.paths[i])


def _parse_flag(token: str) -> bool | None:
    t = token.strip().lower()
    if t in ("1", "true", "same", "yes", "y", "genuine"):
        return True
    if t in ("0", "false", "diff", "different", "no", "n", "impostor"):
        return False
    return None


def _lfw_path(root: Path, name: str, number: str) -> Path:
    """``root/name/name_0001.jpg`` (or the first existing image extension)."""
    stem = f"{name}_{int(number):04d}"
    default = root / name / f"{stem}.jpg"
    if default.exists():
        return default
    for ext in (".png", ".jpeg", ".bmp", ".webp", ".JPG", ".PNG"):
        candidate = root / name / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return default


def load_pairs(
    pairs_file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    fmt: str = "auto",
) -> PairsSet:
    """Read a pairs file and check that every image it names exists.

    Formats (``fmt``):

    * ``"lfw"``: LFW ``pairs.txt``: a header line of integers (e.g. ``10 300``), then
      ``name n1 n2`` (same person) or ``name1 n1 name2 n2`` (different people), naming
      ``root/name/name_000n.jpg``;
    * ``"list"``: one pair per line, ``path_a path_b same`` with ``same`` one of
      ``1/0, true/false, same/diff``; paths are relative to ``root`` (or absolute);
    * ``"auto"`` (default): ``lfw`` when the first line holds only integers, else ``list``.

    Blank lines and lines starting with ``#`` are ignored. ``root`` defaults to the pairs
    file's folder. Raises :class:`PairsFileError` naming the line of any malformed entry, and
    listing the missing files (with their lines) if any image does not exist.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in "abcd":
        ...     _ = (d / f"{n}.png").write_bytes(b"")
        >>> _ = (d / "pairs.txt").write_text("a.png b.png 1\\nc.png d.png 0\\n")
        >>> s = load_pairs(d / "pairs.txt")
        >>> s.num_pairs, s.issame, s.paths[3].name
        (2, [True, False], 'd.png')
        >>> import shutil; shutil.rmtree(d)
    """
    pfile = Path(pairs_file)
    if not pfile.is_file():
        raise PairsFileError(f"{pfile}: pairs file not found")
    base = Path(root) if root is not None else pfile.parent
    if not base.is_dir():
        raise PairsFileError(f"{pfile}: image root {base} is not a folder")
    lines = [
        (no, line.split())
        for no, line in enumerate(pfile.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise PairsFileError(f"{pfile}: no pairs in the file")
    if fmt == "auto":
        fmt = "lfw" if all(t.isdigit() for t in lines[0][1]) else "list"
    if fmt not in ("lfw", "list"):
        raise ValueError(f"unknown pairs file format {fmt!r}; use 'auto', 'lfw' or 'list'")

    paths: list[Path] = []
    issame: list[bool] = []
    where: list[int] = []
    body = lines[1:] if fmt == "lfw" and all(t.isdigit() for t in lines[0][1]) else lines
    for no, tokens in body:
        if fmt == "lfw":
            if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
                pair = (
                    _lfw_path(base, tokens[0], tokens[1]),
                    _lfw_path(base, tokens[0], tokens[2]),
                )
                same = True
            elif len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
                pair = (
                    _lfw_path(base, tokens[0], tokens[1]),
                    _lfw_path(base, tokens[2], tokens[3]),
                )
                same = False
            else:
                raise PairsFileError(
                    f"{pfile}:{no}: expected 'name n1 n2' or 'name1 n1 name2 n2' (LFW format), "
                    f"got {' '.join(tokens)!r}"
                )
        else:
            flag = _parse_flag(tokens[-1]) if len(tokens) == 3 else None
            if flag is None:
                raise PairsFileError(
                    f"{pfile}:{no}: expected 'path_a path_b same' with same in 1/0/true/false, "
                    f"got {' '.join(tokens)!r}"
                )
            pair = (base / tokens[0], base / tokens[1])
            same = flag
        paths.extend(pair)
        issame.append(same)
        where.extend((no, no))

    missing = [(no, p) for no, p in zip(where, paths, strict=True) if not p.is_file()]
    if missing:
        shown = "; ".join(f"line {no}: {p}" for no, p in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PairsFileError(
            f"{pfile}: {len(missing)} image file(s) named in the pairs file do not exist "
            f"under {base}: {shown}{more}"
        )
    return PairsSet(paths=paths, issame=issame, path=pfile)


def load_dataset(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> BinPack | PairsSet:
    """Load a ``.bin`` pack, a pairs file, or a folder holding ``pairs.txt``.

    A folder is read as ``folder/pairs.txt`` with ``folder`` as the image root.
    """
    p = Path(path)
    if p.is_dir():
        pairs = p / "pairs.txt"
        if not pairs.is_file():
            raise PairsFileError(f"{p}: folder has no pairs.txt")
        return load_pairs(pairs, root if root is not None else p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such verification set")
    if p.suffix.lower() == ".bin":
        return load_bin(p)
    return load_pairs(p, root)


# ----------------------------------------------------------------------------------------------
# Landmarks and model inputs
# ----------------------------------------------------------------------------------------------


def _create_detector(name: str) -> LandmarkFn:
    """Landmark function of a detector backend: largest face's landmarks, or ``None``."""
    from maskgen.landmarks import create_backend

    backend = create_backend(name)

    def detect(image: np.ndarray) -> np.ndarray | None:
        faces = backend.detect(image)
        if not faces:
            return None
        return np.asarray(max(faces, key=lambda f: f.box_area).landmarks, np.float32)

    return detect


def _resolve_landmarks(dataset: BinPack | PairsSet, landmarks: str | LandmarkFn) -> str:
    """Name of the landmark source for a set (``auto``: aligned for packs and 112×112 crops)."""
    if callable(landmarks):
        return getattr(landmarks, "__name__", "custom")
    if landmarks != "auto":
        return landmarks
    if isinstance(dataset, BinPack):
        return "aligned"
    for i in range(dataset.num_images):
        try:
            shape = dataset.decode(i).shape
        except (ImageReadError, OSError):
            continue
        return "aligned" if shape[:2] == (INPUT_SIZE, INPUT_SIZE) else "dlib"
    return "aligned"


def _to_model_input(image: np.ndarray, lm: np.ndarray | None, aligned: bool) -> np.ndarray:
    """112×112 RGB crop: resized aligned crop, or similarity-aligned from the landmarks."""
    if aligned:
        if image.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
            return image
        interp = cv2.INTER_AREA if image.shape[0] > INPUT_SIZE else cv2.INTER_LINEAR
        return cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
    five = to_five(lm) if lm is not None and len(lm) == 68 else lm
    M = similarity_transform(np.asarray(five, np.float32), ARCFACE_112)
    return cv2.warpAffine(image, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)


class _ImageError(Exception):
    """An image that cannot be produced for a protocol (the message is the reason)."""


class _Materialiser:
    """Produces the model input of (image index, draw) for one set, deterministically."""

    def __init__(self, dataset: BinPack | PairsSet, entry: DatasetProtocol, fn: LandmarkFn | None):
        self.dataset = dataset
        self.entry = entry
        self.aligned = entry.landmarks == "aligned"
        self.fn = fn  # only for custom callables without stored points

    def landmarks(self, i: int, image: np.ndarray) -> np.ndarray | None:
        if self.aligned:
            return protocol_landmarks(image.shape)
        if self.entry.points is not None:
            return self.entry.points[i]
        return None if self.fn is None else self.fn(image)

    def masked_image(self, i: int, params: MaskParams | None) -> np.ndarray:
        """The full-size image ``i`` with the draw applied (no resizing/alignment)."""
        try:
            image = self.dataset.decode(i)
        except (ImageReadError, OSError) as exc:
            raise _ImageError(f"unreadable image: {exc}") from exc
        if params is None:
            return image
        lm = self.landmarks(i, image)
        if lm is None:
            raise _ImageError("no face landmarks (nothing to mask)")
        try:
            return render(image, lm, params).image
        except ValueError as exc:
            raise _ImageError(f"mask rendering failed: {exc}") from exc

    def __call__(self, i: int, params: MaskParams | None) -> np.ndarray:
        image = self.masked_image(i, params)
        lm = None if self.aligned else self.landmarks(i, image)
        if not self.aligned and lm is None:
            raise _ImageError("no face landmarks (cannot align)")
        return _to_model_input(image, lm, self.aligned)


def _build_entry(
    name: str,
    dataset: BinPack | PairsSet,
    protocols: Sequence[str],
    seed: int,
    spec: MaskSpec,
    landmarks: str | LandmarkFn,
    sha256: str,
) -> DatasetProtocol:
    source = _resolve_landmarks(dataset, landmarks)
    points = None
    if source != "aligned":
        fn = landmarks if callable(landmarks) else _create_detector(source)
        points = []
        for i in tqdm(range(dataset.num_images), desc=f"{name}: landmarks", leave=False):
            try:
                points.append(fn(dataset.decode(i)))
            except (ImageReadError, OSError):
                points.append(None)
    return DatasetProtocol(
        source=str(dataset.path) if dataset.path is not None else name,
        sha256=sha256,
        num_images=dataset.num_images,
        num_pairs=dataset.num_pairs,
        landmarks=source,
        draws={p: protocol_draws(p, dataset.num_images, seed, spec) for p in protocols},
        points=points,
    )


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.inference_mode()
def embed_images(
    model: nn.Module, images: np.ndarray, device: str | torch.device | None = None
) -> np.ndarray:
    """Flip-summed embeddings of a B×112×112×3 ``uint8`` RGB batch (float32, B×D).

    Input is normalised as ``(x / 255 - 0.5) / 0.5``; the model must be in eval mode.

    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny", embedding_size=8).eval()
    >>> embed_images(net, np.zeros((2, 112, 112, 3), np.uint8)).shape
    (2, 8)
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
    x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).div_(0.5)
    out = model(torch.cat([x, x.flip(3)]))
    b = images.shape[0]
    return (out[:b] + out[b:]).float().cpu().numpy()


def _batches(
    jobs: Sequence[tuple[int, MaskParams | None]],
    make: _Materialiser,
    batch_size: int,
    prefetch: bool = False,
) -> Iterator[tuple[list[int], np.ndarray | None, dict[int, str]]]:
    """Yield (job positions, images, failures) per batch.

    With ``prefetch`` the next batch is prepared in a thread while the current one is embedded:
    worth it when the models run on an accelerator. On CPU both compete for the same cores
    (measured slower on 2 cores), so batches are then prepared in line.
    """

    def build(lo: int) -> tuple[list[int], np.ndarray | None, dict[int, str]]:
        ok: list[int] = []
        imgs: list[np.ndarray] = []
        failed: dict[int, str] = {}
        for pos in range(lo, min(lo + batch_size, len(jobs))):
            i, params = jobs[pos]
            try:
                imgs.append(make(i, params))
                ok.append(pos)
            except _ImageError as exc:
                failed[pos] = str(exc)
        return ok, (np.stack(imgs) if imgs else None), failed

    starts = list(range(0, len(jobs), batch_size))
    if not starts:
        return
    if not prefetch:
        for lo in starts:
            yield build(lo)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(build, starts[0])
        for k in range(len(starts)):
            result = future.result()
            if k + 1 < len(starts):
                future = pool.submit(build, starts[k + 1])
            yield result


def _embed_jobs(
    models: Mapping[str, nn.Module],
    jobs: Sequence[tuple[int, MaskParams | None]],
    make: _Materialiser,
    batch_size: int,
    device: torch.device | None,
    desc: str,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[int, str], str]:
    """Embed every job with every model; each batch is materialised once for all models.

    Returns the embeddings, the failed job positions with their reasons, and the SHA-256 of
    all model inputs (in job order).
    """
    digest = hashlib.sha256()
    out: dict[str, np.ndarray] = {}
    failures: dict[int, str] = {}
    devices = [device] if device is not None else [_model_device(m) for m in models.values()]
    prefetch = any(d.type != "cpu" for d in devices)
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for positions, images, failed in _batches(jobs, make, batch_size, prefetch):
            failures.update(failed)
            if images is not None:
                for pos, image in zip(positions, images, strict=True):  # batching-independent
                    digest.update(pos.to_bytes(8, "little"))
                    digest.update(image.tobytes())
                for name, model in models.items():
                    emb = embed_images(model, images, device)
                    if name not in out:
                        out[name] = np.zeros((len(jobs), emb.shape[1]), np.float32)
                    out[name][positions] = emb
            bar.update(len(positions) + len(failed))
    return out, failures, digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Results and reports
# ----------------------------------------------------------------------------------------------


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
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def _pct(v: float) -> str:
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
        rows = []
        for r in self.results:
            m = r.metrics
            pairs = f"{r.num_pairs_scored}/{r.num_pairs_total}"
            if r.skipped:
                pairs += f" ({len(r.skipped)} skipped)"
            rows.append(
                (
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
            )
        return rows

    def table(self) -> str:
        """Plain-text table (one row per model × dataset × protocol) plus skipped-pair notes."""
        rows = [_TABLE_HEADER, *self.rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(len(_TABLE_HEADER))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + self._skip_notes() + [f"warning: {w}" for w in self.warnings])

    def _skip_notes(self) -> list[str]:
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
        lines += ["", "## Skipped pairs", ""]
        any_skipped = False
        for name, info in self.datasets.items():
            for proto, skipped in info["skipped_pairs"].items():
                if not skipped:
                    continue
                any_skipped = True
                lines.append(
                    f"- **{name} {_PROTOCOL_LABEL[proto]}**: {len(skipped)} of "
                    f"{info['num_pairs']} pairs skipped"
                )
                lines += [
                    f"  - pair {s['pair']} (images {', '.join(map(str, s['images']))}): "
                    f"{s['reason']}"
                    for s in skipped
                ]
        if not any_skipped:
            lines.append("None: every pair was scored.")
        if self.warnings:
            lines += ["", "## Warnings", "", *(f"- {w}" for w in self.warnings)]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``scores.npz``, ``roc_<dataset>.png`` and
        ``scores_<dataset>.png`` (plus ``protocol.json``) to ``out_dir``."""
        from distill.plots import plot_roc, plot_score_histograms

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
        arrays: dict[str, np.ndarray] = {}
        for r in self.results:
            key = f"{r.model}/{r.dataset}/{r.protocol}"
            arrays[f"{key}/scores"] = r.scores
            arrays[f"{key}/issame"] = r.issame
        npz = out / "scores.npz"
        np.savez_compressed(npz, **arrays)
        files["scores"] = npz
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
        self.files = files
        return files


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def evaluate_models(
    models: Mapping[str, nn.Module],
    datasets: Mapping[str, BinPack | PairsSet],
    protocols: Sequence[str] | str = PROTOCOLS,
    *,
    seed: int = 0,
    protocol_file: str | os.PathLike[str] | EvalProtocol | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    landmarks: str | LandmarkFn = "auto",
    mask_spec: MaskSpec | None = None,
    n_folds: int = 10,
    progress: bool = True,
) -> Report:
    """Score every model on every set under every protocol, on identical masked images.

    Args:
        models: name → backbone (B×3×112×112 in [-1, 1] → B×D). Each is put in eval mode for
            the evaluation and its previous train/eval mode restored afterwards.
        datasets: name → :class:`~maskgen.io.BinPack` or :class:`PairsSet`.
        protocols: subset of ``("nm-nm", "m-nm", "m-m")`` (or ``"nm-nm,m-m"``).
        seed: seed of the mask draws (ignored when an existing protocol file is reused).
        protocol_file: an :class:`EvalProtocol`, or a path: reused if it exists (its draws,
            seed and landmarks are used, after checking each set's SHA-256), else created.
        out_dir: if given, :meth:`Report.write` is called on it.
        batch_size: images per forward pass (each pass also runs the flipped copies).
        device: where to run; ``None`` = each model's own device. A model is moved there.
        landmarks: ``"auto"`` (aligned for ``.bin`` packs and 112×112 folders, else
            ``"dlib"``), ``"aligned"``, a detector backend name, or a function image →
            landmarks / ``None`` (used when drawing a new protocol).
        mask_spec: distribution of new draws (default :class:`MaskSpec`).
        n_folds: accuracy folds (10; fewer if a set has fewer scored pairs).
        progress: show tqdm progress bars.
    """
    start = time.perf_counter()
    protos = parse_protocols(protocols)
    if not models:
        raise ValueError("no model to evaluate")
    if not datasets:
        raise ValueError("no dataset to evaluate on")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = mask_spec or MaskSpec()

    # 1. The protocol: reuse or draw (and save) it before any model runs.
    if isinstance(protocol_file, EvalProtocol):
        protocol, reuse, save_to = protocol_file, True, None
    elif protocol_file is not None and Path(protocol_file).exists():
        protocol, reuse, save_to = EvalProtocol.load(protocol_file), True, None
    else:
        protocol = EvalProtocol(seed=int(seed), mask_spec=spec.to_dict())
        reuse, save_to = False, protocol_file
    entries: dict[str, DatasetProtocol] = {}
    for name, ds in datasets.items():
        digest = dataset_sha256(ds)
        if reuse:
            entries[name] = protocol.check(name, ds, protos, digest)
        else:
            entries[name] = _build_entry(name, ds, protos, protocol.seed, spec, landmarks, digest)
            protocol.datasets[name] = entries[name]
    if save_to is not None:
        protocol.save(save_to)

    dev = torch.device(device) if device is not None else None
    modes = {name: m.training for name, m in models.items()}
    for m in models.values():
        if dev is not None:
            m.to(dev)
        m.eval()

    results: list[EvalResult] = []
    info: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    try:
        for name, ds in datasets.items():
            entry = entries[name]
            fn = landmarks if callable(landmarks) and entry.points is None else None
            make = _Materialiser(ds, entry, fn)
            issame = np.asarray(ds.issame, dtype=bool)
            n_img = ds.num_images
            # Clean images are embedded once and shared by every protocol that leaves them
            # clean (NM-NM, and the first image of M-NM pairs).
            clean_idx = sorted(
                {i for p in protos for i, d in enumerate(entry.draws[p]) if d is None}
            )
            clean_emb, clean_fail, _ = _embed_jobs(
                models, [(i, None) for i in clean_idx], make, batch_size, dev,
                f"{name}: clean", progress,
            )  # fmt: skip
            clean_pos = {i: k for k, i in enumerate(clean_idx)}
            info[name] = {
                "source": entry.source,
                "sha256": entry.sha256,
                "num_pairs": ds.num_pairs,
                "num_images": n_img,
                "landmarks": entry.landmarks,
                "skipped_pairs": {},
            }
            for proto in protos:
                draws = entry.draws[proto]
                masked_idx = [i for i, d in enumerate(draws) if d is not None]
                masked_emb, masked_fail, digest = _embed_jobs(
                    models, [(i, draws[i]) for i in masked_idx], make, batch_size, dev,
                    f"{name}: {_PROTOCOL_LABEL[proto]}", progress,
                )  # fmt: skip
                if masked_idx:
                    known = entry.images_sha256.get(proto)
                    if known is None:
                        entry.images_sha256[proto] = digest
                    elif known != digest:
                        msg = (
                            f"{name} {_PROTOCOL_LABEL[proto]}: the masked images differ from "
                            "those the protocol file was first scored on (same draws, other "
                            "pixels: renderer or decoder changed); scores are not comparable "
                            "with earlier reports"
                        )
                        warnings.warn(msg, stacklevel=2)
                        notes.append(msg)
                reasons: dict[int, str] = {}
                for k, i in enumerate(masked_idx):
                    if k in masked_fail:
                        reasons[i] = masked_fail[k]
                for i in range(n_img):
                    if draws[i] is None and clean_pos[i] in clean_fail:
                        reasons[i] = clean_fail[clean_pos[i]]
                skipped: dict[int, str] = {}
                skipped_info = []
                for k in range(ds.num_pairs):
                    bad = [i for i in (2 * k, 2 * k + 1) if i in reasons]
                    if bad:
                        why = "; ".join(f"image {i}: {reasons[i]}" for i in bad)
                        skipped[k] = why
                        skipped_info.append({"pair": k, "images": bad, "reason": why})
                info[name]["skipped_pairs"][proto] = skipped_info
                valid = np.ones(ds.num_pairs, bool)
                valid[list(skipped)] = False
                n_scored = int(valid.sum())
                if n_scored < 2:
                    raise ValueError(
                        f"{name} {_PROTOCOL_LABEL[proto]}: only {n_scored} of {ds.num_pairs} "
                        "pairs could be scored; nothing to evaluate"
                    )
                for model_name in models:
                    emb = np.zeros((n_img, _emb_dim(clean_emb, masked_emb, model_name)), np.float32)
                    if model_name in clean_emb:
                        rows = [i for i in range(n_img) if draws[i] is None]
                        emb[rows] = clean_emb[model_name][[clean_pos[i] for i in rows]]
                    if model_name in masked_emb:
                        emb[masked_idx] = masked_emb[model_name]
                    a, b = emb[0::2][valid], emb[1::2][valid]
                    same = issame[valid]
                    try:
                        metrics = verification_report(a, b, same, n_folds=min(n_folds, n_scored))
                    except ValueError as exc:
                        raise ValueError(
                            f"{model_name} on {name} {_PROTOCOL_LABEL[proto]}: {exc}"
                        ) from exc
                    metrics["accuracy_skipped_as_errors"] = (
                        float(metrics["accuracy_mean"]) * n_scored / ds.num_pairs
                    )
                    results.append(
                        EvalResult(
                            model=model_name,
                            dataset=name,
                            protocol=proto,
                            num_pairs_total=ds.num_pairs,
                            num_pairs_scored=n_scored,
                            metrics=metrics,
                            skipped=skipped,
                            scores=pair_scores(a, b),
                            issame=same,
                        )
                    )
    finally:
        for name, m in models.items():
            m.train(modes[name])

    if save_to is not None:
        protocol.save(save_to)  # again, now with the masked-image digests
    report = Report(results=results, protocol=protocol, datasets=info, warnings=notes)
    report.seconds = time.perf_counter() - start
    if out_dir is not None:
        report.write(out_dir)
    return report


def _emb_dim(*sources_and_name: Any) -> int:
    *sources, name = sources_and_name
    for src in sources:
        if name in src:
            return int(src[name].shape[1])
    return 1


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Load a distill checkpoint as an eval-mode backbone (via ``load_backbone``).

    Raises ``FileNotFoundError`` or :class:`CheckpointError` with the file and the problem.
    """
    return load_backbone(path)
