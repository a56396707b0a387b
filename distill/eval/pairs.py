"""Verification sets: image folders with a pairs file, and loading any kind of set.

A verification set holds 2N images and N same/different flags; pair ``k`` is images ``2k``
and ``2k + 1``. :func:`load_dataset` reads insightface ``.bin`` packs through the safe loader
:func:`maskgen.io.load_bin`, and image folders with a pairs file through :func:`load_pairs`
(the LFW ``pairs.txt`` format or a simple ``path_a path_b same`` list, MFR2-style).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskgen.io import BinPack, load_bin, read_image

__all__ = ["PairsFileError", "PairsSet", "load_dataset", "load_pairs"]


class PairsFileError(ValueError):
    """A pairs file that is malformed or names missing images."""


@dataclass
class PairsSet:
    """Image files in pairs: ``paths[2k]`` and ``paths[2k + 1]`` form pair ``k``.

    Mirrors :class:`maskgen.io.BinPack` (``num_pairs``, ``num_images``, ``issame``,
    ``decode(i)``), so both kinds of set are evaluated the same way.
    """

    paths: list[Path]
    issame: list[bool]
    path: Path | None = None

    @property
    def num_pairs(self) -> int:
        """Number of pairs (= ``len(issame)``)."""
        return len(self.issame)

    @property
    def num_images(self) -> int:
        """Number of images (= ``2 * num_pairs``)."""
        return len(self.paths)

    def decode(self, i: int) -> np.ndarray:
        """Read image ``i`` as H×W×3 ``uint8`` RGB (:class:`ImageReadError` if unreadable)."""
        return read_image(self.paths[i])


def _parse_flag(token: str) -> bool | None:
    """``True`` / ``False`` for a same/different token, ``None`` if it is neither.

    >>> _parse_flag("Same"), _parse_flag("0"), _parse_flag("maybe")
    (True, False, None)
    """
    t = token.strip().lower()
    if t in ("1", "true", "same", "yes", "y", "genuine"):
        return True
    if t in ("0", "false", "diff", "different", "no", "n", "impostor"):
        return False
    return None


def _lfw_path(root: Path, name: str, number: str) -> Path:
    """``root/name/name_0001.jpg`` (or the first existing image extension)."""
    stem = f"{name}_{int(number):04d}"
    default = root / name / f"{stem}.jpg"
    if default.exists():
        return default
    for ext in (".png", ".jpeg", ".bmp", ".webp", ".JPG", ".PNG"):
        candidate = root / name / f"{stem}{ext}"
        if candidate.exists():
            return candidate
    return default


def _lfw_pair(
    pfile: Path, no: int, tokens: list[str], base: Path
) -> tuple[tuple[Path, Path], bool]:
    """The two image paths and the flag of one LFW ``pairs.txt`` line."""
    if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
        pair = (_lfw_path(base, tokens[0], tokens[1]), _lfw_path(base, tokens[0], tokens[2]))
        return pair, True
    if len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
        pair = (_lfw_path(base, tokens[0], tokens[1]), _lfw_path(base, tokens[2], tokens[3]))
        return pair, False
    raise PairsFileError(
        f"{pfile}:{no}: expected 'name n1 n2' or 'name1 n1 name2 n2' (LFW format), "
        f"got {' '.join(tokens)!r}"
    )


def _list_pair(
    pfile: Path, no: int, tokens: list[str], base: Path
) -> tuple[tuple[Path, Path], bool]:
    """The two image paths and the flag of one ``path_a path_b same`` line."""
    flag = _parse_flag(tokens[-1]) if len(tokens) == 3 else None
    if flag is None:
        raise PairsFileError(
            f"{pfile}:{no}: expected 'path_a path_b same' with same in 1/0/true/false, "
            f"got {' '.join(tokens)!r}"
        )
    return (base / tokens[0], base / tokens[1]), flag


def _read_lines(
    pfile: Path, root: str | os.PathLike[str] | None
) -> tuple[Path, list[tuple[int, list[str]]]]:
    """The image root and the numbered, tokenised non-comment lines of a pairs file."""
    if not pfile.is_file():
        raise PairsFileError(f"{pfile}: pairs file not found")
    base = Path(root) if root is not None else pfile.parent
    if not base.is_dir():
        raise PairsFileError(f"{pfile}: image root {base} is not a folder")
    lines = [
        (no, line.split())
        for no, line in enumerate(pfile.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise PairsFileError(f"{pfile}: no pairs in the file")
    return base, lines


def _check_images_exist(pfile: Path, base: Path, paths: list[Path], where: list[int]) -> None:
    """Raise :class:`PairsFileError` listing (with their lines) the images that do not exist."""
    missing = [(no, p) for no, p in zip(where, paths, strict=True) if not p.is_file()]
    if missing:
        shown = "; ".join(f"line {no}: {p}" for no, p in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise PairsFileError(
            f"{pfile}: {len(missing)} image file(s) named in the pairs file do not exist "
            f"under {base}: {shown}{more}"
        )


def load_pairs(
    pairs_file: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    fmt: str = "auto",
) -> PairsSet:
    """Read a pairs file and check that every image it names exists.

    Formats (``fmt``):

    * ``"lfw"``: LFW ``pairs.txt``: a header line of integers (e.g. ``10 300``), then
      ``name n1 n2`` (same person) or ``name1 n1 name2 n2`` (different people), naming
      ``root/name/name_000n.jpg``;
    * ``"list"``: one pair per line, ``path_a path_b same`` with ``same`` one of
      ``1/0, true/false, same/diff``; paths are relative to ``root`` (or absolute);
    * ``"auto"`` (default): ``lfw`` when the first line holds only integers, else ``list``.

    Blank lines and lines starting with ``#`` are ignored. ``root`` defaults to the pairs
    file's folder. Raises :class:`PairsFileError` naming the line of any malformed entry, and
    listing the missing files (with their lines) if any image does not exist.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in "abcd":
        ...     _ = (d / f"{n}.png").write_bytes(b"")
        >>> _ = (d / "pairs.txt").write_text("a.png b.png 1\\nc.png d.png 0\\n")
        >>> s = load_pairs(d / "pairs.txt")
        >>> s.num_pairs, s.issame, s.paths[3].name
        (2, [True, False], 'd.png')
        >>> import shutil; shutil.rmtree(d)
    """
    pfile = Path(pairs_file)
    base, lines = _read_lines(pfile, root)
    if fmt == "auto":
        fmt = "lfw" if all(t.isdigit() for t in lines[0][1]) else "list"
    if fmt not in ("lfw", "list"):
        raise ValueError(f"unknown pairs file format {fmt!r}; use 'auto', 'lfw' or 'list'")

    parse_line = _lfw_pair if fmt == "lfw" else _list_pair
    paths: list[Path] = []
    issame: list[bool] = []
    where: list[int] = []
    body = lines[1:] if fmt == "lfw" and all(t.isdigit() for t in lines[0][1]) else lines
    for no, tokens in body:
        pair, same = parse_line(pfile, no, tokens, base)
        paths.extend(pair)
        issame.append(same)
        where.extend((no, no))
    _check_images_exist(pfile, base, paths, where)
    return PairsSet(paths=paths, issame=issame, path=pfile)


def load_dataset(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> BinPack | PairsSet:
    """Load a ``.bin`` pack, a pairs file, or a folder holding ``pairs.txt``.

    A folder is read as ``folder/pairs.txt`` with ``folder`` as the image root.
    """
    p = Path(path)
    if p.is_dir():
        pairs = p / "pairs.txt"
        if not pairs.is_file():
            raise PairsFileError(f"{p}: folder has no pairs.txt")
        return load_pairs(pairs, root if root is not None else p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such verification set")
    if p.suffix.lower() == ".bin":
        return load_bin(p)
    return load_pairs(p, root)
