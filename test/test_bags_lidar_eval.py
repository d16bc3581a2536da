"""LiDAR projection and the streaming depth/scan pairing of process-bag's evaluation."""
from __future__ import annotations

import numpy as np
import pytest

from oe_depth_ros.bags.lidar_eval import EvalSettings, LidarEvaluator
from oe_depth_ros.bags.tf import Edge, TransformTree
from oe_depth_ros.lidar_projection import project_to_depth

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 15.5], [0.0, 0.0, 1.0]])
SIZE = (32, 64)
MS = 1_000_000
# LiDAR frame: x forward, y left, z up; camera optical frame: x right, y down, z forward.
LIDAR_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0],
                         [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _naive_projection(points: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    for x, y, z in points:
        if not z > 0.1:
            continue
        u = int(round(k[0, 0] * x / z + k[0, 2]))
        v = int(round(k[1, 1] * y / z + k[1, 2]))
        if 0 <= u < size[1] and 0 <= v < size[0] and (out[v, u] == 0 or z < out[v, u]):
            out[v, u] = z
    return out


def test_projection_matches_a_per_point_loop() -> None:
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-8, 8, 3000), rng.uniform(-4, 4, 3000),
                           rng.uniform(-2, 30, 3000)])
    pts[::97] = np.nan
    np.testing.assert_array_equal(project_to_depth(pts, K, SIZE),
                                  _naive_projection(pts, K, SIZE))


def _plane_scan(depth_m: float) -> np.ndarray:
    """LiDAR points (lidar frame) of a wall ``depth_m`` ahead covering the whole image."""
    u, v = np.meshgrid(np.arange(SIZE[1]), np.arange(SIZE[0]))
    x_cam = (u.ravel() - K[0, 2]) / K[0, 0] * depth_m
    y_cam = (v.ravel() - K[1, 2]) / K[1, 1] * depth_m
    cam = np.column_stack([x_cam, y_cam, np.full(x_cam.shape, depth_m)])
    return cam @ LIDAR_TO_CAM[:3, :3]  # inverse rotation: camera -> lidar


def _evaluator(**settings: float) -> LidarEvaluator:
    tree = TransformTree([Edge("lidar", "cam", np.linalg.inv(LIDAR_TO_CAM))])
    return LidarEvaluator(tree=tree, settings=EvalSettings(crop=None, **settings))


def test_each_depth_map_pairs_with_the_nearest_scan() -> None:
    ev = _evaluator()
    depth = np.full(SIZE, 10.0, dtype=np.float32)
    depth[0, :5] = np.nan  # invalid prediction pixels are left out
    ev.add_cloud(95 * MS, "lidar", _plane_scan(20.0))
    ev.add_depth(0, 100 * MS, "cam", depth, K)       # 5 ms after the 20 m scan
    ev.add_depth(1, 120 * MS, "cam", depth, K)       # 15 ms before the 10 m scan
    ev.add_cloud(135 * MS, "lidar", _plane_scan(10.0))
    ev.add_depth(2, 160 * MS, "cam", depth, K)       # only after the last scan
    ev.add_depth(3, 400 * MS, "cam", depth, K)       # too far from any scan
    ev.finish()
    frames = {f["index"]: f for f in ev.frames}
    assert frames[0]["lidar_stamp_ns"] == 95 * MS
    assert frames[0]["metric"]["abs_rel"] == pytest.approx(0.5)        # |20 - 10| / 20
    assert frames[0]["median_ratio"] == pytest.approx(2.0)
    assert frames[0]["median_scaled"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert frames[1]["lidar_stamp_ns"] == 135 * MS
    assert frames[1]["metric"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert frames[1]["coverage"] == pytest.approx(1 - 5 / (SIZE[0] * SIZE[1]))
    assert frames[2]["lidar_stamp_ns"] == 135 * MS and frames[2]["dt_ms"] == pytest.approx(25)
    assert "400.0 ms" not in frames[3]["skipped"] and "265.0 ms" in frames[3]["skipped"]
    summary = ev.summary()
    assert summary["frames_evaluated"] == 3 and summary["frames_skipped"] == 1
    assert summary["metric"]["abs_rel"] == pytest.approx(0.5 / 3)
    assert summary["median_ratio"]["median"] == pytest.approx(1.0)


def test_missing_transform_skips_with_the_reason() -> None:
    ev = _evaluator()
    ev.add_cloud(0, "other_lidar", _plane_scan(10.0))
    ev.add_depth(0, 0, "cam", np.full(SIZE, 10.0, np.float32), K)
    assert "other_lidar" in ev.frames[0]["skipped"]
    assert ev.summary() == {"frames_evaluated": 0, "frames_skipped": 1}
