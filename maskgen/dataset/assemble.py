"""Assembly of a ``.rec``/``.bin`` output from its part files, and the ``.bin`` protocol file.

Once every block of every shard has its part file, the final file is written from the
parts in order, so it is byte-identical whether the run was interrupted, sharded or not.
A rendered ``.bin`` also gets the protocol file that ``distill eval`` reads
(:mod:`maskgen.protocol`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.dataset.items import Context
from maskgen.dataset.locks import assembly_lock
from maskgen.dataset.parts import part_path, read_part
from maskgen.dataset.sources import BinSource, RecSource
from maskgen.io import RecordIOError, RecordWriter, atomic_write_text, save_bin
from maskgen.io.atomic import temp_file_target
from maskgen.protocol import DatasetProtocol, EvalProtocol, dataset_sha256, protocol_path
from maskgen.render import MaskParams

__all__ = ["assemble", "protocol_file", "remove_assembly_temps"]


def assemble(ctx: Context, source: Any) -> bool:
    """Write the final ``.rec``/``.bin`` (or ``.tar`` shards) once every block's part
    exists; True if written."""
    n_blocks = math.ceil(len(source) / ctx.options.block_size)
    parts = [part_path(ctx.meta, b) for b in range(n_blocks)]
    if not all(p.is_file() for p in parts):
        return False
    done = ctx.meta / "assembled.json"
    stamp = json.dumps({"parts": n_blocks, "output": ctx.output.name}) + "\n"
    with assembly_lock(ctx.meta, str(ctx.output)):
        if ctx.out_kind == "tar":
            from maskgen.dataset.tarshards import assemble_tar, outputs_present

            present = outputs_present(ctx, source)
        else:
            present = ctx.output.is_file()
        if done.is_file() and present and done.read_text() == stamp:
            return True
        if ctx.out_kind == "tar":
            assemble_tar(ctx, source, parts)
            atomic_write_text(done, stamp)
            return True
        remove_assembly_temps(ctx.output)
        if ctx.out_kind == "rec":
            _assemble_rec(ctx, source, parts)
        else:
            _assemble_bin(ctx, source, parts)
        atomic_write_text(done, stamp)
    return True


def remove_assembly_temps(output: Path) -> list[Path]:
    """Delete the temporary files a killed assembly of ``output`` left beside it (its
    ``.rec``/``.idx`` or ``.bin``/protocol file); returns them. Called under the assembly
    lock, so no running assembly loses its files.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "train.rec"
        >>> _ = (out.parent / ".train.rec.k2j4.tmp").write_bytes(b"half")
        >>> _ = (out.parent / ".other.rec.k2j4.tmp").write_bytes(b"not ours")
        >>> [p.name for p in remove_assembly_temps(out)]
        ['.train.rec.k2j4.tmp']
    """
    names = {output.name, output.with_suffix(".idx").name, protocol_path(output).name}
    if not output.parent.is_dir():
        return []
    stale = [
        Path(entry.path)
        for entry in os.scandir(output.parent)
        if temp_file_target(entry.name) in names
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _assemble_rec(ctx: Context, source: RecSource, parts: list[Path]) -> None:
    with RecordWriter(ctx.output) as writer:
        done = 0
        for part in parts:
            metas, lengths, framed = read_part(part)
            keys = [m.get("key") for m in metas]
            if keys != list(range(done + 1, done + 1 + len(keys))):
                raise RecordIOError(
                    f"{part}: records {done + 1}..{done + len(keys)} are missing or out of "
                    f"place (a part file from another run?); remove {ctx.meta} and run again"
                )
            # an image of unknown class (a record kept as it was) has label None: -1 here
            labels = [_label(m) if m["image"] else None for m in metas]
            writer.write_framed(keys, framed, lengths, labels)
            done += len(keys)
        if source.has_header:
            try:
                writer.write_header_record(identities=source.has_identities)
            except RecordIOError:
                writer.write_header_record(identities=False)


def _label(meta: dict[str, Any]) -> int:
    label = meta["label"]
    return -1 if label is None else int(label)


def _assemble_bin(ctx: Context, source: BinSource, parts: list[Path]) -> None:
    images, draws = [], []
    for part in parts:
        metas, lengths, data = read_part(part)
        ends = np.cumsum(lengths).tolist()
        images += [bytes(data[end - size : end]) for end, size in zip(ends, lengths, strict=True)]
        draws += [m["draw"] or {"params": None, "points": None} for m in metas]
    save_bin(ctx.output, images, source.pack.issame)
    protocol_file(ctx, source, draws).save(protocol_path(ctx.output))


def protocol_file(ctx: Context, source: BinSource, draws: list[dict[str, Any]]) -> EvalProtocol:
    """The protocol file of a rendered pack, in the format ``distill eval`` reads and writes:
    one dataset (named after the input) with this protocol's draws."""
    options = ctx.options
    params = [None if d["params"] is None else MaskParams.from_dict(d["params"]) for d in draws]
    aligned = all(d["points"] is None for d in draws)
    entry = DatasetProtocol(
        source=str(source.path),
        sha256=dataset_sha256(source.pack),
        num_images=source.pack.num_images,
        num_pairs=source.pack.num_pairs,
        landmarks="aligned" if aligned else options.landmarks,
        draws={options.protocol or "m-m": params},
        points=None if aligned else [
            None if d["points"] is None else np.asarray(d["points"], np.float32) for d in draws
        ],
    )  # fmt: skip
    return EvalProtocol(
        seed=options.seed, datasets={source.path.stem: entry}, mask_spec=options.spec.to_dict()
    )
