"""The work of one item (runs in the workers): load, find faces, draw, paint, describe, encode.

Masking runs phase by phase over a list of items (:func:`mask_items`): faces, then draws
(:func:`maskgen.seeding.draw_item`), then painting, then manifest lines. A failed item falls
back to its original bytes in ``.rec``/``.bin`` outputs (and to nothing in folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from maskgen.dataset.manifest import dump, face_entry, failure, quantised, record
from maskgen.dataset.naming import occlusion_name, out_ext, out_name
from maskgen.dataset.options import RenderOptions
from maskgen.dataset.sources import Item, UnusableRecordError
from maskgen.dataset.state import JPEG_HEADS, worker_state
from maskgen.io import (
    ImageReadError,
    ImageTooLargeError,
    RecordIOError,
    atomic_write_bytes,
    check_pixels,
    decode_image,
    encode_image,
    image_size,
    rgb_to_bgr,
)
from maskgen.io.formats import decode_full, encode_gif, frame_count, lost_in, may_hold_more
from maskgen.jpeg import BY_OUTPUT, JpegGrid, grid_of_file, jpeg_entry, scale_of_quality
from maskgen.protocol import protocol_masks
from maskgen.render import MaskParams, paint_face
from maskgen.seeding import draw_item

__all__ = [
    "Context",
    "Detected",
    "Draw",
    "ItemResult",
    "Pending",
    "detect",
    "encode",
    "load",
    "mask_items",
    "process_item",
]

_STATE = worker_state()


@dataclass
class Context:
    """What a worker needs besides the items (small and picklable)."""

    options: RenderOptions
    source: Any
    out_kind: str
    output: Path
    meta: Path
    max_pixels: int = 0  # larger images fail as "too_large" (0: no limit)
    main_pid: int = 0  # the process that runs the journal (workers stop when it is gone)
    main_host: str = ""


@dataclass
class ItemResult:
    """Outcome of one item: its manifest lines (UTF-8 JSON, newline-terminated), an optional
    failure and the faces found."""

    index: int
    key: str
    lines: list[bytes]
    failure: dict[str, Any] | None
    faces: int
    outputs: list[tuple[Any, int | None, Any]] = field(default_factory=list)


class Detected(NamedTuple):
    """Faces to mask (landmarks quantised as the manifest stores them), their landmarks' JSON
    text and manifest entries; or, when there are none, the failure category and reason."""

    faces: list[Any]
    landmarks_json: list[bytes]
    entries: list[dict[str, Any]]
    category: str | None = None
    reason: str = ""


class Pending(NamedTuple):
    """An output waiting to be encoded (``.rec``/``.bin`` blocks encode all theirs at once)
    or written (folders: to ``name``)."""

    image: np.ndarray
    raw: bytes
    masked: bool
    name: str


class Deep(NamedTuple):
    """A decoded image with more than 8-bit RGB (16-bit samples, alpha) for a folder output:
    faces are found on ``plain`` (the 8-bit RGB image) and painted on ``full``."""

    plain: np.ndarray
    full: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.full.shape


class UnsupportedImageError(ImageReadError):
    """An image the output cannot hold as it is (several frames, depth or alpha that the
    output format drops): failure category ``unsupported``."""

    category = "unsupported"


class Draw(NamedTuple):
    """One output's draw: whether it is masked and the params of each face."""

    masked: bool
    params: list[MaskParams | None]


def _forced_mask(ctx: Context, item: Item) -> bool | None:
    """Whether an evaluation protocol decides that this image is masked (``None``: ``p`` does)."""
    if ctx.options.protocol is None or not (ctx.out_kind == "bin" or ctx.source.kind == "bin"):
        return None
    return protocol_masks(ctx.options.protocol, item.index)


def _quantise_faces(faces: list[Any]) -> Detected:
    quant = [quantised(f.landmarks) for f in faces]
    kept = [replace(f, landmarks=q) for f, (q, _) in zip(faces, quant, strict=True)]
    entries = [face_entry(f, i) for i, f in enumerate(kept)]
    return Detected(kept, [text for _, text in quant], entries)


def detect(ctx: Context, item: Item, image: np.ndarray, found: list[Any] | None = None) -> Detected:
    """Faces to mask, or a failure (category, reason); ``found``: what the backend already
    detected in ``image`` (:func:`_batch_faces`), ``None`` to detect it here."""
    options = ctx.options
    h, w = image.shape[:2]
    # The aligned layout depends on the image size only, and without the skin check the
    # selection looks at the faces only: select once per size, not once per crop.
    memo = (h, w, options.faces, options.min_face)
    if options.landmarks == "aligned":
        aligned = _STATE.aligned
        hit = aligned.get(memo)
        if hit is None:
            hit = aligned[memo] = _select(ctx, item, image)
        return hit
    return _select(ctx, item, image, found)


def _batch_faces(
    ctx: Context, items: list[Item], images: list[np.ndarray | Exception]
) -> dict[int, list[Any]]:
    """The faces of the decoded images from one batched detection (:func:`detect_decoded`;
    ``aligned-fit`` fits the crops in one pass), not for the memoised ``aligned`` layout."""
    from maskgen.landmarks.backends.base import detect_decoded

    if ctx.options.landmarks == "aligned":
        return {}
    return detect_decoded(_STATE.backend(ctx.options), images, [it.key for it in items])


def _select(
    ctx: Context, item: Item, image: np.ndarray, found: list[Any] | None = None
) -> Detected:
    from maskgen.landmarks.selection import are_detections, select_faces

    backend = _STATE.backend(ctx.options)
    options = ctx.options
    if found is None:
        try:
            found = backend.detect(image, item.key)
        except (FileNotFoundError, ValueError) as exc:
            return Detected([], [], [], "landmarks", str(exc))
    kept, reasons = select_faces(
        image, found, mode=options.faces, min_face=options.min_face,
        check_skin=are_detections(options.landmarks, found),
    )  # fmt: skip
    if kept:
        return _quantise_faces(kept)
    if not found:
        return Detected([], [], [], "no_face", f"no face found ({backend.name})")
    category = "too_small" if reasons[0].startswith("face too small") else "rejected"
    return Detected([], [], [], category, "; ".join(reasons))


def load(
    ctx: Context, item: Item, loaded: tuple[bytes, int | None] | Exception | None
) -> tuple[bytes, int | None, np.ndarray | Deep | Exception]:
    """The item's bytes, label and decoded image (or the read/decode error); ``loaded``:
    what the source's ``load_many`` gave for it (``None``: load it here).

    A file with several frames fails as ``unsupported`` (only its first frame would be
    masked). For folder and ``.tar`` outputs, an image with 16-bit samples or alpha is a
    :class:`Deep` image, or ``unsupported`` when the output format would drop them."""
    raw, label = b"", None
    try:
        if isinstance(loaded, Exception):
            raise loaded
        raw, label = ctx.source.load(item) if loaded is None else loaded
        where = ctx.source.describe(item)
        frames = _checked_frames(raw, ctx.max_pixels, where)
        if frames > 1:
            raise UnsupportedImageError(
                f"{where}: multi-frame image ({frames} frames): only the first frame would "
                "be masked"
            )
        deep = ctx.out_kind in ("folder", "tar") and may_hold_more(raw)
        # With aligned crops nothing but the renderer and the encoder reads the pixels, and
        # both take OpenCV's BGR order through a reversed view: no conversion either way.
        bgr = ctx.options.landmarks == "aligned" and not deep
        image = decode_image(raw, source=where, bgr_storage=bgr)
        full = decode_full(raw, source=where, plain=image) if deep else None
        if full is None:
            return raw, label, image
        ext = out_ext(ctx, item, raw)
        lost = lost_in(ext, full)
        if lost:
            raise UnsupportedImageError(
                f"{where}: {lost} cannot be kept in a {ext} output; choose --format png or "
                "tiff (16-bit and alpha) or webp (alpha)"
            )
        return raw, label, Deep(image, full)
    except UnusableRecordError as exc:  # a .rec output keeps what the input had there
        return exc.kept, None, exc
    except (ImageReadError, OSError, RecordIOError) as exc:
        return raw, label, exc


_JPEG = b"\xff\xd8\xff"  # what maskgen.io.sniff_image_format names "JPEG"
_LEARN_EVERY = 256  # of the JPEG sizes parsed in full, learn the header of one in this many


def _checked_frames(raw: bytes, max_pixels: int, where: str) -> int:
    """:func:`~maskgen.io.check_pixels` (raises for an image over ``max_pixels``), then the
    number of frames (:func:`~maskgen.io.formats.frame_count`); a JPEG has one, and its size
    comes from :func:`jpeg_size`."""
    if isinstance(raw, bytes) and raw.startswith(_JPEG):
        if max_pixels > 0:
            size = jpeg_size(raw)
            if size is not None and size[0] * size[1] > max_pixels:
                check_pixels(raw, max_pixels, where)  # raises, with the message
        return 1
    check_pixels(raw, max_pixels, where)
    return frame_count(raw)


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """:func:`~maskgen.io.image_size` of JPEG data, without parsing a header seen before.

    The size of a JPEG is read from its markers left to right up to the frame header, so it
    is a function of the bytes up to there; a dataset's records usually share them (same
    encoder, same tables). The shortest prefix that gives the size is learnt from one record
    (:func:`_sizing_prefix`) and kept in the worker state; a record starting with a kept
    prefix has its size. Learning costs a dozen header parses: it is done for one parsed
    record in :data:`_LEARN_EVERY`, so varied headers cost little more than parsing each.

    Example:
        >>> data = encode_image(np.zeros((30, 40, 3), np.uint8), ".jpg")
        >>> _STATE.reset()
        >>> jpeg_size(data), len(_STATE.jpeg_heads), jpeg_size(data + b"more")
        ((40, 30), 1, (40, 30))
    """
    state = _STATE
    for prefix, size in state.jpeg_heads:
        if raw.startswith(prefix):
            return size
    size = image_size(raw)
    state.jpeg_misses += 1
    if size is not None and state.jpeg_misses % _LEARN_EVERY == 1:
        prefix = _sizing_prefix(raw)
        if image_size(prefix) == size:
            state.jpeg_heads.insert(0, (prefix, size))
            del state.jpeg_heads[JPEG_HEADS:]
    return size


def _sizing_prefix(raw: bytes) -> bytes:
    """The shortest prefix of ``raw`` (JPEG data whose size :func:`image_size` reads) that
    :func:`image_size` reads a size from: a shorter one ends before the frame header (the
    parse stops with ``None``), a longer one parses the same markers to the same header."""
    lo, hi = 0, min(len(raw), 1 << 16)  # image_size(raw[:hi]) is not None
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if image_size(raw[:mid]) is None:
            lo = mid
        else:
            hi = mid
    return raw[:hi]


def process_item(ctx: Context, item: Item) -> ItemResult:
    """Load, detect, render, encode and write one item (folder outputs)."""
    result = mask_items(ctx, [item], [load(ctx, item, None)])[0]
    for pending, _, _ in result.outputs:
        data = encode(ctx, item, pending.image, pending.raw, pending.masked)
        atomic_write_bytes(ctx.output / pending.name, data)
    result.outputs = []
    return result


def mask_items(
    ctx: Context, items: list[Item], decoded: list[tuple[bytes, int | None, Any]]
) -> list[ItemResult]:
    """Detect, draw, paint and describe every output of ``items`` (``decoded``: what
    :func:`load` returned for each), leaving the outputs as :class:`Pending` images.

    Phase by phase over the items (faces, then draws, then painting, then manifest lines)
    rather than item by item: each phase keeps its Python and compiled code hot, which on
    112×112 crops saves about a quarter of the masking time.
    """
    images = [got[2].plain if isinstance(got[2], Deep) else got[2] for got in decoded]
    batch = _batch_faces(ctx, items, images)
    found = [
        _faces(ctx, it, image, batch.get(i))
        for i, (it, image) in enumerate(zip(items, images, strict=True))
    ]
    draws = [
        _draws(ctx, it, len(det.faces)) if det.category is None else []
        for it, det in zip(items, found, strict=True)
    ]
    grids = [
        _file_grid(ctx, it, got[0], got[2].full if isinstance(got[2], Deep) else got[2], ds)
        for it, got, ds in zip(items, decoded, draws, strict=True)
    ]
    painted = [
        _paint_outputs(
            ctx,
            got[2].full if isinstance(got[2], Deep) else got[2],
            det.faces,
            ds,
            False if grid == BY_OUTPUT else grid,
        )
        if ds
        else []
        for got, det, ds, grid in zip(decoded, found, draws, grids, strict=True)
    ]
    return [
        _describe(ctx, it, got, det, ds, px, grid)
        for it, got, det, ds, px, grid in zip(
            items, decoded, found, draws, painted, grids, strict=True
        )
    ]


def _file_grid(
    ctx: Context, item: Item, raw: bytes, image: Any, draws: list[Draw]
) -> JpegGrid | bool | str:
    """The photo's JPEG compression for its draws, from its file, when a draw wants it:
    the grid; ``False`` when the file is no JPEG (or one of quality 100); :data:`BY_OUTPUT`
    when the output is a JPEG on the same grid at a scale at least the input's (its
    encoder compresses mask and face alike, so the renderer need not); ``True`` when no
    draw wants it (not looked at)."""
    if not draws or isinstance(image, Exception) or not raw:
        return True
    if not any(p is not None and p.compression > 0 for d in draws for p in d.params):
        return True
    grid = grid_of_file(raw, image)
    if grid is None:
        return False
    same_grid = grid.phase == (0, 0) and out_ext(ctx, item, raw) in (".jpg", ".jpeg")
    if same_grid and scale_of_quality(ctx.options.quality) >= grid.scale:
        return BY_OUTPUT
    return grid


def _faces(
    ctx: Context, item: Item, image: np.ndarray | Exception, found: list[Any] | None = None
) -> Detected:
    """Faces to mask in the decoded ``image``, or why there are none (unreadable included);
    ``found``: the backend's faces when already detected."""
    if isinstance(image, Exception):
        category = getattr(image, "category", "unreadable")
        if isinstance(image, ImageTooLargeError):
            category = "too_large"
        return Detected([], [], [], category, str(image))
    return detect(ctx, item, image, found)


def seed_key(key: str) -> str:
    """The key an item's draws are seeded with: the key itself, or for a name that is not
    valid UTF-8 (surrogate escapes) its bytes with the invalid ones as ``\\xNN`` text.

    Example:
        >>> import os
        >>> seed_key("a/b.jpg"), seed_key(os.fsdecode(b"bad\\xff.png"))
        ('a/b.jpg', 'bad\\\\xff.png')
    """
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return key


def _draws(ctx: Context, item: Item, n_faces: int) -> list[Draw]:
    """The draw of each output variant (:mod:`maskgen.seeding`)."""
    options = ctx.options
    forced = _forced_mask(ctx, item)
    draws = []
    for variant in range(options.variants):
        masked, params = draw_item(options.spec, options.seed, seed_key(item.key), variant,
                                   p=options.p, masked=forced, faces=n_faces)  # fmt: skip
        draws.append(Draw(masked, list(params) if masked else [None] * n_faces))
    return draws


def _paint_outputs(
    ctx: Context, image: np.ndarray, faces: list[Any], draws: list[Draw],
    jpeg: JpegGrid | bool = True,
) -> list[tuple[np.ndarray, np.ndarray | None]]:  # fmt: skip
    """Each output's pixels and (with ``save_occlusion``) its occlusion map; ``jpeg``: the
    photo's compression (:func:`_file_grid`).

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
                box, cover = paint_face(out, face.landmarks, params, jpeg=jpeg)  # type: ignore[arg-type]
                if alpha is not None and box is not None:
                    x0, y0, x1, y1 = box
                    np.maximum(alpha[y0:y1, x0:x1], cover, out=alpha[y0:y1, x0:x1])
        outputs.append((out, alpha))
    return outputs


def _describe(
    ctx: Context,
    item: Item,
    decoded: tuple[bytes, int | None, Any],
    det: Detected,
    draws: list[Draw],
    painted: list[tuple[np.ndarray, np.ndarray | None]],
    jpeg: JpegGrid | bool | str = True,
) -> ItemResult:
    """The item's result: manifest lines, occlusion maps (written here) and pending outputs;
    a failed item falls back to its original bytes. The compression its file gave the
    draws (``jpeg``) is recorded, so that a replay from the manifest repeats it."""
    raw, label, image = decoded
    if det.category is not None:
        return _fallback(ctx, item, failure(ctx, item, det.category, det.reason), raw, label)
    result = ItemResult(item.index, item.key, [], None, len(det.faces))
    for variant, (draw, (out, alpha)) in enumerate(zip(draws, painted, strict=True)):
        name = out_name(ctx, item, variant, label)
        rec = record(ctx, item, variant, name, label, det.entries, draw.params)
        if jpeg is not True and draw.masked:
            rec["jpeg"] = jpeg_entry(jpeg)
        if getattr(raw, "note", ""):  # e.g. a record found elsewhere than its .idx says
            rec["note"] = raw.note
        if ctx.options.save_occlusion:
            occ = occlusion_name(name)
            if alpha is None:
                alpha8 = np.zeros(image.shape[:2], np.uint8)
            else:
                alpha8 = np.rint(alpha * 255).astype(np.uint8)
            atomic_write_bytes(ctx.meta / occ, encode_image(alpha8, ".png"))
            rec["occlusion"] = occ.as_posix()
        pending = Pending(out, raw, draw.masked, name)
        result.outputs.append((pending, label, _protocol_entry(ctx, det, rec["params"])))
        result.lines.append(dump(rec, det.landmarks_json))
    return result


def _protocol_entry(ctx: Context, det: Detected, params: MaskParams | None) -> Any:
    """What the protocol file of a ``.bin`` output keeps of an image: its draw and, unless
    the layout is the aligned one, the landmarks it was drawn on."""
    if ctx.out_kind != "bin" or not det.faces:
        return None
    face = det.faces[0]
    points = None if face.backend == "aligned" else face.landmarks.tolist()
    return {"params": params, "points": points}


def encode(ctx: Context, item: Item, image: np.ndarray, raw: bytes, masked: bool) -> bytes:
    """Encode an output; an unmasked image keeps its original bytes where the format allows."""
    if not masked and ctx.options.format is None:
        return raw
    ext, quality = out_ext(ctx, item, raw), ctx.options.quality
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
    if ext == ".gif":  # listed and written back, but no --format choice
        return encode_gif(image)
    return encode_image(image, ext, quality)


def _fallback(
    ctx: Context, item: Item, fail: dict[str, Any], raw: bytes, label: int | None
) -> ItemResult:
    """A failed item: nothing for folders; ``.rec``/``.bin`` keep the original, unmasked."""
    result = ItemResult(item.index, item.key, [], fail, 0)
    if ctx.out_kind == "folder":
        return result
    for variant in range(ctx.options.variants):
        name = out_name(ctx, item, variant, label)
        rec = record(ctx, item, variant, name, label, [], [])
        rec["failure"] = fail["category"]
        result.lines.append(dump(rec, []))
        result.outputs.append((raw, label, None))
    return result
