"""Readers shared by the bag tests, independent of the package's own KITTI reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def calib_text(path: Path) -> dict[str, np.ndarray]:
    """Every numeric ``key: values`` line of a KITTI calibration file (others skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            pass
    return out
