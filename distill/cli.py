"""The ``distill`` command line (typer): ``backbones``, ``heads``, ``configs``, ``train``,
``eval``, ``export``; ``--version``, ``--debug``. Also ``python -m distill``."""

from __future__ import annotations

from pathlib import Path

import typer

from maskgen._cli import add_app_options, cli_errors, fail, progress_option, show_progress

app = typer.Typer(
    help="Mask-invariant face recognition: ElasticFace teacher-student distillation.",
    no_args_is_help=True,
    add_completion=False,
)
add_app_options(app, "distill")


def check_device(text: str, what: str = "--device") -> str:
    """A torch device this build can use, else ``ValueError`` naming the option.

    >>> check_device("cpu")
    'cpu'
    >>> try:
    ...     check_device("tpu")
    ... except ValueError as e:
    ...     print(str(e).split(";")[0])
    --device 'tpu' is not a torch device
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"{what} {text!r} is not a torch device; e.g. cpu, cuda, cuda:0, mps"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {text!r}: CUDA is not available (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"{what} {text!r}: there are {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what} {text!r}: MPS is not available")
    return text


@app.command()
def backbones() -> None:
    """List the registered backbones with their parameter counts."""
    from distill.backbones import create_backbone, list_backbones

    for name in list_backbones():
        model = create_backbone(name)
        params = sum(p.numel() for p in model.parameters())
        typer.echo(f"{name:16s} {params / 1e6:8.2f} M parameters")


@app.command()
def heads() -> None:
    """List the registered margin heads."""
    from distill.heads import list_heads

    for name in list_heads():
        typer.echo(name)


def _named_specs(specs: list[str], kind: str) -> list[tuple[str, str]]:
    """``[NAME=]PATH`` → (name, path); names default to the file stem and must be unique."""
    from pathlib import Path

    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path, p = spec, Path(spec.split("::")[0])
            if p.is_dir():
                name = p.name
            elif p.name == "pairs.txt":
                name = p.parent.name or p.stem
            else:
                name = p.stem
            if name in dict(out):  # e.g. teacher/best.pt and student/best.pt
                name = f"{p.parent.name}/{name}"
        if name in dict(out):
            raise typer.BadParameter(f"two {kind}s named {name!r}; name them with NAME=PATH")
        out.append((name, path))
    return out


@app.command()
def configs() -> None:
    """List the configs shipped with distill (``distill train NAME``)."""
    from distill.configs import config_path, list_configs

    for name in list_configs():
        typer.echo(f"{name:16s} {config_path(name)}")


@app.command("eval")
@cli_errors()
def eval_command(
    models: list[str] = typer.Argument(
        ...,
        help="Models, as [NAME=]PATH: distill checkpoints or plain backbone state dicts "
        "(insightface / ElasticFace backbone.pth).",
    ),
    data: list[str] = typer.Option(
        ...,
        "--data",
        help="Verification set, repeatable: [NAME=]PATH with PATH a .bin pack, a pairs file "
        "(LFW pairs.txt or 'path_a path_b same' lines) or a folder holding pairs.txt; "
        "append ::ROOT to read a pairs file's images from ROOT.",
    ),
    protocols: str = typer.Option("nm-nm,m-nm,m-m", help="Comma-separated protocols."),
    out: str = typer.Option("eval_out", "--out", "-o", help="Folder for the reports."),
    seed: int = typer.Option(0, help="Seed of the mask draws (new protocol files only)."),
    protocol_file: str = typer.Option(
        None, help="Protocol JSON: reused if it exists, else written there."
    ),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda:0."),
    landmarks: str = typer.Option(
        "auto", help="auto (aligned for packs and 112x112 crops), aligned, or a backend name."
    ),
    threads: int = typer.Option(0, min=0, help="torch CPU threads (0: torch default)."),
    arch: str = typer.Option(
        None,
        help="Backbone of state dicts whose keys do not tell it (e.g. iresnet50); "
        "by default inferred from the keys.",
    ),
    mask_spec: Path = typer.Option(
        None,
        "--mask-spec",
        help="JSON/YAML MaskSpec (MaskSpec.to_dict keys) the masks are drawn from, e.g. mask "
        "types unseen in training; the protocol file records it.",
    ),
    progress: bool = progress_option(),
) -> None:
    """Score models on masked-face verification sets under NM-NM, M-NM and M-M."""
    import torch

    from distill.eval import evaluate_models, load_dataset, load_model, parse_protocols
    from distill.eval.run import load_mask_spec

    protos = parse_protocols(protocols)
    draw_spec = load_mask_spec(mask_spec) if mask_spec is not None else None
    check_device(device)
    if threads:
        torch.set_num_threads(threads)
    sets = {}
    for name, spec in _named_specs(data, "dataset"):
        path, _, root = spec.partition("::")
        sets[name] = load_dataset(path, root or None)
    nets = {name: load_model(path, arch) for name, path in _named_specs(models, "model")}
    report = evaluate_models(
        nets,
        sets,
        protos,
        seed=seed,
        protocol_file=protocol_file,
        out_dir=out,
        batch_size=batch_size,
        device=device,
        landmarks=landmarks,
        mask_spec=draw_spec,
        progress=show_progress(progress),
    )
    typer.echo(report.table())
    typer.echo(f"wrote {', '.join(str(p) for p in report.files.values())}")


@app.command()
@cli_errors()
def train(
    config: str = typer.Argument(
        None,
        help="YAML/TOML config file, or the name of a shipped config (distill configs); "
        "without one the built-in CPU demo runs.",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override a config key: --set student.epochs=4 (repeatable)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output dir."),
    allow_changes: bool = typer.Option(
        False,
        "--allow-changes",
        help="With --resume: go on with a config that differs from the run's config.yaml "
        "(each change is logged; the old file is kept as config.yaml.N.bak).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Train into an output directory that already holds a run."
    ),
    progress: bool = progress_option("Show the training progress bar"),
) -> None:
    """Teacher (ElasticFace, clean) → student (masked + distillation) → NM-NM/M-NM/M-M report.

    Multi-GPU: torchrun --nproc_per_node=N -m distill train CONFIG.
    """
    from distill.config import load_config
    from distill.configs import resolve_config
    from distill.demo import run
    from distill.training import TrainingDivergedError

    extra = list(overrides)
    if out is not None:
        extra.append(f"train.output={out}")
    if resume:
        extra.append("train.resume=true")
    if allow_changes:
        extra.append("train.allow_changes=true")
    cfg = load_config(resolve_config(config) if config else None, extra)
    if cfg.train.device != "auto":
        check_device(cfg.train.device, "train.device")
    chose_output = out is not None or any(o.startswith("train.output=") for o in overrides)
    if config is None and not chose_output and not resume and not overwrite:
        cfg.train.output = _free_dir(Path(cfg.train.output))
    try:
        report = run(cfg, overwrite=overwrite, progress=show_progress(progress))
    except TrainingDivergedError as exc:  # a failed run, not a usage error
        fail(exc, 1)
    if report:
        acc = report["verdict"]["accuracy"]
        for model in acc:
            typer.echo(
                f"{model:8s} NM-NM {100 * acc[model]['nm-nm']:6.2f} %  "
                f"M-NM {100 * acc[model]['m-nm']:6.2f} %  M-M {100 * acc[model]['m-m']:6.2f} %"
            )
        if "ablation" in report:
            typer.echo(f"ablation: {report['ablation']['text']}")
        verdict = "PASSED" if report["verdict"]["passed"] else "NOT PASSED"
        typer.echo(f"criteria {verdict}; report: {Path(cfg.train.output) / 'report.md'}")


@app.command()
@cli_errors()
def export(
    checkpoint: Path = typer.Argument(
        ..., help="A distill checkpoint or a plain backbone state dict."
    ),
    output: Path = typer.Argument(..., help="OUT.onnx, or OUT.pt / .pth / .ts for TorchScript."),
    format: str = typer.Option(None, "--format", help="onnx or torchscript (default: suffix)."),
    opset: int = typer.Option(18, help="ONNX opset (18 or newer)."),
    embed_normalisation: bool = typer.Option(
        False,
        "--embed-normalisation",
        "--embed-normalization",
        help="The graph takes 0..255 RGB values and applies (x/255 - 0.5)/0.5 itself.",
    ),
    l2_normalise: bool = typer.Option(
        False,
        "--l2-normalise",
        "--l2-normalize",
        help="The graph returns L2-normalised embeddings.",
    ),
    arch: str = typer.Option(None, help="Backbone of a state dict (default: from its keys)."),
) -> None:
    """Export a backbone to ONNX or TorchScript (dynamic batch, RGB 112x112; docs/export.md)."""
    from distill.checkpoint import load_backbone
    from distill.export import export_format, export_model

    kind = export_format(output, format)  # before loading: a bad suffix fails fast
    model = load_backbone(checkpoint, arch=arch)
    result = export_model(
        model,
        output,
        format=kind,
        opset=opset,
        embed_normalisation=embed_normalisation,
        l2_normalise=l2_normalise,
    )
    what = f"ONNX opset {result.opset}" if result.format == "onnx" else "TorchScript"
    scale = "0..255" if embed_normalisation else "(x/255-0.5)/0.5"
    typer.echo(
        f"wrote {result.path} ({what}; input N×3×112×112 RGB, {scale}; "
        f"output N×{model.embedding_size}{', L2-normalised' if l2_normalise else ''})"
    )
    if result.max_abs_diff is not None:
        typer.echo(
            f"{result.checked_with}: max |difference| from PyTorch {result.max_abs_diff:.3g}"
        )
    else:
        typer.echo("onnxruntime is not installed: the file was not run (pip install onnxruntime)")


def _free_dir(path: Path) -> str:
    """``path`` if it holds no run yet, else the first free ``path-2``, ``path-3``, ..."""
    candidate, n = path, 1
    while (candidate / "config.yaml").exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return str(candidate)


if __name__ == "__main__":
    app()
