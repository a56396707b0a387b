"""The evaluation driver: every model on every set under every protocol, on identical images.

:func:`evaluate_models` runs in four steps: reuse or draw (and save) the protocol before any
model runs (:func:`_prepare_protocol`); per set, embed the clean images once for every
protocol that leaves them clean (:func:`_embed_clean`); per protocol, embed the masked images,
check their digest against the protocol file, and score every model over the pairs that can be
scored (:func:`_score_protocol`); then assemble (and write) the :class:`Report`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.eval.embed import _embed_jobs
from distill.eval.inputs import LandmarkFn, _build_entry, _Materialiser
from distill.eval.pairs import PairsSet
from distill.eval.report import _PROTOCOL_LABEL, EvalResult, Report
from distill.metrics import pair_scores, verification_report
from maskgen.io import BinPack
from maskgen.protocol import (
    PROTOCOLS,
    DatasetProtocol,
    EvalProtocol,
    dataset_sha256,
    parse_protocols,
)
from maskgen.render import MaskSpec

__all__ = ["evaluate_models", "load_mask_spec"]

#: ``stacklevel`` that attributes a warning raised in :func:`_check_masked_digest` to the
#: caller of :func:`evaluate_models` (_check_masked_digest ← _score_protocol ← _evaluate_set
#: ← evaluate_models ← caller).
_CALLER_STACKLEVEL = 5


def load_mask_spec(path: str | os.PathLike[str]) -> MaskSpec:
    """A :class:`~maskgen.render.MaskSpec` from a JSON or YAML file (the mapping
    :meth:`MaskSpec.to_dict` writes; keys it leaves out keep their defaults).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unparsable, not a mapping, or an invalid spec (naming the file).
    """
    import yaml  # JSON is YAML too

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask spec {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"mask spec {p}: not JSON/YAML ({exc})".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ValueError(f"mask spec {p}: expected a mapping of MaskSpec fields")
    try:
        return MaskSpec.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"mask spec {p}: {exc}") from exc


def _same_spec(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal as JSON (tuples and lists alike)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


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
        mask_spec: distribution of new draws (default :class:`MaskSpec`); the protocol file
            records it. When given with an existing protocol file, it must be the spec that
            file was drawn with.
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

    protocol, entries, save_to = _prepare_protocol(
        datasets, protos, seed, protocol_file, spec, landmarks, progress
    )
    if mask_spec is not None and not _same_spec(protocol.mask_spec, spec.to_dict()):
        raise ValueError(
            f"protocol file {protocol.path or protocol_file} was drawn with another mask spec "
            "than the one given; use a new protocol file for a new spec"
        )
    dev = torch.device(device) if device is not None else None
    run = _Run(models, protos, landmarks, batch_size, dev, n_folds, progress)
    results: list[EvalResult] = []
    info: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    with _eval_mode(models, dev):
        for name, ds in datasets.items():
            info[name] = _set_info(ds, entries[name])
            results += _evaluate_set(run, name, ds, entries[name], info[name], notes)

    if save_to is not None:
        protocol.save(save_to)  # again, now with the masked-image digests
    report = Report(results=results, protocol=protocol, datasets=info, warnings=notes)
    report.seconds = time.perf_counter() - start
    if out_dir is not None:
        report.write(out_dir)
    return report


@dataclass(frozen=True)
class _Run:
    """The settings of one :func:`evaluate_models` call that every step needs."""

    models: Mapping[str, nn.Module]
    protos: tuple[str, ...]
    landmarks: str | LandmarkFn
    batch_size: int
    device: torch.device | None
    n_folds: int
    progress: bool


def _prepare_protocol(
    datasets: Mapping[str, BinPack | PairsSet],
    protos: tuple[str, ...],
    seed: int,
    protocol_file: str | os.PathLike[str] | EvalProtocol | None,
    spec: MaskSpec,
    landmarks: str | LandmarkFn,
    progress: bool = True,
) -> tuple[EvalProtocol, dict[str, DatasetProtocol], str | os.PathLike[str] | None]:
    """Reuse or draw (and save) the protocol before any model runs.

    Returns the protocol, its entry per set (checked against the set's SHA-256 when reused),
    and where to save it again after scoring (``None`` when an existing protocol is reused).
    """
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
            entries[name] = _build_entry(
                name, ds, protos, protocol.seed, spec, landmarks, digest, progress
            )
            protocol.datasets[name] = entries[name]
    if save_to is not None:
        protocol.save(save_to)
    return protocol, entries, save_to


@contextmanager
def _eval_mode(models: Mapping[str, nn.Module], device: torch.device | None) -> Iterator[None]:
    """Move the models to ``device`` (if given) in eval mode; restore their train/eval modes."""
    modes = {name: m.training for name, m in models.items()}
    for m in models.values():
        if device is not None:
            m.to(device)
        m.eval()
    try:
        yield
    finally:
        for name, m in models.items():
            m.train(modes[name])


def _set_info(ds: BinPack | PairsSet, entry: DatasetProtocol) -> dict[str, Any]:
    """The report's description of a set; ``skipped_pairs`` is filled per protocol."""
    return {
        "source": entry.source,
        "sha256": entry.sha256,
        "num_pairs": ds.num_pairs,
        "num_images": ds.num_images,
        "landmarks": entry.landmarks,
        "skipped_pairs": {},
    }


@dataclass
class _Clean:
    """Embeddings of a set's clean images, shared by every protocol that leaves them clean."""

    emb: dict[str, np.ndarray]
    fail: dict[int, str]
    pos: dict[int, int]  # image index → row in ``emb`` / key in ``fail``


def _evaluate_set(
    run: _Run,
    name: str,
    ds: BinPack | PairsSet,
    entry: DatasetProtocol,
    info: dict[str, Any],
    notes: list[str],
) -> list[EvalResult]:
    """Every model on one set under every protocol; fills ``info["skipped_pairs"]``."""
    fn = run.landmarks if callable(run.landmarks) and entry.points is None else None
    make = _Materialiser(ds, entry, fn)
    clean = _embed_clean(run, name, entry, make)
    results: list[EvalResult] = []
    for proto in run.protos:
        results += _score_protocol(run, name, ds, entry, make, clean, proto, info, notes)
    return results


def _embed_clean(run: _Run, name: str, entry: DatasetProtocol, make: _Materialiser) -> _Clean:
    """Embed once the images that some protocol leaves clean (NM-NM, first of M-NM pairs)."""
    clean_idx = sorted({i for p in run.protos for i, d in enumerate(entry.draws[p]) if d is None})
    emb, fail, _ = _embed_jobs(
        run.models, [(i, None) for i in clean_idx], make, run.batch_size, run.device,
        f"{name}: clean", run.progress,
    )  # fmt: skip
    return _Clean(emb=emb, fail=fail, pos={i: k for k, i in enumerate(clean_idx)})


def _score_protocol(
    run: _Run,
    name: str,
    ds: BinPack | PairsSet,
    entry: DatasetProtocol,
    make: _Materialiser,
    clean: _Clean,
    proto: str,
    info: dict[str, Any],
    notes: list[str],
) -> list[EvalResult]:
    """Embed a protocol's masked images, then score every model over the scorable pairs."""
    draws = entry.draws[proto]
    masked_idx = [i for i, d in enumerate(draws) if d is not None]
    masked_emb, masked_fail, digest = _embed_jobs(
        run.models, [(i, draws[i]) for i in masked_idx], make, run.batch_size, run.device,
        f"{name}: {_PROTOCOL_LABEL[proto]}", run.progress,
    )  # fmt: skip
    if masked_idx:
        _check_masked_digest(name, proto, entry, digest, notes)
    reasons = {i: masked_fail[k] for k, i in enumerate(masked_idx) if k in masked_fail}
    for i in range(ds.num_images):
        if draws[i] is None and clean.pos[i] in clean.fail:
            reasons[i] = clean.fail[clean.pos[i]]
    skipped, info["skipped_pairs"][proto] = _skipped_pairs(ds.num_pairs, reasons)
    valid = np.ones(ds.num_pairs, bool)
    valid[list(skipped)] = False
    n_scored = int(valid.sum())
    if n_scored < 2:
        raise ValueError(
            f"{name} {_PROTOCOL_LABEL[proto]}: only {n_scored} of {ds.num_pairs} "
            "pairs could be scored; nothing to evaluate"
        )
    results = []
    for model_name in run.models:
        emb = _assemble(model_name, ds.num_images, draws, clean, masked_idx, masked_emb)
        results.append(_score_model(run, model_name, name, ds, proto, emb, valid, skipped))
    return results


def _check_masked_digest(
    name: str, proto: str, entry: DatasetProtocol, digest: str, notes: list[str]
) -> None:
    """Record the masked-image digest, or warn (and note) if it differs from the stored one."""
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
        warnings.warn(msg, stacklevel=_CALLER_STACKLEVEL)
        notes.append(msg)


def _skipped_pairs(
    num_pairs: int, reasons: Mapping[int, str]
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Pairs with a failed image: pair → reason, and the report's list of skipped pairs.

    >>> skipped, listed = _skipped_pairs(3, {3: "unreadable image"})
    >>> skipped
    {1: 'image 3: unreadable image'}
    >>> listed
    [{'pair': 1, 'images': [3], 'reason': 'image 3: unreadable image'}]
    """
    skipped: dict[int, str] = {}
    skipped_info = []
    for k in range(num_pairs):
        bad = [i for i in (2 * k, 2 * k + 1) if i in reasons]
        if bad:
            why = "; ".join(f"image {i}: {reasons[i]}" for i in bad)
            skipped[k] = why
            skipped_info.append({"pair": k, "images": bad, "reason": why})
    return skipped, skipped_info


def _assemble(
    model_name: str,
    n_img: int,
    draws: Sequence[Any],
    clean: _Clean,
    masked_idx: list[int],
    masked_emb: dict[str, np.ndarray],
) -> np.ndarray:
    """One model's embeddings of every image of a set under one protocol (n_img × D)."""
    emb = np.zeros((n_img, _emb_dim(clean.emb, masked_emb, model_name)), np.float32)
    if model_name in clean.emb:
        rows = [i for i in range(n_img) if draws[i] is None]
        emb[rows] = clean.emb[model_name][[clean.pos[i] for i in rows]]
    if model_name in masked_emb:
        emb[masked_idx] = masked_emb[model_name]
    return emb


def _score_model(
    run: _Run,
    model_name: str,
    name: str,
    ds: BinPack | PairsSet,
    proto: str,
    emb: np.ndarray,
    valid: np.ndarray,
    skipped: dict[int, str],
) -> EvalResult:
    """Metrics of one model's embeddings over the scored pairs."""
    n_scored = int(valid.sum())
    a, b = emb[0::2][valid], emb[1::2][valid]
    same = np.asarray(ds.issame, dtype=bool)[valid]
    try:
        metrics = verification_report(a, b, same, n_folds=min(run.n_folds, n_scored))
    except ValueError as exc:
        raise ValueError(f"{model_name} on {name} {_PROTOCOL_LABEL[proto]}: {exc}") from exc
    metrics["accuracy_skipped_as_errors"] = (
        float(metrics["accuracy_mean"]) * n_scored / ds.num_pairs
    )
    return EvalResult(
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


def _emb_dim(*sources_and_name: Any) -> int:
    """Embedding width of a model in the first source that holds it (1 if none does)."""
    *sources, name = sources_and_name
    for src in sources:
        if name in src:
            return int(src[name].shape[1])
    return 1
