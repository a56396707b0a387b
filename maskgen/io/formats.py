"""What an image file holds beyond one 8-bit RGB frame: frames, bit depth, alpha.

:func:`~maskgen.io.decode_image` gives every image as one H×W×3 ``uint8`` RGB frame. This
module finds out, from the headers and without decoding, whether a file has more frames
(:func:`frame_count`: multi-page TIFF, animated GIF, APNG and WebP) or may hold 16-bit
samples or an alpha channel (:func:`may_hold_more`); :func:`decode_full` then decodes such
a file at its own depth, with its alpha, turned as :func:`~maskgen.io.decode_image` turns it
(EXIF orientation), and :func:`lost_in` says what a format would not keep of it.

Example:
    >>> import numpy as np
    >>> from maskgen.io import encode_image
    >>> png16 = encode_image(np.full((2, 3, 3), 40000, np.uint16), ".png")
    >>> frame_count(png16), may_hold_more(png16)
    (1, True)
    >>> full = decode_full(png16)
    >>> full.dtype, full.shape, lost_in(".jpg", full), lost_in(".tif", full)
    (dtype('uint16'), (2, 3, 3), '16-bit depth', None)
"""

from __future__ import annotations

import cv2
import numpy as np

from maskgen.io.images import decode_image, decode_image_raw, sniff_image_format

__all__ = ["decode_full", "encode_gif", "frame_count", "lost_in", "may_hold_more"]

#: Formats (output suffixes) that store 16-bit samples, and those that store alpha.
DEEP_FORMATS = frozenset({".png", ".tif", ".tiff"})
ALPHA_FORMATS = frozenset({".png", ".tif", ".tiff", ".webp"})


def frame_count(data: bytes | bytearray | memoryview) -> int:
    """Number of frames (pages) of a TIFF, GIF, APNG or WebP file from its structure, without
    decoding; 1 for other formats and for data too broken to tell.

    Example:
        >>> frame_count(b"GIF89a" + bytes(7) + b"\\x2c" + bytes(9) + b"\\x02\\x00\\x3b")
        1
    """
    buf = bytes(data)
    fmt = sniff_image_format(buf[:16])
    try:
        if fmt == "TIFF":
            return _tiff_pages(buf)
        if fmt == "GIF":
            return _gif_frames(buf)
        if fmt == "PNG":
            return _apng_frames(buf)
        if fmt == "WebP":
            return max(1, buf.count(b"ANMF")) if buf[12:16] == b"VP8X" and buf[20] & 2 else 1
    except (IndexError, ValueError):
        return 1
    return 1


def _tiff_pages(buf: bytes) -> int:
    order = "little" if buf[:2] == b"II" else "big"
    big = int.from_bytes(buf[2:4], order) == 43  # BigTIFF: 8-byte offsets
    pos = int.from_bytes(buf[8:16] if big else buf[4:8], order)
    pages, seen = 0, set()
    while 0 < pos < len(buf) and pos not in seen and pages < 1 << 16:
        seen.add(pos)
        pages += 1
        if big:
            count = int.from_bytes(buf[pos : pos + 8], order)
            nxt = pos + 8 + 20 * count
            pos = int.from_bytes(buf[nxt : nxt + 8], order)
        else:
            count = int.from_bytes(buf[pos : pos + 2], order)
            nxt = pos + 2 + 12 * count
            pos = int.from_bytes(buf[nxt : nxt + 4], order)
    return max(pages, 1)


def _gif_frames(buf: bytes) -> int:
    pos = 13
    if buf[10] & 0x80:  # global colour table
        pos += 3 << ((buf[10] & 7) + 1)
    frames = 0
    while pos < len(buf):
        block = buf[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(buf, pos + 2)
        elif block == 0x2C:  # image descriptor, optional local table, LZW size, sub-blocks
            frames += 1
            flags = buf[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = _skip_sub_blocks(buf, pos + 1)
        else:
            break
    return max(frames, 1)


def _skip_sub_blocks(buf: bytes, pos: int) -> int:
    while pos < len(buf) and buf[pos]:
        pos += buf[pos] + 1
    return pos + 1


def _apng_frames(buf: bytes) -> int:
    pos = 8
    while pos + 8 <= len(buf):
        length = int.from_bytes(buf[pos : pos + 4], "big")
        kind = buf[pos + 4 : pos + 8]
        if kind == b"acTL":
            return max(1, int.from_bytes(buf[pos + 8 : pos + 12], "big"))
        if kind in (b"IDAT", b"IEND"):
            return 1
        pos += 12 + length
    return 1


def may_hold_more(data: bytes | bytearray | memoryview) -> bool:
    """Whether the header says (or cannot rule out) that the image has 16-bit samples or an
    alpha channel: PNGs of 16-bit depth, with alpha or a transparency chunk; WebPs with
    alpha; every TIFF and GIF (their headers are not read that far)."""
    head = bytes(data[: 1 << 16])
    fmt = sniff_image_format(head[:16])
    if fmt == "PNG":
        if head[24:25] == b"\x10" or head[25:26] in (b"\x04", b"\x06"):
            return True
        idat = head.find(b"IDAT")
        return b"tRNS" in (head if idat < 0 else head[:idat])
    if fmt == "WebP":
        chunk = head[12:16]
        if chunk == b"VP8X":
            return bool(head[20] & 0x10)
        return chunk == b"VP8L" and len(head) > 24 and bool(head[24] & 0x10)
    return fmt in ("TIFF", "GIF")


_TURNS = (
    lambda a: a,
    lambda a: a[:, ::-1],
    lambda a: a[::-1, ::-1],
    lambda a: a[::-1],
    lambda a: np.swapaxes(a, 0, 1),
    lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    lambda a: np.swapaxes(a, 0, 1)[::-1],
)


def decode_full(
    data: bytes | bytearray | memoryview,
    *,
    source: str = "<bytes>",
    plain: np.ndarray | None = None,
) -> np.ndarray | None:
    """The image at its stored depth (``uint8`` or ``uint16``) with its alpha channel, as
    H×W×3 RGB or H×W×4 RGBA (grey expanded), turned as :func:`~maskgen.io.decode_image`
    turns it; ``None`` when it holds nothing more than that 8-bit RGB image, or when the
    two decodings cannot be matched pixel for pixel (then only the 8-bit one is sound).
    ``plain``: what :func:`~maskgen.io.decode_image` gave for ``data``, if known."""
    raw = decode_image_raw(data, source=source)
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
    if raw.ndim != 3 or raw.shape[2] not in (3, 4) or raw.dtype not in (np.uint8, np.uint16):
        return None
    if raw.dtype == np.uint8 and raw.shape[2] == 3:
        return None
    if plain is None:
        plain = decode_image(data, source=source)
    rgb = raw[..., :3]
    if rgb.dtype == np.uint16:
        rgb = ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    for turn in _TURNS:
        if turn(rgb).shape == plain.shape and np.array_equal(turn(rgb), plain):
            return np.ascontiguousarray(turn(raw))
    return None


def lost_in(ext: str, image: np.ndarray) -> str | None:
    """What an ``ext`` file would not keep of ``image`` (``"16-bit depth"``, ``"the alpha
    channel"``, or both joined by "and"), or ``None`` when it keeps everything."""
    ext = ext.lower()
    lost = []
    if image.dtype != np.uint8 and ext not in DEEP_FORMATS:
        lost.append(f"{8 * image.dtype.itemsize}-bit depth")
    if image.ndim == 3 and image.shape[2] == 4 and ext not in ALPHA_FORMATS:
        lost.append("the alpha channel")
    return " and ".join(lost) or None


def encode_gif(image_rgb: np.ndarray) -> bytes:
    """An H×W×3 ``uint8`` RGB image as a one-frame GIF (OpenCV's encoder picks the palette:
    not lossless)."""
    ok, buf = cv2.imencode(".gif", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image_rgb.shape} image as .gif")
    return buf.tobytes()
