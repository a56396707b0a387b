"""The ``maskgen`` command line (typer).

Commands: ``preview`` (contact sheet of every shape × coverage × colour), ``demo`` (mask the
built-in synthetic faces to disk), ``replay`` (re-render a manifest record from its params),
``render`` (mask a whole dataset: folder, ``.bin``, ``.rec`` or webdataset ``.tar`` shards;
see ``docs/render.md``).
``--version`` and ``--debug`` (show tracebacks) come before the command; usage and input errors
exit 2 with one ``error:`` line. Also ``python -m maskgen``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from maskgen._cli import add_app_options, cli_errors, fail, progress_option, show_progress
from maskgen.io import write_image

if TYPE_CHECKING:
    from maskgen.render import MaskSpec

app = typer.Typer(
    help="Landmark-driven synthetic face masks for masked-face recognition research.",
    no_args_is_help=True,
    add_completion=False,
)
add_app_options(app, "maskgen")


@app.command()
@cli_errors()
def preview(
    output: Path = typer.Argument(Path("contact_sheet.png"), help="PNG file to write."),
    colours: int = typer.Option(3, min=1, max=6, help="Colour/texture looks per coverage."),
    cell: int = typer.Option(160, min=48, help="Size of one face tile in pixels."),
    seed: int = typer.Option(0, help="Seed of the built-in faces."),
) -> None:
    """Write a contact sheet of every shape family × coverage × a few colours."""
    from maskgen.io import IMAGE_EXTENSIONS
    from maskgen.preview import contact_sheet

    if output.is_dir():
        raise IsADirectoryError(
            f"{output} is a directory; give a file such as {output / 'contact_sheet.png'}"
        )
    if output.suffix.lower() not in IMAGE_EXTENSIONS:  # fail before drawing the sheet
        raise ValueError(
            f"{output}: unsupported image extension {output.suffix or '(none)'!r}; "
            f"expected one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    sheet = contact_sheet(colours=colours, cell=cell, seed=seed)
    write_image(output, sheet)
    typer.echo(f"wrote {output} ({sheet.shape[1]}×{sheet.shape[0]})")


@app.command()
@cli_errors()
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
@cli_errors()
def replay(
    manifest: Path = typer.Argument(..., exists=True, dir_okay=False, help="manifest.jsonl"),
    output: Path = typer.Argument(..., help="Folder for the re-rendered images."),
    input_root: Path = typer.Option(
        None, help="Folder the manifest's input paths are relative to (default: its folder)."
    ),
) -> None:
    """Re-render every record of a manifest from its input, landmarks and MaskParams.

    Works on manifests of ``maskgen demo`` and of ``maskgen render`` over folders (pass
    ``--input-root INPUT``); records of packed inputs (``lfw.bin#17``) are skipped.
    """
    from maskgen.dataset import replay_record
    from maskgen.dataset.paths import replay_target
    from maskgen.io import read_image
    from maskgen.jpeg import jpeg_from_entry
    from maskgen.render import MaskParams

    root = input_root or manifest.parent
    count = skipped = 0
    with manifest.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                faces = record.get("faces") or [record]
                for face in faces:
                    if face.get("params") is not None:
                        MaskParams.from_dict(face["params"])
                        np.asarray(face["landmarks"], np.float32).reshape(-1, 2)
                if "jpeg" in record:
                    jpeg_from_entry(record["jpeg"])
                source, target = record["input"], record["output"]
            except (ValueError, KeyError, TypeError) as exc:
                raise typer.BadParameter(f"{manifest}:{line_no}: bad record: {exc}") from exc
            if "#" in source:
                skipped += 1
                continue
            image = read_image(root / source)
            write_image(replay_target(output, target), replay_record(image, record))
            count += 1
    note = f" ({skipped} packed records skipped)" if skipped else ""
    typer.echo(f"re-rendered {count} records into {output}{note}")


def _weights(text: str | None, option: str) -> dict[str, float] | None:
    """``"surgical,kn95"`` or ``"surgical=3,kn95=1"`` → weights; ``None`` keeps the default."""
    if not text:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        try:
            weights[name.strip()] = float(value) if value else 1.0
        except ValueError:
            raise typer.BadParameter(f"{option}: bad weight in {part!r}") from None
    return weights


def _spec(families: str | None, coverage: str | None, palettes: str | None,
          textures: str | None, random_colors: float | None,
          photo_look: bool = True) -> MaskSpec:  # fmt: skip
    from maskgen.render import MaskSpec

    overrides: dict[str, object] = {}
    if not photo_look:  # masks without the photo's noise, blur, colour and compression
        overrides.update(
            noise=(0.0, 0.0), blur=(0.0, 0.0), color_match=(0.0, 0.0), compression=(0.0, 0.0)
        )
    for key, text, option in (
        ("families", families, "--families"),
        ("coverages", coverage, "--coverage"),
        ("palettes", palettes, "--palettes"),
        ("textures", textures, "--textures"),
    ):
        value = _weights(text, option)
        if value is not None:
            overrides[key] = value
    if random_colors is not None:
        overrides["random_color_prob"] = random_colors
    try:
        return MaskSpec(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("render")
@cli_errors()
def render_command(
    input_path: Path = typer.Argument(
        ..., help="Folder, .bin pack, .rec set or .tar shards (a folder, data-{000..009}.tar)."
    ),
    output: Path = typer.Argument(..., help="Folder, .bin, .rec or .tar to write."),
    families: str = typer.Option(
        None, help="Shape families, e.g. surgical,kn95 or surgical=3,n95=1."
    ),
    coverage: str = typer.Option(None, help="Coverages, e.g. high,medium (weights as above)."),
    palettes: str = typer.Option(None, help="Colour palettes, e.g. medical_blue,black."),
    textures: str = typer.Option(None, help="Textures, e.g. none,pleats,grain."),
    random_colors: float = typer.Option(None, min=0, max=1, help="Share of random colours."),
    photo_look: bool = typer.Option(
        True,
        help="Give masks the photo's own noise, blur, colour cast and JPEG compression "
        "(faster without).",
    ),
    p: float = typer.Option(1.0, "--p", min=0, max=1, help="Probability that an output is masked."),
    variants: int = typer.Option(1, min=1, help="Outputs per input image."),
    seed: int = typer.Option(0, help="Global seed (each item's draws derive from it and its key)."),
    workers: int = typer.Option(-1, help="joblib workers (-1 = all cores)."),
    landmarks: str = typer.Option(
        "auto", help="auto|face_alignment|dlib|dlib-cnn|aligned|aligned-fit|file (docs/render.md)."
    ),
    landmarks_dir: Path = typer.Option(None, help="Landmark/box files for --landmarks file."),
    fa_weights: str = typer.Option(None, help="face-alignment 2D-FAN weights (path or URL)."),
    fa_detector: str = typer.Option("sfd", help="Face boxes for face_alignment: sfd|dlib."),
    fa_detector_weights: str = typer.Option(None, help="S3FD weights (path or URL)."),
    faces: str = typer.Option("all", help="Mask all faces or only the largest: all|largest."),
    min_face: float = typer.Option(0.0, min=0, help="Minimum face size in pixels (box side)."),
    detect_size: int = typer.Option(800, min=0, help="Detect on a copy at most this large."),
    save_occlusion: bool = typer.Option(False, help="Also write occlusion maps (PNG)."),
    format: str = typer.Option(None, "--format", help="Output image format: png, jpg, webp…"),
    quality: int = typer.Option(95, min=1, max=100, help="JPEG/WebP quality."),
    protocol: str = typer.Option(
        None, help="For .bin: m-m (all masked) or m-nm (second of each pair)."
    ),
    shard: str = typer.Option(
        "0/1", help="Render only shard i of n (i/n), e.g. $SLURM_ARRAY_TASK_ID/16."
    ),
    block_size: int = typer.Option(
        0, min=0, help="Items per task and per part file (0: 64 for folders, 1024 for .rec/.bin)."
    ),
    max_pixels: int = typer.Option(
        None, min=0, help="Larger images fail as too_large (0: no limit; default: by memory)."
    ),
    strict: bool = typer.Option(False, help="Exit with code 1 if any item failed."),
    progress: bool = progress_option("Show the progress bar"),
) -> None:
    """Mask every face of a dataset (resumable, parallel, with manifest and failure report)."""
    from maskgen.dataset import RenderOptions, parse_shard, render_dataset
    from maskgen.landmarks import FaceAlignmentWeightsError

    try:
        options = RenderOptions(
            spec=_spec(families, coverage, palettes, textures, random_colors, photo_look),
            p=p, variants=variants, seed=seed, landmarks=landmarks,
            landmarks_dir=str(landmarks_dir) if landmarks_dir else None,
            fa_weights=fa_weights, fa_detector=fa_detector,
            fa_detector_weights=fa_detector_weights, faces=faces, min_face=min_face,
            save_occlusion=save_occlusion, format=format, quality=quality, protocol=protocol,
            block_size=block_size, detect_max_side=detect_size,
        )  # fmt: skip
        summary = render_dataset(
            input_path, output, options, workers=workers, shard=parse_shard(shard),
            progress=show_progress(progress), max_pixels=max_pixels,
        )  # fmt: skip
    except FaceAlignmentWeightsError as exc:  # missing weights: a usage error too
        fail(exc, 2)
    typer.echo(
        f"done {summary['done']}, skipped {summary['skipped']}, failed {summary['failed']}, "
        f"faces found {summary['faces']}, outputs {summary['outputs']} "
        f"in {summary['seconds']} s; manifest {summary['manifest']}, "
        f"failures {summary['failures']}",
        err=True,
    )
    for note in summary.get("notes", []):  # what a resume repaired or found changed
        typer.echo(f"note: {note}", err=True)
    if strict and summary["failed"]:
        raise typer.Exit(1)


@app.command("landmarks")
@cli_errors()
def landmarks_command(
    input_path: Path = typer.Argument(..., exists=True, help="Folder, .bin pack or .rec set."),
    output: Path = typer.Argument(..., help="Cache folder to write, e.g. train.landmarks."),
    landmarks: str = typer.Option(
        "aligned-fit", help="Backend: aligned-fit (aligned crops), dlib, face_alignment, file…"
    ),
    landmarks_dir: Path = typer.Option(None, help="Landmark/box files for --landmarks file."),
    fa_weights: str = typer.Option(None, help="face-alignment 2D-FAN weights (path or URL)."),
    workers: int = typer.Option(-1, help="joblib workers (-1 = all cores)."),
    shard: str = typer.Option("0/1", help="Fit only shard i of n (i/n)."),
    progress: bool = progress_option("Show the progress bar"),
) -> None:
    """Fit a dataset's landmarks once into a cache for --landmarks cache:OUTPUT (resumable,
    parallel, sharded)."""
    from maskgen.dataset import RenderOptions, parse_shard
    from maskgen.dataset.landmark_job import fit_landmarks

    options = RenderOptions(
        landmarks=landmarks, landmarks_dir=str(landmarks_dir) if landmarks_dir else None,
        fa_weights=fa_weights,
    )  # fmt: skip
    summary = fit_landmarks(
        input_path, output, landmarks=landmarks, options=options, workers=workers,
        shard=parse_shard(shard), progress=show_progress(progress),
    )  # fmt: skip
    if not summary["complete"]:
        typer.echo(
            f"blocks done {summary['blocks_done']} of {summary['blocks_total']}: the cache is "
            "written when every shard has finished",
            err=True,
        )
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if k != "missing")
    typer.echo(f"{counts}; cache {summary['output']} (use --landmarks cache:{output})", err=True)


template_app = typer.Typer(help="Image templates: pictures of real masks warped onto faces.")
app.add_typer(template_app, name="template")


@template_app.command("check")
@cli_errors()
def template_check_command(
    template: str = typer.Argument(..., help="Template JSON (or a shipped template's name)."),
    out: Path = typer.Option(None, "--out", "-o", help="PNG to write (default: beside it)."),
    face: bool = typer.Option(True, help="Also render it on the built-in faces."),
) -> None:
    """Draw a template's anchors, edges and grid (and the template on faces) for authoring."""
    import cv2
    import numpy as np

    from maskgen.template import check_sheet, load_template, template_faces

    loaded = load_template(template)
    sheet = check_sheet(loaded)
    if face:
        faces = template_faces(f"template:{loaded.source}", sheet.shape[0])
        sheet = np.concatenate([sheet, faces], axis=1)
    target = out or Path(loaded.source).with_suffix(".check.png")
    if not cv2.imwrite(str(target), np.ascontiguousarray(sheet[:, :, ::-1])):
        raise OSError(f"{target}: cannot write the picture")
    h, w = loaded.rgba.shape[:2]
    cover = float((loaded.rgba[..., 3] > 127).mean())
    typer.echo(f"{loaded.source}: {w}×{h} px, mask covers {cover:.0%}; wrote {target}", err=True)


if __name__ == "__main__":
    app()
