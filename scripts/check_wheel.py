"""Build the wheel, install it into a scratch folder and load the mask assets from there.

Proves that an installed wheel (not only a checkout) finds ``templates/`` through
``importlib.resources``. Run: ``python scripts/check_wheel.py``.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import importlib.resources as r, json, sys
import maskgen
from maskgen.landmarks import canonical_68
from maskgen.appearance import palette_names
assert maskgen.__file__.startswith(sys.argv[1]), maskgen.__file__
files = {p.name for p in r.files("maskgen.templates").iterdir()}
assert {"aligned_68.json", "palettes.json", "shapes.json"} <= files, files
assert canonical_68().shape == (68, 2)
assert "medical_blue" in palette_names()
from distill.configs import config_path, list_configs
assert {"demo", "ms1mv2_r50"} <= set(list_configs()), list_configs()
assert str(config_path("ms1mv2_r50")).startswith(sys.argv[1]), config_path("ms1mv2_r50")
import importlib
for name in sys.argv[2:]:  # every package of the source tree is in the wheel
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)
print("wheel assets OK:", sorted(files), "configs:", list_configs(),
      "packages OK:", len(sys.argv) - 2)
"""


def source_packages() -> list[str]:
    """Dotted names of every package (folder with ``__init__.py``) of maskgen and distill."""
    return sorted(
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("maskgen", "distill")
        for init in (ROOT / top).rglob("__init__.py")
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir, target = Path(tmp) / "wheel", Path(tmp) / "site"
        pip = [sys.executable, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheel_dir),
                        str(ROOT)], check=True)  # fmt: skip
        wheel = glob.glob(str(wheel_dir / "maskgen-*.whl"))[0]
        subprocess.run([*pip, "install", "--no-deps", "--target", str(target), wheel], check=True)
        env = {**os.environ, "PYTHONPATH": str(target)}
        probe = [sys.executable, "-c", PROBE, str(target), *source_packages()]
        subprocess.run(probe, check=True, env=env, cwd=tmp)


if __name__ == "__main__":
    main()
