"""Mask a whole dataset: image folders, insightface ``.bin`` packs and ``.rec`` sets.

:func:`render_dataset` streams the input's items (folder files, pack images, RecordIO
records) in a fixed order, cuts them into blocks of ``block_size`` items, renders the blocks
in parallel with joblib (results come back in input order) and writes, beside the output
(``<OUTPUT>.maskgen/``):

* ``manifest.jsonl`` — one JSON record per output: input, output, backend, faces (box,
  landmarks, score, params), plus ``landmarks``/``params`` of the first face (replayable);
* ``failures.jsonl`` — one record per failed input with its ``category`` and ``reason``;
* ``progress.log`` — one line per finished item with the byte sizes of both files;
* ``run.json`` (the options; a resumed run must use the same) and ``summary.json``.

Determinism: the draws of an item come from a PCG64 generator whose state is SHA-256 of
(seed, key, variant) (:mod:`maskgen.seeding`), so the output does not depend on the number of
workers, the shard or on interruptions. Resume: the last complete line of ``progress.log``
says which item finished last; the manifest and failure files are cut back to its sizes
(dropping the lines of an item that was cut short) and the run carries on after it. Every
file is written atomically.

``.rec`` and ``.bin`` outputs keep every input image (failed ones unmasked, and reported):
each block's outputs go to a part file ``parts/NNNNNNNN.part`` (atomic); once every block
of every shard is there the final file is assembled from the parts in order, so it is
byte-identical whether the run was interrupted, sharded or not.

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

import contextlib
import json
import math
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import orjson

from maskgen.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    RecordIOError,
    RecordReader,
    RecordSet,
    RecordWriter,
    atomic_write_bytes,
    atomic_write_text,
    decode_image,
    encode_image,
    iter_image_files,
    load_bin,
    rgb_to_bgr,
    save_bin,
    unpack,
)
from maskgen.io.atomic import temp_file_target
from maskgen.io.recordio import frame_image_records
from maskgen.protocol import (
    DatasetProtocol,
    EvalProtocol,
    dataset_sha256,
    protocol_masks,
    protocol_path,
)
from maskgen.render import MaskParams, MaskSpec, paint_face, render
from maskgen.seeding import draw_item

#: The evaluation protocols a rendered ``.bin`` can follow (NM-NM needs no rendering).
PROTOCOLS = ("m-m", "m-nm")
#: A part file starts with this line, then (outputs, meta bytes) as two little-endian uint32.
_PART_MAGIC = b"maskgen part 2\n"
_PART_HEAD = struct.Struct("<II")


def output_kind(path: str | os.PathLike[str]) -> str:
    """``"bin"``, ``"rec"`` or ``"folder"`` from a path's suffix.

    Example:
        >>> output_kind("lfw.bin"), output_kind("train.rec"), output_kind("out/dir")
        ('bin', 'rec', 'folder')
    """
    suffix = Path(path).suffix.lower()
    return {".bin": "bin", ".rec": "rec"}.get(suffix, "folder")


def meta_dir(output: str | os.PathLike[str]) -> Path:
    """Folder of the manifest, failure report, progress log and parts: ``<OUTPUT>.maskgen``.

    Example:
        >>> meta_dir("out/lfw.bin").as_posix()
        'out/lfw.bin.maskgen'
    """
    out = Path(output)
    return out.parent / (out.name + ".maskgen")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0 ≤ i < n).

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


#: Default items per block for folder outputs: each item is a file of its own, often a large
#: photo, so blocks stay small for even load and little lost work on a kill.
FOLDER_BLOCK = 64
#: Default items per block for ``.rec``/``.bin`` outputs: items are small crops, and every
#: block ends with an fsynced part file (about 3 ms), so blocks are larger.
PACKED_BLOCK = 1024


@dataclass(frozen=True)
class RenderOptions:
    """Everything that decides the output files (stored in ``run.json``).

    Attributes:
        spec: what masks may be drawn.
        p: probability that an output is masked (else the clean input is written).
        variants: outputs per input image (folders and ``.rec`` only).
        seed: global seed; each output's draws derive from it and the item's key.
        landmarks: backend name (:func:`maskgen.landmarks.available_backends`).
        landmarks_dir: annotation folder for ``landmarks="file"``.
        fa_weights, fa_detector, fa_detector_weights: face-alignment model files/detector.
        faces: ``"all"`` or ``"largest"``.
        min_face: minimum face size (shorter box side, pixels).
        save_occlusion: also write the occlusion maps (PNG) under ``<meta>/occlusion``.
        format: output image format (``"png"``, ``"jpg"`` …); default: the input's for
            folders, ``jpg`` inside ``.rec``/``.bin`` (unmasked images keep their bytes).
        quality: JPEG/WebP quality.
        protocol: for ``.bin`` output, ``"m-m"`` (all masked) or ``"m-nm"`` (the second
            image of every pair masked, the first clean).
        block_size: items per task (and per part file); 0 = automatic:
            :data:`FOLDER_BLOCK` for folder outputs, :data:`PACKED_BLOCK` for ``.rec``/``.bin``.
        detect_max_side: detection runs on a copy at most this large (0 = full size).
    """

    spec: MaskSpec = field(default_factory=MaskSpec)
    p: float = 1.0
    variants: int = 1
    seed: int = 0
    landmarks: str = "auto"
    landmarks_dir: str | None = None
    fa_weights: str | None = None
    fa_detector: str = "sfd"
    fa_detector_weights: str | None = None
    faces: str = "all"
    min_face: float = 0.0
    save_occlusion: bool = False
    format: str | None = None
    quality: int = 95
    protocol: str | None = None
    block_size: int = 0
    detect_max_side: int = 800

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"--p must be in [0, 1], got {self.p}")
        if self.variants < 1:
            raise ValueError(f"--variants must be at least 1, got {self.variants}")
        if self.faces not in ("all", "largest"):
            raise ValueError(f"--faces must be 'all' or 'largest', got {self.faces!r}")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.format is not None:
            ext = "." + self.format.lower().lstrip(".")
            if ext not in IMAGE_EXTENSIONS:
                raise ValueError(
                    f"--format {self.format!r}: choose from {sorted(IMAGE_EXTENSIONS)}"
                )
            object.__setattr__(self, "format", ext)
        if self.block_size < 0:
            raise ValueError(f"block_size must be 0 (automatic) or more, got {self.block_size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    def backend_config(self) -> dict[str, Any]:
        return {
            "name": self.landmarks,
            "landmarks_dir": self.landmarks_dir,
            "fa_weights": self.fa_weights,
            "fa_detector": self.fa_detector,
            "fa_detector_weights": self.fa_detector_weights,
            "detect_max_side": self.detect_max_side,
        }


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One input image: its position in the input order, its key and how to load it."""

    index: int
    key: str
    data: bytes | None = None  # encoded bytes (``.bin`` items travel with their data)


class FolderSource:
    """Image files under a folder, recursively, keyed by their relative POSIX path."""

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._paths = [p.relative_to(self.root).as_posix() for p in iter_image_files(self.root)]

    def __len__(self) -> int:
        return len(self._paths)

    def items(self) -> Iterator[Item]:
        for i, rel in enumerate(self._paths):
            yield Item(i, rel)

    def load(self, item: Item) -> tuple[bytes, int | None]:
        return _read_bytes(self.root / item.key), None

    def describe(self, item: Item) -> str:
        return item.key

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_paths": []}  # workers get their items' keys


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes), not an image")
    return data


class BinSource:
    """The 2N images of an insightface verification pack, keyed ``000000``, ``000001`` …"""

    kind = "bin"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pack = load_bin(self.path)

    def __len__(self) -> int:
        return self.pack.num_images

    def items(self) -> Iterator[Item]:
        for i, data in enumerate(self.pack.images):
            yield Item(i, f"{i:06d}", data)

    def load(self, item: Item) -> tuple[bytes, int | None]:
        assert item.data is not None
        return item.data, None

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.index}"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "pack": None}  # items carry their bytes


_READERS: dict[str, RecordReader] = {}


class RecSource:
    """The image records of a RecordIO set, keyed by record key, in ``image_keys`` order."""

    kind = "rec"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        records = RecordSet(self.path)
        self.keys = records.image_keys
        self.has_header = records.header is not None
        self.has_identities = records.num_classes is not None
        records.close()

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[Item]:
        for i, key in enumerate(self.keys.tolist()):
            yield Item(i, str(key))

    def _reader(self) -> RecordReader:
        reader = _READERS.get(str(self.path))
        if reader is None:
            reader = _READERS[str(self.path)] = RecordReader(self.path)
        return reader

    def load(self, item: Item) -> tuple[bytes, int | None]:
        return self._split(self._reader().read(int(item.key)))

    @staticmethod
    def _split(record: bytes) -> tuple[bytes, int | None]:
        header, payload = unpack(record)
        label = header.label if header.flag == 0 else header.label[0]  # type: ignore[index]
        return payload, int(float(label))

    def load_many(self, items: list[Item]) -> list[tuple[bytes, int | None] | Exception]:
        """:meth:`load` for a block of items in one read; an entry is the error that
        :meth:`load` would have raised for its item."""
        out: list[tuple[bytes, int | None] | Exception] = []
        for record in self._reader().read_many([int(it.key) for it in items]):
            if isinstance(record, Exception):
                out.append(record)
                continue
            try:
                out.append(self._split(record))
            except Exception as exc:  # re-raised by _load, as load would
                out.append(exc)
        return out

    def describe(self, item: Item) -> str:
        return f"{self.path.name}#{item.key}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["keys"] = None  # workers only need the path
        return state


def open_source(path: str | os.PathLike[str]) -> FolderSource | BinSource | RecSource:
    """Pick the reader for a folder, a ``.bin`` pack or a ``.rec`` set."""
    p = Path(path)
    if p.is_dir():
        return FolderSource(p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: input not found")
    kind = output_kind(p)
    if kind == "bin":
        return BinSource(p)
    if kind == "rec":
        return RecSource(p)
    raise ValueError(f"{p}: input must be a folder, a .bin pack or a .rec file")


# --------------------------------------------------------------------------------------------
# the work of one block (runs in the workers)
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a worker needs besides the items (small and picklable)."""

    options: RenderOptions
    source: Any
    out_kind: str
    output: Path
    meta: Path


_BACKENDS: dict[str, Any] = {}
_LAST_BACKEND: list[Any] = [None, None]  # (options, backend) of the last call


def _backend(options: RenderOptions) -> Any:
    """One backend per process and configuration (models load once per worker)."""
    if _LAST_BACKEND[0] is options:
        return _LAST_BACKEND[1]
    backend = _backend_for(options)
    _LAST_BACKEND[:] = [options, backend]
    return backend


def _backend_for(options: RenderOptions) -> Any:
    from maskgen.landmarks import create_backend

    config = options.backend_config()
    key = json.dumps(config, sort_keys=True)
    if key not in _BACKENDS:
        name = config.pop("name")
        _BACKENDS[key] = create_backend(name, **config)
    return _BACKENDS[key]


@dataclass
class ItemResult:
    """Outcome of one item: its manifest lines (UTF-8 JSON, newline-terminated), an optional
    failure and the faces found."""

    index: int
    key: str
    lines: list[bytes]
    failure: dict[str, Any] | None
    faces: int
    outputs: list[tuple[bytes, int | None, Any]] = field(default_factory=list)


def _out_ext(ctx: Context, item: Item) -> str:
    if ctx.options.format:
        return ctx.options.format
    if ctx.source.kind == "folder" and ctx.out_kind == "folder":
        return Path(item.key).suffix.lower()
    return ".jpg"


def _out_name(ctx: Context, item: Item, variant: int, label: int | None) -> str:
    """Where output ``variant`` of ``item`` goes (relative path, or ``file#key``)."""
    if ctx.out_kind != "folder":
        out_key = item.index * ctx.options.variants + variant + 1
        return f"{ctx.output.name}#{out_key}"
    if ctx.source.kind == "folder":
        rel = Path(item.key)
        if ctx.options.format:
            rel = rel.with_suffix(ctx.options.format)
    elif ctx.source.kind == "rec":
        rel = Path(str(label)) / f"{int(item.key):08d}{_out_ext(ctx, item)}"
    else:
        rel = Path(f"{item.index:06d}{_out_ext(ctx, item)}")
    if ctx.options.variants > 1:
        rel = rel.with_name(f"{rel.stem}_v{variant}{rel.suffix}")
    return rel.as_posix()


def _forced_mask(ctx: Context, item: Item) -> bool | None:
    """Whether an evaluation protocol decides that this image is masked (``None``: ``p`` does)."""
    if ctx.options.protocol is None or not (ctx.out_kind == "bin" or ctx.source.kind == "bin"):
        return None
    return protocol_masks(ctx.options.protocol, item.index)


def quantise(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks as the manifest stores them (0.01 px): rendering uses exactly these, so a
    replay from the manifest gives the same pixels.

    Example:
        >>> import numpy as np
        >>> quantise(np.array([[1.23456, 2.0]], np.float32)).tolist() == [[np.float32(1.23), 2.0]]
        True
    """
    return np.asarray(np.round(landmarks.astype(np.float64), 2).tolist(), np.float32)


_LANDMARKS: dict[tuple[bytes, tuple[int, ...]], tuple[np.ndarray, bytes]] = {}


def _quantised(landmarks: np.ndarray) -> tuple[np.ndarray, bytes]:
    """:func:`quantise` (read-only result) and the manifest's JSON text of the result,
    memoised: aligned crops share one layout, so both are computed once per process."""
    key = (landmarks.tobytes(), landmarks.shape)
    hit = _LANDMARKS.get(key)
    if hit is None:
        q = quantise(landmarks)
        q.setflags(write=False)
        hit = (q, orjson.dumps(np.round(q.astype(np.float64), 2).tolist()))
        if len(_LANDMARKS) >= 64:
            _LANDMARKS.pop(next(iter(_LANDMARKS)))
        _LANDMARKS[key] = hit
    return hit


def _placeholder(i: int) -> str:
    return f"\x00landmarks{i}\x00"  # NUL never occurs in keys, paths or params


_PLACEHOLDERS = [orjson.dumps(_placeholder(i)) for i in range(8)]


def _face_entry(face: Any, i: int) -> dict[str, Any]:
    """What a face's manifest entry says whatever is drawn on it (:func:`_record` adds the
    draw); its landmarks are a placeholder filled in by :func:`_dump`."""
    return {
        "box": [round(float(v), 2) for v in face.box],
        "landmarks": _placeholder(i),
        "score": round(float(face.score), 4),
        "backend": face.backend,
    }


def _dump(record: dict[str, Any], landmarks: list[bytes]) -> bytes:
    """The manifest line of ``record`` (one JSON object and a newline), face ``i``'s
    landmarks being the JSON text ``landmarks[i]``.

    orjson rather than ``json``: a manifest line per output is on the hot path of
    million-image datasets, and orjson writes one about ten times faster.
    """
    text = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    for i, lm in enumerate(landmarks):
        marker = _PLACEHOLDERS[i] if i < len(_PLACEHOLDERS) else orjson.dumps(_placeholder(i))
        text = text.replace(marker, lm)
    return text


def _failure(ctx: Context, item: Item, category: str, reason: str) -> dict[str, Any]:
    return {
        "index": item.index,
        "key": item.key,
        "input": ctx.source.describe(item),
        "category": category,
        "reason": reason,
    }


class _Detected(NamedTuple):
    """Faces to mask (landmarks quantised as the manifest stores them), their landmarks' JSON
    text and manifest entries; or, when there are none, the failure category and reason."""

    faces: list[Any]
    landmarks_json: list[bytes]
    entries: list[dict[str, Any]]
    category: str | None = None
    reason: str = ""


def _quantise_faces(faces: list[Any]) -> _Detected:
    quantised = [_quantised(f.landmarks) for f in faces]
    kept = [replace(f, landmarks=q) for f, (q, _) in zip(faces, quantised, strict=True)]
    entries = [_face_entry(f, i) for i, f in enumerate(kept)]
    return _Detected(kept, [text for _, text in quantised], entries)


_ALIGNED: dict[tuple[Any, ...], _Detected] = {}


def _detect(ctx: Context, item: Item, image: np.ndarray) -> _Detected:
    """Faces to mask, or a failure (category, reason)."""
    options = ctx.options
    h, w = image.shape[:2]
    # The aligned layout depends on the image size only, and without the skin check the
    # selection looks at the faces only: select once per size, not once per crop.
    memo = (h, w, options.faces, options.min_face)
    if options.landmarks == "aligned":
        hit = _ALIGNED.get(memo)
        if hit is None:
            hit = _ALIGNED[memo] = _select(ctx, item, image)
        return hit
    return _select(ctx, item, image)


def _select(ctx: Context, item: Item, image: np.ndarray) -> _Detected:
    from maskgen.landmarks import select_faces

    backend = _backend(ctx.options)
    options = ctx.options
    try:
        found = backend.detect(image, item.key)
    except (FileNotFoundError, ValueError) as exc:
        return _Detected([], [], [], "landmarks", str(exc))
    detected = options.landmarks not in ("aligned", "file") and not (
        found and found[0].backend == "aligned"
    )
    kept, reasons = select_faces(
        image, found, mode=options.faces, min_face=options.min_face, check_skin=detected
    )
    if kept:
        return _quantise_faces(kept)
    if not found:
        return _Detected([], [], [], "no_face", f"no face found ({backend.name})")
    category = "too_small" if reasons[0].startswith("face too small") else "rejected"
    return _Detected([], [], [], category, "; ".join(reasons))


class _Pending(NamedTuple):
    """An output waiting to be encoded (``.rec``/``.bin`` blocks encode all theirs at once)
    or written (folders: to ``name``)."""

    image: np.ndarray
    raw: bytes
    masked: bool
    name: str


class _Draw(NamedTuple):
    """One output's draw: whether it is masked and the params of each face."""

    masked: bool
    params: list[MaskParams | None]


def _load(
    ctx: Context, item: Item, loaded: tuple[bytes, int | None] | Exception | None
) -> tuple[bytes, int | None, np.ndarray | Exception]:
    """The item's bytes, label and decoded image (or the read/decode error)."""
    raw, label = b"", None
    try:
        if isinstance(loaded, Exception):
            raise loaded
        raw, label = ctx.source.load(item) if loaded is None else loaded
        # With aligned crops nothing but the renderer and the encoder reads the pixels, and
        # both take OpenCV's BGR order through a reversed view: no conversion either way.
        bgr = ctx.options.landmarks == "aligned"
        return raw, label, decode_image(raw, source=ctx.source.describe(item), bgr_storage=bgr)
    except (ImageReadError, OSError, RecordIOError) as exc:
        return raw, label, exc


def process_item(ctx: Context, item: Item) -> ItemResult:
    """Load, detect, render, encode and write one item (folder outputs)."""
    result = _mask_items(ctx, [item], [_load(ctx, item, None)])[0]
    for pending, _, _ in result.outputs:
        data = _encode(ctx, item, pending.image, pending.raw, pending.masked)
        atomic_write_bytes(ctx.output / pending.name, data)
    result.outputs = []
    return result


def _mask_items(
    ctx: Context, items: list[Item], decoded: list[tuple[bytes, int | None, Any]]
) -> list[ItemResult]:
    """Detect, draw, paint and describe every output of ``items`` (``decoded``: what
    :func:`_load` returned for each), leaving the outputs as :class:`_Pending` images.

    Phase by phase over the items (faces, then draws, then painting, then manifest lines)
    rather than item by item: each phase keeps its Python and compiled code hot, which on
    112×112 crops saves about a quarter of the masking time.
    """
    found = [_faces(ctx, it, got[2]) for it, got in zip(items, decoded, strict=True)]
    draws = [
        _draws(ctx, it, len(det.faces)) if det.category is None else []
        for it, det in zip(items, found, strict=True)
    ]
    painted = [
        _paint_outputs(ctx, got[2], det.faces, ds) if ds else []
        for got, det, ds in zip(decoded, found, draws, strict=True)
    ]
    return [
        _describe(ctx, it, got, det, ds, px)
        for it, got, det, ds, px in zip(items, decoded, found, draws, painted, strict=True)
    ]


def _faces(ctx: Context, item: Item, image: np.ndarray | Exception) -> _Detected:
    """Faces to mask in the decoded ``image``, or why there are none (unreadable included)."""
    if isinstance(image, Exception):
        return _Detected([], [], [], "unreadable", str(image))
    return _detect(ctx, item, image)


def _draws(ctx: Context, item: Item, n_faces: int) -> list[_Draw]:
    """The draw of each output variant (:mod:`maskgen.seeding`)."""
    options = ctx.options
    forced = _forced_mask(ctx, item)
    draws = []
    for variant in range(options.variants):
        masked, params = draw_item(options.spec, options.seed, item.key, variant,
                                   p=options.p, masked=forced, faces=n_faces)  # fmt: skip
        draws.append(_Draw(masked, list(params) if masked else [None] * n_faces))
    return draws


def _paint_outputs(
    ctx: Context, image: np.ndarray, faces: list[Any], draws: list[_Draw]
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each output's pixels and (with ``save_occlusion``) its occlusion map.

    The last output is painted in place into the decoded image when no earlier output
    still shows it (an unmasked one does); every other masked output paints a copy.
    """
    outputs: list[tuple[np.ndarray, np.ndarray | None]] = []
    in_place = len(draws) - 1 if all(d.masked for d in draws[:-1]) else -1
    for variant, draw in enumerate(draws):
        out, alpha = image, None
        if draw.masked:
            out = image if variant == in_place else image.copy()
            if ctx.options.save_occlusion:
                alpha = np.zeros(image.shape[:2], np.float32)
            for face, params in zip(faces, draw.params, strict=True):
                box, cover = paint_face(out, face.landmarks, params)  # type: ignore[arg-type]
                if alpha is not None and box is not None:
                    x0, y0, x1, y1 = box
                    np.maximum(alpha[y0:y1, x0:x1], cover, out=alpha[y0:y1, x0:x1])
        outputs.append((out, alpha))
    return outputs


def _describe(
    ctx: Context,
    item: Item,
    decoded: tuple[bytes, int | None, Any],
    det: _Detected,
    draws: list[_Draw],
    painted: list[tuple[np.ndarray, np.ndarray | None]],
) -> ItemResult:
    """The item's result: manifest lines, occlusion maps (written here) and pending outputs;
    a failed item falls back to its original bytes."""
    raw, label, image = decoded
    if det.category is not None:
        return _fallback(ctx, item, _failure(ctx, item, det.category, det.reason), raw, label)
    result = ItemResult(item.index, item.key, [], None, len(det.faces))
    for variant, (draw, (out, alpha)) in enumerate(zip(draws, painted, strict=True)):
        name = _out_name(ctx, item, variant, label)
        record = _record(ctx, item, variant, name, label, det.entries, draw.params)
        if ctx.options.save_occlusion:
            occ = _occlusion_name(name)
            if alpha is None:
                alpha8 = np.zeros(image.shape[:2], np.uint8)
            else:
                alpha8 = np.rint(alpha * 255).astype(np.uint8)
            atomic_write_bytes(ctx.meta / occ, encode_image(alpha8, ".png"))
            record["occlusion"] = occ.as_posix()
        pending = _Pending(out, raw, draw.masked, name)
        result.outputs.append((pending, label, _protocol_entry(ctx, det, record["params"])))
        result.lines.append(_dump(record, det.landmarks_json))
    return result


def _protocol_entry(ctx: Context, det: _Detected, params: MaskParams | None) -> Any:
    """What the protocol file of a ``.bin`` output keeps of an image: its draw and, unless
    the layout is the aligned one, the landmarks it was drawn on."""
    if ctx.out_kind != "bin" or not det.faces:
        return None
    face = det.faces[0]
    points = None if face.backend == "aligned" else face.landmarks.tolist()
    return {"params": params, "points": points}


def _occlusion_name(name: str) -> Path:
    """Occlusion map of an output, relative to the meta folder."""
    return Path("occlusion") / Path(name.replace("#", "_")).with_suffix(".png")


def _encode(ctx: Context, item: Item, image: np.ndarray, raw: bytes, masked: bool) -> bytes:
    """Encode an output; an unmasked image keeps its original bytes where the format allows."""
    if not masked and ctx.options.format is None:
        return raw
    ext, quality = _out_ext(ctx, item), ctx.options.quality
    if (
        ext in (".jpg", ".jpeg")
        and 1 <= quality <= 100
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):  # the common case, straight to OpenCV (what encode_image does after its checks)
        ok, buf = cv2.imencode(".jpg", rgb_to_bgr(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if ok:
            return buf.tobytes()
    return encode_image(image, ext, quality)


def _record(
    ctx: Context,
    item: Item,
    variant: int,
    name: str,
    label: int | None,
    entries: list[dict[str, Any]],
    params: list[MaskParams | None],
) -> dict[str, Any]:
    """The manifest record of one output (faces: their :func:`_face_entry` and draws)."""
    # params stay dataclasses: orjson writes their fields in order, as to_dict does.
    face_records = [{**e, "params": p} for e, p in zip(entries, params, strict=True)]
    record: dict[str, Any] = {
        "index": item.index,
        "key": item.key,
        "variant": variant,
        "input": ctx.source.describe(item),
        "output": name,
    }
    if label is not None:
        record["label"] = label
    record["backend"] = entries[0]["backend"] if entries else ctx.options.landmarks
    record["faces"] = face_records
    record["landmarks"] = face_records[0]["landmarks"] if face_records else None
    record["params"] = face_records[0]["params"] if face_records else None
    return record


def _fallback(
    ctx: Context, item: Item, fail: dict[str, Any], raw: bytes, label: int | None
) -> ItemResult:
    """A failed item: nothing for folders; ``.rec``/``.bin`` keep the original, unmasked."""
    result = ItemResult(item.index, item.key, [], fail, 0)
    if ctx.out_kind == "folder":
        return result
    for variant in range(ctx.options.variants):
        name = _out_name(ctx, item, variant, label)
        record = _record(ctx, item, variant, name, label, [], [])
        record["failure"] = fail["category"]
        result.lines.append(_dump(record, []))
        result.outputs.append((raw, label, None))
    return result


def part_path(meta: Path, block: int) -> Path:
    """Part file of a block (``.rec``/``.bin`` outputs)."""
    return meta / "parts" / f"{block:08d}.part"


def process_block(ctx: Context, block: int, items: list[Item], first_pending: int) -> list[Any]:
    """Process one block; returns the results of the items at index ≥ ``first_pending``.

    For ``.rec``/``.bin`` outputs the whole block is processed and its part file written.
    """
    if ctx.out_kind == "folder":
        return [process_item(ctx, it) for it in items if it.index >= first_pending]
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
                metas.append({"label": label, "key": key, "image": bool(data)})
                records.append((0 if label is None else label, key, data))
            else:  # a .bin's protocol file lists every draw
                metas.append({"label": label, "draw": params})
                payloads.append(data)
        res.outputs = []
    if ctx.out_kind == "rec":
        # Framed here, in the worker, so that assembly is little more than a copy.
        data, lengths = frame_image_records(records)
    else:
        data, lengths = b"".join(payloads), [len(p) for p in payloads]
    write_part(part_path(ctx.meta, block), metas, lengths, data)
    return [r for r in results if r.index >= first_pending]


def write_part(path: Path, metas: list[dict[str, Any]], lengths: list[int], data: bytes) -> None:
    """Write a block's part file (atomically): what :func:`read_part` returns."""
    meta = orjson.dumps(metas)
    head = _PART_HEAD.pack(len(metas), len(meta))
    sizes = np.asarray(lengths, "<u4").tobytes()
    atomic_write_bytes(path, b"".join((_PART_MAGIC, head, meta, sizes, data)))


def read_part(path: Path) -> tuple[list[dict[str, Any]], list[int], memoryview]:
    """A block's part file: each output's meta, each output's length in bytes, and the
    outputs' bytes back to back (framed records for ``.rec``, encoded images for ``.bin``)."""
    raw = path.read_bytes()
    stale = f"remove {path.parent.parent} and run again"
    if not raw.startswith(_PART_MAGIC):
        raise ValueError(f"{path}: not a part file of this maskgen version; {stale}")
    pos = len(_PART_MAGIC)
    n, n_meta = _PART_HEAD.unpack_from(raw, pos)
    pos += _PART_HEAD.size
    metas = orjson.loads(raw[pos : pos + n_meta])
    pos += n_meta
    lengths = np.frombuffer(raw, "<u4", n, pos).tolist()
    data = memoryview(raw)[pos + 4 * n :]
    if len(metas) != n or sum(lengths) != len(data):
        raise ValueError(f"{path}: corrupt part file (sizes do not add up); {stale}")
    return metas, lengths, data


#: Decoded pixels a block may hold at once when it is processed in phases.
PHASE_BYTES = 64 << 20


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
            got = _load(ctx, items[stop], loaded[stop])
            decoded.append(got)
            held += got[2].nbytes * ctx.options.variants if isinstance(got[2], np.ndarray) else 0
            stop += 1
        chunk = _mask_items(ctx, items[start:stop], decoded)
        del decoded
        for res, it in zip(chunk, items[start:stop], strict=True):
            res.outputs = [
                (_encode(ctx, it, data.image, data.raw, data.masked), label, params)
                if isinstance(data, _Pending)
                else (data, label, params)
                for data, label, params in res.outputs
            ]
        results += chunk
        start = stop
    return results


# --------------------------------------------------------------------------------------------
# journal (manifest, failures, progress) and resume
# --------------------------------------------------------------------------------------------


class Journal:
    """Append-only manifest/failure files plus a progress log that makes them resumable."""

    def __init__(self, meta: Path, suffix: str = "") -> None:
        meta.mkdir(parents=True, exist_ok=True)
        self.manifest_path = meta / f"manifest{suffix}.jsonl"
        self.failures_path = meta / f"failures{suffix}.jsonl"
        self.progress_path = meta / f"progress{suffix}.log"
        self.resumed = self.progress_path.exists()
        self.last_index, sizes = self._recover()
        self._manifest = self._open(self.manifest_path, sizes[0])
        self._failures = self._open(self.failures_path, sizes[1])
        self._sizes = sizes  # both files are cut to these sizes: track them from here
        self._progress = self._open(self.progress_path, None)

    def _recover(self) -> tuple[int, tuple[int, int]]:
        """Last finished index and the file sizes it recorded (-1, (0, 0) if none)."""
        if not self.progress_path.exists():
            return -1, (0, 0)
        last_good, good_end = None, 0
        with self.progress_path.open("rb") as fh:
            pos = 0
            for line in fh:
                pos += len(line)
                if line.endswith(b"\n"):
                    last_good, good_end = line, pos
        with self.progress_path.open("r+b") as fh:  # drop a half-written last line
            fh.truncate(good_end)
        if last_good is None:
            return -1, (0, 0)
        index, _key, m, f = last_good.decode().rstrip("\n").split("\t")
        return int(index), (int(m), int(f))

    @staticmethod
    def _open(path: Path, size: int | None) -> Any:
        fh = path.open("ab")
        if size is not None:
            fh.truncate(size)
        return fh

    def write(self, results: list[ItemResult]) -> None:
        """Append the lines of a batch of items (manifest and failures flushed), then their
        progress lines: a progress line is only ever on disk after everything it covers."""
        manifest, failures, progress = [], [], []
        m_pos, f_pos = self._sizes
        for result in results:
            for line in result.lines:
                manifest.append(line)
                m_pos += len(line)
            if result.failure is not None:
                data = (json.dumps(result.failure) + "\n").encode()
                failures.append(data)
                f_pos += len(data)
            progress.append(f"{result.index}\t{result.key}\t{m_pos}\t{f_pos}\n")
        if manifest:
            self._manifest.write(b"".join(manifest))
            self._manifest.flush()
        if failures:
            self._failures.write(b"".join(failures))
            self._failures.flush()
        self._sizes = m_pos, f_pos
        self._progress.write("".join(progress).encode())
        self._progress.flush()

    def close(self) -> None:
        for fh in (self._manifest, self._failures, self._progress):
            fh.close()


def _check_run_file(meta: Path, identity: dict[str, Any]) -> None:
    run_file = meta / "run.json"
    text = json.dumps(identity, indent=1, sort_keys=True) + "\n"
    if run_file.exists():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise ValueError(
                f"{meta}: an earlier run with different settings ({', '.join(changed)}) wrote "
                "here; use the same options to resume, or choose a new output"
            )
        return
    atomic_write_text(run_file, text)


def _blocks(
    items: Iterable[Item], block_size: int, shard: tuple[int, int]
) -> Iterator[tuple[int, list[Item]]]:
    """Group items into blocks of ``block_size``; keep shard ``i``'s blocks (``b % n == i``)."""
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


def _validate(source: Any, out_kind: str, options: RenderOptions) -> None:
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
    _check_run_file(
        meta, {"input": str(Path(input_path)), "options": options.to_dict(), "shards": shard[1]}
    )
    suffix = "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"
    journal = Journal(meta, suffix)
    ctx = Context(options, source, out_kind, output, meta)
    total = _count_skipped(len(source), options.block_size, shard, len(source) - 1)
    resume_after = journal.last_index
    if journal.resumed:
        _remove_stale_temps(ctx, shard, resume_after)
    tasks = (
        delayed(process_block)(ctx, b, items, resume_after + 1)
        for b, items in _blocks(source.items(), options.block_size, shard)
        if items[-1].index > resume_after
    )
    counts = {"done": 0, "failed": 0, "faces": 0, "outputs": 0}
    skipped = _count_skipped(len(source), options.block_size, shard, resume_after)
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
    assembled = _assemble(ctx, source) if out_kind != "folder" else None
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
        for _, items in _blocks(ctx.source.items(), ctx.options.block_size, shard)
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
                name = _out_name(ctx, item, v, None)
                if ctx.out_kind == "folder":
                    paths.append(ctx.output / name)
                paths.append(ctx.meta / _occlusion_name(name))
        for path in paths:
            targets.setdefault(path.parent, set()).add(path.name)
    for folder, names in targets.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if temp_file_target(entry.name) in names:
                Path(entry.path).unlink(missing_ok=True)


def _count_skipped(n: int, block_size: int, shard: tuple[int, int], last: int) -> int:
    """Items of this shard at index ≤ ``last`` (finished in an earlier run)."""
    i, k = shard
    count = 0
    for b in range(0, min(n, last + 1) // block_size + 1):
        if b % k != i:
            continue
        lo, hi = b * block_size, min(n, (b + 1) * block_size, last + 1)
        count += max(0, hi - lo)
    return count


def _assemble(ctx: Context, source: Any) -> bool:
    """Write the final ``.rec``/``.bin`` once every block's part exists; True if written."""
    n_blocks = math.ceil(len(source) / ctx.options.block_size)
    parts = [part_path(ctx.meta, b) for b in range(n_blocks)]
    if not all(p.is_file() for p in parts):
        return False
    done = ctx.meta / "assembled.json"
    stamp = json.dumps({"parts": n_blocks, "output": ctx.output.name}) + "\n"
    if done.is_file() and ctx.output.is_file() and done.read_text() == stamp:
        return True
    if ctx.out_kind == "rec":
        _assemble_rec(ctx, source, parts)
    else:
        _assemble_bin(ctx, source, parts)
    atomic_write_text(done, stamp)
    return True


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
            labels = [(m["label"] or 0) if m["image"] else None for m in metas]
            writer.write_framed(keys, framed, lengths, labels)
            done += len(keys)
        if source.has_header:
            try:
                writer.write_header_record(identities=source.has_identities)
            except RecordIOError:
                writer.write_header_record(identities=False)


def _assemble_bin(ctx: Context, source: BinSource, parts: list[Path]) -> None:
    images, draws = [], []
    for part in parts:
        metas, lengths, data = read_part(part)
        ends = np.cumsum(lengths).tolist()
        images += [bytes(data[end - size : end]) for end, size in zip(ends, lengths, strict=True)]
        draws += [m["draw"] or {"params": None, "points": None} for m in metas]
    save_bin(ctx.output, images, source.pack.issame)
    _protocol_file(ctx, source, draws).save(protocol_path(ctx.output))


def _protocol_file(ctx: Context, source: BinSource, draws: list[dict[str, Any]]) -> EvalProtocol:
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


def replay_record(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Re-render one manifest record (all its faces) on its clean input image.

    Example:
        >>> import numpy as np
        >>> replay_record(np.zeros((4, 4, 3), np.uint8), {"faces": [], "params": None}).shape
        (4, 4, 3)
    """
    faces = record.get("faces")
    if faces is None:
        faces = [{"landmarks": record["landmarks"], "params": record["params"]}]
    out = image
    for face in faces:
        if face.get("params") is not None:
            params = MaskParams.from_dict(face["params"])
            out = render(out, np.asarray(face["landmarks"], np.float32), params).image
    return out
