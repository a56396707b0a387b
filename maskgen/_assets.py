"""Access to the mask assets in ``templates/`` (installed as ``maskgen.templates``).

The assets are read through :mod:`importlib.resources`, so they are found in an installed
wheel as well as in an editable checkout.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


def asset_text(name: str) -> str:
    """Return the text of the asset file ``name`` (e.g. ``"palettes.json"``)."""
    return resources.files("maskgen.templates").joinpath(name).read_text(encoding="utf-8")


@cache
def asset_json(name: str) -> Any:
    """Parse and cache the JSON asset ``name``."""
    return json.loads(asset_text(name))
