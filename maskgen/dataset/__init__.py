"""Mask a whole dataset: image folders, insightface ``.bin`` packs and ``.rec`` sets.

:func:`render_dataset` streams the input's items (folder files, pack images, RecordIO
records) in a fixed order, cuts them into blocks of ``block_size`` items, renders the blocks
in parallel with joblib (results come back in input order) and writes, beside the output
(``<OUTPUT>.maskgen/``):

* ``manifest.jsonl`` — one JSON record per output: input, output, backend, faces (box,
  landmarks, score, params), plus ``landmarks``/``params`` of the first face (replayable);
* ``failures.jsonl`` — one record per failed input with its ``category`` and ``reason``;
* ``progress.log`` — the journal: one checked line per finished item (its key, the sizes
  of both files after it and CRC-32s, :mod:`~maskgen.dataset.journal`);
* ``run.json`` (the options; a resumed run must use the same) and ``summary.json``.

Determinism: the draws of an item come from a PCG64 generator whose state is SHA-256 of
(seed, key, variant) (:mod:`maskgen.seeding`), so the output does not depend on the number of
workers, the shard or on interruptions. Resume: the lines of ``progress.log`` that check
out (and the bytes they cover) say which items finished; the manifest and failure files
are cut back to the last of them (dropping the lines of an item that was cut short, or a
torn tail after a power cut) and the run renders every item whose key is not there. The
journal is synced to disk; every other file is written atomically. One run at a time holds
the output (:mod:`~maskgen.dataset.locks`); an output that is, or is listed inside, the
input is refused (:mod:`~maskgen.dataset.paths`); run-stopping problems raise the one-line
errors of :mod:`~maskgen.dataset.errors`.

``.rec`` and ``.bin`` outputs keep every input image (failed ones unmasked, and reported):
each block's outputs go to a part file ``parts/NNNNNNNN.part`` (atomic); once every block
of every shard is there the final file is assembled from the parts in order, so it is
byte-identical whether the run was interrupted, sharded or not.

Modules, one concern each:

* :mod:`~maskgen.dataset.options` — :class:`RenderOptions`, output kinds, shards, block sizes;
* :mod:`~maskgen.dataset.sources` — the items of a folder, ``.bin`` pack or ``.rec`` set;
* :mod:`~maskgen.dataset.state` — the per-worker state (backends, memos, open readers);
* :mod:`~maskgen.dataset.naming` — output names and occlusion-map paths;
* :mod:`~maskgen.dataset.manifest` — quantised landmarks and manifest/failure records;
* :mod:`~maskgen.dataset.items` — the work of one item (detect, draw, paint, encode);
* :mod:`~maskgen.dataset.blocks` — the work of one block, in phases, and its part file;
* :mod:`~maskgen.dataset.parts` — the part file format;
* :mod:`~maskgen.dataset.journal` — manifest, failures, progress log (resume), ``run.json``;
* :mod:`~maskgen.dataset.locks` — one run at a time per output (shards side by side);
* :mod:`~maskgen.dataset.paths` — outputs that would clobber the input; replay targets;
* :mod:`~maskgen.dataset.errors` — the one-line errors that stop a run;
* :mod:`~maskgen.dataset.assemble` — the final ``.rec``/``.bin`` and the protocol file;
* :mod:`~maskgen.dataset.runner` — :func:`render_dataset`, the driver;
* :mod:`~maskgen.dataset.replay` — :func:`replay_record`.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from maskgen.io import write_image
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_image(src / "a" / "face.png", np.full((112, 112, 3), 170, np.uint8))
    >>> summary = render_dataset(src, src.parent / (src.name + "_out"),
    ...                          RenderOptions(landmarks="aligned"), workers=1, progress=False)
    >>> summary["done"], summary["failed"], (src.parent / (src.name + "_out/a/face.png")).is_file()
    (1, 0, True)
"""

from __future__ import annotations

from maskgen.dataset.items import Context, ItemResult, process_item
from maskgen.dataset.journal import Journal
from maskgen.dataset.manifest import quantise
from maskgen.dataset.options import (
    FOLDER_BLOCK,
    PACKED_BLOCK,
    PROTOCOLS,
    RenderOptions,
    meta_dir,
    output_kind,
    parse_shard,
)
from maskgen.dataset.parts import part_path, read_part, write_part
from maskgen.dataset.replay import replay_record
from maskgen.dataset.runner import render_dataset
from maskgen.dataset.sources import BinSource, FolderSource, Item, RecSource, open_source
from maskgen.dataset.state import WorkerState, worker_state

__all__ = [
    "FOLDER_BLOCK",
    "PACKED_BLOCK",
    "PROTOCOLS",
    "BinSource",
    "Context",
    "FolderSource",
    "Item",
    "ItemResult",
    "Journal",
    "RecSource",
    "RenderOptions",
    "WorkerState",
    "meta_dir",
    "open_source",
    "output_kind",
    "parse_shard",
    "part_path",
    "process_item",
    "quantise",
    "read_part",
    "render_dataset",
    "replay_record",
    "worker_state",
    "write_part",
]
