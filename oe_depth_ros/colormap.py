"""Colorized depth for display: a fixed metric scale, so colors mean the same every frame.

Depth is mapped linearly from [min_depth, max_depth] (the caller's range: the node's
``colored.min_range``/``colored.max_range`` parameters) onto OpenCV's Turbo color map
with near = red and far = blue; invalid (NaN) pixels get ``invalid_color``.
``turbo_lut`` gives the 256 colors.
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


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float,
                   invalid_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Depth [H, W] in meters (NaN = invalid) -> uint8 RGB [H, W, 3], near red, far blue."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    import cv2

    valid = np.isfinite(depth)
    # float32 throughout: index = round((max - d) * 255 / (max - min)), clipped to 0..255
    # (fmax also turns the NaN of invalid pixels into 0; they are painted over below).
    t = np.subtract(np.float32(max_depth), depth, dtype=np.float32)
    t *= np.float32(255.0 / (max_depth - min_depth))
    t += np.float32(0.5)
    np.fmax(t, np.float32(0), out=t)
    np.minimum(t, np.float32(255), out=t)
    out = cv2.applyColorMap(t.astype(np.uint8), cv2.COLORMAP_TURBO)  # = turbo_lut()[idx], BGR
    cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)
    # Masked copy in OpenCV (a numpy boolean assignment is ten times slower).
    out = cv2.bitwise_and(out, out, dst=np.zeros_like(out), mask=valid.view(np.uint8))
    if any(invalid_color):
        out[~valid] = invalid_color
    return out
