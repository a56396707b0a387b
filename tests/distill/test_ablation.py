"""The ablation of ``distill train``: the augmentation-only student (w = 0) beside the
distilled one, on a tiny synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_cfg

from distill.checkpoint import load_checkpoint
from distill.config import Config, config_to_dict, load_config
from distill.configs import config_path, list_configs
from distill.demo import AUGMENT, run


def _tiny(out: Path, *extra: str) -> Config:
    # train.log_every at its default: the ablation runs are checked as they were written.
    return tiny_cfg(out, "teacher.epochs=1", "train.log_every=10", "eval.num_identities=10",
                    "eval.images_per_identity=2", "eval.num_pairs=20", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ablation")
    return out, run(_tiny(out), overwrite=True, progress=False)


def test_ablation_trains_the_weight_zero_student(ablation_run: tuple[Path, dict]) -> None:
    out, _ = ablation_run
    aug = load_checkpoint(out / AUGMENT / "student" / "last.pt")
    dis = load_checkpoint(out / "student" / "last.pt")
    assert aug["config"]["student"]["distill_weight"] == 0.0
    assert dis["config"]["student"]["distill_weight"] == 100.0
    assert aug["config"]["teacher"]["checkpoint"] == str(out / "teacher" / "last.pt")
    assert aug["step"] == dis["step"]  # the same schedule
    # only the weight differs, so the weights do
    diffs = [not torch.equal(aug["model"][k], dis["model"][k]) for k in dis["model"]]
    assert any(diffs)
    # the MSE term is logged for both (the teacher runs), weighted only in the distilled one
    rows = (out / AUGMENT / "student" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert float(last["loss"]) == pytest.approx(float(last["ce"]), rel=1e-6)


def test_report_has_three_rows_and_a_verdict(ablation_run: tuple[Path, dict]) -> None:
    out, report = ablation_run
    saved = json.loads((out / "report.json").read_text())
    assert saved["ablation"] == report["ablation"]
    assert list(saved["results"]) == ["teacher", AUGMENT, "student"]
    ab = saved["ablation"]
    assert set(ab["protocols"]) == {"nm-nm", "m-nm", "m-m"}
    for p, d in ab["protocols"].items():
        want = 100 * (
            saved["results"]["student"][p]["accuracy_mean"]
            - saved["results"][AUGMENT][p]["accuracy_mean"]
        )
        assert d["difference_points"] == pytest.approx(want, abs=1e-3)
        assert d["beyond_noise"] == (abs(d["difference_points"]) > d["fold_noise_points"])
    md = (out / "report.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "±" in ln]
    labels = [ln.split("|")[1].strip() for ln in rows[:3]]
    assert labels == ["teacher (clean)", "augmentation only (w = 0)", "distilled student"]
    assert "**Ablation**: " in md and ab["text"] in md
    assert "fold noise" in ab["text"]
    assert [s["role"] for s in saved["stages"]] == ["teacher", "student", AUGMENT]


def test_ablation_off(tmp_path: Path) -> None:
    report = run(_tiny(tmp_path, "train.ablation=false", "student.epochs=1"), progress=False)
    assert list(report["results"]) == ["teacher", "student"] and "ablation" not in report
    assert not (tmp_path / AUGMENT).exists()


def test_every_shipped_config_loads() -> None:
    names = list_configs()
    assert {"demo", "ms1mv2_r50", "maskinv_kd_r100", "maskinv_hg_r100", "maskinv_aug_r100"} <= set(
        names
    )
    for name in names:
        load_config(config_path(name)).validate()


def test_maskinv_recipes_differ_only_in_the_weight() -> None:
    cfgs = {n: load_config(config_path(f"maskinv_{n}_r100")) for n in ("kd", "hg", "aug")}
    assert {n: c.student.distill_weight for n, c in cfgs.items()} == {
        "kd": 100.0,
        "hg": 3000.0,
        "aug": 0.0,
    }
    for c in cfgs.values():
        assert (c.model.backbone, c.model.head) == ("iresnet100", "elasticarcface")
        assert c.train.batch_size == 4 * 128 and c.student.epochs == 26
        assert list(c.optim.milestones) == [7, 13, 19, 24]  # the 8th, 14th, 20th, 25th epochs
    base = dict(config_to_dict(cfgs["kd"]))
    for n in ("hg", "aug"):
        other = config_to_dict(cfgs[n])
        for section in base:
            if section not in ("student", "train"):
                assert other[section] == base[section], (n, section)
