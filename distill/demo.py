"""The full pipeline behind ``distill train``: train, evaluate (NM-NM, M-NM, M-M), report.

With no arguments ``distill train`` runs the built-in demo (the defaults of
:class:`distill.config.Config`): synthetic identities, the ``tiny`` backbone, teacher →
student → evaluation on a verification pack of *held-out* synthetic identities, and writes
``report.json`` / ``report.md`` stating whether the student beats the teacher on M-M and
M-NM accuracy while losing at most 1 point on NM-NM.

Evaluation runs through :func:`distill.eval.evaluate_models` on a pack of held-out
identities under NM-NM, M-NM (the second image of every pair masked) and M-M (both masked,
independent draws); the mask draws are fixed by ``eval.mask_seed`` and written to
``eval/protocol.json``, so teacher and student are scored on identical images.

Example:
    >>> _verdict({m: {p: {"accuracy_mean": a} for p, a in zip(PROTOCOLS, accs)}
    ...           for m, accs in {"teacher": (0.99, 0.9, 0.8), "student": (0.985, 0.95, 0.9)}
    ...           .items()})["passed"]
    True
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from distill.checkpoint import load_backbone
from distill.config import Config
from distill.data import build_synthetic_pack
from distill.eval import PROTOCOLS, evaluate_models
from maskgen.io import atomic_write_text, load_bin
from maskgen.render import MaskSpec

__all__ = [
    "PROTOCOLS",
    "run",
    "write_report",
]

log = logging.getLogger("distill")


def _evaluate(
    checkpoints: dict[str, Path], pack: Path, eval_dir: Path, cfg: Config, spec: MaskSpec
) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    """Score the checkpoints on the pack with :func:`distill.eval.evaluate_models`."""
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
    return results, "distill.eval.evaluate_models"


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
    from distill.training import prepare, train

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
