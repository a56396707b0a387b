"""Where a run may write: an output never overwrites or re-reads its input, and a replayed
record never writes outside its output folder.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "in").mkdir()
    >>> check_output_paths(root / "in", root / "out", "folder")
    >>> check_output_paths(root / "in", root / "in" / ".masked", "folder")  # not listed
    >>> try:
    ...     check_output_paths(root / "in", root / "in" / "masked", "folder")
    ... except UnsafeOutputError as exc:
    ...     print(str(exc).split(":", 1)[1].split(";")[0])
     the output lies inside the input folder ...in, so its files would be listed as inputs
    >>> replay_target(root, "a/b.png").relative_to(root).as_posix()
    'a/b.png'
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from maskgen.dataset.errors import UnsafeOutputError
from maskgen.dataset.options import meta_dir

__all__ = ["check_output_paths", "replay_target"]


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _listed_inside(folder: Path, target: Path) -> bool:
    """Whether ``target`` lies inside ``folder`` where the folder's listing would see it (no
    component starting with ``.``, which the listing skips)."""
    try:
        rel = target.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return not any(part.startswith(".") for part in rel.parts)


def check_output_paths(input_path: Path, output: Path, source_kind: str) -> None:
    """Refuse an output that is the input, or (folder inputs) lies inside it where its files
    would be listed as inputs; raises :class:`UnsafeOutputError`."""
    input_path, output = Path(input_path), Path(output)
    if _same(input_path, output):
        raise UnsafeOutputError(
            f"{output}: the output is the input {input_path}; it would be overwritten; "
            "choose another output"
        )
    if source_kind == "folder":
        for target in (output, meta_dir(output)):
            if _listed_inside(input_path, target):
                raise UnsafeOutputError(
                    f"{output}: the output lies inside the input folder {input_path}, so its "
                    "files would be listed as inputs; choose an output outside it (or one whose "
                    f"name starts with '.', e.g. {input_path / '.masked'})"
                )
    elif source_kind == "rec":
        idx_in, idx_out = input_path.with_suffix(".idx"), output.with_suffix(".idx")
        if output.suffix.lower() == ".rec" and idx_in.exists() and _same(idx_in, idx_out):
            raise UnsafeOutputError(
                f"{output}: its index {idx_out} is the input's index; choose another output"
            )


def replay_target(root: Path, name: str) -> Path:
    """Where ``maskgen replay`` writes the output named ``name``: inside ``root``. A name
    that is absolute or contains ``..`` raises :class:`UnsafeOutputError`."""
    if (
        not name
        or "\x00" in name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or ".." in PurePosixPath(name).parts
        or ".." in PureWindowsPath(name).parts
    ):
        raise UnsafeOutputError(
            f"output {name!r} is absolute or leaves the output folder (contains '..'); refused"
        )
    target = Path(root) / name
    if not _inside(Path(root), target):
        raise UnsafeOutputError(f"output {name!r} leads outside {root} (a symbolic link?)")
    return target


def _inside(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
