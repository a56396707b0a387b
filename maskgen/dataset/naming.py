"""Where outputs go: output names and formats, occlusion-map paths.

An output is named by the item, the variant and (``.rec`` inputs) the label: a relative
path for folder outputs, ``<file>#<record key>`` inside a ``.rec``/``.bin``,
``<shard>#<member>`` inside a ``.tar`` shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from maskgen.io.images import sniff_image_format

if TYPE_CHECKING:
    from maskgen.dataset.items import Context
    from maskgen.dataset.sources import Item

__all__ = ["occlusion_name", "out_ext", "out_name"]


def out_ext(ctx: Context, item: Item, raw: bytes | None = None) -> str:
    """The output format (suffix) of ``item``'s outputs; ``raw``: the input's bytes.

    Without ``--format``, folder outputs keep each file's suffix, and records of a
    ``.rec``/``.bin`` output keep a PNG input lossless (an evaluation pack of PNGs stays one,
    pixel for pixel what ``distill eval`` scores); everything else is JPEG.
    """
    if ctx.options.format:
        return ctx.options.format
    if ctx.out_kind == "tar":
        return getattr(item, "ext", "") or ".jpg"
    if ctx.source.kind == "folder" and ctx.out_kind == "folder":
        return Path(item.key).suffix.lower()
    if raw is not None and ctx.out_kind != "folder" and sniff_image_format(raw[:16]) == "PNG":
        return ".png"
    return ".jpg"


def out_name(ctx: Context, item: Item, variant: int, label: int | None) -> str:
    """Where output ``variant`` of ``item`` goes (relative path, ``file#key`` or
    ``shard#member``)."""
    if ctx.out_kind == "tar":
        from maskgen.dataset.tarshards import tar_out_name

        return tar_out_name(ctx, item, variant)
    if ctx.out_kind != "folder":
        out_key = item.index * ctx.options.variants + variant + 1
        return f"{ctx.output.name}#{out_key}"
    if ctx.source.kind == "folder":
        rel = Path(item.key)
        if ctx.options.format:
            rel = rel.with_suffix(ctx.options.format)
    elif ctx.source.kind == "rec":
        rel = Path(str(label)) / f"{int(item.key):08d}{out_ext(ctx, item)}"
    else:
        rel = Path(f"{item.index:06d}{out_ext(ctx, item)}")
    if ctx.options.variants > 1:
        rel = rel.with_name(f"{rel.stem}_v{variant}{rel.suffix}")
    return rel.as_posix()


def occlusion_name(name: str) -> Path:
    """Occlusion map of an output, relative to the meta folder: the output's relative path
    as a PNG; a record ``file#key`` of a ``.rec``/``.bin`` gets ``file/key.png`` (a member
    ``shard.tar#name.jpg`` of a ``.tar`` output is such a path: ``shard.tar#name.png``).

    Example:
        >>> occlusion_name("people/astronaut.jpg").as_posix()
        'occlusion/people/astronaut.png'
        >>> [occlusion_name(f"train.rec#{k}").as_posix() for k in (1, 2)]
        ['occlusion/train.rec/1.png', 'occlusion/train.rec/2.png']
        >>> occlusion_name("data-000000.tar#train/000123_v1.jpg").as_posix()
        'occlusion/data-000000.tar#train/000123_v1.png'
    """
    file, sep, key = name.rpartition("#")
    if sep and key.isdigit():
        return Path("occlusion") / file / f"{key}.png"
    return Path("occlusion") / Path(name).with_suffix(".png")
