"""Sparse depth maps from LiDAR points: project, round to a pixel, keep the nearest.

One core, :func:`scatter_nearest`, serves two conventions:

* :func:`project_to_depth`: points already in the camera's optical frame, projected
  with K; depth = z; pixel centers at integer coordinates (as in CameraInfo), so the
  pixel is (round(u), round(v)).
* :func:`project_velodyne`: the KITTI Eigen protocol; Velodyne points through a 3x4
  Velodyne -> pixel matrix; points with Velodyne x < 0 are dropped and the depth is the
  Velodyne forward (x) coordinate. The reference code takes (round(u) - 1,
  round(v) - 1), hence ``pixel_offset=-1`` by default; a camera model whose pixel
  centers sit at integer coordinates (such as the synthetic world's) wants 0.
"""
from __future__ import annotations

import numpy as np

#: Pixel offsets that the projections accept: KITTI's reference (-1) and 0-based centers.
PIXEL_OFFSETS = (-1, 0)


def scatter_nearest(u: np.ndarray, v: np.ndarray, depth: np.ndarray, size: tuple[int, int],
                    pixel_offset: int = 0) -> np.ndarray:
    """Sparse float32 depth [H, W] (0 = no point) from image coordinates and depths.

    Point i lands at row ``round(v[i]) + pixel_offset``, column ``round(u[i]) +
    pixel_offset`` (round half to even); points outside the image or with a non-finite
    coordinate or depth are dropped; where several land on one pixel the smallest
    depth wins.
    """
    height, width = size
    u, v, depth = (np.asarray(a, dtype=np.float64).ravel() for a in (u, v, depth))
    if not u.shape == v.shape == depth.shape:
        raise ValueError(f"u, v and depth must have one length, got {u.size}, {v.size} "
                         f"and {depth.size}")
    col = np.rint(u) + pixel_offset
    row = np.rint(v) + pixel_offset
    # NaN compares False, so non-finite coordinates fall outside.
    inside = (col >= 0) & (row >= 0) & (col < width) & (row < height) & np.isfinite(depth)
    flat = row[inside].astype(np.int64) * width + col[inside].astype(np.int64)
    nearest = np.full(height * width, np.inf)
    np.minimum.at(nearest, flat, depth[inside])  # unbuffered: repeated pixels keep the min
    return np.where(np.isfinite(nearest), nearest, 0.0).astype(np.float32).reshape(size)


def pinhole_pixels(points_cam: np.ndarray, k: np.ndarray,
                   min_z: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, z) of the points [N, 3+] of the optical frame that lie in front of the camera.

    Points with z <= ``min_z`` or a non-finite coordinate are dropped; ``k`` is 3x3.
    """
    pts = np.asarray(points_cam, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"LiDAR points must be [N, 3+], got shape {pts.shape}")
    pts = pts[np.isfinite(pts[:, :3]).all(axis=1) & (pts[:, 2] > min_z), :3]
    z = pts[:, 2]
    proj = pts @ np.asarray(k, dtype=np.float64).T
    return proj[:, 0] / z, proj[:, 1] / z, z


def project_to_depth(points_cam: np.ndarray, k: np.ndarray, size: tuple[int, int],
                     min_z: float = 0.1, pixel_offset: int = 0) -> np.ndarray:
    """Sparse float32 depth [H, W] (0 = no point) of points [N, 3+] in the optical frame.

    Pixel = (round(u), round(v)) + ``pixel_offset`` of the pinhole projection with the
    3x3 ``k``; depth = z; points with z <= ``min_z`` or non-finite are dropped.
    """
    u, v, z = pinhole_pixels(points_cam, k, min_z)
    return scatter_nearest(u, v, z, size, pixel_offset)


def project_velodyne(points: np.ndarray, velo_to_image: np.ndarray, size: tuple[int, int],
                     pixel_offset: int = -1) -> np.ndarray:
    """Sparse float32 depth [H, W] (0 = no point) of Velodyne ``points`` [N, >=3].

    ``velo_to_image`` is the 3x4 Velodyne -> pixel matrix (``P_rect @ R_rect @ [R|T]``);
    ``size`` is (height, width). KITTI protocol: depth = Velodyne x, points with x < 0
    dropped, pixel = (round(u), round(v)) + ``pixel_offset`` (-1 in the reference code).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"velodyne points must be [N, 3 or 4], got shape {pts.shape}")
    pts = pts[pts[:, 0] >= 0, :3].astype(np.float64)
    m = np.asarray(velo_to_image, dtype=np.float64).reshape(3, 4)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    # Elementwise rather than a matrix product (no BLAS threads for a 3x4 transform).
    u, v, w = (m[i, 0] * x + m[i, 1] * y + m[i, 2] * z + m[i, 3] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        return scatter_nearest(u / w, v / w, x, size, pixel_offset)
