"""Readers and writers: image files, insightface ``.bin`` packs and RecordIO sets (no MXNet).

Example:
    >>> from maskgen.io import IMAGE_EXTENSIONS
    >>> ".jpg" in IMAGE_EXTENSIONS
    True
"""

from maskgen.io.atomic import AtomicFile, atomic_open, atomic_write_bytes, atomic_write_text
from maskgen.io.binpack import BinPack, BinPackError, UnsafePickleError, load_bin, save_bin
from maskgen.io.formats import decode_full, frame_count, lost_in, may_hold_more
from maskgen.io.images import (
    IMAGE_EXTENSIONS,
    JPEG_SOF,
    LISTED_EXTENSIONS,
    ImageReadError,
    ImageTooLargeError,
    check_pixels,
    decode_image,
    decode_image_raw,
    encode_image,
    image_size,
    iter_image_files,
    jpeg_segments,
    read_image,
    read_image_raw,
    rgb_to_bgr,
    sniff_image_format,
    write_image,
)
from maskgen.io.recordio import (
    IRHeader,
    MissingRecordError,
    RecordIOError,
    RecordReader,
    RecordSet,
    RecordWriter,
    class_label,
    frame_image_records,
    frame_record,
    pack,
    read_face_record,
    unpack,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "JPEG_SOF",
    "LISTED_EXTENSIONS",
    "AtomicFile",
    "BinPack",
    "BinPackError",
    "IRHeader",
    "ImageReadError",
    "ImageTooLargeError",
    "MissingRecordError",
    "RecordIOError",
    "RecordReader",
    "RecordSet",
    "RecordWriter",
    "UnsafePickleError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_pixels",
    "class_label",
    "decode_full",
    "decode_image",
    "decode_image_raw",
    "encode_image",
    "frame_count",
    "frame_image_records",
    "frame_record",
    "image_size",
    "iter_image_files",
    "jpeg_segments",
    "load_bin",
    "lost_in",
    "may_hold_more",
    "pack",
    "read_face_record",
    "read_image",
    "read_image_raw",
    "rgb_to_bgr",
    "save_bin",
    "sniff_image_format",
    "unpack",
    "write_image",
]
