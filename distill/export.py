"""Export a backbone to ONNX or TorchScript (``distill export CKPT OUT.onnx``).

The exported graph takes ``N×3×112×112`` float32 RGB face crops aligned to the ArcFace
template, with a dynamic batch axis ``N``, and returns ``N×E`` embeddings:

* input ``input``: normalised as ``(x / 255 - 0.5) / 0.5`` (values in ``[-1, 1]``), the
  convention of insightface ``arcface_torch`` and of ``distill eval``; with
  ``embed_normalisation=True`` the graph takes the raw ``0..255`` values and normalises itself;
* output ``embedding``: the backbone's embedding, L2-normalised when ``l2_normalise=True``
  (compare with a dot product); ``distill eval`` scores the unnormalised embedding of the image
  plus that of its mirror image, which stays with the caller.

ONNX files are written by torch's ``torch.export``-based exporter at opset :data:`OPSET`
(needs ``onnx`` and ``onnxscript``: ``pip install 'maskgen[onnx]'``), as one self-contained
file. TorchScript files are traced (``torch.jit.trace``) and load with ``torch.jit.load``
without this package.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny", 8, widths=[8, 8, 8, 8], blocks=[0, 0, 0, 0]).eval()
    >>> out = Path(tempfile.mkdtemp()) / "tiny.pt"
    >>> result = export_model(net, out)
    >>> result.format, result.max_abs_diff < 1e-4
    ('torchscript', True)
    >>> torch.jit.load(out)(torch.zeros(3, 3, 112, 112)).shape
    torch.Size([3, 8])
    >>> import shutil; shutil.rmtree(out.parent)
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportError",
    "ExportResult",
    "ExportedFace",
    "export_format",
    "export_model",
]

#: ONNX opset of exported files (the lowest the ``torch.export``-based exporter writes).
OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
FORMATS = ("onnx", "torchscript")
_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript"}
_INPUT_SIZE = (112, 112)


class ExportError(ValueError):
    """A model that cannot be exported as asked (format, missing exporter package)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote, and how closely the file reproduces PyTorch.

    Attributes:
        path: the written file.
        format: ``onnx`` or ``torchscript``.
        opset: the ONNX opset (``None`` for TorchScript).
        max_abs_diff: largest absolute difference of the file's outputs from the PyTorch
            module's on a random batch (``None`` when onnxruntime is not installed).
        checked_with: the runtime that produced the outputs (``onnxruntime``, ``torch.jit``).
    """

    path: Path
    format: str
    opset: int | None
    max_abs_diff: float | None
    checked_with: str | None


class ExportedFace(nn.Module):
    """The exported graph: optional input normalisation → backbone → optional L2 norm.

    Args:
        backbone: a face backbone (``B×3×112×112`` in ``[-1, 1]`` → ``B×E``), in eval mode.
        embed_normalisation: take ``0..255`` RGB values and apply ``(x / 255 - 0.5) / 0.5``.
        l2_normalise: divide each embedding by its L2 norm.
    """

    def __init__(
        self, backbone: nn.Module, embed_normalisation: bool = False, l2_normalise: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_normalisation = bool(embed_normalisation)
        self.l2_normalise = bool(l2_normalise)

    def forward(self, x: Tensor) -> Tensor:
        """``N×3×112×112`` RGB crops → ``N×E`` embeddings."""
        if self.embed_normalisation:
            x = (x / 255.0 - 0.5) / 0.5
        out = self.backbone(x)
        if self.l2_normalise:
            out = torch.nn.functional.normalize(out, dim=1)
        return out


def export_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format to write: ``format`` if given, else from the suffix (``.onnx``; ``.pt``,
    ``.pth``, ``.ts`` for TorchScript).

    >>> export_format("r50.onnx"), export_format("r50.pt"), export_format("x", "TorchScript")
    ('onnx', 'torchscript', 'torchscript')
    """
    if format is not None:
        key = format.strip().lower()
        if key not in FORMATS:
            raise ExportError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
        return key
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ExportError(
            f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; use .onnx, "
            ".pt/.pth/.ts (TorchScript) or --format"
        )
    return _SUFFIXES[suffix]


def _example(batch: int, embed_normalisation: bool, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *_INPUT_SIZE, generator=gen)
    return x * 255.0 if embed_normalisation else x * 2.0 - 1.0


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide torch's notes that say nothing about this model: the exporter's optional
    torchvision ops, the deprecation of ``torch.jit`` and of a pytree helper it calls."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _export_onnx(module: nn.Module, example: Tensor, path: Path, opset: int) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the packages onnx and onnxscript ({exc}); "
            "pip install 'maskgen[onnx]'"
        ) from exc
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={"x": {0: batch}},
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns the program
        raise ExportError("torch.onnx.export returned no program")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)


def _run_onnx(path: Path, x: Tensor) -> Tensor | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def _export_torchscript(module: nn.Module, example: Tensor, path: Path) -> None:
    with torch.no_grad(), _quiet_exporter():
        traced = torch.jit.trace(module, (example,), check_trace=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(path))


def export_model(
    backbone: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    opset: int = OPSET,
    embed_normalisation: bool = False,
    l2_normalise: bool = False,
    check_batch: int = 3,
) -> ExportResult:
    """Write ``backbone`` (see the module docstring for the graph's conventions) to ``path``.

    Args:
        backbone: the face backbone; exported in eval mode on the CPU.
        path: the output file.
        format: ``onnx`` or ``torchscript``; ``None`` takes it from the suffix.
        opset: ONNX opset (at least :data:`OPSET`).
        embed_normalisation: the graph takes ``0..255`` RGB values.
        l2_normalise: the graph returns L2-normalised embeddings.
        check_batch: batch size of the check against PyTorch (a size other than the one of the
            export example, so the dynamic batch axis is exercised).

    Returns:
        The file and the largest absolute difference of its outputs from PyTorch's.

    Raises:
        ExportError: an unknown format, an opset below :data:`OPSET`, or a missing exporter.
    """
    out = Path(path)
    kind = export_format(out, format)
    if kind == "onnx" and opset < OPSET:
        raise ExportError(f"opset {opset} is too old; the exporter writes opset >= {OPSET}")
    module = ExportedFace(backbone.cpu().eval(), embed_normalisation, l2_normalise).eval()
    example = _example(2, embed_normalisation)
    probe = _example(check_batch, embed_normalisation, seed=1)
    with torch.no_grad():
        expected = module(probe)
    if kind == "onnx":
        _export_onnx(module, example, out, opset)
        got, runtime = _run_onnx(out, probe), "onnxruntime"
    else:
        _export_torchscript(module, example, out)
        with torch.no_grad(), _quiet_exporter():
            got, runtime = torch.jit.load(str(out))(probe), "torch.jit"
    diff = None if got is None else float((got - expected).abs().max())
    return ExportResult(
        out, kind, opset if kind == "onnx" else None, diff, runtime if got is not None else None
    )
