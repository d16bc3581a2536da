"""Colourised depth for display: a fixed metric scale, so colours mean the same every frame.

Depth is mapped linearly from [min_depth, max_depth] (default 0..80 m, KITTI's
evaluation cap) onto OpenCV's Turbo colour map with near = red and far = blue;
invalid (NaN) pixels get ``invalid_color``. A 256-entry lookup table is built once.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def turbo_lut() -> np.ndarray:
    """[256, 3] uint8 RGB of OpenCV's COLORMAP_TURBO, index 0 = dark blue, 255 = dark red."""
    import cv2

    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)
    lut = np.ascontiguousarray(bgr[:, 0, ::-1])
    lut.setflags(write=False)
    return lut


def colorize_depth(depth: np.ndarray, min_depth: float = 0.0, max_depth: float = 80.0,
                   invalid_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Depth [H, W] in metres (NaN = invalid) -> uint8 RGB [H, W, 3], near red, far blue."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    finite = np.isfinite(depth)
    t = (max_depth - np.where(finite, depth, max_depth)) * (255.0 / (max_depth - min_depth))
    idx = np.clip(t + 0.5, 0, 255).astype(np.uint8)
    out = turbo_lut()[idx]
    out[~finite] = invalid_color
    return out
