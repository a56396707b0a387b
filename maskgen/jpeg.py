"""A photo's JPEG compression, read from its pixels, and the same compression given to a mask.

A decoded JPEG keeps the trace of its quantisation: on the encoder's 8×8 grid, every block's
DCT coefficient ``k`` is (up to the decoder's rounding) a multiple of the table's step
``Q[k]``, and most high frequencies are zero. :func:`estimate_jpeg` finds the grid (the
phase at which 8-pixel windows are sparsest in their highest frequency) and the steps of
the DC and nine low-frequency coefficients (the largest step to which each clusters), and
turns them into the IJG quality scale (``5000 / quality`` below quality 50,
``200 − 2·quality`` above: libjpeg's, PIL's and OpenCV's tables). A photo that was never
compressed, or was resized since, shows no such grid and gets ``None``. A file says it
directly: :func:`grid_of_file` reads the table from its header.

:func:`compress` passes pixels through a real encoder and decoder (OpenCV's libjpeg) at
that scale, on that grid. The batched augmentation quantises with the same IJG tables
(:func:`tables`) on the device.

Example:
    >>> import cv2, numpy as np
    >>> from skimage.data import astronaut
    >>> photo = astronaut()
    >>> ok, data = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    >>> decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    >>> found = estimate_jpeg(decoded[100:300, 150:350])
    >>> found.phase, found.quality
    ((4, 2), 60)
    >>> estimate_jpeg(photo[100:300, 150:350]) is None
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numba import njit

from maskgen.io.images import JPEG_SOF, jpeg_segments

__all__ = [
    "BY_OUTPUT",
    "CHROMA_TABLE",
    "DCT",
    "LUMA_TABLE",
    "JpegGrid",
    "compress",
    "compress_bgr",
    "estimate_jpeg",
    "grid_of_file",
    "jpeg_entry",
    "jpeg_from_entry",
    "mcu_box",
    "noise_survival",
    "quality_of_scale",
    "scale_of_quality",
    "tables",
]

#: The JPEG standard's example tables (Annex K), the base of IJG's quality scaling.
LUMA_TABLE = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61],
     [12, 12, 14, 19, 26, 58, 60, 55],
     [14, 13, 16, 24, 40, 57, 69, 56],
     [14, 17, 22, 29, 51, 87, 80, 62],
     [18, 22, 37, 56, 68, 109, 103, 77],
     [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101],
     [72, 92, 95, 98, 112, 100, 103, 99]], np.float64)  # fmt: skip
CHROMA_TABLE = np.full((8, 8), 99.0)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
#: The coefficients whose steps are read, in zigzag order: DC first (every block has one),
#: then the lowest frequencies (large enough to survive quantisation in many blocks); each
#: step found narrows the range of scales the table can have.
PROBED = ((0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0))
#: Blocks read at most (evenly spaced over the region) and needed at least.
MAX_BLOCKS, MIN_BLOCKS = 96, 12
#: Mean cos(2π·c/q) over the coefficients above which they cluster at multiples of q: the
#: decoder's rounding (σ ≈ 0.35 per coefficient) leaves ≈ 0.55 at q = 2, ≈ 0.95 at q = 8.
CLUSTERED = 0.45
#: The corner (pixels a side) of a decoded photo its file's grid is checked on.
JPEG_CHECK = 128
#: Distinct multiples of a step the DC values must be near for the step to count.
MIN_LEVELS = 6
#: Low frequencies whose steps must agree with the DC's for a region to count as a JPEG's.
MIN_CONFIRMED = 2
#: How much sparser a grid's high frequencies must be than elsewhere for the region to count
#: as a JPEG's (their ratio; a compressed photo reads 0.1–0.6, an uncompressed one ≈ 1).
SPARSE = 0.8
#: The largest step looked for (IJG quality ≈ 12 for the DC).
MAX_STEP = 64
#: The MCU of 4:2:0 JPEG: chroma blocks span 16×16 pixels.
MCU = 16
_K = np.arange(8)
#: The orthonormal 8-point DCT matrix (JPEG's FDCT is this on rows and columns).
DCT = np.sqrt(np.where(_K == 0, 1 / 8, 2 / 8))[:, None] * np.cos(
    (2 * _K[None, :] + 1) * _K[:, None] * np.pi / 16
)
_HIGH = np.ascontiguousarray(DCT[7:])
_BASIS = np.stack([np.outer(DCT[r], DCT[c]) for r, c in PROBED])
_PROBED_BASE = np.array([LUMA_TABLE[r, c] for r, c in PROBED])


@dataclass(frozen=True)
class JpegGrid:
    """A photo's JPEG compression as its pixels show it.

    Attributes:
        scale: IJG quality scale in percent of the standard tables (100 = quality 50).
        phase: (rows, columns) offset of the 8×8 grid: blocks start where
            ``y % 8 == phase[0]`` and ``x % 8 == phase[1]`` in the measured array's pixels.
        quality: the IJG quality that scale belongs to (1–100).
    """

    scale: float
    phase: tuple[int, int]

    @property
    def quality(self) -> int:
        return quality_of_scale(self.scale)


def scale_of_quality(quality: float) -> float:
    """IJG's quality → table scale (percent), in libjpeg's integer arithmetic.

    >>> scale_of_quality(75), scale_of_quality(25), scale_of_quality(35)
    (50.0, 200.0, 142.0)
    """
    q = min(max(float(quality), 1.0), 100.0)
    return float(math.floor(5000.0 / q)) if q < 50 else 200.0 - 2.0 * q


def quality_of_scale(scale: float) -> int:
    """The IJG quality whose scale is nearest ``scale`` (the inverse of
    :func:`scale_of_quality`).

    >>> quality_of_scale(50.0), quality_of_scale(200.0)
    (75, 25)
    """
    s = max(float(scale), 0.0)
    q = 5000.0 / s if s > 100 else (200.0 - s) / 2.0
    return int(min(max(round(q), 1), 100))


def tables(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The luma and chroma quantisation tables (8×8 float64) of IJG scale ``scale``."""
    luma = np.clip(np.floor((LUMA_TABLE * scale + 50) / 100), 1, 255)
    chroma = np.clip(np.floor((CHROMA_TABLE * scale + 50) / 100), 1, 255)
    return luma, chroma


@njit(cache=True, nogil=True, fastmath=True)
def _window_energy(
    pixels: np.ndarray, scale: float, high: np.ndarray, step: int, across: bool
) -> np.ndarray:
    """Per residue r (mod 8), the mean magnitude of the highest DCT frequencies (rows of
    ``high``) of the 8-pixel luma windows that start at x ≡ r along every ``step``-th row
    (``across``; else down every ``step``-th column) of an RGB or grey array, its values
    times ``scale`` (the luma is computed on the fly: only the lines read)."""
    h, w = pixels.shape[0], pixels.shape[1]
    lines, length = (h, w) if across else (w, h)
    total = np.zeros(8)
    count = np.zeros(8)
    line = np.empty(length)
    colour = pixels.ndim == 3
    for k in range(0, lines, step):
        for i in range(length):
            y, x = (k, i) if across else (i, k)
            if colour:
                v = 0.299 * pixels[y, x, 0] + 0.587 * pixels[y, x, 1] + 0.114 * pixels[y, x, 2]
            else:
                v = float(pixels[y, x])
            line[i] = v * scale
        for x in range(length - 7):
            e = 0.0
            for f in range(high.shape[0]):
                c = 0.0
                for i in range(8):
                    c += high[f, i] * line[x + i]
                e += abs(c)
            total[x % 8] += e
            count[x % 8] += 1
    return total / np.maximum(count, 1.0)


@njit(cache=True, nogil=True)
def _sparsest(per_residue: np.ndarray) -> tuple[int, float]:
    """The residue of least energy, and its energy over the median of the others'."""
    best = int(np.argmin(per_residue))
    others = np.sort(np.concatenate((per_residue[:best], per_residue[best + 1 :])))
    median = 0.5 * (others[(len(others) - 1) // 2] + others[len(others) // 2])
    return best, per_residue[best] / max(median, 1e-9)


def _grid_phase(pixels: np.ndarray, scale: float, across: bool) -> tuple[int, float]:
    """The residue (mod 8) at which blocks start along the lines (``across``: the columns'
    residue; else the rows'), and how sparse the highest frequencies are there against
    elsewhere (their mean magnitude at that phase over the median of the other phases: ≪ 1
    on a JPEG's grid, ≈ 1 without one). A JPEG's quantiser zeroes most high frequencies of
    every block; windows astride block edges keep them."""
    return _sparsest(_window_energy(pixels, scale, _HIGH, 8, across))


@njit(cache=True, nogil=True, fastmath=True)
def _probed_coefficients(
    luma: np.ndarray, py: int, px: int, basis: np.ndarray, max_blocks: int
) -> np.ndarray:
    """The probed DCT coefficients (len(basis), n) of up to ``max_blocks`` whole blocks of
    the grid at (py, px), evenly spaced; ``basis`` holds each coefficient's 8×8 basis."""
    rows, cols = (luma.shape[0] - py) // 8, (luma.shape[1] - px) // 8
    total = max(rows, 0) * max(cols, 0)
    n = min(total, max_blocks)
    out = np.empty((basis.shape[0], n))
    for j in range(n):
        b = j * total // n
        y0, x0 = py + 8 * (b // cols), px + 8 * (b % cols)
        for k in range(basis.shape[0]):
            c = 0.0
            for i in range(8):
                for m in range(8):
                    c += basis[k, i, m] * (luma[y0 + i, x0 + m] - 128.0)
            out[k, j] = c
    return out


@njit(cache=True, nogil=True, fastmath=True)
def _clustering(values: np.ndarray, step: float, limit: int) -> tuple[float, int, int]:
    """Mean cos(2π·c/step) over the first ``limit`` values with |c| ≥ step/2 (zeros fit
    every step), how many there were, and how many distinct multiples of the step they
    are near."""
    total = 0.0
    n = 0
    scale = 2.0 * math.pi / step
    seen = np.zeros(int(4096 / step) + 3, np.bool_)  # multiples of coefficients in ±2048
    distinct = 0
    for c in values:
        if abs(c) >= 0.5 * step:
            total += math.cos(scale * c)
            n += 1
            k = min(max(math.floor(c / step + 0.5) + seen.shape[0] // 2, 0), seen.shape[0] - 1)
            if not seen[k]:
                seen[k] = True
                distinct += 1
            if n == limit:
                break
    return (total / n if n else 0.0), n, distinct


@njit(cache=True, nogil=True)
def _largest_step(values: np.ndarray, candidates: np.ndarray, levels: int) -> float:
    """The largest candidate step the values cluster to, near at least ``levels`` distinct
    multiples of it (0: none of them; a flat region's few values fit many steps). A quick
    look at a few values first rules most candidates out."""
    for i in range(candidates.shape[0] - 1, -1, -1):
        score, n, _ = _clustering(values, candidates[i], 24)
        if n < MIN_BLOCKS or score < 0.5 * CLUSTERED:
            continue
        score, n, distinct = _clustering(values, candidates[i], values.shape[0])
        if score >= CLUSTERED and distinct >= levels:
            return candidates[i]
    return 0.0


@njit(cache=True, nogil=True)
def _scale_range(coefficients: np.ndarray, bases: np.ndarray, dc: float) -> tuple[float, float]:
    """The range [low, high) of IJG scales the probed coefficients' steps allow (high ≤ low:
    they show no quantisation, or fewer than :data:`MIN_CONFIRMED` low frequencies agree
    with the DC's step ``dc``). Each other coefficient's step is searched among the steps
    the range found so far allows; a step outside the range (a table IJG did not make)
    leaves it as it is."""
    low, high = (100 * dc - 50) / bases[0], (100 * dc + 50) / bases[0]
    confirmed = 0
    for k in range(1, bases.shape[0]):
        first = max(2.0, min(255.0, math.floor((bases[k] * low + 50) / 100)))
        last = min(255.0, math.floor((bases[k] * high + 50) / 100))
        if last < first:
            continue
        step = _largest_step(coefficients[k], np.arange(first, last + 1), 3)
        if step > 0:
            confirmed += 1
            lo, hi = (100 * step - 50) / bases[k], (100 * step + 50) / bases[k]
            if max(lo, low) < min(hi, high):
                low, high = max(lo, low), min(hi, high)
    if confirmed < MIN_CONFIRMED:  # a few flat regions' DC values fit steps by chance
        return 0.0, 0.0
    return low, high


def _luma(image: np.ndarray, max_value: float) -> np.ndarray:
    """JPEG's luma (0–255, float64) of an RGB or grey array."""
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels[..., :3], np.float32), cv2.COLOR_RGB2GRAY)
    return pixels.astype(np.float64) * (255.0 / max_value)


def estimate_jpeg(image: np.ndarray, max_value: float = 255.0) -> JpegGrid | None:
    """The JPEG compression an RGB (or grey) region shows, or ``None`` when it shows none.

    The region should be where the compression is to be matched (a face's region); its
    phase is given in the region's own pixels.
    """
    pixels = np.asarray(image)
    if min(pixels.shape[:2]) < 24:
        return None
    pixels = pixels[..., :3] if pixels.ndim == 3 else pixels
    scale = 255.0 / max_value
    px, sparse = _grid_phase(pixels, scale, True)
    if sparse > SPARSE:  # no grid across: no need to look down
        return None
    py, sparse = _grid_phase(pixels, scale, False)
    if sparse > SPARSE:
        return None
    return _scales_at(_luma(image, max_value), (py, px))


def _scales_at(luma: np.ndarray, phase: tuple[int, int]) -> JpegGrid | None:
    """The compression the grid at ``phase`` shows, or ``None`` when its blocks show no
    quantisation. The DC alone (cheap) rules most regions out."""
    py, px = phase
    dc = _probed_coefficients(luma, py, px, _BASIS[:1], MAX_BLOCKS)[0]
    if dc.shape[0] < MIN_BLOCKS:
        return None
    step = _largest_step(dc, np.arange(2.0, MAX_STEP + 1), MIN_LEVELS)
    if step == 0:
        return None
    coefficients = _probed_coefficients(luma, py, px, _BASIS, MAX_BLOCKS)
    low, high = _scale_range(coefficients, _PROBED_BASE, step)
    if high <= low:
        return None
    return JpegGrid((low + high) / 2, (py, px))


def mcu_box(
    box: tuple[int, int, int, int], phase: tuple[int, int], h: int, w: int
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """``box`` (x0, y0, x1, y1) widened to whole MCUs of the grid at ``phase`` (rows,
    columns, as in :class:`JpegGrid`) and clipped to an h×w image, and where the MCUs start
    in it (the ``phase`` :func:`compress` takes): the region whose codec round trip gives
    the box the image's own blocks.

    >>> mcu_box((20, 5, 40, 30), (0, 3), 64, 64)
    ((19, 0, 51, 32), (0, 0))
    >>> mcu_box((2, 2, 10, 10), (4, 4), 64, 64)
    ((0, 0, 20, 20), (4, 4))
    """
    x0, y0, x1, y1 = box
    py, px = phase
    gx0, gy0 = max(0, x0 - (x0 - px) % MCU), max(0, y0 - (y0 - py) % MCU)
    gx1, gy1 = min(w, x1 + (px - x1) % MCU), min(h, y1 + (py - y1) % MCU)
    return (gx0, gy0, gx1, gy1), ((py - gy0) % MCU, (px - gx0) % MCU)


def compress(
    rgb: np.ndarray, scale: float, phase: tuple[int, int] = (0, 0), max_value: float = 255.0
) -> np.ndarray:
    """What a baseline JPEG encoder and decoder (OpenCV's libjpeg, 4:2:0 chroma) at IJG
    scale ``scale`` make of an h×w×3 RGB region (any dtype, white ``max_value``; float32
    out, same white).

    ``phase`` is where the grid's MCUs (16×16 pixels: 4:2:0 chroma blocks span 16 pixels)
    start in the region, as in :class:`JpegGrid`, taken modulo 16; the region is padded by
    repeating its edges to whole MCUs, as an encoder pads an image, so the blocks fall on
    the photo's own grid.

    >>> import numpy as np
    >>> flat = np.full((16, 16, 3), 200, np.uint8)
    >>> float(np.abs(compress(flat, 50.0) - 200).max()) <= 1.0
    True
    """
    pixels = np.asarray(rgb)[..., 2::-1]  # BGR, as OpenCV's codec takes it
    if max_value != 255.0 or pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * (255.0 / max_value)), 0, 255).astype(np.uint8)
    out = compress_bgr(pixels, quality_of_scale(scale), phase)[..., ::-1].astype(np.float32)
    return out if max_value == 255.0 else out * np.float32(max_value / 255.0)


def compress_bgr(bgr: np.ndarray, quality: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """:func:`compress`'s codec round trip of a uint8 BGR region (a view is fine) at IJG
    ``quality``: uint8 BGR out, the region's size."""
    h, w = bgr.shape[:2]
    top, left = (MCU - phase[0] % MCU) % MCU, (MCU - phase[1] % MCU) % MCU
    bottom, right = (-(top + h)) % MCU, (-(left + w)) % MCU
    padded = cv2.copyMakeBorder(np.ascontiguousarray(bgr), top, bottom, left, right,
                                cv2.BORDER_REPLICATE)  # fmt: skip
    ok, data = cv2.imencode(".jpg", padded, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
        raise RuntimeError("OpenCV could not JPEG-encode a region")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[top : top + h, left : left + w]


_SURVIVAL: dict[tuple[int, float], float] = {}


def noise_survival(scale: float, sigma: float) -> float:
    """The share of white noise σ ``sigma`` (0–255 units) that a JPEG at ``scale`` leaves
    on a flat patch (its residual σ over ``sigma``; cached per quality and half unit of σ).

    A photo's noise is measured as its compression left it: of noise given to a mask
    before the mask is compressed like the photo, this share remains.

    >>> 0.2 < noise_survival(scale_of_quality(50), 6.0) < noise_survival(scale_of_quality(90), 6.0)
    True
    """
    key = (quality_of_scale(scale), round(2 * sigma) / 2)
    if key not in _SURVIVAL:
        noise = np.random.default_rng(7).standard_normal((64, 64)) * max(key[1], 0.5)
        patch = np.clip(np.rint(128 + noise), 0, 255).astype(np.uint8)
        out = compress(np.repeat(patch[..., None], 3, axis=2), scale)[..., 1]
        _SURVIVAL[key] = float(np.clip((out - out.mean()).std() / patch.std(), 1e-3, 1.0))
    return _SURVIVAL[key]


def _zigzag() -> np.ndarray:
    """Natural (row-major) index of each coefficient in a JPEG file's zigzag order: by
    anti-diagonal, alternately walked up and down."""
    cells = [(r, c) for r in range(8) for c in range(8)]
    order = sorted(cells, key=lambda rc: (rc[0] + rc[1], rc[0] if sum(rc) % 2 else rc[1]))
    return np.array([r * 8 + c for r, c in order])


_ZIGZAG = _zigzag()


def _tables(body: bytes) -> dict[int, np.ndarray]:
    """The quantisation tables of a DQT segment (64 one- or two-byte steps each, zigzag
    order), by id, in natural order."""
    found: dict[int, np.ndarray] = {}
    j = 0
    while j < len(body):
        precision, table_id = body[j] >> 4, body[j] & 15
        size = 128 if precision else 64
        raw = body[j + 1 : j + 1 + size]
        if len(raw) < size:
            break
        table = np.empty(64)
        table[_ZIGZAG] = np.frombuffer(raw, ">u2" if precision else np.uint8)
        found[table_id] = table.reshape(8, 8)
        j += 1 + size
    return found


def _orientation(body: bytes) -> int:
    """The EXIF orientation an APP1 segment gives (1, upright, if it gives none)."""
    if not body.startswith(b"Exif\x00\x00") or len(body) < 16:
        return 1
    tiff = body[6:]
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            return int.from_bytes(entry[8:10], order)
    return 1


def luma_table_of_file(data: bytes | bytearray | memoryview) -> tuple[np.ndarray, int] | None:
    """The quantisation table (8×8, natural order) a JPEG file's first component (its luma)
    uses, and the file's EXIF orientation (1: upright), read from its header; ``None`` if
    the data is no JPEG or holds no such table."""
    head = bytes(data[:65536])
    if not head.startswith(b"\xff\xd8"):
        return None
    found: dict[int, np.ndarray] = {}
    luma_id, orientation = 0, 1
    for marker, body in jpeg_segments(head):
        if marker == 0xDB:
            found.update(_tables(body))
        elif marker in JPEG_SOF and len(body) >= 9:  # the frame's first component
            luma_id = body[8] & 15
        elif marker == 0xE1:
            orientation = _orientation(body)
    table = found.get(luma_id)
    return None if table is None else (table, orientation)


_IJG_LUMA = np.stack([tables(scale_of_quality(q))[0] for q in range(1, 101)])


def _scale_of_table(table: np.ndarray, used: np.ndarray) -> float:
    """The IJG scale of a luma table: that of the IJG quality whose table it is, else (a
    table of another encoder) the median of its steps over the standard's."""
    exact = np.flatnonzero((table == _IJG_LUMA).all(axis=(1, 2)))
    if exact.size:
        return scale_of_quality(int(exact[-1]) + 1)
    return float(np.median(table[used] / LUMA_TABLE[used])) * 100


def grid_of_file(
    data: bytes | bytearray | memoryview, image: np.ndarray, max_value: float = 255.0
) -> JpegGrid | None:
    """The compression of a photo decoded from ``data``: the IJG scale that fits the file's
    own luma table best, on the grid at the decoded pixels' origin (for an EXIF-rotated
    photo, which decoders turn upright, the grid its pixels show, :func:`estimate_jpeg`).
    ``None`` for data that is no JPEG, or a table of ones (quality 100)."""
    read = luma_table_of_file(data)
    if read is None:
        return None
    table, orientation = read
    used = (table > 1) & (table < 255)
    if used.sum() < 4:  # quality 100 (or nearly): nothing to match
        return None
    scale = _scale_of_table(table, used)
    if orientation == 1:
        return JpegGrid(scale, (0, 0))
    found = estimate_jpeg(image[:JPEG_CHECK, :JPEG_CHECK], max_value)
    return None if found is None else JpegGrid(scale, found.phase)


#: A manifest's ``"jpeg"`` when the output's own JPEG encoder gave the masks the photo's
#: compression (the renderer did not).
BY_OUTPUT = "output"


def jpeg_entry(grid: JpegGrid | bool | str) -> dict[str, Any] | str | None:
    """What a manifest records (``maskgen render``'s ``"jpeg"`` field) of the compression
    the masks were given: a grid as its scale and phase, ``None`` for none (``False``: the
    file is no JPEG), :data:`BY_OUTPUT` as it is.

    >>> jpeg_from_entry(jpeg_entry(JpegGrid(50.0, (0, 3)))) == JpegGrid(50.0, (0, 3))
    True
    >>> jpeg_entry(False), jpeg_from_entry(jpeg_entry(BY_OUTPUT))
    (None, False)
    """
    if isinstance(grid, JpegGrid):
        return {"scale": grid.scale, "phase": list(grid.phase)}
    return grid if grid == BY_OUTPUT else None


def jpeg_from_entry(entry: dict[str, Any] | str | None) -> JpegGrid | bool:
    """What a manifest's ``"jpeg"`` field tells :func:`maskgen.render.paint_face`: the grid,
    or ``False`` (``null``: the photo's file showed no compression; :data:`BY_OUTPUT`: the
    output's JPEG encoder gave the mask the photo's compression, not the renderer)."""
    if entry is None or entry == BY_OUTPUT:
        return False
    try:
        return JpegGrid(float(entry["scale"]), (int(entry["phase"][0]), int(entry["phase"][1])))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(
            f'a manifest\'s "jpeg" is {{"scale", "phase"}}, null or {BY_OUTPUT!r}; got {entry!r}'
        ) from exc
