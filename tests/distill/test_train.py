"""Tests for distill.training, data, checkpoint: tiny runs on a few synthetic identities."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny import TINY, tiny_cfg

import distill.training.stage as stage_mod
from distill.checkpoint import (
    CheckpointError,
    load_backbone,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from distill.config import Config
from distill.data import (
    DatasetError,
    GlobalBatchSampler,
    RecordIOSource,
    SyntheticSource,
    TrainDataset,
    build_synthetic_pack,
    normalize,
)
from distill.demo import UNSEEN
from distill.training import OutputExistsError, TrainingDivergedError, train
from distill.training.distributed import free_port
from maskgen.augment import MaskedPairs
from maskgen.io import RecordWriter, load_bin


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished teacher-only run, shared by the tests that need a teacher checkpoint."""
    out = tmp_path_factory.mktemp("teacher_run")
    train(tiny_cfg(out, "student.epochs=0"), overwrite=True, progress=False)
    return out / "teacher" / "last.pt"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def test_masked_pairs_never_touch_the_clean_image() -> None:
    src = SyntheticSource(2, 3, seed=1, cache="memory")
    before = src.images.copy()
    pairs = MaskedPairs(src, p=1.0, seed=3)
    for i in range(len(pairs)):
        masked, clean, _, was = pairs[i]
        assert was and not np.shares_memory(masked, clean)
        assert np.array_equal(clean, before[i]) and not np.array_equal(masked, clean)
    assert np.array_equal(src.images, before)
    item = TrainDataset(pairs, flip=True, seed=0)[0]
    assert not torch.equal(item[0], item[1])  # student view masked, teacher view clean


def test_masked_pairs_deterministic_per_epoch() -> None:
    src = SyntheticSource(2, 4, seed=1, cache="none")
    a, b = MaskedPairs(src, p=0.5, seed=3), MaskedPairs(src, p=0.5, seed=3)
    flags = [a[i][3] for i in range(8)]
    assert flags == [b[i][3] for i in range(8)] and 0 < sum(flags) < 8
    b.set_epoch(1)
    assert any(not np.array_equal(a[i][0], b[i][0]) for i in range(8))


def test_global_batches_do_not_depend_on_world_size() -> None:
    one = GlobalBatchSampler(50, 8, 0, 1, seed=5)
    two = [GlobalBatchSampler(50, 8, r, 2, seed=5) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(3)
    merged = [a + b for a, b in zip(*two, strict=True)]
    assert merged == list(one) and len(one) == 6
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(50, 8, 0, 3)


def test_normalize_range() -> None:
    x = torch.tensor([0, 128, 255], dtype=torch.uint8)
    assert normalize(x).tolist() == pytest.approx([-1.0, 0.00392, 1.0], abs=1e-4)


def test_synthetic_pack_layout(tmp_path: Path) -> None:
    path, info = build_synthetic_pack(tmp_path / "p.bin", 6, 3, num_pairs=10, seed=77)
    pack = load_bin(path)
    assert pack.num_pairs == 10 and pack.issame == [True, False] * 5
    assert np.load(tmp_path / "p.landmarks.npy").shape == (20, 68, 2)
    _, info2 = build_synthetic_pack(tmp_path / "q.bin", 6, 3, num_pairs=10, seed=77)
    assert info["sha256"] == info2["sha256"]


def test_missing_and_bad_datasets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="does not exist"):
        train(tiny_cfg(out, "data.source=folder", f"data.path={tmp_path / 'nope'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        train(tiny_cfg(out, "data.source=folder", f"data.path={tmp_path / 'empty'}"))
    with pytest.raises(DatasetError, match="does not exist"):
        train(tiny_cfg(out, "data.source=recordio", f"data.path={tmp_path / 'x.rec'}"))
    rec = tmp_path / "bad" / "train.rec"
    with RecordWriter(rec) as writer:  # the header announces 4 images, there are 2
        for key in (1, 2):
            writer.write_image(key, np.zeros((112, 112, 3), np.uint8), 0)
        writer.write_header_record(label=(5, 5))
    with pytest.raises(DatasetError, match="header"):
        RecordIOSource(rec.parent)
    assert not out.exists()  # nothing written for bad input


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["workers", "device"])
def test_teacher_frozen_eval_and_sees_clean_image(
    tmp_path: Path, teacher_run: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Catches the reference flaw (masking the batch in place, so the teacher sees masks)."""
    calls: list[dict[str, Any]] = []
    original = stage_mod.compute_loss

    def spy(net, teacher, x_student, x_teacher, labels, weight, gen):  # type: ignore[no-untyped-def]
        if teacher is not None:
            calls.append(
                {
                    "training": teacher.training,
                    "grad": any(p.requires_grad for p in teacher.parameters()),
                    "state": {k: v.clone() for k, v in teacher.state_dict().items()},
                    "differs": (x_student != x_teacher).flatten(1).any(1),
                    "x_teacher": x_teacher.clone(),
                    "weight": weight,
                }
            )
        return original(net, teacher, x_student, x_teacher, labels, weight, gen)

    monkeypatch.setattr(stage_mod, "compute_loss", spy)
    cfg = tiny_cfg(
        tmp_path,
        f"teacher.checkpoint={teacher_run}",
        "masking.p=1.0",
        "data.flip=0",
        f"masking.mode={mode}",
    )
    train(cfg, progress=False)
    assert len(calls) == 6
    assert all(not c["training"] and not c["grad"] and c["weight"] == 100.0 for c in calls)
    assert all(bool(c["differs"].all()) for c in calls)  # every student view masked, teacher not
    assert all(_same_weights(calls[0]["state"], c["state"]) for c in calls)  # BN stats frozen
    # the teacher's input holds clean source images only
    src = SyntheticSource(8, 6, seed=0, cache="memory", variation=cfg.data.variation)
    clean = normalize(torch.from_numpy(src.images).permute(0, 3, 1, 2))
    for c in calls:
        for x in c["x_teacher"]:
            assert bool((clean == x).flatten(1).all(1).any())


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_continues_at_same_step_and_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = train(tiny_cfg(tmp_path / "full", "masking.p=0.5"), progress=False)
    saved: list[Path] = []
    original = stage_mod.save_checkpoint

    def crash_after_third(path: Path, ckpt: dict[str, Any]) -> Path:
        result = original(path, ckpt)
        saved.append(path)
        if len(saved) == 3:  # teacher e1, teacher e2, student e1
            raise KeyboardInterrupt("simulated crash")
        return result

    monkeypatch.setattr(stage_mod, "save_checkpoint", crash_after_third)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(out, "masking.p=0.5"), progress=False)
    monkeypatch.setattr(stage_mod, "save_checkpoint", original)
    mid = load_checkpoint(out / "student" / "last.pt")
    assert (mid["epoch"], mid["step"]) == (1, 3)
    with pytest.raises(OutputExistsError, match="resume"):
        train(tiny_cfg(out, "masking.p=0.5"), progress=False)
    resumed = train(tiny_cfg(out, "masking.p=0.5", "train.resume=true"), progress=False)
    assert resumed.stages[0].skipped  # the finished teacher is not retrained
    assert _same_weights(_state(full.student_checkpoint), _state(resumed.student_checkpoint))
    a = _csv(tmp_path / "full" / "student" / "metrics.csv")
    b = _csv(out / "student" / "metrics.csv")
    assert [r["step"] for r in b] == [r["step"] for r in a] == ["1", "2", "3", "4", "5", "6"]
    assert [r["lr"] for r in b] == [r["lr"] for r in a]
    # TensorBoard event files are written beside the CSV.
    assert list((tmp_path / "full" / "student" / "tb").glob("events.out.tfevents.*"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, teacher_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = stage_mod.compute_loss
    count = {"n": 0}

    def poisoned(*args: Any) -> Any:
        loss, parts = original(*args)
        count["n"] += 1
        return (loss * float("nan"), parts) if count["n"] == 5 else (loss, parts)

    monkeypatch.setattr(stage_mod, "compute_loss", poisoned)
    cfg = tiny_cfg(tmp_path, f"teacher.checkpoint={teacher_run}")
    with pytest.raises(TrainingDivergedError, match=r"nan at step 4 .*last good checkpoint"):
        train(cfg, progress=False)
    kept = load_checkpoint(tmp_path / "student" / "last.pt")
    assert (kept["epoch"], kept["step"]) == (1, 3)
    assert all(torch.isfinite(v.float()).all() for v in kept["model"].values())


def test_teacher_embedding_size_mismatch(tmp_path: Path, teacher_run: Path) -> None:
    out = tmp_path / "out"
    cfg = tiny_cfg(out, f"teacher.checkpoint={teacher_run}", "model.embedding_size=32")
    with pytest.raises(CheckpointError, match=r"embedding-size mismatch.*16-d.*32-d"):
        train(cfg)
    assert not out.exists()


def test_wrong_architecture_checkpoints(tmp_path: Path, teacher_run: Path) -> None:
    out = tmp_path / "out"
    cfg = tiny_cfg(out, f"teacher.checkpoint={teacher_run}", "model.kwargs={}")
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        train(cfg)
    # weights that do not fit the architecture the file claims
    ckpt = load_checkpoint(teacher_run)
    ckpt["arch"]["kwargs"] = {}
    save_checkpoint(tmp_path / "lying.pt", ckpt)
    with pytest.raises(CheckpointError, match="architecture mismatch: the weights do not fit"):
        load_backbone(tmp_path / "lying.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a distill checkpoint"):
        load_backbone(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable distill checkpoint"):
        load_backbone(tmp_path / "junk.pt")
    assert not out.exists()


def test_load_backbone_roundtrip(teacher_run: Path) -> None:
    model = load_backbone(teacher_run)
    assert not model.training and model.embedding_size == 16
    ckpt = load_checkpoint(teacher_run)
    assert ckpt["format"] == "distill-checkpoint" and ckpt["version"] == 1
    assert ckpt["role"] == "teacher" and ckpt["arch"]["backbone"] == "tiny"
    assert {"head", "optimizer", "scheduler", "rng", "step", "epoch"} <= set(ckpt)


def test_ddp_gloo_world_size_one(tmp_path: Path, teacher_run: Path) -> None:
    cfg = tiny_cfg(
        tmp_path, f"teacher.checkpoint={teacher_run}", "student.epochs=1", "train.distributed=on"
    )
    result = train(cfg, progress=False)
    assert not torch.distributed.is_initialized()
    ckpt = load_checkpoint(result.student_checkpoint)
    assert ckpt["world_size"] == 1 and ckpt["step"] == 3
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "train.log").is_file()


def test_make_checkpoint_rejects_bad_role() -> None:
    from distill.backbones import create_backbone

    with pytest.raises(ValueError, match="role"):
        make_checkpoint(create_backbone("tiny", 8), "tiny", 8, {}, role="coach")


def _ddp_worker(rank: int, world: int, port: int, cfg: Config) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    train(cfg, progress=False)


def test_resume_on_two_processes_keeps_step_and_lr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-process run interrupted after epoch 1 resumes on 2 gloo processes."""
    extra = ("student.epochs=0", "teacher.epochs=3")
    full = train(tiny_cfg(tmp_path / "full", *extra), progress=False)
    original = stage_mod.save_checkpoint

    def crash(path: Path, ckpt: dict[str, Any]) -> Path:
        original(path, ckpt)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(stage_mod, "save_checkpoint", crash)
    out = tmp_path / "two"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(out, *extra), progress=False)
    monkeypatch.setattr(stage_mod, "save_checkpoint", original)
    cfg = tiny_cfg(out, *extra, "train.resume=true", "train.distributed=on")
    port = free_port()
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, port, cfg), nprocs=2, join=True, start_method="fork"
    )
    ckpt = load_checkpoint(out / "teacher" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"], ckpt["world_size"]) == (3, 9, 2)
    a = _csv(full.output / "teacher" / "metrics.csv")
    b = _csv(out / "teacher" / "metrics.csv")
    assert [(r["step"], r["lr"]) for r in b] == [(r["step"], r["lr"]) for r in a]


def test_cli_train_end_to_end_with_report(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from distill.cli import app

    sets = [
        "data.num_identities=8", "data.images_per_identity=6", "data.num_workers=0",
        "model.embedding_size=16", f"model.kwargs={TINY}", "train.batch_size=16",
        "teacher.epochs=1", "student.epochs=1", "eval.num_identities=10",
        "eval.images_per_identity=2", "eval.num_pairs=20", "train.threads=1",
    ]  # fmt: skip
    args = ["train", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "criteria" in result.output and "M-NM" in result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["results"]) == {"teacher", "augment", "student"}  # train.ablation
    # the training masks, and the unseen ones of eval.unseen_spec (on by default)
    assert set(report["results"]["student"]) == {"nm-nm", "m-nm", "m-m", *UNSEEN}
    assert (tmp_path / "run" / "report.md").is_file()
    # unknown keys: a config error, exit code 2 and the valid keys in the message; nothing written
    bad = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "bad"), "--set", "x.y=1"])
    assert bad.exit_code == 2 and "unknown key 'x.y'" in bad.output
    assert not (tmp_path / "bad").exists()


def test_disk_cache_and_image_folder(tmp_path: Path) -> None:
    from maskgen.io import write_image

    cache = tmp_path / "cache.npz"
    a = SyntheticSource(2, 2, seed=3, cache="disk", cache_path=cache)
    assert cache.is_file()
    b = SyntheticSource(2, 2, seed=3, cache="disk", cache_path=cache)  # reused
    assert np.array_equal(a.images, b.images) and np.array_equal(a[3][0], b[3][0])
    assert np.array_equal(a[3][0], SyntheticSource(2, 2, seed=3, cache="none")[3][0])
    for i in range(4):
        write_image(tmp_path / "folder" / f"id{i // 2}" / f"{i}.png", a[i][0])
    from distill.data import ImageFolderSource

    folder = ImageFolderSource(tmp_path / "folder")
    assert (len(folder), folder.num_classes, folder.classes) == (4, 2, ["id0", "id1"])
    image, label, landmarks = folder[2]
    assert np.array_equal(image, a[2][0]) and label == 1 and landmarks.shape == (68, 2)
    write_image(tmp_path / "folder" / "id1" / "big.png", np.zeros((120, 120, 3), np.uint8))
    with pytest.raises(DatasetError, match="112×112"):
        ImageFolderSource(tmp_path / "folder")[4]  # id1/big.png sorts last


def test_device_masking_draws_what_the_workers_draw() -> None:
    """masking.mode=device gives item i of epoch e the draw masking.mode=workers gives it."""
    from distill.training.masking import DeviceMasker
    from maskgen.landmarks import aligned_landmarks
    from maskgen.render import MaskSpec

    src = SyntheticSource(2, 6, seed=1, cache="none")
    pairs = MaskedPairs(src, MaskSpec(), p=0.6, seed=9)
    masker = DeviceMasker(MaskSpec(), 0.6, 9)
    indices = [5, 0, 11, 3, 8, 2]
    landmarks = torch.from_numpy(np.stack([aligned_landmarks()] * len(indices)))
    for epoch in (0, 2):
        pairs.set_epoch(epoch)
        _, was = masker(torch.rand(len(indices), 3, 112, 112), landmarks, indices, epoch)
        want = [pairs.draw(i) for i in indices]
        assert was.tolist() == [w is not None for w in want] and 0 < int(was.sum()) < 6
        got = masker.aug.to_mask_params(masker.aug._params)
        assert [g for g, w in zip(got, want, strict=True) if w] == [w for w in want if w]
