"""The full pipeline behind ``distill train``: train, evaluate (NM-NM, M-NM, M-M), report.

With no arguments ``distill train`` runs the built-in demo (the defaults of
:class:`distill.config.Config`): synthetic identities, the ``tiny`` backbone, teacher →
student → evaluation on a verification pack of *held-out* synthetic identities, and writes
``report.json`` / ``report.md`` stating whether the student beats the teacher on M-M and
M-NM accuracy while losing at most 1 point on NM-NM.

Evaluation protocols (pair ``k`` = images ``2k`` and ``2k + 1``):

* ``nm-nm``: no image masked;
* ``m-nm``: exactly the second image of every pair masked;
* ``m-m``: both images masked, with independent draws.

Mask draws are fixed: image ``i`` gets the draw of ``default_rng([mask_seed, i])``, so the
teacher and the student see identical masked images (the draws are written to
``eval/protocol.json``). Embeddings are flip-summed; metrics come from
:func:`distill.metrics.verification_report` (insightface 10-fold accuracy, EER, FMR100,
FMR1000, FDR).

Example:
    >>> protocol_masks("m-nm", 3)
    [False, True, False, True, False, True]
    >>> protocol_masks("m-m", 1), protocol_masks("nm-nm", 1)
    ([True, True], [False, False])
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.checkpoint import load_backbone
from distill.config import Config
from distill.data import build_synthetic_pack, normalize, pack_landmarks_path
from distill.metrics import verification_report
from maskgen.io import atomic_write_text, load_bin
from maskgen.landmarks import aligned_landmarks
from maskgen.render import MaskSpec, render

__all__ = [
    "PROTOCOLS",
    "embed",
    "evaluate_checkpoints",
    "protocol_masks",
    "run",
    "write_report",
]

log = logging.getLogger("distill")

PROTOCOLS = ("nm-nm", "m-nm", "m-m")


def protocol_masks(protocol: str, num_pairs: int) -> list[bool]:
    """Which of the ``2 · num_pairs`` images a protocol masks."""
    if protocol == "nm-nm":
        return [False] * (2 * num_pairs)
    if protocol == "m-nm":
        return [False, True] * num_pairs
    if protocol == "m-m":
        return [True] * (2 * num_pairs)
    raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Flip-summed embeddings (N×D float32) of ``uint8`` N×H×W×3 RGB images."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x = normalize(x.permute(0, 3, 1, 2).to(device))
        out.append((model(x) + model(torch.flip(x, dims=[3]))).float().cpu().numpy())
    return np.concatenate(out)


def _masked_images(
    images: np.ndarray, landmarks: np.ndarray, mask_seed: int, spec: MaskSpec
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    masked = np.empty_like(images)
    draws = []
    for i in range(len(images)):
        params = spec.sample(np.random.default_rng([mask_seed, i]))
        masked[i] = render(images[i], landmarks[i], params).image
        draws.append(params.to_dict())
    return masked, draws


def evaluate_checkpoints(
    checkpoints: dict[str, Path],
    pack: Path,
    out_dir: Path,
    mask_seed: int = 2024,
    spec: MaskSpec | None = None,
    batch_size: int = 128,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {protocol: verification_report}}`` on a ``.bin`` pack (minimal evaluation).

    Landmarks come from the pack's sidecar (:func:`distill.data.pack_landmarks_path`) when
    present, else the canonical aligned layout. Writes ``protocol.json`` (the mask draws).
    """
    spec = spec or MaskSpec()
    data = load_bin(pack)
    images = np.stack([data.decode(i) for i in range(data.num_images)])
    lm_path = pack_landmarks_path(pack)
    if lm_path.is_file():
        landmarks = np.load(lm_path)
    else:
        landmarks = np.repeat(aligned_landmarks(images.shape[1])[None], len(images), axis=0)
    masked, draws = _masked_images(images, landmarks, mask_seed, spec)
    issame = np.asarray(data.issame, bool)
    protocol = {
        "pack": str(pack),
        "mask_seed": mask_seed,
        "protocols": {p: protocol_masks(p, data.num_pairs) for p in PROTOCOLS},
        "draws": draws,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "protocol.json", json.dumps(protocol))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, path in checkpoints.items():
        model = load_backbone(path)
        clean_emb = embed(model, images, batch_size)
        masked_emb = embed(model, masked, batch_size)
        results[name] = {}
        for p in PROTOCOLS:
            flags = np.asarray(protocol_masks(p, data.num_pairs))
            emb = np.where(flags[:, None], masked_emb, clean_emb)
            results[name][p] = verification_report(emb[0::2], emb[1::2], issame)
    return results


def _evaluate(
    checkpoints: dict[str, Path], pack: Path, eval_dir: Path, cfg: Config, spec: MaskSpec
) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    """Evaluate with ``distill.evaluate`` when available, else :func:`evaluate_checkpoints`."""
    try:
        from distill.evaluate import evaluate_models
    except ImportError:
        evaluate_models = None
    if evaluate_models is None:
        found = evaluate_checkpoints(
            checkpoints, pack, eval_dir, cfg.eval.mask_seed, spec, cfg.eval.batch_size
        )
        return found, "distill.demo.evaluate_checkpoints"
    models = {name: load_backbone(path) for name, path in checkpoints.items()}
    name = Path(pack).stem
    report = evaluate_models(
        models,
        {name: load_bin(pack)},
        PROTOCOLS,
        seed=cfg.eval.mask_seed,
        protocol_file=eval_dir / "protocol.json",
        out_dir=eval_dir,
        batch_size=cfg.eval.batch_size,
        mask_spec=spec,
        progress=False,
    )
    results = {
        model: {p: dict(report.result(model, name, p).metrics) for p in PROTOCOLS}
        for model in models
    }
    return results, "distill.evaluate.evaluate_models"


def _verdict(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    t, s = results["teacher"], results["student"]
    acc = {m: {p: results[m][p]["accuracy_mean"] for p in PROTOCOLS} for m in results}
    checks = {
        "student_beats_teacher_m_m": s["m-m"]["accuracy_mean"] > t["m-m"]["accuracy_mean"],
        "student_beats_teacher_m_nm": s["m-nm"]["accuracy_mean"] > t["m-nm"]["accuracy_mean"],
        "student_nm_nm_within_1_point": s["nm-nm"]["accuracy_mean"]
        >= t["nm-nm"]["accuracy_mean"] - 0.01,
    }
    return {"accuracy": acc, "checks": checks, "passed": all(checks.values())}


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` under ``out``."""
    json_path = atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    lines = ["# distill: teacher vs student (MaskInv)", ""]
    lines.append(f"Pack: `{report['pack']['path']}` ({report['pack']['num_pairs']} pairs)  ")
    lines.append(f"Wall time: {report['wall_time_s']:.1f} s")
    lines.append("")
    lines.append("| model | protocol | accuracy (10-fold) | EER | FMR100 | FMR1000 | FDR |")
    lines.append("|---|---|---|---|---|---|---|")
    for model, per in report["results"].items():
        for p in PROTOCOLS:
            r = per[p]
            lines.append(
                f"| {model} | {p.upper()} | {100 * r['accuracy_mean']:.2f} ± "
                f"{100 * r['accuracy_std']:.2f} | {100 * r['eer']:.2f} | "
                f"{100 * r['fmr100']:.2f} | {100 * r['fmr1000']:.2f} | {r['fdr']:.2f} |"
            )
    if "verdict" in report:
        lines += ["", "Criteria (accuracy):", ""]
        labels = {
            "student_beats_teacher_m_m": "student beats teacher on M-M",
            "student_beats_teacher_m_nm": "student beats teacher on M-NM",
            "student_nm_nm_within_1_point": "student loses at most 1 point on NM-NM",
        }
        for key, ok in report["verdict"]["checks"].items():
            lines.append(f"- {labels.get(key, key)}: {'yes' if ok else 'NO'}")
        lines += ["", f"**{'PASSED' if report['verdict']['passed'] else 'NOT PASSED'}**"]
    md_path = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return json_path, md_path


def run(cfg: Config, *, overwrite: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Train (teacher → student) and, on rank 0, evaluate and write the report.

    Returns the report dict (empty on ranks other than 0 or when evaluation is disabled).
    """
    from distill.train import prepare, train

    t0 = time.perf_counter()
    plan = prepare(cfg, overwrite=overwrite)  # every check before anything is written
    if cfg.eval.enabled and cfg.eval.pack and not Path(cfg.eval.pack).is_file():
        raise FileNotFoundError(f"eval.pack {cfg.eval.pack} does not exist")
    synthetic_pack = cfg.eval.enabled and not cfg.eval.pack and cfg.data.source == "synthetic"
    if synthetic_pack and cfg.eval.seed == cfg.data.seed:
        raise ValueError("eval.seed must differ from data.seed (held-out identities)")
    result = train(cfg, overwrite=overwrite, progress=progress, plan=plan)
    if result.rank != 0:
        return {}
    if not cfg.eval.enabled or result.student_checkpoint is None:
        return {}
    out = result.output
    eval_dir = out / "eval"
    if cfg.eval.pack:
        pack = Path(cfg.eval.pack)
        pack_info: dict[str, Any] = {"path": str(pack), "num_pairs": load_bin(pack).num_pairs}
    elif cfg.data.source == "synthetic":
        pack, pack_info = build_synthetic_pack(
            eval_dir / "synthetic_heldout.bin",
            cfg.eval.num_identities,
            cfg.eval.images_per_identity,
            cfg.eval.num_pairs,
            cfg.eval.seed,
        )
    else:
        log.info("evaluation skipped: no eval.pack given for a non-synthetic dataset")
        return {}
    t_eval = time.perf_counter()
    spec = MaskSpec.from_dict(cfg.masking.spec) if cfg.masking.spec else MaskSpec()
    checkpoints = {"teacher": result.teacher_checkpoint, "student": result.student_checkpoint}
    results, evaluator = _evaluate(checkpoints, pack, eval_dir, cfg, spec)
    report: dict[str, Any] = {
        "pack": pack_info,
        "checkpoints": {
            "teacher": str(result.teacher_checkpoint),
            "student": str(result.student_checkpoint),
        },
        "stages": [
            {
                "role": s.role,
                "epochs": s.epochs,
                "steps": s.steps,
                "seconds": s.seconds,
                "images_per_second": s.images_per_second,
                "final_loss": s.final_loss,
                "skipped": s.skipped,
            }
            for s in result.stages
        ],
        "evaluator": evaluator,
        "results": results,
        "verdict": _verdict(results),
        "evaluation_seconds": time.perf_counter() - t_eval,
        "wall_time_s": time.perf_counter() - t0,
    }
    _, md_path = write_report(report, out)
    acc = report["verdict"]["accuracy"]
    for model in ("teacher", "student"):
        log.info(
            "%s accuracy: NM-NM %.2f %%, M-NM %.2f %%, M-M %.2f %%",
            model, 100 * acc[model]["nm-nm"], 100 * acc[model]["m-nm"], 100 * acc[model]["m-m"],
        )  # fmt: skip
    log.info(
        "criteria %s; report %s (%.0f s in all)",
        "PASSED" if report["verdict"]["passed"] else "NOT PASSED",
        md_path,
        report["wall_time_s"],
    )
    return report
