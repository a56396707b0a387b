"""``.tar`` outputs of ``maskgen render``: webdataset shards with the input's keys.

A block of samples is rendered into one part file (:mod:`maskgen.dataset.parts`) that holds
each output sample as finished tar members, in input order, tagged with its output shard.
When every block exists, each output shard is written from the parts in order, atomically
(temporary file, fsync, rename), and ends with the end-of-archive marker: the shards are
byte-identical whether the run was interrupted, resumed or sharded.

Within a sample only what changes is rewritten: the masked image member's data (and its
header when its size or name changes); every other member — and a sample that is not
masked or failed — is copied as the input holds it, header included. With ``--variants k``
each sample is written ``k`` times with the key ``KEY_vI`` (all its members renamed,
their data unchanged); members of no sample (directories, links) go with variant 0 only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from maskgen.dataset.blocks import _process_in_phases
from maskgen.dataset.errors import UnsafeOutputError
from maskgen.dataset.items import Context, ItemResult
from maskgen.dataset.parts import part_path, read_part, write_part
from maskgen.dataset.paths import _listed_inside, _same
from maskgen.dataset.sources import Item, TarItem, TarSource, sample_members
from maskgen.dataset.state import stop_if_orphaned
from maskgen.io import AtomicFile
from maskgen.io.atomic import temp_file_target
from maskgen.io.tarshard import Member, end_of_archive, member_header, padded, split_name

__all__ = [
    "assemble_tar",
    "check_tar_output",
    "output_shards",
    "outputs_present",
    "process_tar_block",
    "tar_out_name",
]


def output_shards(output: Path, source: TarSource) -> list[Path]:
    """The output shard of each input shard: ``output`` itself for a ``.tar`` output, else
    the input shard's relative path inside the output folder."""
    if output.suffix.lower() == ".tar":
        return [output] * len(source.shards)
    return [output / name for name in source.names]


def check_tar_output(input_path: Path, output: Path, source: TarSource) -> None:
    """Refuse a ``.tar`` output for several shards, an output shard that is an input shard,
    and (a folder of shards as input) an output folder that the input's listing would see."""
    if output.suffix.lower() == ".tar" and len(source.shards) > 1:
        raise ValueError(
            f"{output}: {len(source.shards)} input shards need a folder output (one output "
            "shard per input shard, with the same names)"
        )
    targets = output_shards(output, source)
    for shard, target in zip(source.shards, targets, strict=True):
        if target.exists() and _same(shard, target):
            raise UnsafeOutputError(
                f"{target}: the output shard is the input shard {shard}; choose another output"
            )
    if Path(input_path).is_dir() and _listed_inside(Path(input_path), output):
        raise UnsafeOutputError(
            f"{output}: the output lies inside the input folder {input_path}, so its shards "
            "would be listed as inputs; choose an output outside it"
        )


def _member_name(name: str, sample: str, variant: int, variants: int) -> str:
    """``name`` of a member of ``sample`` in output ``variant``: ``KEY_vI.EXT`` with several
    variants, else ``name``."""
    if variants == 1:
        return name
    return f"{sample}_v{variant}{name[len(sample) :]}"


def _image_name(ctx: Context, item: TarItem, variant: int, encoded: bool) -> str:
    """The image member's name in output ``variant`` (``--format`` changes its extension
    when the image is encoded, not when a failed sample is kept as it was)."""
    name = _member_name(item.member, item.sample, variant, ctx.options.variants)
    fmt = ctx.options.format
    if encoded and fmt and split_name(name) is not None:
        stem, _, ext = name.rpartition(".")
        if "." + ext.lower() != fmt:
            name = f"{stem}{fmt}"
    return name


def tar_out_name(ctx: Context, item: Item, variant: int) -> str:
    """``shard#member``: the output shard (relative to the output) and the image member."""
    assert isinstance(item, TarItem)
    shard = ctx.output.name if ctx.output.suffix.lower() == ".tar" else ctx.source.names[item.shard]
    kept = item.kept is not None or item.left_out or not item.ext
    return f"{shard}#{_image_name(ctx, item, variant, not kept)}"


def _compose(
    ctx: Context,
    item: TarItem,
    span: bytes,
    members: list[Member],
    variant: int,
    image: bytes | None,
) -> bytes:
    """Output ``variant`` of a sample (``span``, its bytes; ``members``, its members) as tar
    members; ``image``: the image member's new bytes (``None``: the sample as it was)."""
    variants = ctx.options.variants
    sample = item.sample
    pieces: list[bytes] = []
    for m in members:
        raw = span[m.offset : m.end]
        split = split_name(m.name) if m.regular else None
        if split is None or split[0] != sample:  # a member of no sample
            if variant == 0:
                pieces.append(padded(raw))
            continue
        head, original = raw[: m.data - m.offset], span[m.data : m.data + m.size]
        name, data = _member_name(m.name, sample, variant, variants), original
        if m.name == item.member and image is not None:
            name, data = _image_name(ctx, item, variant, True), image
        if name == m.name and data == original:
            pieces.append(padded(raw))  # as the input holds it, header and padding
        elif name == m.name and len(data) == m.size:
            pieces.append(head + padded(data))
        else:
            pieces.append(member_header(head, name, len(data)) + padded(data))
    return b"".join(pieces)


def process_tar_block(
    ctx: Context, block: int, items: list[TarItem], skip: frozenset[int]
) -> list[ItemResult]:
    """Render a block of samples into its part file; returns the results of the items not
    in ``skip``. A sample that cannot be read out of its shard is left out (a failure, no
    manifest line); one that fails otherwise is copied as it was."""
    stop_if_orphaned(ctx.main_pid, ctx.main_host)
    source: TarSource = ctx.source
    spans = source.read_spans(items)
    members = [
        sample_members(span) if isinstance(span, bytes) and not item.left_out else []
        for item, span in zip(items, spans, strict=True)
    ]
    loaded: list[Any] = []
    for item, span, found in zip(items, spans, members, strict=True):
        try:
            loaded.append(source.split(item, span, found))
        except Exception as exc:  # re-raised by items.load, with its item
            loaded.append(exc)
    results = _process_in_phases(ctx, items, loaded)
    metas: list[dict[str, Any]] = []
    pieces: list[bytes] = []
    for item, span, found, res in zip(items, spans, members, results, strict=True):
        if item.left_out or isinstance(span, OSError):
            res.lines, res.outputs = [], []
            continue
        for variant, (data, _, _) in enumerate(res.outputs):
            image = None if res.failure is not None else data
            pieces.append(_compose(ctx, item, span, found, variant, image))
            metas.append({"shard": item.shard})
        if res.failure is not None and ctx.options.format:
            res.lines = [_kept_name(ctx, item, v, line) for v, line in enumerate(res.lines)]
        res.outputs = []
    write_part_file(ctx, block, metas, pieces)
    return [r for r in results if r.index not in skip]


def _kept_name(ctx: Context, item: TarItem, variant: int, line: bytes) -> bytes:
    """A failed sample's manifest line naming the member it keeps (not the one ``--format``
    would have renamed)."""
    shard = tar_out_name(ctx, item, variant).rpartition("#")[0]
    wrong = f"{shard}#{_image_name(ctx, item, variant, True)}"
    right = f"{shard}#{_image_name(ctx, item, variant, False)}"
    return line.replace(b'"output":' + _json(wrong), b'"output":' + _json(right), 1)


def _json(text: str) -> bytes:
    """``text`` as the manifest writes it (non-UTF-8 names as ``\\udcXX`` escapes)."""
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode("ascii")


def write_part_file(
    ctx: Context, block: int, metas: list[dict[str, Any]], pieces: list[bytes]
) -> None:
    """The block's part file: each output sample's shard and bytes."""
    stop_if_orphaned(ctx.main_pid, ctx.main_host)
    write_part(part_path(ctx.meta, block), metas, [len(p) for p in pieces], b"".join(pieces))


def assemble_tar(ctx: Context, source: TarSource, parts: list[Path]) -> None:
    """Write every output shard from the part files, in order, each atomically."""
    targets = output_shards(ctx.output, source)
    for target in dict.fromkeys(targets):
        _remove_temps(target)
    current, writer, written = -1, None, 0

    def finish() -> None:
        nonlocal writer
        if writer is not None:
            writer.file.write(end_of_archive(written))
            writer.commit()
            writer = None

    def advance(to: int) -> None:
        nonlocal current, writer, written
        while current < to:
            finish()
            current += 1
            writer, written = AtomicFile(targets[current]), 0

    try:
        for part in parts:
            metas, lengths, data = read_part(part)
            pos = 0
            for meta, size in zip(metas, lengths, strict=True):
                shard = meta.get("shard")
                if not isinstance(shard, int) or not current <= shard < len(targets):
                    raise ValueError(
                        f"{part}: a sample of shard {shard} out of place (a part file from "
                        f"another run?); remove {ctx.meta} and run again"
                    )
                advance(shard)
                assert writer is not None
                writer.file.write(data[pos : pos + size])
                written += size
                pos += size
        advance(len(targets) - 1)
        finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def outputs_present(ctx: Context, source: TarSource) -> bool:
    """Whether every output shard exists (an assembled output that was not removed)."""
    return all(p.is_file() for p in output_shards(ctx.output, source))


def _remove_temps(target: Path) -> None:
    """Delete what a killed assembly left of ``target`` (called under the assembly lock)."""
    if not target.parent.is_dir():
        return
    for entry in target.parent.iterdir():
        if temp_file_target(entry.name) == target.name:
            entry.unlink(missing_ok=True)
