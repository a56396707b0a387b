"""Image files in and out: RGB ``uint8`` arrays on the Python side, OpenCV (BGR) underneath.

:func:`read_image` / :func:`decode_image` always return an H×W×3 ``uint8`` RGB array:
grayscale is expanded to three channels, alpha is dropped, 16-bit data is scaled to 8 bits
(``round(v * 255 / 65535)``), CMYK JPEGs are converted, and the EXIF orientation of JPEGs is
applied. :func:`read_image_raw` returns the decoded pixels as stored (any depth, any channel
count, RGB(A) order, no EXIF rotation). Unreadable data raises :class:`ImageReadError`, whose
message names the file and the problem.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> image = np.zeros((4, 6, 3), np.uint8); image[..., 0] = 255  # pure red
    >>> path = write_image(Path(tempfile.mkdtemp()) / "red.png", image)
    >>> back = read_image(path)
    >>> back.shape, back.dtype, back[0, 0].tolist()
    ((4, 6, 3), dtype('uint8'), [255, 0, 0])
    >>> import shutil; shutil.rmtree(path.parent)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from maskgen.io.atomic import atomic_write_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "JPEG_SOF",
    "LISTED_EXTENSIONS",
    "ImageReadError",
    "ImageTooLargeError",
    "check_pixels",
    "decode_image",
    "decode_image_raw",
    "encode_image",
    "image_size",
    "iter_image_files",
    "jpeg_segments",
    "read_image",
    "read_image_raw",
    "rgb_to_bgr",
    "sniff_image_format",
    "write_image",
]

#: File extensions (lower case, with the dot) that are read and written as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
#: What :func:`iter_image_files` lists: :data:`IMAGE_EXTENSIONS` and GIF, which is read, and
#: written back by :func:`maskgen.io.formats.encode_gif`, but not offered as an output format.
LISTED_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | {".gif"}

# read_image: 3 channels (grey expanded, alpha dropped, CMYK converted, EXIF orientation
# applied) while keeping 16-bit depth so that it can be scaled properly instead of shifted.
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
# OpenCV >= 4.10 can decode straight to RGB (same pixels, one conversion pass less).
_DECODE_RGB_FLAGS: int | None = (
    cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH if hasattr(cv2, "IMREAD_COLOR_RGB") else None
)

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"#?RADIANCE", "HDR"),
    (b"#?RGBE", "HDR"),
    (b"v/1\x01", "OpenEXR"),
    (b"\x00\x00\x01\x00", "ICO"),
)


# Formats every OpenCV build decodes: a failure there means the data is broken.
_CORE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WebP", "PNM"})


class ImageReadError(ValueError):
    """Image data that cannot be decoded; the message names the file and the problem."""


class ImageTooLargeError(ImageReadError):
    """A valid image with more pixels than allowed (refused before decoding)."""


def sniff_image_format(data: bytes | bytearray | memoryview) -> str | None:
    """Name the image format announced by the first bytes of ``data``, or ``None``."""
    head = bytes(data[:16])
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"1234567f":
        return "PNM"
    return None


#: JPEG's start-of-frame markers (every coding process; not DHT, JPG or DAC).
JPEG_SOF: frozenset[int] = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_segments(head: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, body) of each segment of a JPEG file's header (``head`` from its SOI on),
    up to and including the first scan (SOS); it stops early at anything that is not a
    segment. A body may be cut short where ``head`` ends.

    >>> list(jpeg_segments(bytes.fromhex("ffd8 ffe0 0004 6162 ffda 0002")))
    [(224, b'ab'), (218, b'')]
    """
    pos = 2
    while pos + 4 <= len(head) and head[pos] == 0xFF:
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # no length
            pos += 2
            continue
        length = int.from_bytes(head[pos + 2 : pos + 4], "big")
        if length < 2:
            return
        yield marker, head[pos + 4 : pos + 2 + length]
        if marker == 0xDA:
            return
        pos += 2 + length


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    for marker, body in jpeg_segments(head):
        if marker in JPEG_SOF and len(body) >= 5:
            return int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
    return None


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    order = "little" if head[:2] == b"II" else "big"

    def num(pos: int, n: int) -> int:
        return int.from_bytes(head[pos : pos + n], order)

    ifd = num(4, 4)
    if ifd + 2 > len(head):
        return None
    size: dict[int, int] = {}
    for i in range(min(num(ifd, 2), (len(head) - ifd - 2) // 12)):
        entry = ifd + 2 + 12 * i
        tag, kind = num(entry, 2), num(entry + 2, 2)
        if tag in (256, 257):
            size[tag] = num(entry + 8, 2) if kind == 3 else num(entry + 8, 4)
    return (size[256], size[257]) if len(size) == 2 else None


def image_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` read from the header of PNG, JPEG, GIF, BMP, WebP and TIFF data,
    without decoding; ``None`` for other formats or a header that does not say.

    Example:
        >>> image_size(encode_image(np.zeros((3, 5, 3), np.uint8), ".png"))
        (5, 3)
        >>> image_size(encode_image(np.zeros((3, 5, 3), np.uint8), ".jpg")), image_size(b"?")
        ((5, 3), None)
    """
    head = bytes(data[: 1 << 16])
    fmt = sniff_image_format(head)
    try:
        if fmt == "PNG" and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if fmt == "GIF":
            return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
        if fmt == "BMP" and len(head) >= 26:
            if int.from_bytes(head[14:18], "little") == 12:
                w, h = int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
                return w, h
            w = int.from_bytes(head[18:22], "little", signed=True)
            h = int.from_bytes(head[22:26], "little", signed=True)
            return abs(w), abs(h)
        if fmt == "WebP":
            chunk = head[12:16]
            if chunk == b"VP8 " and len(head) >= 30:
                w = int.from_bytes(head[26:28], "little") & 0x3FFF
                return w, int.from_bytes(head[28:30], "little") & 0x3FFF
            if chunk == b"VP8L" and len(head) >= 25:
                bits = int.from_bytes(head[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X" and len(head) >= 30:
                w = int.from_bytes(head[24:27], "little") + 1
                return w, int.from_bytes(head[27:30], "little") + 1
        if fmt == "JPEG":
            return _jpeg_size(head)
        if fmt == "TIFF":
            return _tiff_size(head)
    except (IndexError, ValueError):
        return None
    return None


def check_pixels(
    data: bytes | bytearray | memoryview, max_pixels: int, source: str = "<bytes>"
) -> None:
    """Raise :class:`ImageTooLargeError` if the header of ``data`` announces more than
    ``max_pixels`` pixels (checked before decoding; ``max_pixels`` 0: no limit).

    Example:
        >>> png = encode_image(np.zeros((30, 40), np.uint8), ".png")
        >>> check_pixels(png, 1200)
        >>> try:
        ...     check_pixels(png, 1000, "a.png")
        ... except ImageTooLargeError as exc:
        ...     print(str(exc)[:52])
        a.png: too large: 40×30 = 1,200 pixels (PNG header)
    """
    if max_pixels <= 0:
        return
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        fmt = sniff_image_format(data)
        raise ImageTooLargeError(
            f"{source}: too large: {size[0]}×{size[1]} = {size[0] * size[1]:,} pixels "
            f"({fmt} header) exceed the limit of {max_pixels:,} pixels (--max-pixels)"
        )


def _decode(data: bytes | bytearray | memoryview, flags: int, source: str) -> np.ndarray:
    """Run ``cv2.imdecode``; raise :class:`ImageReadError` for empty, foreign or broken data."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageReadError(f"{source}: empty data (0 bytes), not an image")
    try:
        decoded = cv2.imdecode(buf, flags)
    except cv2.error as exc:  # some codecs raise instead of returning None
        decoded = None
        detail = f": {str(exc).strip().splitlines()[-1]}"
    else:
        detail = ""
    if decoded is None or decoded.size == 0:
        fmt = sniff_image_format(data)
        if fmt is None:
            raise ImageReadError(
                f"{source}: not an image (first bytes {buf[:16].tobytes()!r} match no "
                f"known image format; {buf.size} bytes)"
            )
        if fmt in _CORE_FORMATS:
            raise ImageReadError(
                f"{source}: corrupt or truncated image data ({fmt}, {buf.size} bytes; "
                f"OpenCV could not decode it{detail})"
            )
        raise ImageReadError(
            f"{source}: unsupported or corrupt {fmt} image ({buf.size} bytes; this OpenCV "
            f"build could not decode it{detail})"
        )
    return decoded


def _to_uint8(image: np.ndarray, source: str) -> np.ndarray:
    """Scale decoded pixels to ``uint8`` (16-bit by ``round(v * 255 / 65535)``)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        scaled = (image.astype(np.uint32) * 255 + 32767) // 65535
        return scaled.astype(np.uint8)
    raise ImageReadError(
        f"{source}: unsupported pixel type {image.dtype} (only 8- and 16-bit images are "
        "converted to RGB uint8; use read_image_raw for the stored values)"
    )


def decode_image(
    data: bytes | bytearray | memoryview, *, source: str = "<bytes>", bgr_storage: bool = False
) -> np.ndarray:
    """Decode encoded image bytes to an H×W×3 ``uint8`` RGB array.

    ``source`` names the data in error messages (a path, ``"pack.bin[17]"``…).
    ``bgr_storage``: return the RGB image as a channel-reversed view of the BGR array
    OpenCV decodes to (when the image is 8-bit colour), which :func:`encode_image` hands
    to the encoder without a conversion pass: same values, one pass less per image when
    decoded pixels go straight back to an encoder.

    Example:
        >>> png = encode_image(np.array([[[255, 0, 0]]], np.uint8), ".png")
        >>> view = decode_image(png, bgr_storage=True)
        >>> view[0, 0].tolist(), view.strides[2], encode_image(view, ".png") == png
        ([255, 0, 0], -1, True)
    """
    if bgr_storage:
        image = _decode(data, _DECODE_FLAGS, source)
        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            return image[..., ::-1]
        return _finish_rgb(image, source, bgr=True)
    # The decoder writes RGB itself (no conversion pass), except for TIFF: OpenCV 5.0's TIFF
    # decoder returns garbled 16-bit pixels when asked for RGB.
    if _DECODE_RGB_FLAGS is not None and bytes(data[:2]) not in (b"II", b"MM"):
        image = _decode(data, _DECODE_RGB_FLAGS, source)
        if image.ndim == 3 and image.shape[2] == 3:
            return image if image.dtype == np.uint8 else _to_uint8(image, source)
        return _finish_rgb(image, source)
    image = _decode(data, _DECODE_FLAGS, source)
    return _finish_rgb(image, source, bgr=True)


def _finish_rgb(image: np.ndarray, source: str, *, bgr: bool = False) -> np.ndarray:
    """Finish a decoded array as :func:`decode_image` does (grey expanded, 8 bits, RGB)."""
    if image.ndim == 2:  # defensive: IMREAD_COLOR already expands grey
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if bgr else cv2.COLOR_GRAY2RGB)
    image = _to_uint8(image, source)
    if bgr:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def decode_image_raw(
    data: bytes | bytearray | memoryview, *, source: str = "<bytes>"
) -> np.ndarray:
    """Decode image bytes unchanged: any dtype, H×W or H×W×C, channels in RGB(A) order.

    Nothing is converted: no depth scaling, no alpha removal and no EXIF rotation (OpenCV
    does not apply the orientation when reading unchanged).
    """
    image = _decode(data, cv2.IMREAD_UNCHANGED, source)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return np.ascontiguousarray(image)


def _read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole file (works for non-ASCII paths, unlike ``cv2.imread``)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory, not an image file")
    data = p.read_bytes()
    if not data:
        raise ImageReadError(f"{p}: empty file (0 bytes), not an image")
    return data


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an H×W×3 ``uint8`` RGB array (see :func:`decode_image`).

    A missing file raises :class:`FileNotFoundError`; unreadable content raises
    :class:`ImageReadError` naming the file.
    """
    return decode_image(_read_file_bytes(path), source=str(path))


def read_image_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file unchanged (see :func:`decode_image_raw`)."""
    return decode_image_raw(_read_file_bytes(path), source=str(path))


def _normalise_ext(ext: str) -> str:
    ext = ext.lower()
    if not ext.startswith("."):
        ext = "." + ext
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"unsupported image extension {ext!r}; expected one of {sorted(IMAGE_EXTENSIONS)}"
        )
    return ext


def encode_image(image_rgb: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode an RGB(A) or grayscale image to bytes in the format named by ``ext``.

    ``image_rgb``: H×W×3 RGB, H×W×4 RGBA (not for JPEG) or H×W grayscale, ``uint8``;
    ``uint16`` is accepted for PNG and TIFF. ``quality`` (1–100) applies to JPEG and WebP;
    PNG, BMP and TIFF are lossless.
    """
    ext = _normalise_ext(ext)
    image = np.asarray(image_rgb)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"cannot encode an empty image of shape {image.shape}")
    allowed = (np.uint8, np.uint16) if ext in (".png", ".tif", ".tiff") else (np.uint8,)
    if image.dtype not in allowed:
        names = " or ".join(np.dtype(t).name for t in allowed)
        raise ValueError(f"{ext} images must be {names}, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        if ext in (".jpg", ".jpeg"):
            raise ValueError("JPEG cannot store an alpha channel; pass an H×W×3 RGB image")
        bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    elif image.ndim == 3:
        bgr = rgb_to_bgr(image)
    else:
        bgr = np.ascontiguousarray(image)
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {ext}")
    return buf.tobytes()


def rgb_to_bgr(image_rgb: np.ndarray) -> np.ndarray:
    """An H×W×3 RGB image as the C-contiguous BGR array OpenCV's encoders take: the array
    itself when ``image_rgb`` is a channel-reversed view of one (what
    ``decode_image(..., bgr_storage=True)`` returns), else a converted copy.

    Example:
        >>> bgr = np.zeros((2, 2, 3), np.uint8)
        >>> np.shares_memory(rgb_to_bgr(bgr[..., ::-1]), bgr)
        True
    """
    if image_rgb.strides[2] < 0:
        bgr = image_rgb[..., ::-1]
        if bgr.flags.c_contiguous:
            return bgr
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)


def write_image(path: str | os.PathLike[str], image_rgb: np.ndarray, quality: int = 95) -> Path:
    """Encode ``image_rgb`` in the format of ``path``'s extension and write it atomically."""
    p = Path(path)
    data = encode_image(image_rgb, p.suffix, quality)
    return atomic_write_bytes(p, data)


def iter_image_files(
    root: str | os.PathLike[str],
    *,
    extensions: Iterable[str] = LISTED_EXTENSIONS,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
    on_error: Callable[[OSError], None] | None = None,
) -> Iterator[Path]:
    """Yield the image files under ``root``, recursively, sorted by relative POSIX path.

    Extensions match case-insensitively. Names starting with ``.`` (hidden files and
    directories, macOS ``._*`` resource forks, temporary files of atomic writes) are skipped
    unless ``include_hidden``. The order does not depend on the file system. A folder that
    cannot be listed (permission denied) is passed to ``on_error`` as its ``OSError``
    (its ``filename`` is the folder); without ``on_error`` it is raised.
    """
    base = Path(root)
    if not base.is_dir():  # checked now, not at the first next()
        raise NotADirectoryError(f"{base}: not a directory")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found: list[tuple[str, Path]] = []

    def unlisted(exc: OSError) -> None:
        if on_error is None:
            raise exc
        on_error(exc)

    for dirpath, dirnames, filenames in os.walk(
        base, onerror=unlisted, followlinks=follow_symlinks
    ):
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not include_hidden and name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                full = Path(dirpath) / name
                found.append((full.relative_to(base).as_posix(), full))
    found.sort(key=lambda item: item[0])
    return iter([path for _, path in found])
