"""Camera geometry shared by training, evaluation, the pipeline and the node.

One place for: KITTI's normalized training intrinsics, intrinsics scaling on resize,
disparity <-> depth conversion, and back-projection of a depth map to 3-D points.
Functions accept numpy arrays; ``disp_to_depth`` also accepts torch tensors.
"""
from __future__ import annotations

from typing import TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike

ArrayT = TypeVar("ArrayT")

#: Monodepth2's normalized KITTI intrinsics (fx, fy, cx, cy): fx and cx times the image
#: width, fy and cy times its height.
KITTI_NORMALIZED_INTRINSICS: tuple[float, float, float, float] = (0.58, 1.92, 0.5, 0.5)


def _normalized_k(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """4x4 float32 normalized intrinsics (Monodepth2's layout) of (fx, fy, cx, cy)."""
    return np.array([[fx, 0.0, cx, 0.0], [0.0, fy, cy, 0.0], [0.0, 0.0, 1.0, 0.0],
                     [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)


#: :data:`KITTI_NORMALIZED_INTRINSICS` as Monodepth2's 4x4 matrix (row 0 times width, row 1
#: times height).
KITTI_NORMALIZED_K = _normalized_k(*KITTI_NORMALIZED_INTRINSICS)

DEFAULT_MIN_DEPTH = 0.1
DEFAULT_MAX_DEPTH = 100.0


def disp_to_depth(disp: ArrayT, min_depth: float = DEFAULT_MIN_DEPTH,
                  max_depth: float = DEFAULT_MAX_DEPTH) -> tuple[ArrayT, ArrayT]:
    """Map the network's sigmoid output to (scaled disparity, depth).

    scaled = 1/max_depth + (1/min_depth - 1/max_depth) * sigmoid; depth = 1/scaled.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    # ArrayT is a numpy array or a torch tensor; the arithmetic keeps its type.
    scaled = cast(ArrayT, min_disp + (max_disp - min_disp) * disp)  # type: ignore[operator]
    depth = cast(ArrayT, 1.0 / scaled)  # type: ignore[operator]
    return scaled, depth


def depth_to_disp(depth: ArrayT, min_depth: float = DEFAULT_MIN_DEPTH,
                  max_depth: float = DEFAULT_MAX_DEPTH) -> ArrayT:
    """Inverse of :func:`disp_to_depth`: the sigmoid output that gives ``depth``."""
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return cast(ArrayT, (1.0 / depth - min_disp) / (max_disp - min_disp))  # type: ignore[operator]


def normalized_to_pixels(k_norm: np.ndarray, width: int, height: int) -> np.ndarray:
    """Turn a normalized 3x3 or 4x4 K (row 0 in widths, row 1 in heights) into pixels."""
    k = np.array(k_norm, dtype=np.float64, copy=True)
    k[0, :] *= width
    k[1, :] *= height
    return k


def scale_intrinsics(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics after resizing an image by (sx, sy) = (new_w/old_w, new_h/old_h).

    Uses the pixel-corner convention that ``cv2.resize`` and bilinear
    ``align_corners=False`` sampling follow: u' = sx * (u + 0.5) - 0.5, so
    cx' = sx * (cx + 0.5) - 0.5 and fx' = sx * fx.
    """
    out = np.array(k, dtype=np.float64, copy=True)
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[0, 2] = sx * (out[0, 2] + 0.5) - 0.5
    out[1, 1] *= sy
    out[1, 2] = sy * (out[1, 2] + 0.5) - 0.5
    return out


def resize_intrinsics(k: np.ndarray, src_size: tuple[int, int],
                      dst_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics for an image resized from ``src_size`` to ``dst_size``, both (height, width)."""
    (sh, sw), (dh, dw) = src_size, dst_size
    return scale_intrinsics(k, dw / sw, dh / sh)


def pixel_rays(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """Return [H, W, 3] float32 rays (x/z, y/z, 1) for every pixel center under 3x3 ``k``."""
    fx, fy, cx, cy = float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
    skew = float(k[0, 1])
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    rays = np.stack([x, y, np.ones_like(x)], axis=-1)
    return rays.astype(np.float32)


def backproject(depth: np.ndarray, k: np.ndarray, rays: np.ndarray | None = None) -> np.ndarray:
    """Back-project an [H, W] depth map (z along the optical axis) to [H, W, 3] points.

    Pass precomputed ``rays`` from :func:`pixel_rays` to avoid recomputing them per frame.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D [H, W], got shape {depth.shape}")
    if rays is None:
        rays = pixel_rays(k, *depth.shape)
    return rays * depth[..., None].astype(np.float32)


def check_intrinsics(k: ArrayLike) -> np.ndarray:
    """Validate a 3x3 pinhole K (finite, positive focal lengths) and return it as float64."""
    arr = np.asarray(k, dtype=np.float64)
    if arr.shape == (9,):
        arr = arr.reshape(3, 3)
    if arr.shape != (3, 3):
        raise ValueError(f"intrinsics must be 3x3, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("intrinsics contain NaN or inf")
    if arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise ValueError(f"intrinsics focal lengths must be positive, got fx={arr[0, 0]}, "
                         f"fy={arr[1, 1]}")
    return arr
