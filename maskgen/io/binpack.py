"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin`` …).

A pack is a pickle of ``(images, issame)``: ``images`` is a list of 2N encoded image files
(``bytes``, usually JPEG) and ``issame`` a list of N booleans; pair ``k`` is images ``2k`` and
``2k + 1``. Packs written by Python 2 store the images as ``str``; they load as ``bytes``
here (as with insightface's ``pickle.load(f, encoding="bytes")``).

Pickles can run arbitrary code when loaded, so :func:`load_bin` uses a restricted unpickler
that refuses every global reference (:class:`UnsafePickleError`) except the two that
Python 3 itself emits for ``bytes`` under pickle protocol 2 (``_codecs.encode`` and
``bytes``), which are replaced by harmless stand-ins that only build bytes from text.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from maskgen.io.images import encode_image
    >>> jpg = encode_image(np.full((8, 8, 3), 128, np.uint8), ".jpg")
    >>> path = save_bin(Path(tempfile.mkdtemp()) / "tiny.bin", [jpg, jpg, jpg, jpg], [True, False])
    >>> pack = load_bin(path)
    >>> pack.num_pairs, pack.issame, pack.decode(3).shape
    (2, [True, False], (8, 8, 3))
    >>> import shutil; shutil.rmtree(path.parent)
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgen.io.atomic import atomic_write_bytes
from maskgen.io.images import decode_image

__all__ = ["BinPack", "BinPackError", "UnsafePickleError", "load_bin", "save_bin"]

_LATIN1_NAMES = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}


class BinPackError(ValueError):
    """A ``.bin`` pack that is malformed; the message names the file and what is wrong."""


class UnsafePickleError(BinPackError, pickle.UnpicklingError):
    """A pickle that references a global (class or function) and was therefore refused."""


def _safe_codecs_encode(text: object, encoding: object = "utf-8", *rest: object) -> bytes:
    """Stand-in for ``_codecs.encode`` as used by Python 3 pickles of ``bytes`` (protocol 2)."""
    if rest or not isinstance(text, str) or not isinstance(encoding, str):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as encode(str, 'latin1')")
    if encoding.lower() not in _LATIN1_NAMES:
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed with the latin-1 codec, not {encoding!r}"
        )
    return text.encode("latin-1")


def _safe_bytes(*args: object) -> bytes:
    """Stand-in for ``bytes`` as called by protocol-2 pickles of ``b''`` (no arguments)."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is only allowed without arguments in a pack")
    return b""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _safe_codecs_encode,
    ("codecs", "encode"): _safe_codecs_encode,
    ("builtins", "bytes"): _safe_bytes,
    ("__builtin__", "bytes"): _safe_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no globals, so loading cannot run code from the file."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        safe = _ALLOWED_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle references the global "
            f"{module}.{name} (loading it could run code); a verification pack may only "
            "contain lists/tuples of bytes and bools"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle uses a persistent id ({pid!r})"
        )


@dataclass
class BinPack:
    """A verification pack: ``images[2k]`` and ``images[2k + 1]`` form pair ``k``."""

    images: list[bytes]
    issame: list[bool]
    path: Path | None = None

    @property
    def num_pairs(self) -> int:
        """Number of pairs (= ``len(issame)``)."""
        return len(self.issame)

    @property
    def num_images(self) -> int:
        """Number of images (= ``2 * num_pairs``)."""
        return len(self.images)

    def _name(self) -> str:
        return str(self.path) if self.path is not None else "<pack>"

    def decode(self, i: int) -> np.ndarray:
        """Decode image ``i`` to H×W×3 ``uint8`` RGB; errors name the pack and the index."""
        n = len(self.images)
        if not -n <= i < n:
            raise IndexError(f"{self._name()}: image index {i} out of range (0..{n - 1})")
        i %= n
        return decode_image(self.images[i], source=f"{self._name()} [image {i}, pair {i // 2}]")

    def pair(self, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return ``(first_image, second_image, issame)`` of pair ``k`` (decoded RGB)."""
        n = self.num_pairs
        if not -n <= k < n:
            raise IndexError(f"{self._name()}: pair index {k} out of range (0..{n - 1})")
        k %= n
        return self.decode(2 * k), self.decode(2 * k + 1), self.issame[k]


def _check_structure(obj: object, source: str) -> tuple[list[bytes], list[bool]]:
    """Validate the unpickled object and return it as ``(images, issame)``."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        what = f"a {type(obj).__name__}"
        if isinstance(obj, (tuple, list)):
            what += f" of length {len(obj)}"
        raise BinPackError(f"{source}: expected a pickled (images, issame) pair, found {what}")
    raw_images, raw_flags = obj
    if not isinstance(raw_images, (list, tuple)):
        raise BinPackError(
            f"{source}: the images must be a list, found {type(raw_images).__name__}"
        )
    if not isinstance(raw_flags, (list, tuple)):
        raise BinPackError(
            f"{source}: the same/different flags must be a list, found {type(raw_flags).__name__}"
        )
    images: list[bytes] = []
    for i, item in enumerate(raw_images):
        if isinstance(item, bytes):
            images.append(item)
        elif isinstance(item, bytearray):
            images.append(bytes(item))
        else:
            raise BinPackError(
                f"{source}: image {i} is a {type(item).__name__}, expected encoded image bytes"
            )
    issame: list[bool] = []
    for k, flag in enumerate(raw_flags):
        if isinstance(flag, bool) or (isinstance(flag, int) and flag in (0, 1)):
            issame.append(bool(flag))
        else:
            raise BinPackError(f"{source}: same/different flag {k} is {flag!r}, expected a bool")
    if len(images) % 2:
        raise BinPackError(f"{source}: odd number of images ({len(images)}); a pack holds pairs")
    if len(images) != 2 * len(issame):
        raise BinPackError(
            f"{source}: {len(images)} images but {len(issame)} same/different flags: "
            f"expected {len(images) // 2}"
        )
    return images, issame


def load_bin(path: str | os.PathLike[str]) -> BinPack:
    """Load and validate a ``.bin`` verification pack without executing any pickled code.

    Raises :class:`UnsafePickleError` for pickles that reference globals,
    :class:`BinPackError` for anything malformed, :class:`FileNotFoundError` if missing.
    """
    p = Path(path)
    data = p.read_bytes()
    source = str(p)
    if not data:
        raise BinPackError(f"{source}: empty file (0 bytes), not a verification pack")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
    ) as exc:
        raise BinPackError(
            f"{source}: not a readable pickle (truncated or not a .bin pack): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    images, issame = _check_structure(obj, source)
    return BinPack(images=images, issame=issame, path=p)


def save_bin(
    path: str | os.PathLike[str],
    images_bytes: Sequence[bytes | bytearray | memoryview],
    issame: Sequence[bool],
) -> Path:
    """Write a verification pack (pickle protocol 4, atomically) readable by insightface."""
    source = str(path)
    images: list[bytes] = []
    for i, b in enumerate(images_bytes):
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise TypeError(f"{source}: image {i} is a {type(b).__name__}, expected bytes")
        images.append(bytes(b))
    flags = [bool(f) for f in issame]
    _check_structure((images, flags), source)
    payload = pickle.dumps((images, flags), protocol=4)
    return atomic_write_bytes(path, payload)
