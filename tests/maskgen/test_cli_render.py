"""The ``maskgen render`` command: options, exit codes, summary, replay of its manifest."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from maskgen.cli import app
from maskgen.dataset import meta_dir
from maskgen.io import read_image, write_image
from maskgen.synthetic import draw_aligned_face, sample_identity

runner = CliRunner()


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "crops"
    for i in range(4):
        image, _ = draw_aligned_face(sample_identity(rng), rng)
        write_image(root / "id0" / f"{i}.jpg", image)
    (root / "id0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def test_render_reports_a_summary_and_succeeds_despite_failures(
    crops: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["render", str(crops), str(out), "--workers", "1", "--no-progress",
         "--families", "surgical=2,kn95", "--coverage", "high", "--format", "png"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "done 4, skipped 0, failed 1, faces found 4" in result.output
    assert sorted(p.name for p in (out / "id0").iterdir()) == [f"{i}.png" for i in range(4)]
    records = [json.loads(line) for line in (meta_dir(out) / "manifest.jsonl").open()]
    assert {r["params"]["family"] for r in records} <= {"surgical", "kn95"}
    assert {r["params"]["coverage"] for r in records} == {"high"}
    assert all(r["backend"] == "aligned" for r in records)  # auto on 112×112 crops


def test_strict_turns_failures_into_exit_code_1(crops: Path, tmp_path: Path) -> None:
    args = ["render", str(crops), str(tmp_path / "out"), "--workers", "1", "--no-progress"]
    assert runner.invoke(app, [*args, "--strict"]).exit_code == 1


def test_bad_options_exit_with_code_2(crops: Path, tmp_path: Path) -> None:
    base = ["render", str(crops), str(tmp_path / "out"), "--no-progress"]
    result = runner.invoke(app, [*base, "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard" in result.output
    result = runner.invoke(app, [*base, "--families", "balaclava"])
    assert result.exit_code == 2 and "unknown families" in result.output


def test_missing_face_alignment_weights_say_what_to_do(
    crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in the tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    result = runner.invoke(
        app,
        ["render", str(crops), str(tmp_path / "out"), "--landmarks", "face_alignment",
         "--workers", "1", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--landmarks dlib" in result.output and "hub/checkpoints" in result.output


def test_replay_command_reproduces_render_output(crops: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["render", str(crops), str(out), "--workers", "1", "--no-progress", "--format", "png"]
    assert runner.invoke(app, args).exit_code == 0
    manifest = meta_dir(out) / "manifest.jsonl"
    replayed = tmp_path / "replayed"
    result = runner.invoke(
        app, ["replay", str(manifest), str(replayed), "--input-root", str(crops)]
    )
    assert result.exit_code == 0, result.output
    for i in range(4):
        np.testing.assert_array_equal(
            read_image(replayed / "id0" / f"{i}.png"), read_image(out / "id0" / f"{i}.png")
        )


@pytest.mark.parametrize("target", ["/tmp/maskgen-replay-escape.png", "../escape.png",
                                    "id0/../../escape.png"])  # fmt: skip
def test_replay_refuses_outputs_outside_its_folder(
    crops: Path, tmp_path: Path, target: str
) -> None:
    out = tmp_path / "out"
    args = ["render", str(crops), str(out), "--workers", "1", "--no-progress", "--format", "png"]
    assert runner.invoke(app, args).exit_code == 0
    manifest = meta_dir(out) / "manifest.jsonl"
    record = json.loads(manifest.read_text().splitlines()[0])
    record["output"] = target
    crafted = tmp_path / "crafted.jsonl"
    crafted.write_text(json.dumps(record) + "\n")
    replayed = tmp_path / "replayed" / "inner"
    result = runner.invoke(app, ["replay", str(crafted), str(replayed), "--input-root", str(crops)])
    assert result.exit_code != 0
    message = result.output + str(result.exception)
    assert "leaves the output folder" in message
    assert not Path("/tmp/maskgen-replay-escape.png").exists()
    assert not (tmp_path / "replayed" / "escape.png").exists() and not replayed.exists()


def test_max_pixels_and_resume_notes_reach_the_command_line(crops: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["render", str(crops), str(out), "--workers", "1", "--no-progress"]
    result = runner.invoke(app, [*base, "--max-pixels", "10000"])  # 112² crops are larger
    assert result.exit_code == 0, result.output
    failures = [json.loads(x) for x in (meta_dir(out) / "failures.jsonl").open()]
    assert {f["category"] for f in failures} == {"too_large", "unreadable"}
    progress = meta_dir(out) / "progress.log"
    progress.write_bytes(progress.read_bytes()[:-7] + b"\x00" * 64)  # a torn last line
    result = runner.invoke(app, [*base, "--max-pixels", "10000"])
    assert result.exit_code == 0 and "note: " in result.output and "torn" in result.output
