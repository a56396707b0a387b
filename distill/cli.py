"""The ``distill`` command line (typer)."""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
