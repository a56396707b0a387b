"""Tests for distill.eval and the ``distill eval`` command (tiny models, small packs)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from distill.backbones import create_backbone
from distill.cli import app
from distill.eval import (
    PROTOCOLS,
    EvalProtocol,
    PairsFileError,
    PairsSet,
    ProtocolFileError,
    dataset_sha256,
    evaluate_models,
    load_dataset,
    load_model,
    load_pairs,
    parse_protocols,
    protocol_draws,
)
from distill.eval.embed import _batches
from distill.eval.inputs import _build_entry, _Materialiser
from maskgen.io import BinPack, BinPackError, encode_image, load_bin, save_bin, write_image
from maskgen.protocol import protocol_landmarks
from maskgen.render import MaskParams, MaskSpec, render
from maskgen.synthetic import SyntheticFaces

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_IDS, PER_ID = 6, 4


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, int]]:
    ds = SyntheticFaces(N_IDS, PER_ID, seed=3)
    return [(ds[i][0], ds[i][1]) for i in range(len(ds))]


def _pairs(n_pairs: int) -> list[tuple[int, int, bool]]:
    """Alternating genuine / impostor pairs of face indices."""
    out = []
    for k in range(n_pairs):
        ident = k % N_IDS
        a = ident * PER_ID + (k // N_IDS) % PER_ID
        if k % 2 == 0:
            b = ident * PER_ID + ((k // N_IDS) + 1) % PER_ID
            out.append((a, b, True))
        else:
            b = ((ident + 1 + k % (N_IDS - 1)) % N_IDS) * PER_ID + (k % PER_ID)
            out.append((a, b, False))
    return out


def _pack(tmp: Path, faces, n_pairs: int = 12, name: str = "pack.bin", corrupt=()) -> Path:
    images: list[bytes] = []
    flags = []
    for a, b, same in _pairs(n_pairs):
        images += [encode_image(faces[a][0], ".png"), encode_image(faces[b][0], ".png")]
        flags.append(same)
    for i in corrupt:
        images[i] = images[i][:40]  # truncated PNG
    return save_bin(tmp / name, images, flags)


class Probe(nn.Module):
    """A parameter-free 'backbone' that records every input batch (4×4 pooled colours)."""

    embedding_size = 48

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) + 0.01


def _checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    net = create_backbone("tiny", embedding_size=32)
    ckpt = {
        "format": "distill-checkpoint",
        "version": 1,
        "arch": {"backbone": "tiny", "embedding_size": 32, "kwargs": {}},
        "model": net.state_dict(),
        "role": "teacher",
    }
    ckpt.update(overrides)
    torch.save(ckpt, path)
    return path


# ----------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------


def test_parse_protocols() -> None:
    assert parse_protocols("m-m,nm-nm,m-nm") == PROTOCOLS
    with pytest.raises(ValueError, match="unknown protocol"):
        parse_protocols("m-x")


def test_protocol_draws_structure() -> None:
    assert protocol_draws("nm-nm", 8, 0) == [None] * 8
    mnm = protocol_draws("m-nm", 8, 0)
    assert all(d is None for d in mnm[0::2])
    assert all(isinstance(d, MaskParams) for d in mnm[1::2])
    mm = protocol_draws("m-m", 8, 0)
    assert all(isinstance(d, MaskParams) for d in mm)
    assert all(mm[2 * k] != mm[2 * k + 1] for k in range(4))  # independent draws
    assert protocol_draws("m-m", 8, 0) == mm  # fixed by the seed
    assert protocol_draws("m-m", 8, 1) != mm
    with pytest.raises(ValueError, match="even"):
        protocol_draws("m-m", 7, 0)


def test_materialised_images_follow_protocols(tmp_path: Path, faces) -> None:
    pack = load_bin(_pack(tmp_path, faces, n_pairs=4))
    entry = _build_entry("p", pack, PROTOCOLS, 5, MaskSpec(), "auto", dataset_sha256(pack))
    make = _Materialiser(pack, entry, None)
    lm = protocol_landmarks((112, 112))  # the layout as maskgen render stores it
    for i in range(pack.num_images):
        clean = pack.decode(i)
        assert np.array_equal(make(i, entry.draws["nm-nm"][i]), clean)
        mnm = make(i, entry.draws["m-nm"][i])
        if i % 2 == 0:  # first image of the pair: byte-identical to the clean one
            assert np.array_equal(mnm, clean)
        else:
            assert not np.array_equal(mnm, clean)
            assert np.array_equal(mnm, render(clean, lm, entry.draws["m-nm"][i]).image)
        mm = make(i, entry.draws["m-m"][i])
        assert not np.array_equal(mm, clean)
        assert np.array_equal(mm, render(clean, lm, entry.draws["m-m"][i]).image)
    for k in range(pack.num_pairs):
        assert not np.array_equal(make(2 * k, entry.draws["m-m"][2 * k]),
                                  make(2 * k + 1, entry.draws["m-m"][2 * k + 1]))  # fmt: skip


def test_two_models_see_identical_images(tmp_path: Path, faces) -> None:
    pack = load_bin(_pack(tmp_path, faces, n_pairs=10))
    a, b = Probe(), Probe()
    report = evaluate_models({"a": a, "b": b}, {"p": pack}, batch_size=7, progress=False)
    assert len(a.seen) == len(b.seen) > 0
    assert all(torch.equal(x, y) for x, y in zip(a.seen, b.seen, strict=True))
    # Inputs are flip-doubled, normalised to [-1, 1]; clean (20) + M-NM (10) + M-M (20) images.
    assert sum(x.shape[0] for x in a.seen) == 2 * (20 + 10 + 20)
    assert all(x.min() >= -1 and x.max() <= 1 for x in a.seen)
    assert torch.equal(a.seen[0][7:], a.seen[0][:7].flip(3))
    for proto in PROTOCOLS:
        ra, rb = report.result("a", "p", proto), report.result("b", "p", proto)
        assert np.array_equal(ra.scores, rb.scores)
        assert ra.num_pairs_scored == ra.num_pairs_total == 10
    assert a.training  # the caller's train/eval mode is restored


def test_protocol_file_round_trip_and_reuse(tmp_path: Path, faces) -> None:
    pack = load_bin(_pack(tmp_path, faces, n_pairs=10))
    torch.manual_seed(0)
    net = create_backbone("tiny", embedding_size=16).eval()
    pfile = tmp_path / "proto.json"
    first = evaluate_models({"m": net}, {"p": pack}, seed=11, protocol_file=pfile, progress=False)
    assert pfile.is_file()
    data = json.loads(pfile.read_text())
    entry = data["datasets"]["p"]
    assert data["seed"] == 11 and entry["sha256"] == dataset_sha256(pack)
    assert entry["num_images"] == 20 and len(entry["protocols"]["m-m"]) == 20
    assert entry["protocols"]["m-nm"][0] is None and entry["protocols"]["m-nm"][1]["family"]
    loaded = EvalProtocol.load(pfile)
    assert loaded.to_dict() == first.protocol.to_dict()
    assert loaded.datasets["p"].draws["m-m"] == protocol_draws("m-m", 20, 11)

    again = evaluate_models({"m": net}, {"p": pack}, seed=999, protocol_file=pfile, progress=False)
    other = evaluate_models({"m": net}, {"p": pack}, seed=999, progress=False)
    for proto in PROTOCOLS:
        assert np.array_equal(first.result("m", "p", proto).scores,
                              again.result("m", "p", proto).scores)  # fmt: skip
    assert not np.array_equal(first.result("m", "p", "m-m").scores,
                              other.result("m", "p", "m-m").scores)  # fmt: skip

    # Same draws but different pixels (e.g. a changed renderer) are flagged, not hidden.
    stored = json.loads(pfile.read_text())["datasets"]["p"]["masked_images_sha256"]
    assert set(stored) == {"m-nm", "m-m"}
    assert not again.warnings
    tampered = json.loads(pfile.read_text())
    tampered["datasets"]["p"]["masked_images_sha256"]["m-m"] = "0" * 64
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    with pytest.warns(UserWarning, match="M-M: the masked images differ") as caught:
        flagged = evaluate_models({"m": net}, {"p": pack}, protocol_file=tmp_path / "tampered.json",
                                  progress=False)  # fmt: skip
    assert caught[0].filename == __file__  # attributed to the caller of evaluate_models
    assert "warning: p M-M" in flagged.table() and flagged.to_dict()["warnings"]

    other_pack = load_bin(_pack(tmp_path, faces, n_pairs=8, name="other.bin"))
    with pytest.raises(ProtocolFileError, match="different file"):
        evaluate_models({"m": net}, {"p": other_pack}, protocol_file=pfile, progress=False)
    with pytest.raises(ProtocolFileError, match="no dataset"):
        evaluate_models({"m": net}, {"q": pack}, protocol_file=pfile, progress=False)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ProtocolFileError, match="not a distill protocol"):
        EvalProtocol.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_malformed_packs(tmp_path: Path, faces) -> None:
    jpg = encode_image(faces[0][0], ".jpg")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([jpg] * 5, [True, False]), protocol=4))
    with pytest.raises(BinPackError, match="odd number of images"):
        load_dataset(odd)
    flags = tmp_path / "flags.bin"
    flags.write_bytes(pickle.dumps(([jpg] * 6, [True, False]), protocol=4))
    with pytest.raises(BinPackError, match="6 images but 2 same/different flags"):
        load_dataset(flags)


def test_unreadable_image_skips_pair_and_reports_it(tmp_path: Path, faces) -> None:
    path = _pack(tmp_path, faces, n_pairs=12, corrupt=(5,))  # image 5 = second of pair 2
    torch.manual_seed(0)
    net = create_backbone("tiny", embedding_size=16).eval()
    report = evaluate_models({"m": net}, {"p": load_bin(path)}, out_dir=tmp_path / "out",
                             progress=False)  # fmt: skip
    for proto in PROTOCOLS:
        r = report.result("m", "p", proto)
        assert (r.num_pairs_total, r.num_pairs_scored, sorted(r.skipped)) == (12, 11, [2])
        assert r.metrics["num_pairs"] == 11 and r.scores.size == 11
        acc = r.metrics["accuracy_mean"]
        assert r.metrics["accuracy_skipped_as_errors"] == pytest.approx(acc * 11 / 12)
        assert "image 5: unreadable image" in r.skipped[2]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    res = data["results"][0]
    assert (res["num_pairs_total"], res["num_pairs_scored"], res["skipped_pairs"]) == (12, 11, [2])
    skipped = data["datasets"]["p"]["skipped_pairs"]["m-m"]
    assert skipped[0]["pair"] == 2 and skipped[0]["images"] == [5]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "11/12 (1 skipped)" in md and "pair 2 (images 5)" in md
    assert "skipped 1 of 12 pairs" in report.table()


def test_pairs_files_both_formats(tmp_path: Path, faces) -> None:
    root = tmp_path / "imgs"
    for i, (img, label) in enumerate(faces[:8]):
        write_image(root / f"id{label}" / f"id{label}_{i % PER_ID + 1:04d}.png", img)
    lfw = tmp_path / "imgs" / "pairs.txt"
    lfw.write_text("1 2\nid0 1 2\nid1 1 3\nid0 1 id1 2\nid0 3 id1 4\n")
    s = load_dataset(root)
    assert isinstance(s, PairsSet) and s.issame == [True, True, False, False]
    assert s.paths[4] == root / "id0" / "id0_0001.png"
    listed = tmp_path / "list.txt"
    listed.write_text("# a b same\nimgs/id0/id0_0001.png imgs/id0/id0_0002.png 1\n"
                      "imgs/id0/id0_0001.png imgs/id1/id1_0002.png 0\n")  # fmt: skip
    s2 = load_pairs(listed)
    assert s2.issame == [True, False] and s2.decode(3).shape == (112, 112, 3)

    torch.manual_seed(0)
    net = create_backbone("tiny", embedding_size=16).eval()
    rep = evaluate_models({"m": net}, {"lfw": s}, protocols="nm-nm,m-m", progress=False)
    assert rep.protocol.datasets["lfw"].landmarks == "aligned"  # 112×112 crops
    assert rep.result("m", "lfw", "m-m").num_pairs_scored == 4

    lfw.write_text("1 2\nid0 1 2\nid0 1 id1 9\n")
    with pytest.raises(PairsFileError, match=r"line 3: .*id1_0009.jpg"):
        load_dataset(root)
    listed.write_text("imgs/id0/id0_0001.png imgs/nope.png 1\n")
    with pytest.raises(PairsFileError, match=r"1 image file\(s\) .* line 1: .*nope.png"):
        load_pairs(listed)
    listed.write_text("imgs/id0/id0_0001.png imgs/id0/id0_0002.png maybe\n")
    with pytest.raises(PairsFileError, match=r"list.txt:1: expected 'path_a path_b same'"):
        load_pairs(listed)


def test_non_distill_checkpoints(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "good.pt")
    assert load_model(good).embedding_size == 32 and not load_model(good).training
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    unknown = _checkpoint(tmp_path / "unknown.pt", arch={"backbone": "resnet9000",
                                                         "embedding_size": 32})  # fmt: skip
    wrong = {"backbone": "tiny", "embedding_size": 64, "kwargs": {}}
    mismatch = _checkpoint(tmp_path / "mismatch.pt", arch=wrong)
    for path, pattern in (
        (text, "distill checkpoint"),
        (plain, "not a distill checkpoint"),
        (unknown, "resnet9000"),
        (mismatch, "do not fit"),
    ):
        with pytest.raises(ValueError, match=pattern):
            load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path: Path, faces) -> None:
    pack = _pack(tmp_path, faces, n_pairs=12, name="synth.bin")
    a = _checkpoint(tmp_path / "teacher.pt", seed=0)
    b = _checkpoint(tmp_path / "student.pt", seed=1)
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["eval", str(a), f"stu={b}", "--data", str(pack), "--out", str(out),
            "--batch-size", "16", "--no-progress", "--seed", "4"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "teacher" in res.output and "stu" in res.output and "M-NM" in res.output
    data = json.loads((out / "report.json").read_text())
    assert data["format"] == "distill-eval-report" and data["seed"] == 4
    combos = {(r["model"], r["dataset"], r["protocol"]) for r in data["results"]}
    assert combos == {(m, "synth", p) for m in ("teacher", "stu") for p in PROTOCOLS}
    assert "| teacher | synth | M-M |" in (out / "report.md").read_text()
    for png in ("roc_synth.png", "scores_synth.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert isinstance(load_bin(pack), BinPack)

    # Reusing the written protocol file gives the same numbers, whatever --seed says.
    out2 = tmp_path / "out2"
    args2 = [*args[:6], str(out2), "--protocol-file", str(out / "protocol.json"), "--seed", "9",
             "--no-progress", "--protocols", "m-m"]  # fmt: skip
    res2 = runner.invoke(app, args2)
    assert res2.exit_code == 0, res2.output
    again = json.loads((out2 / "report.json").read_text())
    before = {(r["model"], r["protocol"]): r["metrics"] for r in data["results"]}
    assert again["seed"] == 4
    assert again["warnings"] == []  # same pixels although the batch size differs
    for r in again["results"]:
        assert r["metrics"] == before[(r["model"], r["protocol"])]

    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    res3 = runner.invoke(app, ["eval", str(bad), "--data", str(pack), "--out", str(out)])
    assert res3.exit_code == 2
    assert "not a distill checkpoint" in res3.output


def test_prefetched_batches_match_inline_batches(tmp_path: Path, faces) -> None:
    pack = load_bin(_pack(tmp_path, faces, n_pairs=5, corrupt=(3,)))
    entry = _build_entry("p", pack, ("m-m",), 0, MaskSpec(), "auto", dataset_sha256(pack))
    make = _Materialiser(pack, entry, None)
    jobs = [(i, entry.draws["m-m"][i]) for i in range(pack.num_images)]
    inline = list(_batches(jobs, make, 4, prefetch=False))
    threaded = list(_batches(jobs, make, 4, prefetch=True))
    assert len(inline) == len(threaded) == 3
    for (p1, x1, f1), (p2, x2, f2) in zip(inline, threaded, strict=True):
        assert p1 == p2 and f1 == f2 and np.array_equal(x1, x2)
    assert list(inline[0][2]) == [3]


# ----------------------------------------------------------------------------------------------
# Unseen masks: --mask-spec
# ----------------------------------------------------------------------------------------------


def test_cli_mask_spec_draws_from_it_and_the_protocol_records_it(tmp_path: Path, faces) -> None:
    pack = _pack(tmp_path, faces, n_pairs=12, name="synth.bin")
    a = _checkpoint(tmp_path / "teacher.pt", seed=0)
    unseen = MaskSpec(families={"gaiter": 1.0}, coverages={"chin": 1.0})
    spec_file = tmp_path / "unseen.yaml"
    spec_file.write_text(json.dumps({"families": {"gaiter": 1.0}, "coverages": {"chin": 1.0}}))
    out = tmp_path / "out"
    args = ["eval", str(a), "--data", str(pack), "--out", str(out), "--no-progress",
            "--batch-size", "16", "--mask-spec", str(spec_file)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["mask_spec"] == json.loads(json.dumps(unseen.to_dict()))
    draws = [d for d in proto["datasets"]["synth"]["protocols"]["m-m"] if d]
    assert draws and all(d["family"] == "gaiter" and d["coverage"] == "chin" for d in draws)
    # the default spec draws other masks on the same pack and seed
    res_default = CliRunner().invoke(app, [*args[:-2], "--out", str(tmp_path / "default")])
    assert res_default.exit_code == 0, res_default.output
    default = json.loads((tmp_path / "default" / "protocol.json").read_text())
    fams = {d["family"] for d in default["datasets"]["synth"]["protocols"]["m-m"] if d}
    assert fams != {"gaiter"}
    # reusing that protocol file with another spec is refused
    other = [*args[:-2], "--protocol-file", str(out / "protocol.json"), "--mask-spec"]
    default_spec = tmp_path / "default.json"
    default_spec.write_text(json.dumps(MaskSpec().to_dict()))
    refused = CliRunner().invoke(app, [*other, str(default_spec)])
    assert refused.exit_code == 2 and "another mask spec" in refused.output
    # a bad spec: one line naming the file
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"families": {"balaclava": 1.0}}))
    res_bad = CliRunner().invoke(app, [*args[:-1], str(bad)])
    assert res_bad.exit_code == 2 and "bad.json" in res_bad.output
