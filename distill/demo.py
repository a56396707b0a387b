"""The full pipeline behind ``distill train``: train, evaluate (NM-NM, M-NM, M-M), report.

With no arguments ``distill train`` runs the built-in demo (the defaults of
:class:`distill.config.Config`): synthetic identities, the ``tiny`` backbone, teacher →
student → evaluation on a verification pack of *held-out* synthetic identities, and writes
``report.json`` / ``report.md`` stating whether the student beats the teacher on M-M and
M-NM accuracy while losing at most 1 point on NM-NM.

With ``train.ablation`` (on in the demo) the run also trains the *augmentation-only*
student: the student stage again with ``student.distill_weight = 0`` (same data, masking,
initialisation and schedule, the same teacher) into ``<output>/augment``. The report then
has one row per model (teacher, augmentation-only student, distilled student) and a verdict
computed from the numbers: does distillation beat mask augmentation alone, by how much, and
is the difference within the fold noise or beyond it.

Evaluation runs through :func:`distill.eval.evaluate_models` on a pack of held-out
identities under NM-NM, M-NM (the second image of every pair masked) and M-M (both masked,
independent draws); the mask draws are fixed by ``eval.mask_seed`` and written to
``eval/protocol.json``, so teacher and student are scored on identical images. With
``eval.unseen_spec`` (on in the demo: wide, round and gaiter masks worn low or on the chin,
while ``masking.spec`` trains on surgical and KN95 masks at high and medium coverage) M-NM
and M-M are scored again on those masks (``eval/unseen/protocol.json``) and reported as the
"unseen" columns. The held-out pack and the training identities share ``data.variation``,
the demo's benchmark spread of pose, expression, lighting and occluders.

Example:
    >>> _verdict({m: {p: {"accuracy_mean": a} for p, a in zip(PROTOCOLS, accs)}
    ...           for m, accs in {"teacher": (0.99, 0.9, 0.8), "student": (0.985, 0.95, 0.9)}
    ...           .items()})["passed"]
    True
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from distill.checkpoint import load_backbone
from distill.config import Config
from distill.data import build_synthetic_pack
from distill.eval import PROTOCOLS, evaluate_models
from distill.training.results import TrainResult
from maskgen.io import atomic_write_text, load_bin
from maskgen.render import MaskSpec

__all__ = [
    "AUGMENT",
    "PROTOCOLS",
    "UNSEEN",
    "run",
    "write_report",
]

log = logging.getLogger("distill")

#: the key, in the report, of the augmentation-only student (``distill_weight = 0``).
AUGMENT = "augment"
#: result keys of the protocols scored on ``eval.unseen_spec`` masks (not seen in training).
UNSEEN_SUFFIX = "-unseen"
UNSEEN = ("m-nm" + UNSEEN_SUFFIX, "m-m" + UNSEEN_SUFFIX)
_LABELS = {
    "teacher": "teacher (clean)",
    AUGMENT: "augmentation only (w = 0)",
    "student": "distilled student",
}


def _evaluate(
    models: dict[str, Any],
    pack: Path,
    eval_dir: Path,
    cfg: Config,
    spec: MaskSpec,
    protocols: tuple[str, ...] = PROTOCOLS,
    suffix: str = "",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Score the models on the pack with :func:`distill.eval.evaluate_models`; result keys
    are the protocols with ``suffix`` appended."""
    name = Path(pack).stem
    report = evaluate_models(
        models,
        {name: load_bin(pack)},
        protocols,
        seed=cfg.eval.mask_seed,
        protocol_file=eval_dir / "protocol.json",
        out_dir=eval_dir,
        batch_size=cfg.eval.batch_size,
        mask_spec=spec,
        progress=False,
    )
    return {
        model: {p + suffix: dict(report.result(model, name, p).metrics) for p in protocols}
        for model in models
    }


def _columns(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The report's columns: the protocols, then the unseen-mask ones when scored."""
    first = next(iter(results.values()))
    return [*PROTOCOLS, *(c for c in UNSEEN if c in first)]


def _title(column: str) -> str:
    """``m-nm-unseen`` → ``M-NM unseen``."""
    return column.removesuffix(UNSEEN_SUFFIX).upper() + (
        " unseen" if column.endswith(UNSEEN_SUFFIX) else ""
    )


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


def _differences(
    results: dict[str, dict[str, dict[str, Any]]], columns: list[str]
) -> dict[str, dict[str, Any]]:
    """Distilled minus augmentation-only accuracy and EER per column, against the fold noise."""
    aug, dis = results[AUGMENT], results["student"]
    per: dict[str, dict[str, Any]] = {}
    for p in columns:
        diff = 100 * (dis[p]["accuracy_mean"] - aug[p]["accuracy_mean"])
        noise = 100 * math.hypot(aug[p]["accuracy_std"], dis[p]["accuracy_std"])
        per[p] = {
            "difference_points": round(diff, 4),
            "fold_noise_points": round(noise, 4),
            "beyond_noise": abs(diff) > noise,
            "eer_difference_points": round(100 * (dis[p]["eer"] - aug[p]["eer"]), 4),
        }
    return per


def _ablation(results: dict[str, dict[str, dict[str, Any]]], weight: float) -> dict[str, Any]:
    """Distilled student minus augmentation-only student, per protocol, against the fold noise.

    The noise of a difference is ``sqrt(std_a² + std_s²)`` of the two 10-fold accuracy stds
    (points): a difference at most that large is "within the fold noise". The verdict is
    decided on the masks of training (M-NM, M-M); the unseen-mask columns, when scored, are
    reported beside it (``"unseen"``) with their own sentence.

    >>> r = {m: {p: {"accuracy_mean": a, "accuracy_std": 0.01, "eer": 0.1} for p in PROTOCOLS}
    ...      for m, a in (("augment", 0.90), ("student", 0.95))}
    >>> v = _ablation(r, 100.0)
    >>> v["protocols"]["m-m"]["difference_points"], v["distillation_helps"]
    (5.0, True)
    """
    per = _differences(results, list(PROTOCOLS))
    helps, hurts = _direction([per["m-nm"], per["m-m"]])
    out: dict[str, Any] = {
        "distill_weight": weight,
        "protocols": per,
        "distillation_helps": helps and not hurts,
        "text": _ablation_text(per, weight, helps, hurts),
    }
    unseen = [c for c in _columns(results) if c in UNSEEN]
    if unseen:
        per_u = _differences(results, unseen)
        helps_u, hurts_u = _direction(list(per_u.values()))
        out["unseen"] = {
            "protocols": per_u,
            "distillation_helps": helps_u and not hurts_u,
            "text": _ablation_text(per_u, weight, helps_u, hurts_u, "on masks unseen in training"),
        }
    return out


def _direction(diffs: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(a difference beyond the noise in favour of distillation, one against it)."""
    helps = any(d["beyond_noise"] and d["difference_points"] > 0 for d in diffs)
    hurts = any(d["beyond_noise"] and d["difference_points"] < 0 for d in diffs)
    return helps, hurts


def _ablation_text(
    per: dict[str, dict[str, Any]],
    weight: float,
    helps: bool,
    hurts: bool,
    where_masks: str = "on masked pairs",
) -> str:
    """The verdict in plain words."""
    parts = []
    for p, d in per.items():
        where = "beyond" if d["beyond_noise"] else "within"
        parts.append(
            f"{_title(p)} {d['difference_points']:+.2f} points ({where} the fold noise of "
            f"±{d['fold_noise_points']:.2f}; EER {d['eer_difference_points']:+.2f} points)"
        )
    if helps and not hurts:
        head = f"distillation beats augmentation alone beyond the fold noise {where_masks}"
    elif hurts and not helps:
        head = f"augmentation alone beats distillation beyond the fold noise {where_masks}"
    elif helps and hurts:
        head = (
            f"mixed {where_masks}: distillation is better on one masked protocol and worse "
            "on the other"
        )
    else:
        head = (
            f"distillation does not measurably beat augmentation alone {where_masks}: every "
            "masked-pair difference is within the fold noise"
        )
    w = f"{weight:g}"
    return f"{head}. Distilled (w = {w}) minus augmentation-only (w = 0): " + "; ".join(parts) + "."


def _model_rows(results: dict[str, dict[str, dict[str, Any]]], columns: list[str]) -> list[str]:
    """A Markdown table: one row per model, accuracy ± fold std, EER and FMR100 per column."""
    cols = [f"{_title(p)} acc %" for p in columns]
    cols += [f"{_title(p)} EER %" for p in columns] + [f"{_title(p)} FMR100 %" for p in columns]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, per in results.items():
        acc = [
            f"{100 * per[p]['accuracy_mean']:.2f} ± {100 * per[p]['accuracy_std']:.2f}"
            for p in columns
        ]
        eer = [f"{100 * per[p]['eer']:.2f}" for p in columns]
        fmr = [f"{100 * per[p]['fmr100']:.2f}" for p in columns]
        lines.append(f"| {_LABELS.get(model, model)} | " + " | ".join(acc + eer + fmr) + " |")
    return lines


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` under ``out``."""
    json_path = atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    lines = ["# distill: teacher vs student (MaskInv)", ""]
    lines.append(f"Pack: `{report['pack']['path']}` ({report['pack']['num_pairs']} pairs)  ")
    lines.append(f"Wall time: {report['wall_time_s']:.1f} s")
    if report.get("unseen_spec"):
        lines.append("")
        lines.append(f"Training masks (`masking.spec`): `{json.dumps(report['mask_spec'])}`  ")
        lines.append(f"Unseen masks (`eval.unseen_spec`): `{json.dumps(report['unseen_spec'])}`")
    lines.append("")
    lines += _model_rows(report["results"], list(PROTOCOLS))
    if "ablation" in report:
        lines += ["", f"**Ablation**: {report['ablation']['text']}"]
    unseen = [c for c in _columns(report["results"]) if c in UNSEEN]
    if unseen:
        lines += ["", "Masks unseen in training (`eval.unseen_spec`):", ""]
        lines += _model_rows(report["results"], unseen)
        if "unseen" in report.get("ablation", {}):
            lines += ["", f"**Unseen masks**: {report['ablation']['unseen']['text']}"]
    lines += ["", "Every protocol (accuracy: 10-fold mean ± std; all values in %, FDR plain):", ""]
    lines.append("| model | protocol | accuracy (10-fold) | EER | FMR100 | FMR1000 | FDR |")
    lines.append("|---|---|---|---|---|---|---|")
    for model, per in report["results"].items():
        for p in _columns(report["results"]):
            r = per[p]
            lines.append(
                f"| {model} | {_title(p)} | {100 * r['accuracy_mean']:.2f} ± "
                f"{100 * r['accuracy_std']:.2f} | {100 * r['eer']:.2f} | "
                f"{100 * r['fmr100']:.2f} | {100 * r['fmr1000']:.2f} | {r['fdr']:.2f} |"
            )
    if "verdict" in report:
        lines += ["", "Criteria, distilled student vs teacher (accuracy):", ""]
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


def _train_augment_only(
    cfg: Config, result: TrainResult, overwrite: bool, progress: bool | None
) -> TrainResult | None:
    """``train.ablation``: the student stage again with ``distill_weight = 0``.

    Same data, masking, initialisation (the teacher this run trained or was given) and
    schedule; the seeds of a stage depend only on its role, so the two students differ in the
    weight alone. It is its own run in ``<output>/augment`` (config, log, checkpoint), so
    ``--resume`` and ``--overwrite`` work on it as on the main run. None when not asked for,
    when no student is trained, or when the student already has weight 0.
    """
    from distill.training import train
    from distill.training.logs import setup_logging

    if not cfg.train.ablation or result.student_checkpoint is None:
        return None
    if cfg.student.distill_weight == 0:
        log.info("ablation skipped: the student already has student.distill_weight = 0")
        return None
    aug = copy.deepcopy(cfg)
    aug.student.distill_weight = 0.0
    aug.teacher.checkpoint = str(result.teacher_checkpoint)
    aug.train.output = str(result.output / AUGMENT)
    aug.train.ablation = False
    aug.eval.enabled = False
    if result.rank == 0:
        log.info("ablation: the augmentation-only student (w = 0) into %s", aug.train.output)
    augment = train(aug, overwrite=overwrite, progress=progress)
    setup_logging(result.output, result.rank == 0)  # back to the main run's train.log
    return augment


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
    augment = _train_augment_only(cfg, result, overwrite, progress)
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
            variation=cfg.data.variation,
        )
    else:
        log.info("evaluation skipped: no eval.pack given for a non-synthetic dataset")
        return {}
    t_eval = time.perf_counter()
    spec = MaskSpec.from_dict(cfg.masking.spec) if cfg.masking.spec else MaskSpec()
    checkpoints = {"teacher": result.teacher_checkpoint}
    if augment is not None:
        checkpoints[AUGMENT] = augment.student_checkpoint
    checkpoints["student"] = result.student_checkpoint
    models = {name: load_backbone(path) for name, path in checkpoints.items()}
    results = _evaluate(models, pack, eval_dir, cfg, spec)
    if cfg.eval.unseen_spec:  # its own protocol file: a protocol file holds one spec
        unseen = _evaluate(
            models,
            pack,
            eval_dir / "unseen",
            cfg,
            MaskSpec.from_dict(cfg.eval.unseen_spec),
            tuple(c.removesuffix(UNSEEN_SUFFIX) for c in UNSEEN),
            UNSEEN_SUFFIX,
        )
        for model in results:
            results[model].update(unseen[model])
    stages = [(s.role, s) for s in result.stages]
    if augment is not None:
        stages.append((AUGMENT, augment.stages[-1]))
    report: dict[str, Any] = {
        "pack": pack_info,
        "checkpoints": {name: str(path) for name, path in checkpoints.items()},
        "stages": [
            {
                "role": role,
                "epochs": s.epochs,
                "steps": s.steps,
                "seconds": s.seconds,
                "images_per_second": s.images_per_second,
                "final_loss": s.final_loss,
                "skipped": s.skipped,
            }
            for role, s in stages
        ],
        "evaluator": "distill.eval.evaluate_models",
        "mask_spec": cfg.masking.spec,
        "unseen_spec": cfg.eval.unseen_spec,
        "results": results,
        "verdict": _verdict(results),
        "evaluation_seconds": time.perf_counter() - t_eval,
        "wall_time_s": time.perf_counter() - t0,
    }
    if augment is not None:
        report["ablation"] = _ablation(results, cfg.student.distill_weight)
    _, md_path = write_report(report, out)
    for model in checkpoints:
        log.info(
            "%s accuracy: %s", model,
            ", ".join(f"{_title(c)} {100 * results[model][c]['accuracy_mean']:.2f} %"
                      for c in _columns(results)),
        )  # fmt: skip
    if "ablation" in report:
        log.info("ablation: %s", report["ablation"]["text"])
        if "unseen" in report["ablation"]:
            log.info("ablation, unseen masks: %s", report["ablation"]["unseen"]["text"])
    log.info(
        "criteria %s; report %s (%.0f s in all)",
        "PASSED" if report["verdict"]["passed"] else "NOT PASSED",
        md_path,
        report["wall_time_s"],
    )
    return report
