"""The shared LiDAR scatter: nearest point per pixel, pixel offsets, dropped points."""
from __future__ import annotations

import numpy as np
import pytest

from oe_depth_ros.lidar_projection import project_to_depth, project_velodyne, scatter_nearest

SIZE = (24, 40)


def _naive_scatter(u, v, depth, size, offset):
    """Per-point loop with Python's round (half to even, as numpy's rint)."""
    out = np.zeros(size, dtype=np.float32)
    best: dict[tuple[int, int], float] = {}
    for uu, vv, d in zip(u.tolist(), v.tolist(), depth.tolist()):
        if not (np.isfinite(uu) and np.isfinite(vv) and np.isfinite(d)):
            continue
        col, row = round(uu) + offset, round(vv) + offset
        if 0 <= col < size[1] and 0 <= row < size[0]:
            if (row, col) not in best or d < best[(row, col)]:
                best[(row, col)] = d
    for (row, col), d in best.items():
        out[row, col] = d
    return out


@pytest.mark.parametrize("offset", [-1, 0])
def test_scatter_matches_a_per_point_loop(offset: int) -> None:
    rng = np.random.default_rng(offset + 5)
    n = 4000  # about four points a pixel: many collisions
    u = rng.uniform(-3, SIZE[1] + 3, n)
    v = rng.uniform(-3, SIZE[0] + 3, n)
    u[::50] = np.round(u[::50]) + 0.5  # exact halves exercise the rounding rule
    depth = rng.uniform(0.5, 80, n)
    u[7], v[11], depth[13] = np.nan, np.inf, np.nan
    got = scatter_nearest(u, v, depth, SIZE, pixel_offset=offset)
    assert got.dtype == np.float32 and got.shape == SIZE
    np.testing.assert_array_equal(got, _naive_scatter(u, v, depth, SIZE, offset))
    assert np.count_nonzero(got) > 0.9 * got.size


def test_scatter_hand_worked() -> None:
    u = np.array([0.4, 0.6, 1.5, 2.5, 39.6])
    v = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    depth = np.array([5.0, 3.0, 7.0, 2.0, 9.0])
    zero = scatter_nearest(u, v, depth, SIZE)
    # 0.4 -> col 0, 0.6 -> col 1; 1.5 and 2.5 -> col 2 (half to even, the nearest 2 wins);
    # 39.6 -> col 40 (outside)
    assert zero[0, :4].tolist() == [5.0, 3.0, 2.0, 0.0] and np.count_nonzero(zero) == 3
    minus = scatter_nearest(u, v + 1, depth, SIZE, pixel_offset=-1)
    # one column and row less: col -1 (outside), col 0, col 1 (2 wins), 39.6 -> col 39
    assert minus[0, :3].tolist() == [3.0, 2.0, 0.0] and minus[0, 39] == 9.0
    assert np.count_nonzero(minus) == 3
    with pytest.raises(ValueError, match="one length"):
        scatter_nearest(u, v[:2], depth, SIZE)


def test_camera_and_velodyne_conventions_agree() -> None:
    """A Velodyne-style matrix and K on the same points differ only by the offset."""
    k = np.array([[30.0, 0.0, 19.7], [0.0, 30.0, 11.2], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(3)
    cam = np.column_stack([rng.uniform(-8, 8, 500), rng.uniform(-4, 4, 500),
                           rng.uniform(1, 40, 500)])
    # Velodyne frame: x forward, y left, z up.
    velo = np.column_stack([cam[:, 2], -cam[:, 0], -cam[:, 1]])
    velo_to_cam = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    matrix = k @ velo_to_cam
    for offset in (-1, 0):
        np.testing.assert_array_equal(project_velodyne(velo, matrix, SIZE, offset),
                                      project_to_depth(cam, k, SIZE, pixel_offset=offset))
    with pytest.raises(ValueError, match="shape"):
        project_velodyne(velo[:, :2], matrix, SIZE)
    with pytest.raises(ValueError, match="shape"):
        project_to_depth(cam[:, :2], k, SIZE)
