"""``distill export``: ONNX (run by onnxruntime) and TorchScript files of a tiny backbone give
PyTorch's embeddings, at any batch size, with and without the embedded normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.backbones import create_backbone
from distill.checkpoint import make_checkpoint, save_checkpoint
from distill.cli import app
from distill.export import OPSET, ExportError, export_format, export_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = {"widths": [8, 8, 16, 16], "blocks": [0, 1, 0, 1]}
EMB = 24
TOL = 1e-4


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_backbone("tiny", EMB, **TINY).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, net: torch.nn.Module) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    return save_checkpoint(path, make_checkpoint(net, "tiny", EMB, TINY, role="student"))


def _crops(n: int, seed: int) -> torch.Tensor:
    """RGB crops in 0..255 (integers, as decoded images are)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 112, 112), generator=gen).float()


def _onnx_run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1:] == [3, 112, 112]
    assert isinstance(inp.shape[0], str)  # a symbolic (dynamic) batch axis
    return session.run(["embedding"], {"input": x.numpy()})[0]


def test_onnx_matches_pytorch_at_any_batch_size(tmp_path: Path, net: torch.nn.Module) -> None:
    out = tmp_path / "tiny.onnx"
    result = export_model(net, out)
    assert result.format == "onnx" and result.opset == OPSET
    assert result.max_abs_diff is not None and result.max_abs_diff < TOL
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    worst = 0.0
    for batch in (1, 5):
        x = _crops(batch, batch) / 127.5 - 1
        with torch.no_grad():
            want = net(x).numpy()
        got = _onnx_run(out, x)
        assert got.shape == (batch, EMB)
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"ONNX (onnxruntime) vs PyTorch: max |diff| {worst:.3g}")
    assert worst < TOL


def test_cli_onnx_with_embedded_normalisation_and_l2(
    tmp_path: Path, checkpoint: Path, net: torch.nn.Module
) -> None:
    out = tmp_path / "deploy.onnx"
    args = ["export", str(checkpoint), str(out), "--embed-normalisation", "--l2-normalise"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "ONNX opset 18" in res.output and "onnxruntime: max |difference|" in res.output
    x = _crops(4, 7)  # raw 0..255 values go in
    with torch.no_grad():
        want = torch.nn.functional.normalize(net((x / 255 - 0.5) / 0.5), dim=1).numpy()
    got = _onnx_run(out, x)
    diff = float(np.abs(got - want).max())
    print(f"ONNX with normalisation + L2 vs PyTorch: max |diff| {diff:.3g}")
    assert diff < TOL and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_torchscript_by_suffix_and_by_option(
    tmp_path: Path, checkpoint: Path, net: torch.nn.Module
) -> None:
    for name, extra in (("tiny.pt", []), ("tiny.model", ["--format", "torchscript"])):
        out = tmp_path / name
        res = CliRunner().invoke(app, ["export", str(checkpoint), str(out), *extra])
        assert res.exit_code == 0, res.output
        assert "TorchScript" in res.output
        scripted = torch.jit.load(str(out))
        worst = 0.0
        for batch in (1, 6):
            x = _crops(batch, 3) / 127.5 - 1
            with torch.no_grad():
                worst = max(worst, float((scripted(x) - net(x)).abs().max()))
        print(f"TorchScript ({name}) vs PyTorch: max |diff| {worst:.3g}")
        assert worst < TOL


def test_bad_requests_are_one_line_errors(tmp_path: Path, checkpoint: Path) -> None:
    runner = CliRunner()
    for args, message in (
        (["export", str(checkpoint), str(tmp_path / "x.engine")], "cannot tell the format"),
        (["export", str(checkpoint), str(tmp_path / "x.onnx"), "--opset", "13"], "opset 13"),
        (["export", str(tmp_path / "nope.pt"), str(tmp_path / "x.onnx")], "does not exist"),
        (["export", str(checkpoint), str(tmp_path / "x"), "--format", "tflite"], "tflite"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert res.output.count("\n") == 1 and message in res.output
    assert not list(tmp_path.glob("x*"))
    with pytest.raises(ExportError):
        export_format("model.h5")
