"""Metric scale strategies on scenes whose true scale is known in closed form.

A flat ground at height h below the camera, with unit normal n (pointing down in the
optical frame), is seen at depth z = h / (n . ray) along each pixel ray. Dividing that
depth by a known factor s gives the "unscaled prediction"; the camera-height estimator
must return exactly s.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from oe_depth_ros.config import ConfigError, from_dict
from oe_depth_ros.scale import (
    CameraHeightScale,
    FixedScale,
    LidarMedianScale,
    ScaleConfig,
    fit_ground_plane,
    lidar_depth_ratios,
    make_scale_estimator,
)

K = np.array([[300.0, 0.0, 207.5], [0.0, 300.0, 63.5], [0.0, 0.0, 1.0]])
H, W = 128, 416


def ground_depth(height_m: float, pitch_deg: float = 0.0, roll_deg: float = 0.0,
                 k: np.ndarray = K, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """z of a ground plane per pixel (NaN above the horizon), by a per-pixel loop."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    # Down axis (0, 1, 0) rotated by pitch about x and roll about z.
    n = np.array([-math.sin(r), math.cos(r) * math.cos(p), math.cos(r) * math.sin(p)])
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    depth = np.full(size, np.nan, dtype=np.float32)
    for v in range(size[0]):
        for u in range(size[1]):
            ray = ((u - cx) / fx, (v - cy) / fy, 1.0)
            denom = n[0] * ray[0] + n[1] * ray[1] + n[2] * ray[2]
            if denom > 1e-3:
                depth[v, u] = height_m / denom
    return depth


@pytest.fixture(scope="module")
def flat_ground() -> np.ndarray:
    return ground_depth(1.65)


def estimator(**overrides) -> CameraHeightScale:
    cfg = ScaleConfig(method="camera_height", window=1, **overrides)
    return CameraHeightScale(1.65, cfg)


@pytest.mark.parametrize("factor", [0.37, 1.0, 5.4, 31.0])
def test_camera_height_recovers_known_factor(flat_ground, factor):
    est = estimator().estimate(flat_ground / factor, K)
    assert est.source == "camera_height"
    assert est.scale == pytest.approx(factor, rel=1e-5)
    assert est.confidence > 0.99


@pytest.mark.parametrize("pitch, roll", [(5.0, 0.0), (-4.0, 3.0), (0.0, -8.0)])
def test_tilted_camera_within_limit(pitch, roll):
    depth = ground_depth(1.65, pitch, roll) / 2.5
    est_obj = estimator()
    est = est_obj.estimate(depth, K)
    assert est.scale == pytest.approx(2.5, rel=1e-5)
    assert est_obj.last_fit.tilt_deg == pytest.approx(math.hypot(pitch, roll), abs=0.5)


def test_outliers_are_rejected(flat_ground):
    """40 % of the ground region replaced by obstacles well off the plane: still exact."""
    rng = np.random.default_rng(0)
    depth = flat_ground / 3.0
    region = np.zeros_like(depth, dtype=bool)
    region[int(0.6 * H):, int(0.2 * W):int(0.8 * W)] = True
    hit = region & (rng.random(depth.shape) < 0.4)
    # Points pulled towards the camera by 30-70 %: at least 0.3 h off the plane.
    depth[hit] *= rng.uniform(0.3, 0.7, hit.sum()).astype(np.float32)
    est = estimator().estimate(depth, K)
    assert est.scale == pytest.approx(3.0, rel=1e-5)
    assert 0.5 < est.confidence < 0.7


def test_low_confidence_and_missing_plane_fall_back(flat_ground):
    est_obj = estimator(factor=1.7)
    first = est_obj.estimate(np.full((H, W), np.nan, np.float32), K)
    assert (first.scale, first.source, first.confidence) == (1.7, "camera_height:initial", 0.0)
    good = est_obj.estimate(flat_ground / 2.0, K)
    assert good.scale == pytest.approx(2.0, rel=1e-5)
    # A wall facing the camera (z constant): no plane near the up axis.
    wall = est_obj.estimate(np.full((H, W), 4.0, np.float32), K)
    assert wall.source == "camera_height:held" and wall.scale == good.scale
    # Ground mostly covered by clutter: a plane is found but with low confidence.
    rng = np.random.default_rng(1)
    cluttered = flat_ground / 5.0 * rng.uniform(0.2, 0.8, flat_ground.shape).astype(np.float32)
    cluttered[int(0.6 * H)::7] = flat_ground[int(0.6 * H)::7] / 5.0
    held = est_obj.estimate(cluttered, K)
    assert held.source == "camera_height:held" and held.scale == good.scale
    assert 0.0 < held.confidence < est_obj.config.min_confidence
    est_obj.reset()
    after_reset = est_obj.estimate(np.full((H, W), 4.0, np.float32), K)
    assert (after_reset.source, after_reset.scale) == ("camera_height:initial", 1.7)


def test_too_steep_plane_is_rejected():
    est = estimator(max_tilt_deg=10.0).estimate(ground_depth(1.65, pitch_deg=20.0), K)
    assert est.source == "camera_height:initial"


def test_temporal_median_smoothing(flat_ground):
    est_obj = CameraHeightScale(1.65, ScaleConfig(method="camera_height", window=3))
    scales = [est_obj.estimate(flat_ground / f, K).scale for f in (2.0, 2.2, 9.0, 2.1)]
    # Medians of [2], [2, 2.2], [2, 2.2, 9], [2.2, 9, 2.1].
    assert scales == pytest.approx([2.0, 2.1, 2.2, 2.2], rel=1e-5)
    est = est_obj.estimate(flat_ground / 2.0, K)
    assert est.raw == pytest.approx(2.0, rel=1e-5) and est.scale == pytest.approx(2.1, rel=1e-5)


def test_fit_ground_plane_least_squares_refit_against_closed_form():
    """Noisy plane points: the refit equals the SVD plane of the true inliers."""
    rng = np.random.default_rng(3)
    xz = rng.uniform([-5, 2], [5, 30], size=(500, 2))
    pts = np.column_stack([xz[:, 0], 1.2 + rng.normal(0, 0.005, 500), xz[:, 1]])
    fit = fit_ground_plane(pts, rng)
    centered = pts - pts.mean(axis=0)
    normal = np.linalg.eigh(centered.T @ centered)[1][:, 0]
    normal *= np.sign(normal[1])
    assert fit is not None and fit.inlier_ratio == 1.0
    np.testing.assert_allclose(fit.normal, normal, atol=1e-9)
    assert fit.height == pytest.approx(float(normal @ pts.mean(axis=0)), rel=1e-9)
    assert fit.rms == pytest.approx(0.005 / 1.2, rel=0.2)


def test_fixed_scale():
    est = FixedScale(5.4).estimate(np.ones((2, 2), np.float32), K)
    assert (est.scale, est.source, est.confidence) == (5.4, "fixed", 1.0)
    # The factor is checked once, by the configuration the estimator is built from.
    with pytest.raises(ValueError, match="scale.factor"):
        ScaleConfig(method="fixed", factor=0.0)


def backproject_loop(depth: np.ndarray, k: np.ndarray, step: int) -> np.ndarray:
    pts = []
    for v in range(0, depth.shape[0], step):
        for u in range(0, depth.shape[1], step):
            z = float(depth[v, u])
            if np.isfinite(z):
                pts.append(((u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z))
    return np.array(pts)


def test_lidar_median_scale_exact_with_outliers(flat_ground):
    gt = flat_ground.copy()
    gt[np.isnan(gt)] = 50.0  # something behind the horizon too
    lidar = backproject_loop(gt, K, 3)
    rng = np.random.default_rng(2)
    bad = rng.random(len(lidar)) < 0.2
    lidar[bad] *= rng.uniform(0.5, 0.9, (bad.sum(), 1))  # e.g. points from another surface
    est = LidarMedianScale(ScaleConfig(method="lidar", window=1)).estimate(gt / 4.0, K, lidar)
    assert est.scale == pytest.approx(4.0, rel=1e-5)
    assert 0.75 < est.confidence < 0.85


def test_lidar_ratios_against_loop():
    rng = np.random.default_rng(4)
    depth = rng.uniform(1, 20, (H, W)).astype(np.float32)
    pts = rng.uniform([-10, -3, -2], [10, 3, 40], (300, 3))
    got = lidar_depth_ratios(depth, K, pts)
    want = []
    for x, y, z in pts:
        if z <= 0.1:
            continue
        u = int(np.rint(K[0, 0] * x / z + K[0, 2]))
        v = int(np.rint(K[1, 1] * y / z + K[1, 2]))
        if 0 <= u < W and 0 <= v < H:
            want.append(z / depth[v, u])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_lidar_without_points_holds():
    est_obj = LidarMedianScale(ScaleConfig(method="lidar", factor=2.0))
    assert est_obj.estimate(np.ones((H, W), np.float32), K).source == "lidar:initial"
    few = np.array([[0.0, 0.0, 5.0]])
    est = est_obj.estimate(np.ones((H, W), np.float32), K, few)
    assert est.source == "lidar:initial" and est.scale == 2.0


def test_scale_config_validation_and_factory():
    cfg = from_dict(ScaleConfig, {"method": "camera_height", "camera_height": 1.5,
                                  "ground_rows": [0.5, 1.0]})
    assert isinstance(make_scale_estimator(cfg), CameraHeightScale)
    assert cfg.ground_rows == (0.5, 1.0)
    with pytest.raises(ConfigError, match="ground_rows"):
        from_dict(ScaleConfig, {"ground_rows": [0.9, 0.5]})
    with pytest.raises(ConfigError, match="method"):
        from_dict(ScaleConfig, {"method": "magic"})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ScaleConfig, {"camera_hieght": 1.6})


def test_synthetic_world_ground_truth_scale(synth_world):
    """The camera height recovers a factor of 4.2 frame by frame.

    The dense GT of the synthetic world is divided by 4.2; the camera height (1.65 m,
    the KITTI platform the synthetic rig reproduces) recovers it.
    """
    import cv2

    from oe_depth_ros.kitti.raw import KittiDrive

    drive_dir = synth_world.drive_dirs[0]
    drive = KittiDrive(drive_dir)
    k = drive.calib.K_cam2
    est_obj = CameraHeightScale(1.65, ScaleConfig(method="camera_height", window=1))
    raws = []
    for idx in range(drive.num_frames):
        png = drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{idx:010d}.png"
        gt = cv2.imread(str(png), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256.0
        est = est_obj.estimate(np.where(gt > 0, gt / 4.2, np.nan).astype(np.float32), k)
        assert est.source == "camera_height"
        raws.append(est.raw)
    np.testing.assert_allclose(raws, 4.2, rtol=0.02)
    assert float(np.median(raws)) == pytest.approx(4.2, rel=0.01)
