"""Where the package's shipped data (config/, launch/) lives, from a source tree or an install."""
from __future__ import annotations

import os
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_dir() -> Path:
    """Return the directory that holds ``config/`` and ``launch/``.

    A source checkout (pip editable install, tests) uses the repository root; a colcon
    or pip install uses ``<prefix>/share/oe_depth_ros``.
    """
    if (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    candidates = [Path(sys.prefix) / "share" / "oe_depth_ros"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "oe_depth_ros")
    for cand in candidates:
        if (cand / "config").is_dir():
            return cand
    raise FileNotFoundError(
        "cannot find the oe_depth_ros config/ directory; looked in "
        + ", ".join(str(c) for c in [_SOURCE_ROOT, *candidates])
    )


def config_dir() -> Path:
    """Return the ``config/`` directory."""
    return share_dir() / "config"
