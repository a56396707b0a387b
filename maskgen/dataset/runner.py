"""The driver of ``maskgen render``: :func:`render_dataset`.

It checks the input/output pair, locks the output (:mod:`~maskgen.dataset.locks`), checks
``run.json``, resumes the journal, cuts the input's items into blocks (this shard's only),
skips the items the journal has by key, removes what a killed run left in flight, renders
the pending blocks with joblib (results come back in input order, into the journal),
assembles a ``.rec``/``.bin`` once all its parts exist and writes the summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from maskgen.dataset.assemble import assemble
from maskgen.dataset.blocks import process_block
from maskgen.dataset.errors import JournalError, write_error
from maskgen.dataset.items import Context
from maskgen.dataset.journal import DoneKeys, Journal, check_run_file
from maskgen.dataset.locks import run_lock
from maskgen.dataset.naming import occlusion_name, out_name
from maskgen.dataset.options import (
    FOLDER_BLOCK,
    PACKED_BLOCK,
    TAR_BLOCK,
    RenderOptions,
    default_max_pixels,
    meta_dir,
    output_kind,
)
from maskgen.dataset.parts import part_path
from maskgen.dataset.paths import check_output_paths
from maskgen.dataset.sources import Item, Source, TarSource, open_source
from maskgen.dataset.tarshards import check_tar_output
from maskgen.io import atomic_write_text
from maskgen.io.atomic import temp_file_target

__all__ = ["iter_blocks", "render_dataset"]


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


def _validate(source: Source, out_kind: str, options: RenderOptions) -> None:
    if out_kind == "tar" and source.kind != "tar":
        raise ValueError("a .tar output needs .tar shards as input (webdataset samples)")
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
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """Mask every image of ``input_path`` into ``output``; returns the summary.

    ``workers``: joblib ``n_jobs`` (-1 = all cores; ``None`` leaves it to an enclosing
    ``joblib.parallel_config``, whose backend — loky, threading, dask … — is always used).
    ``shard``: ``(i, n)`` renders the blocks ``b`` with ``b % n == i`` only.
    ``max_pixels``: larger images (by their header, before decoding) fail as ``too_large``;
    ``None``: :func:`~maskgen.dataset.options.default_max_pixels` for ``workers``; 0: no limit.

    Raises :class:`~maskgen.dataset.errors.RenderError` (a ``ValueError``) with one line
    naming the path and the cause when the run cannot go on: the output is the input or
    inside it, another run holds the output, the journal cannot be resumed, or writing fails
    (read-only folder, disk full: what is written stays valid and a rerun resumes).
    """
    options = options or RenderOptions()
    source = open_source(input_path)
    out_kind = output_kind(output)
    if source.kind == "tar" and out_kind == "folder":
        out_kind = "tar"  # shards in, a folder of shards out
    if options.protocol is None and out_kind == "bin":
        options = replace(options, protocol="m-m")
    if options.block_size == 0:
        block = {"folder": FOLDER_BLOCK, "tar": TAR_BLOCK}.get(out_kind, PACKED_BLOCK)
        options = replace(options, block_size=block)
    _validate(source, out_kind, options)
    output = Path(output)
    check_output_paths(Path(input_path), output, source.kind)
    if isinstance(source, TarSource):
        check_tar_output(Path(input_path), output, source)
    if max_pixels is None:
        max_pixels = default_max_pixels(workers)
    meta = meta_dir(output)
    try:
        with run_lock(meta, str(output), shard):
            check_run_file(
                meta,
                {"input": str(Path(input_path)), "options": options.to_dict(), "shards": shard[1]},
            )
            ctx = Context(options, source, out_kind, output, meta, max_pixels, os.getpid(),
                          socket.gethostname())  # fmt: skip
            return _run(ctx, input_path, workers, shard, progress)
    except OSError as exc:
        raise write_error(exc, meta) from exc


def _block_done(ctx: Context, done: DoneKeys, items: list[Item]) -> list[bool]:
    return done.contains_many([it.key for it in items]) if len(done) else [False] * len(items)


def _plan(ctx: Context, done: DoneKeys, shard: tuple[int, int]) -> tuple[int, int]:
    """This shard's number of items and how many of them the journal has."""
    if shard == (0, 1) and not len(done):  # a fresh, unsharded run: no listing to walk
        return len(ctx.source), 0
    total = skipped = 0
    for _, items in iter_blocks(ctx.source.items(), ctx.options.block_size, shard):
        total += len(items)
        skipped += sum(_block_done(ctx, done, items))
    return total, skipped


def _vanished(ctx: Context, done: DoneKeys, skipped: int, meta_suffix: str) -> list[str]:
    """The finished keys that the input no longer lists (reported, outputs kept)."""
    if len(done) <= skipped:
        return []
    listed = {it.key for it in ctx.source.items()}
    gone = [key for key in done if key not in listed]
    if not gone:
        return []
    if ctx.out_kind != "folder":
        raise JournalError(
            f"{ctx.source.path}: {len(gone)} items an earlier run rendered into {ctx.output} "
            f"are no longer in the input (e.g. key {gone[0]!r}); the input changed: choose a "
            "new output"
        )
    path = ctx.meta / f"vanished{meta_suffix}.jsonl"
    atomic_write_text(path, "".join(json.dumps({"key": k}) + "\n" for k in gone))
    return gone


def _tasks(ctx: Context, done: DoneKeys, shard: tuple[int, int]) -> Iterator[Any]:
    from joblib import delayed

    for b, items in iter_blocks(ctx.source.items(), ctx.options.block_size, shard):
        flags = _block_done(ctx, done, items)
        if ctx.out_kind == "folder":
            pending = [it for it, f in zip(items, flags, strict=True) if not f]
            if pending:
                yield delayed(process_block)(ctx, b, pending)
            continue
        skip = frozenset(it.index for it, f in zip(items, flags, strict=True) if f)
        if len(skip) < len(items) or not part_path(ctx.meta, b).is_file():
            yield delayed(process_block)(ctx, b, items, skip)


def _run(
    ctx: Context,
    input_path: str | os.PathLike[str],
    workers: int | None,
    shard: tuple[int, int],
    progress: bool,
) -> dict[str, Any]:
    from joblib import Parallel
    from tqdm import tqdm

    suffix = "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"
    journal = Journal(ctx.meta, suffix)
    notes = [*getattr(ctx.source, "notes", ()), *journal.notes]
    counts = {"done": 0, "failed": 0, "faces": 0, "outputs": 0}
    try:
        total, skipped = _plan(ctx, journal.done, shard)
        vanished = _vanished(ctx, journal.done, skipped, suffix)
        if vanished:
            notes.append(
                f"{len(vanished)} items an earlier run finished are no longer in {input_path} "
                f"(listed in {ctx.meta / f'vanished{suffix}.jsonl'}); their outputs are kept"
            )
        unlisted = getattr(ctx.source, "unlisted", [])
        if unlisted:
            path = ctx.meta / f"unlisted{suffix}.jsonl"
            atomic_write_text(path, "".join(json.dumps(u) + "\n" for u in unlisted))
            first = unlisted[0]
            notes.append(
                f"{len(unlisted)} folders of {input_path} cannot be listed, their images are "
                f"not rendered (e.g. {first['folder']}: {first['reason']}); see {path}"
            )
        if journal.resumed:
            _remove_stale_temps(ctx, shard, journal.done)
        start = time.perf_counter()
        bar = tqdm(total=total, initial=skipped, desc="render", unit="img", disable=not progress)
        try:
            for results in Parallel(n_jobs=workers, return_as="generator")(
                _tasks(ctx, journal.done, shard)
            ):
                journal.write(results)
                for res in results:
                    counts["failed" if res.failure else "done"] += 1
                    counts["faces"] += res.faces
                    counts["outputs"] += len(res.lines)
                bar.update(len(results))
        finally:
            bar.close()
    except BaseException:
        with contextlib.suppress(OSError):  # the error being raised says more
            journal.close()
        raise
    journal.close()
    assembled = assemble(ctx, ctx.source) if ctx.out_kind != "folder" else None
    summary = {
        **counts,
        "skipped": skipped,
        "vanished": len(vanished),
        "unlisted": len(unlisted),
        "total": total,
        "seconds": round(time.perf_counter() - start, 2),
        "shard": f"{shard[0]}/{shard[1]}",
        "manifest": str(journal.manifest_path),
        "failures": str(journal.failures_path),
        "output": str(ctx.output),
        "assembled": assembled,
        "notes": notes,
    }
    atomic_write_text(ctx.meta / f"summary{suffix}.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _remove_stale_temps(ctx: Context, shard: tuple[int, int], done: DoneKeys) -> None:
    """Delete the temporary files a killed run left for the items it had in flight.

    Only this shard's next pending items (a window larger than any dispatch queue) are
    considered, so concurrent shards writing into the same folders are not disturbed.
    """
    window = ctx.options.block_size * (4 * (os.cpu_count() or 1) + 4)
    targets: dict[Path, set[str]] = {}
    pending = (
        it
        for _, items in iter_blocks(ctx.source.items(), ctx.options.block_size, shard)
        for it, finished in zip(items, _block_done(ctx, done, items), strict=True)
        if not finished
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
