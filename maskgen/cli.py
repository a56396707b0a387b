"""The ``maskgen`` command line (typer).

Commands: ``preview`` (contact sheet of every shape × coverage × colour), ``demo`` (mask the
built-in synthetic faces to disk), ``replay`` (re-render a manifest record from its params).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from maskgen.io import write_image

app = typer.Typer(
    help="Landmark-driven synthetic face masks for masked-face recognition research.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def preview(
    output: Path = typer.Argument(Path("contact_sheet.png"), help="PNG file to write."),
    colours: int = typer.Option(3, min=1, max=6, help="Colour/texture looks per coverage."),
    cell: int = typer.Option(160, min=48, help="Size of one face tile in pixels."),
    seed: int = typer.Option(0, help="Seed of the built-in faces."),
) -> None:
    """Write a contact sheet of every shape family × coverage × a few colours."""
    from maskgen.preview import contact_sheet

    sheet = contact_sheet(colours=colours, cell=cell, seed=seed)
    write_image(output, sheet)
    typer.echo(f"wrote {output} ({sheet.shape[1]}×{sheet.shape[0]})")


@app.command()
def demo(
    output: Path = typer.Argument(Path("out/demo"), help="Folder to write the demo set to."),
    identities: int = typer.Option(8, min=1, help="Synthetic identities."),
    images_per_identity: int = typer.Option(4, min=1, help="Images per identity and kind."),
    seed: int = typer.Option(0, help="Seed for faces and mask draws."),
) -> None:
    """Mask the built-in synthetic faces (aligned crops and in-the-wild images) to disk."""
    from maskgen.demo import run_demo

    summary = run_demo(output, identities, images_per_identity, seed)
    typer.echo(json.dumps(summary, indent=1))


@app.command()
def replay(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="manifest.jsonl"),
    output: Path = typer.Argument(..., help="Folder for the re-rendered images."),
    input_root: Path = typer.Option(
        None, help="Folder the manifest's input paths are relative to (default: its folder)."
    ),
) -> None:
    """Re-render every record of a manifest from its input, landmarks and MaskParams."""
    from maskgen.io import read_image
    from maskgen.render import MaskParams, render

    root = input_root or manifest.parent
    count = 0
    with manifest.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                params = MaskParams.from_dict(record["params"])
                landmarks = np.asarray(record["landmarks"], np.float32)
                source = root / record["input"]
            except (ValueError, KeyError) as exc:
                raise typer.BadParameter(f"{manifest}:{line_no}: bad record: {exc}") from exc
            image = read_image(source)
            write_image(output / record["output"], render(image, landmarks, params).image)
            count += 1
    typer.echo(f"re-rendered {count} records into {output}")


if __name__ == "__main__":
    app()
