"""The work of one block (runs in the workers): its items, and for ``.rec``/``.bin`` its part.

Folder blocks are processed item by item (each output is its own file). ``.rec``/``.bin``
blocks are read in one go where the source can, processed in phases (decode all → mask all
→ encode all) and written as one part file (:mod:`maskgen.dataset.parts`); ``.tar`` blocks
likewise, their part written by :mod:`maskgen.dataset.tarshards`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from maskgen.dataset.items import (
    Context,
    ItemResult,
    Pending,
    encode,
    load,
    mask_items,
    process_item,
)
from maskgen.dataset.parts import part_path, write_part
from maskgen.dataset.sources import Item, Verbatim
from maskgen.dataset.state import stop_if_orphaned
from maskgen.io.recordio import frame_image_records, frame_record

__all__ = ["PHASE_BYTES", "process_block"]

#: Decoded pixels a block may hold at once when it is processed in phases.
PHASE_BYTES = 64 << 20


def process_block(
    ctx: Context, block: int, items: list[Item], skip: frozenset[int] = frozenset()
) -> list[ItemResult]:
    """Process one block; returns the results of its items except those whose index is in
    ``skip`` (finished by an earlier run).

    For ``.rec``/``.bin`` outputs the whole block is processed and its part file written.
    A worker whose main process is gone (killed) stops at once instead of writing on.
    """
    stop_if_orphaned(ctx.main_pid, ctx.main_host)
    if ctx.out_kind == "folder":
        results = []
        for it in items:
            if it.index not in skip:
                stop_if_orphaned(ctx.main_pid, ctx.main_host)
                results.append(process_item(ctx, it))
        return results
    if ctx.out_kind == "tar":
        from maskgen.dataset.tarshards import process_tar_block

        return process_tar_block(ctx, block, items, skip)  # type: ignore[arg-type]
    load_many = getattr(ctx.source, "load_many", None)
    loaded: list[Any] = [None] * len(items)
    if load_many is not None:
        with contextlib.suppress(OSError):  # else one by one, each failure with its item
            loaded = load_many(items)
    results = _process_in_phases(ctx, items, loaded)
    metas: list[dict[str, Any]] = []
    records: list[tuple[int, int, bytes]] = []  # .rec: (label, key, payload) to frame
    payloads: list[bytes] = []  # .bin: the encoded images
    variants = ctx.options.variants
    for res in results:
        for variant, (data, label, params) in enumerate(res.outputs):
            if ctx.out_kind == "rec":
                key = res.index * variants + variant + 1
                # every output is an image slot; label None: unknown (a record kept as is)
                metas.append({"label": label, "key": key, "image": True})
                records.append((0 if label is None else label, key, data))
            else:  # a .bin's protocol file lists every draw
                metas.append({"label": label, "draw": params})
                payloads.append(data)
        res.outputs = []
    if ctx.out_kind == "rec":
        # Framed here, in the worker, so that assembly is little more than a copy.
        data, lengths = _frame(records)
    else:
        data, lengths = b"".join(payloads), [len(p) for p in payloads]
    stop_if_orphaned(ctx.main_pid, ctx.main_host)
    write_part(part_path(ctx.meta, block), metas, lengths, data)
    return [r for r in results if r.index not in skip]


def _frame(records: list[tuple[int, int, bytes]]) -> tuple[bytes, list[int]]:
    """Frame a block's ``.rec`` outputs: images with a fresh header (their label and output
    key), :class:`~maskgen.dataset.sources.Verbatim` data (records kept as they were) as is."""
    if not any(isinstance(data, Verbatim) for _, _, data in records):
        return frame_image_records(records)
    pieces: list[bytes] = []
    lengths: list[int] = []
    start = 0
    for i, (_, _, data) in enumerate([*records, (0, 0, Verbatim())]):
        if i < len(records) and not isinstance(data, Verbatim):
            continue
        if i > start:
            blob, sizes = frame_image_records(records[start:i])
            pieces.append(blob)
            lengths += sizes
        if i < len(records):
            framed = frame_record(data)
            pieces.append(framed)
            lengths.append(len(framed))
        start = i + 1
    return b"".join(pieces), lengths


def _process_in_phases(ctx: Context, items: list[Item], loaded: list[Any]) -> list[ItemResult]:
    """Process a ``.rec``/``.bin`` block phase by phase: decode every image, then mask every
    image, then encode every output (in chunks of at most :data:`PHASE_BYTES` of pixels).

    Same results as item by item, faster: each phase keeps its code and tables in the CPU
    caches instead of the codecs evicting the renderer's (and its Python) for every image.
    """
    results: list[ItemResult] = []
    start = 0
    while start < len(items):
        decoded, held, stop = [], 0, start
        while stop < len(items) and (stop == start or held < PHASE_BYTES):
            got = load(ctx, items[stop], loaded[stop])
            decoded.append(got)
            held += got[2].nbytes * ctx.options.variants if isinstance(got[2], np.ndarray) else 0
            stop += 1
        chunk = mask_items(ctx, items[start:stop], decoded)
        del decoded
        for res, it in zip(chunk, items[start:stop], strict=True):
            res.outputs = [
                (encode(ctx, it, data.image, data.raw, data.masked), label, params)
                if isinstance(data, Pending)
                else (data, label, params)
                for data, label, params in res.outputs
            ]
        results += chunk
        start = stop
    return results
