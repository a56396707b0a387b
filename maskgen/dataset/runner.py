"""The driver of ``maskgen render``: :func:`render_dataset`.

It checks the input/output pair and ``run.json``, cuts the input's items into blocks (this
shard's only), removes what a killed run left in flight, renders the pending blocks with
joblib (results come back in input order, into the journal), assembles a ``.rec``/``.bin``
once all its parts exist and writes the summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from maskgen.dataset.assemble import assemble
from maskgen.dataset.blocks import process_block
from maskgen.dataset.items import Context
from maskgen.dataset.journal import Journal, check_run_file
from maskgen.dataset.naming import occlusion_name, out_name
from maskgen.dataset.options import (
    FOLDER_BLOCK,
    PACKED_BLOCK,
    RenderOptions,
    meta_dir,
    output_kind,
)
from maskgen.dataset.parts import part_path
from maskgen.dataset.sources import Item, Source, open_source
from maskgen.io import atomic_write_text
from maskgen.io.atomic import temp_file_target

__all__ = ["count_skipped", "iter_blocks", "render_dataset"]


def iter_blocks(
    items: Iterable[Item], block_size: int, shard: tuple[int, int]
) -> Iterator[tuple[int, list[Item]]]:
    """Group items into blocks of ``block_size``; keep shard ``i``'s blocks (``b % n == i``).

    Example:
        >>> items = [Item(i, str(i)) for i in range(7)]
        >>> [(b, [it.index for it in its]) for b, its in iter_blocks(items, 2, (1, 2))]
        [(1, [2, 3]), (3, [6])]
    """
    i, n = shard
    current: list[Item] = []
    block = 0
    for item in items:
        b = item.index // block_size
        if b != block and current:
            if block % n == i:
                yield block, current
            current = []
        block = b
        if b % n == i:
            current.append(item)
    if current and block % n == i:
        yield block, current


def count_skipped(n: int, block_size: int, shard: tuple[int, int], last: int) -> int:
    """Items of this shard at index ≤ ``last`` (finished in an earlier run).

    Example:
        >>> count_skipped(7, 2, (1, 2), 6), count_skipped(7, 2, (1, 2), 2)
        (3, 1)
    """
    i, k = shard
    count = 0
    for b in range(0, min(n, last + 1) // block_size + 1):
        if b % k != i:
            continue
        lo, hi = b * block_size, min(n, (b + 1) * block_size, last + 1)
        count += max(0, hi - lo)
    return count


def _validate(source: Source, out_kind: str, options: RenderOptions) -> None:
    if out_kind == "bin" and source.kind != "bin":
        raise ValueError("a .bin output needs a .bin input (pairs and flags come from it)")
    if out_kind == "rec" and source.kind != "rec":
        raise ValueError("a .rec output needs a .rec input (labels come from it)")
    if out_kind == "bin" and options.variants != 1:
        raise ValueError("--variants must be 1 for a .bin output (a pack holds fixed pairs)")
    if options.protocol is not None and source.kind != "bin":
        raise ValueError("--protocol applies to .bin inputs only")


def render_dataset(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: RenderOptions | None = None,
    *,
    workers: int | None = -1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict[str, Any]:
    """Mask every image of ``input_path`` into ``output``; returns the summary.

    ``workers``: joblib ``n_jobs`` (-1 = all cores; ``None`` leaves it to an enclosing
    ``joblib.parallel_config``, whose backend — loky, threading, dask … — is always used).
    ``shard``: ``(i, n)`` renders the blocks ``b`` with ``b % n == i`` only.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    options = options or RenderOptions()
    out_kind = output_kind(output)
    if options.protocol is None and out_kind == "bin":
        options = replace(options, protocol="m-m")
    if options.block_size == 0:
        block = FOLDER_BLOCK if out_kind == "folder" else PACKED_BLOCK
        options = replace(options, block_size=block)
    source = open_source(input_path)
    _validate(source, out_kind, options)
    output = Path(output)
    meta = meta_dir(output)
    meta.mkdir(parents=True, exist_ok=True)
    check_run_file(
        meta, {"input": str(Path(input_path)), "options": options.to_dict(), "shards": shard[1]}
    )
    suffix = "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"
    journal = Journal(meta, suffix)
    ctx = Context(options, source, out_kind, output, meta)
    total = count_skipped(len(source), options.block_size, shard, len(source) - 1)
    resume_after = journal.last_index
    if journal.resumed:
        _remove_stale_temps(ctx, shard, resume_after)
    tasks = (
        delayed(process_block)(ctx, b, items, resume_after + 1)
        for b, items in iter_blocks(source.items(), options.block_size, shard)
        if items[-1].index > resume_after
    )
    counts = {"done": 0, "failed": 0, "faces": 0, "outputs": 0}
    skipped = count_skipped(len(source), options.block_size, shard, resume_after)
    start = time.perf_counter()
    bar = tqdm(total=total, initial=skipped, desc="render", unit="img", disable=not progress)
    try:
        for results in Parallel(n_jobs=workers, return_as="generator")(tasks):
            journal.write(results)
            for res in results:
                counts["failed" if res.failure else "done"] += 1
                counts["faces"] += res.faces
                counts["outputs"] += len(res.lines)
            bar.update(len(results))
    finally:
        bar.close()
        journal.close()
    assembled = assemble(ctx, source) if out_kind != "folder" else None
    summary = {
        **counts,
        "skipped": skipped,
        "total": total,
        "seconds": round(time.perf_counter() - start, 2),
        "shard": f"{shard[0]}/{shard[1]}",
        "manifest": str(journal.manifest_path),
        "failures": str(journal.failures_path),
        "output": str(output),
        "assembled": assembled,
    }
    atomic_write_text(meta / f"summary{suffix}.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _remove_stale_temps(ctx: Context, shard: tuple[int, int], resume_after: int) -> None:
    """Delete the temporary files a killed run left for the items it had in flight.

    Only this shard's next pending items (a window larger than any dispatch queue) are
    considered, so concurrent shards writing into the same folders are not disturbed.
    """
    window = ctx.options.block_size * (4 * (os.cpu_count() or 1) + 4)
    targets: dict[Path, set[str]] = {}
    pending = (
        it
        for _, items in iter_blocks(ctx.source.items(), ctx.options.block_size, shard)
        for it in items
        if it.index > resume_after
    )
    for count, item in enumerate(pending):
        if count >= window:
            break
        paths = []
        if ctx.out_kind != "folder":
            paths.append(part_path(ctx.meta, item.index // ctx.options.block_size))
        if ctx.out_kind != "folder" or ctx.source.kind != "rec":  # .rec → folder: by label
            for v in range(ctx.options.variants):
                name = out_name(ctx, item, v, None)
                if ctx.out_kind == "folder":
                    paths.append(ctx.output / name)
                paths.append(ctx.meta / occlusion_name(name))
        for path in paths:
            targets.setdefault(path.parent, set()).add(path.name)
    for folder, names in targets.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if temp_file_target(entry.name) in names:
                Path(entry.path).unlink(missing_ok=True)
