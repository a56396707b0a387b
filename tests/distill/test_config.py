"""Tests for distill.config: files, overrides, coercion, unknown keys, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    save_config,
    valid_keys,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_valid_and_match_demo_yaml() -> None:
    cfg = Config().validate()
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert config_to_dict(demo) == config_to_dict(cfg)


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "configs" / "ms1mv2_r50.yaml")
    assert cfg.model.backbone == "iresnet50"
    assert cfg.data.source == "recordio"


def test_yaml_and_toml_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("student:\n  epochs: 3\nmodel:\n  embedding_size: 64\n")
    (tmp_path / "a.toml").write_text("[student]\nepochs = 3\n[model]\nembedding_size = 64\n")
    a, b = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    assert a == b
    assert a.student.epochs == 3 and a.model.embedding_size == 64
    assert a.teacher.epochs == Config().teacher.epochs  # untouched keys keep defaults


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ("train.batch_size=32", lambda c: c.train.batch_size == 32),
        ("optim.weight_decay=1e-4", lambda c: c.optim.weight_decay == 1e-4),
        ("student.lr=1", lambda c: c.student.lr == 1.0 and isinstance(c.student.lr, float)),
        ("data.flip=false", lambda c: c.data.flip is False),
        ("train.resume=yes", lambda c: c.train.resume is True),
        ("optim.milestones=[2, 4.5]", lambda c: c.optim.milestones == [2.0, 4.5]),
        ("model.head_kwargs={s: 64, m: 0.5}", lambda c: c.model.head_kwargs == {"s": 64, "m": 0.5}),
        ("teacher.checkpoint=/x/y.pt", lambda c: c.teacher.checkpoint == "/x/y.pt"),
        ("train.output=a=b", lambda c: c.train.output == "a=b"),
    ],
)
def test_override_coercion(override: str, check) -> None:
    assert check(apply_overrides(Config(), [override]))


def test_unknown_keys_list_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'.*momentum"):
        apply_overrides(Config(), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'nope'.*masking"):
        apply_overrides(Config(), ["nope=1"])
    (tmp_path / "bad.yaml").write_text("student:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'student\.epoch'.*epochs"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=abc", "expected an integer"),
        ("data.flip=maybe", "expected a boolean"),
        ("masking.p=1.5", r"masking\.p must lie in \[0, 1\]"),
        ("masking.mode=gpu", "masking.mode = 'gpu' is not one of workers, device"),
        ("student.init=random", "student.init"),
        ("train.batch_size=0", "must be positive"),
        ("noequals", "key=value"),
        ("student=3", "is a section"),
    ],
)
def test_bad_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_missing_or_unparsable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("student: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_save_roundtrip(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["student.epochs=2", "masking.spec={families: {n95: 1}}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load(dump_config(cfg))["masking"]["spec"] == {"families": {"n95": 1}}


def test_valid_keys_cover_every_section() -> None:
    keys = valid_keys()
    assert {k.split(".")[0] for k in keys} == set(config_to_dict(Config()))
    assert "student.distill_weight" in keys
