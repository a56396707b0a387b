"""The ``distill`` command line (typer)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Mask-invariant face recognition: ElasticFace teacher-student distillation.",
    no_args_is_help=True,
    add_completion=False,
)


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


@app.command("eval")
def eval_command(
    models: list[str] = typer.Argument(..., help="distill checkpoints, as [NAME=]PATH."),
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
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Score models on masked-face verification sets under NM-NM, M-NM and M-M."""
    import torch

    from distill.eval import evaluate_models, load_dataset, load_model, parse_protocols

    try:
        protos = parse_protocols(protocols)
        if threads:
            torch.set_num_threads(threads)
        sets = {}
        for name, spec in _named_specs(data, "dataset"):
            path, _, root = spec.partition("::")
            sets[name] = load_dataset(path, root or None)
        nets = {name: load_model(path) for name, path in _named_specs(models, "model")}
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
            progress=progress,
        )
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(report.table())
    typer.echo(f"wrote {', '.join(str(p) for p in report.files.values())}")


@app.command()
def train(
    config: Path | None = typer.Argument(
        None, help="YAML/TOML config; without one the built-in CPU demo runs."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override a config key: --set student.epochs=4 (repeatable)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output dir."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Train into an output directory that already holds a run."
    ),
) -> None:
    """Teacher (ElasticFace, clean) → student (masked + distillation) → NM-NM/M-NM/M-M report.

    Multi-GPU: torchrun --nproc_per_node=N -m distill.cli train CONFIG.
    """
    from distill.checkpoint import CheckpointError
    from distill.config import ConfigError, load_config
    from distill.data import DatasetError
    from distill.demo import run
    from distill.training import OutputExistsError, TrainingDivergedError
    from maskgen.io import BinPackError, RecordIOError

    try:
        extra = list(overrides)
        if out is not None:
            extra.append(f"train.output={out}")
        if resume:
            extra.append("train.resume=true")
        cfg = load_config(config, extra)
        chose_output = out is not None or any(o.startswith("train.output=") for o in overrides)
        if config is None and not chose_output and not resume and not overwrite:
            cfg.train.output = _free_dir(Path(cfg.train.output))
        report = run(cfg, overwrite=overwrite)
    except (
        ConfigError,
        DatasetError,
        CheckpointError,
        OutputExistsError,
        FileNotFoundError,
        TrainingDivergedError,
        RecordIOError,
        BinPackError,
        ValueError,
    ) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    if report:
        acc = report["verdict"]["accuracy"]
        for model in ("teacher", "student"):
            typer.echo(
                f"{model:8s} NM-NM {100 * acc[model]['nm-nm']:6.2f} %  "
                f"M-NM {100 * acc[model]['m-nm']:6.2f} %  M-M {100 * acc[model]['m-m']:6.2f} %"
            )
        verdict = "PASSED" if report["verdict"]["passed"] else "NOT PASSED"
        typer.echo(f"criteria {verdict}; report: {Path(cfg.train.output) / 'report.md'}")


def _free_dir(path: Path) -> str:
    """``path`` if it holds no run yet, else the first free ``path-2``, ``path-3``, ..."""
    candidate, n = path, 1
    while (candidate / "config.yaml").exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return str(candidate)


if __name__ == "__main__":
    app()
