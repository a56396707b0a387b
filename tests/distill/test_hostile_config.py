"""``distill train`` under hostile configs and checkpoints (issue 15): every value validated up
front with its key named, a changed config refused on resume unless ``--allow-changes``,
non-finite teachers and checkpoints without training state caught on load, ``metrics.csv``
without the rows of a killed epoch, and no non-finite checkpoint ever saved."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import TINY_SETS
from typer.testing import CliRunner

import distill.training.stage as stage_mod
from distill.backbones import create_backbone
from distill.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from distill.cli import app
from distill.config import Config, ConfigError, apply_overrides, config_to_dict, valid_keys
from distill.training import TrainingDivergedError, train

#: A teacher-only run of 1 epoch (also the ``--set`` arguments of the CLI tests).
HOSTILE_SETS = (*TINY_SETS, "teacher.epochs=1", "student.epochs=0")


def tiny_cfg(out: Path, *extra: str) -> Config:
    """The shared tiny configuration as a teacher-only run of 1 epoch."""
    return apply_overrides(Config(), [f"train.output={out}", *HOSTILE_SETS, *extra])


def _cli(out: Path, *args: str) -> Any:
    argv = ["train", "--out", str(out), "--no-progress"]
    for s in HOSTILE_SETS:
        argv += ["--set", s]
    return CliRunner().invoke(app, [*argv, *args])


def _one_error_line(output: str, *needles: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


def _csv_steps(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["step"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train(tiny_cfg(out), progress=False)
    return out / "teacher" / "last.pt"


# ------------------------------------------------------------------------------------------
# 1. every value validated up front, naming the key
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.gamma=-1", "optim.gamma"),  # with the step schedule: a negative learning rate
        ("optim.gamma=0", "optim.gamma"),
        ("optim.clip_grad_norm=nan", "optim.clip_grad_norm"),
        ("optim.clip_grad_norm=inf", "optim.clip_grad_norm"),
        ("optim.momentum=nan", "optim.momentum"),
        ("optim.momentum=1", "optim.momentum"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
        ("optim.warmup_epochs=inf", "optim.warmup_epochs"),
        ("optim.milestones=[2, -1]", "optim.milestones[1]"),
        ("optim.milestones=[.nan]", "optim.milestones[0]"),
        ("masking.seed=-5", "masking.seed"),
        ("masking.p=nan", "masking.p"),
        ("masking.spec={families: {nope: 1}}", "masking.spec"),
        ("masking.spec={not_a_field: 1}", "masking.spec"),
        ("data.seed=-1", "data.seed"),
        ("train.seed=-1", "train.seed"),
        ("train.seed=4294967296", "train.seed"),
        ("eval.seed=-1", "eval.seed"),
        ("eval.mask_seed=-1", "eval.mask_seed"),
        ("eval.num_pairs=1", "eval.num_pairs"),
        ("eval.num_identities=1", "eval.num_identities"),
        ("eval.images_per_identity=1", "eval.images_per_identity"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.seed=0", "eval.seed"),  # the held-out identities would be the training ones
        ("teacher.lr=inf", "teacher.lr"),
        ("student.lr=nan", "student.lr"),
        ("student.distill_weight=nan", "student.distill_weight"),
        ("model.head_kwargs={s: .nan}", "model.head_kwargs.s"),
        ("model.head_kwargs={s: 0}", "model.head_kwargs.s"),
        ("model.head_kwargs={m: -0.5}", "model.head_kwargs.m"),
        ("model.kwargs={widths: [8, .inf]}", "model.kwargs.widths[1]"),
        ("train.output=", "train.output"),
        ("train.allow_changes=true", "train.allow_changes"),  # only with train.resume
    ],
)
def test_wrong_values_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["optim.schedule=step", override])
    assert str(info.value).startswith(key), str(info.value)


def _hostile(value: Any) -> Any:
    """A value of the same type that no field accepts: NaN for numbers, -1 for integers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return math.nan
    if isinstance(value, int):
        return -1
    return None


def test_every_numeric_key_refuses_nan_or_negative() -> None:
    """No numeric field of any section is left unchecked (a new field must be validated)."""
    defaults = config_to_dict(Config())
    checked = 0
    for key in valid_keys():
        section, name = key.split(".")
        bad = _hostile(defaults[section][name])
        if bad is None:
            continue
        data = config_to_dict(Config())
        data[section][name] = bad
        cfg = Config(**{s: type(getattr(Config(), s))(**v) for s, v in data.items()})
        with pytest.raises(ConfigError) as info:
            cfg.validate()
        assert str(info.value).startswith(f"{key} "), (key, str(info.value))
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.head_kwargs={s: 32, std: -1}", "model.head_kwargs: std must be non-negative"),
        ("model.head=arcfaec", "model.head: unknown head 'arcfaec'"),
        ("model.kwargs={depth: 3}", "model.kwargs: "),
    ],
)
def test_model_options_are_checked_before_training(
    tmp_path: Path, override: str, message: str
) -> None:
    """Values only the model can judge are built once before anything is written."""
    with pytest.raises(ConfigError, match=f"^{message}"):
        train(tiny_cfg(tmp_path / "out", override), progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_wrong_value_before_training(tmp_path: Path) -> None:
    for override, key in [("optim.gamma=-1", "optim.gamma"), ("masking.seed=-5", "masking.seed")]:
        out = tmp_path / key
        res = _cli(out, "--set", "optim.schedule=step", "--set", override)
        assert res.exit_code == 2, res.output
        _one_error_line(res.output, key)
        assert not out.exists()  # nothing trained, nothing written


# ------------------------------------------------------------------------------------------
# 2. --resume refuses a changed config unless --allow-changes
# ------------------------------------------------------------------------------------------


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(out), progress=False)
    before = (out / "config.yaml").read_bytes()
    for changed in ("teacher.lr=0.5", "masking.p=0.9", "student.distill_weight=10"):
        with pytest.raises(ConfigError, match=rf"{changed.split('=')[0]}: .* → .*allow-changes"):
            train(tiny_cfg(out, changed, "train.resume=true"), progress=False)
        res = _cli(out, "--resume", "--set", changed)
        assert res.exit_code == 2, res.output
        _one_error_line(res.output, changed.split("=")[0], "--allow-changes")
    assert (out / "config.yaml").read_bytes() == before
    assert not list(out.glob("config.yaml.*"))


def test_resume_accepts_settings_that_do_not_change_the_training(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(out), progress=False)
    harmless = ("train.log_every=5", "train.threads=0", "data.cache=none", "eval.batch_size=7")
    train(tiny_cfg(out, *harmless, "train.resume=true"), progress=False)
    log = (out / "train.log").read_text()
    assert "train.log_every: 1 → 5" in log and "data.cache: 'memory' → 'none'" in log
    assert not list(out.glob("config.yaml.*"))  # nothing that matters changed


def test_resume_with_allow_changes_logs_and_keeps_the_old_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(out), progress=False)
    first = (out / "config.yaml").read_bytes()
    res = _cli(out, "--resume", "--allow-changes", "--set", "teacher.epochs=2")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "teacher" / "last.pt")["epoch"] == 2  # the change took effect
    assert (out / "config.yaml.1.bak").read_bytes() == first
    assert "epochs: 2" in (out / "config.yaml").read_text()
    log = (out / "train.log").read_text()
    assert "teacher.epochs: 1 → 2" in log and "config.yaml.1.bak" in log
    # a second allowed change keeps both earlier configs
    second = (out / "config.yaml").read_bytes()
    res = _cli(out, "--resume", "--allow-changes", "--set", "teacher.epochs=3")
    assert res.exit_code == 0, res.output
    assert (out / "config.yaml.1.bak").read_bytes() == first
    assert (out / "config.yaml.2.bak").read_bytes() == second
    res = _cli(tmp_path / "fresh", "--allow-changes")
    assert res.exit_code == 2 and "--resume" in res.output


# ------------------------------------------------------------------------------------------
# 3. non-finite teachers, checkpoints without training state, metrics.csv after a resume
# ------------------------------------------------------------------------------------------


def test_non_finite_teacher_is_refused_on_load_naming_the_tensor(
    tmp_path: Path, teacher_ckpt: Path
) -> None:
    ckpt = load_checkpoint(teacher_ckpt)
    ckpt["model"]["body.1.0.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", ckpt)
    plain = {k: v.clone() for k, v in load_checkpoint(teacher_ckpt)["model"].items()}
    plain["features.running_var"][3] = float("inf")
    torch.save({"state_dict": plain}, tmp_path / "inf.pth")
    for name, tensor in (("nan.pt", "body.1.0.weight"), ("inf.pth", "features.running_var")):
        out = tmp_path / f"out-{name}"
        extra = (f"teacher.checkpoint={tmp_path / name}", "teacher.epochs=0", "student.epochs=1")
        with pytest.raises(CheckpointError, match=rf"{name}.*{tensor}.*not finite"):
            train(tiny_cfg(out, *extra), progress=False)
        assert not out.exists()
    # the same file as the student's initial weights
    extra = (f"teacher.checkpoint={teacher_ckpt}", "student.epochs=1", "teacher.epochs=0")
    with pytest.raises(CheckpointError, match=r"nan\.pt.*body\.1\.0\.weight.*not finite"):
        train(tiny_cfg(tmp_path / "init", *extra, f"student.init={tmp_path / 'nan.pt'}"))


def test_resume_from_a_checkpoint_without_training_state(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(out), progress=False)
    kwargs = {"widths": [8, 8, 16, 16], "blocks": [0, 0, 0, 0]}
    net = create_backbone("tiny", 16, **kwargs)
    weights_only = make_checkpoint(net, "tiny", 16, kwargs, role="teacher")
    save_checkpoint(out / "teacher" / "last.pt", weights_only)
    with pytest.raises(CheckpointError, match=r"last\.pt.*no training state.*epoch"):
        train(tiny_cfg(out, "train.resume=true"), progress=False)
    res = _cli(out, "--resume")
    assert res.exit_code == 2, res.output
    _one_error_line(res.output, "last.pt", "no training state")


def test_metrics_csv_drops_the_rows_of_the_killed_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at step 5 (epoch 2 of 2, rows 1-4 written); resumed from step 3."""
    original = stage_mod.compute_loss
    count = {"n": 0}

    def killed_at_fifth(*args: Any) -> Any:
        count["n"] += 1
        if count["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return original(*args)

    out = tmp_path / "run"
    monkeypatch.setattr(stage_mod, "compute_loss", killed_at_fifth)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(out, "teacher.epochs=2"), progress=False)
    monkeypatch.setattr(stage_mod, "compute_loss", original)
    assert _csv_steps(out / "teacher" / "metrics.csv") == ["1", "2", "3", "4"]
    train(tiny_cfg(out, "teacher.epochs=2", "train.resume=true"), progress=False)
    assert _csv_steps(out / "teacher" / "metrics.csv") == ["1", "2", "3", "4", "5", "6"]
    # --overwrite starts the stage again: no rows of the earlier run are kept
    train(tiny_cfg(out, "teacher.epochs=1"), overwrite=True, progress=False)
    assert _csv_steps(out / "teacher" / "metrics.csv") == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------
# 4. a diverged stage is never saved
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lr", "what"),
    [("1e38", r"tensor head\.weight is not finite"), ("1e9", r"embeddings .* not finite")],
)
def test_diverged_teacher_is_not_saved(tmp_path: Path, lr: str, what: str) -> None:
    """One step per epoch: the step that diverges is the last before the checkpoint."""
    out = tmp_path / "run"
    extra = ("train.max_steps_per_epoch=1", "student.epochs=1", f"teacher.lr={lr}")
    with pytest.raises(TrainingDivergedError, match=rf"^teacher: .*{what}"):
        train(tiny_cfg(out, *extra), progress=False)
    assert not (out / "teacher" / "last.pt").exists()
    assert not (out / "student").exists()
    res = _cli(tmp_path / "cli", *(a for s in extra for a in ("--set", s)))
    assert res.exit_code == 1, res.output
    _one_error_line(res.output, "teacher:", "not saved")


def test_config_dataclasses_have_no_unvalidated_section() -> None:
    """The hostile-value sweep above walks every section of :class:`Config`."""
    sections = {f.name for f in dataclasses.fields(Config)}
    assert {k.split(".")[0] for k in valid_keys()} == sections
