"""What both command lines share: ``--version``, ``python -m``, usage and config errors as one
line with exit code 2 (``--debug`` for the traceback), progress bars only on a terminal unless
asked, and configs shipped in the package and usable by name."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import maskgen
from distill.cli import app as distill_app
from maskgen.cli import app as maskgen_app
from maskgen.io import encode_image, load_bin, save_bin, write_image
from maskgen.synthetic import SyntheticFaces, draw_aligned_face, sample_identity

runner = CliRunner()
NO_CUDA = not torch.cuda.is_available()


def _run(*args: str, cwd: Path, stderr_tty: bool = False) -> subprocess.CompletedProcess:
    """``python -m ...`` in a folder without the repository's ``configs/``."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _one_error_line(output: str, message: str) -> None:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and message in lines[0], output
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("crops")
    for i in range(3):
        write_image(root / "id0" / f"{i}.png", draw_aligned_face(sample_identity(rng), rng)[0])
    return root


def test_version_on_both_clis_and_python_m(tmp_path: Path) -> None:
    for prog in ("maskgen", "distill"):
        done = _run("-m", prog, "--version", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{prog} {maskgen.__version__} (python "), done.stdout
        assert f"torch {torch.__version__.split('+')[0]}" in done.stdout
    res = runner.invoke(distill_app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("distill ")


def test_python_m_runs_the_commands(tmp_path: Path) -> None:
    done = _run("-m", "distill", "configs", cwd=tmp_path)
    assert done.returncode == 0 and "ms1mv2_r50" in done.stdout, done.stderr
    done = _run("-m", "maskgen", "preview", "sheet.jpeg2", cwd=tmp_path)
    assert done.returncode == 2
    _one_error_line(done.stderr, "unsupported image extension '.jpeg2'")
    done = _run("-m", "maskgen", "--debug", "preview", "sheet.jpeg2", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError" in done.stderr


def test_usage_and_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = [
        (maskgen_app, ["preview", str(tmp_path)], "is a directory"),
        (maskgen_app, ["preview", str(tmp_path / "x.jpeg2")], "unsupported image extension"),
        (distill_app, ["eval", "m.pt", "--data", "d.bin", "--device", "tpu"], "--device 'tpu'"),
        (distill_app, ["train", "--out", str(tmp_path / "r"), "--set", "model.kwargs={foo: 1}"],
         "model.kwargs: TinyFaceNet.__init__() got an unexpected keyword argument 'foo'"),
        (distill_app, ["train", "--out", str(tmp_path / "r"), "--set", "x.y=1"],
         "unknown key 'x.y'"),
        (distill_app, ["train", "no_such_config"], "neither a file nor a shipped config"),
        (distill_app, ["train", str(tmp_path / "missing.yaml")], "does not exist"),
    ]  # fmt: skip
    if NO_CUDA:
        cases += [
            (distill_app, ["eval", "m.pt", "--data", "d.bin", "--device", "cuda:0"],
             "CUDA is not available"),
            (distill_app, ["train", "--out", str(tmp_path / "r"), "--set", "train.device=cuda"],
             "train.device 'cuda': CUDA is not available"),
        ]  # fmt: skip
    for app, args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        _one_error_line(res.output, message)
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_exception() -> None:
    res = runner.invoke(distill_app, ["--debug", "eval", "m.pt", "--data", "d", "--device", "tpu"])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "--device 'tpu'" in str(res.exception)


def test_shipped_configs_by_name_outside_a_checkout(tmp_path: Path) -> None:
    """``distill train demo`` runs from a folder without ``configs/``; no bar off a terminal."""
    out = tmp_path / "run"
    sets = ["data.num_identities=4", "data.images_per_identity=4", "data.num_workers=0",
            "model.embedding_size=8", "model.kwargs={widths: [8, 8, 8, 8], blocks: [0, 0, 0, 0]}",
            "train.batch_size=8", "teacher.epochs=1", "train.max_steps_per_epoch=2",
            "student.epochs=0", "eval.enabled=false", "train.threads=1"]  # fmt: skip
    args = ["-m", "distill", "train", "demo", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "teacher" / "last.pt").is_file()
    assert "\r" not in done.stderr  # stderr is a pipe: no progress bar
    # the MS1MV2 recipe resolves by name too and then names its missing data
    missing = tmp_path / "faces_emore"
    res = runner.invoke(distill_app, ["train", "ms1mv2_r50", "--out", str(tmp_path / "r50"),
                                      "--set", f"data.path={missing}"])  # fmt: skip
    assert res.exit_code == 2 and "faces_emore" in res.output, res.output
    assert "shipped config" not in res.output


def test_progress_defaults_to_whether_stderr_is_a_terminal(tmp_path: Path) -> None:
    probe = "from maskgen._cli import show_progress; print(show_progress(None))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=follower, text=True
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.stdout.strip() == "True"


def test_render_bar_only_when_asked_off_a_terminal(crops: Path, tmp_path: Path) -> None:
    base = ["render", str(crops), "--workers", "1", "--landmarks", "aligned"]
    quiet = runner.invoke(maskgen_app, [base[0], base[1], str(tmp_path / "a"), *base[2:]])
    assert quiet.exit_code == 0, quiet.output
    assert "\r" not in quiet.output and "render:" not in quiet.output
    loud = runner.invoke(
        maskgen_app, [base[0], base[1], str(tmp_path / "b"), *base[2:], "--progress"]
    )
    assert loud.exit_code == 0, loud.output
    assert "\r" in loud.output and "render" in loud.output


def test_eval_landmark_bar_follows_no_progress(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from distill.eval.inputs import _detect_all

    ds = SyntheticFaces(2, 2, seed=1)
    images = [encode_image(ds[i][0], ".png") for i in range(4)]
    pack = load_bin(save_bin(tmp_path / "p.bin", images, [True, False]))
    calls = []
    for progress in (False, True):
        _detect_all("p", pack, lambda image: calls.append(image.shape) or None, progress)
        err = capfd.readouterr().err
        assert ("p: landmarks" in err) is progress, err
    assert len(calls) == 8
