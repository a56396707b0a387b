"""The training configs shipped with distill, usable by name: ``distill train ms1mv2_r50``.

``demo`` spells out the defaults (the built-in CPU demo); ``ms1mv2_r50`` is the MaskInv
recipe on MS1MV2 with an iresnet50 and ElasticFace-Arc+; ``maskinv_kd_r100`` (w = 100) and
``maskinv_hg_r100`` (w = 3000) are the two recipes of the public MaskInv code (iresnet100,
ElasticFace-Arc, 4 × 128 images, 26 epochs) and ``maskinv_aug_r100`` their
augmentation-only counterpart (w = 0); see ``docs/evaluation.md``. In a checkout the same
files are reachable as ``configs/<name>.yaml``.

Example:
    >>> list_configs()
    ['demo', 'maskinv_aug_r100', 'maskinv_hg_r100', 'maskinv_kd_r100', 'ms1mv2_r50']
    >>> config_path("ms1mv2_r50").name
    'ms1mv2_r50.yaml'
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["config_path", "list_configs", "resolve_config"]

_SUFFIXES = (".yaml", ".yml", ".toml")


def list_configs() -> list[str]:
    """Names of the shipped configs."""
    files = resources.files(__name__).iterdir()
    return sorted(Path(f.name).stem for f in files if f.name.endswith(_SUFFIXES))


def config_path(name: str) -> Path:
    """The file of the shipped config ``name`` (with or without its suffix).

    Raises:
        FileNotFoundError: no shipped config has that name (the message lists them).
    """
    stem = Path(name).stem if name.endswith(_SUFFIXES) else name
    for suffix in _SUFFIXES:
        candidate = resources.files(__name__).joinpath(stem + suffix)
        if candidate.is_file():
            return Path(str(candidate))  # installed as plain files (not zipped)
    raise FileNotFoundError(
        f"config {name!r} is neither a file nor a shipped config ({', '.join(list_configs())})"
    )


def resolve_config(spec: str | os.PathLike[str]) -> Path:
    """A config file: ``spec`` itself when it exists, else the shipped config of that name."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.parent == Path("."):  # a bare name
        return config_path(path.name)
    raise FileNotFoundError(f"config file {path} does not exist")
