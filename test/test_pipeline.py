"""DepthPipeline's own maths: intrinsics scaling, disparity -> depth, validity, clouds.

The backend here is ``KnownDisparityBackend``, a real ``DepthBackend`` subclass whose
``infer`` returns a disparity map fixed by the test (a ground plane plus a far
background), so every output has an independent closed-form or per-pixel-loop
expectation. The trained networks are exercised by the inference tests.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from oe_depth_ros.config import ConfigError, from_dict
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.messages import MessageTypes, camera_info_to_intrinsics, make_header
from oe_depth_ros.pipeline import DepthPipeline, Outputs, PipelineConfig, disparity_to_depth
from oe_depth_ros.scale import FixedScale, ScaleConfig, ScaleSetupError
from oe_depth_ros.units import RELATIVE_UNKNOWN, DepthUnits

CAM_H, CAM_W = 375, 1242
NET_H, NET_W = 96, 320
K_CAM = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])


class KnownDisparityBackend(DepthBackend):
    """A DepthBackend whose network is a fixed disparity map (records the inputs it saw)."""

    name = "known"

    def __init__(self, disparity: np.ndarray, units: DepthUnits = RELATIVE_UNKNOWN) -> None:
        self.units = units
        self.input_size = disparity.shape
        self.min_depth, self.max_depth = 0.1, 100.0
        self.disparity = disparity.astype(np.float32)
        self.batches: list[np.ndarray] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(self.check_batch(batch))
        return self.disparity[None, None].copy()


def net_k() -> np.ndarray:
    """The camera K scaled to the network size, worked out by hand (pixel-center rule)."""
    sx, sy = NET_W / CAM_W, NET_H / CAM_H
    return np.array([[K_CAM[0, 0] * sx, 0.0, (K_CAM[0, 2] + 0.5) * sx - 0.5],
                     [0.0, K_CAM[1, 1] * sy, (K_CAM[1, 2] + 0.5) * sy - 0.5],
                     [0.0, 0.0, 1.0]])


def plane_disparity(height_unscaled: float = 1.0, far: float = 200.0) -> np.ndarray:
    """Disparity of a flat ground (camera at ``height_unscaled``), ``far`` above the horizon."""
    k = net_k()
    v = np.arange(NET_H, dtype=np.float64)[:, None] * np.ones((1, NET_W))
    ray_y = (v - k[1, 2]) / k[1, 1]
    disp = np.where(ray_y > 0, ray_y / height_unscaled, 1.0 / far)
    return np.maximum(disp, 1.0 / far).astype(np.float32)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8)


def make(config: dict | None = None, disparity: np.ndarray | None = None, scale=None,
         units: DepthUnits = RELATIVE_UNKNOWN):
    """A pipeline over a known disparity; a fixed scale 1 unless ``config`` names one."""
    cfg = from_dict(PipelineConfig, {"scale": {"method": "fixed"}, **(config or {})})
    backend = KnownDisparityBackend(plane_disparity() if disparity is None else disparity,
                                    units)
    return DepthPipeline(backend, cfg, scale), backend


def test_network_resolution_scales_k_exactly(image):
    pipe, backend = make({"output_resolution": "network"}, scale=FixedScale(1.0))
    res = pipe.process(image, K_CAM)
    np.testing.assert_allclose(res.K, net_k(), rtol=1e-12, atol=1e-12)
    assert res.depth.shape == (NET_H, NET_W) and res.depth.dtype == np.float32
    assert res.colored.shape == (NET_H, NET_W, 3) and res.colored.dtype == np.uint8
    # The backend saw the image resized with the training interpolation.
    want = cv2.resize(image, (NET_W, NET_H), interpolation=cv2.INTER_AREA) / np.float32(255)
    np.testing.assert_allclose(backend.batches[0][0].transpose(1, 2, 0), want, atol=1e-6)
    # depth = 1 / disparity exactly at network resolution.
    np.testing.assert_allclose(res.depth[res.valid], 1.0 / backend.disparity[res.valid],
                               rtol=1e-6)
    info = res.camera_info(make_header(0, "cam", MessageTypes.rclpy()), MessageTypes.rclpy())
    assert (info.width, info.height) == (NET_W, NET_H)
    np.testing.assert_allclose(camera_info_to_intrinsics(info), net_k(), rtol=1e-12)


def test_camera_resolution_resizes_disparity_bilinearly(image):
    """A disparity linear in v stays linear under bilinear resizing (pixel-center mapping)."""
    v = np.arange(NET_H, dtype=np.float32)[:, None] * np.ones((1, NET_W), np.float32)
    disp = 0.01 + 0.002 * v
    pipe, _ = make({"output_resolution": "camera", "max_range": 1000.0}, disp, FixedScale(2.0))
    res = pipe.process(image, K_CAM)
    assert res.depth.shape == (CAM_H, CAM_W)
    np.testing.assert_array_equal(res.K, K_CAM)
    vv = np.arange(CAM_H)
    src_v = (vv + 0.5) * NET_H / CAM_H - 0.5
    interior = (src_v >= 0) & (src_v <= NET_H - 1)
    want = 2.0 / (0.01 + 0.002 * src_v[interior])
    np.testing.assert_allclose(res.depth[interior, 600], want, rtol=2e-4)
    info = res.camera_info(make_header(0, "cam", MessageTypes.rclpy()), MessageTypes.rclpy())
    assert (info.width, info.height) == (CAM_W, CAM_H)


def test_validity_mask_and_nan(image):
    pipe, backend = make({"output_resolution": "network", "min_range": 2.0, "max_range": 30.0},
                         scale=FixedScale(3.0))
    res = pipe.process(image, K_CAM)
    raw = 3.0 / backend.disparity.astype(np.float64)
    want_valid = (raw >= 2.0) & (raw <= 30.0)
    np.testing.assert_array_equal(res.valid, want_valid)
    assert np.all(np.isnan(res.depth[~want_valid]))
    assert np.all(res.depth[want_valid] >= 2.0) and want_valid.any() and (~want_valid).any()
    assert np.all(res.colored[~want_valid] == 0)  # invalid pixels are black


def cloud_loop(depth, rgb, k, step, max_range):
    """Per-pixel back-projection and color packing, the straightforward way."""
    out = []
    for v in range(0, depth.shape[0], step):
        for u in range(0, depth.shape[1], step):
            z = float(depth[v, u])
            if not np.isfinite(z) or z > max_range:
                continue
            x = (u - k[0, 2]) / k[0, 0] * z
            y = (v - k[1, 2]) / k[1, 1] * z
            r, g, b = (int(c) for c in rgb[v, u])
            out.append(struct.pack("<fffI", x, y, z, (r << 16) | (g << 8) | b))
    return b"".join(out)


@pytest.mark.parametrize("decimation, cloud_max", [(1, None), (3, 12.0), (4, 8.0)])
def test_cloud_against_per_pixel_loop(image, decimation, cloud_max):
    pipe, _ = make({"output_resolution": "network", "max_range": 60.0,
                    "points": {"decimation": decimation, "max_range": cloud_max or 0.0}},
                   scale=FixedScale(1.65))
    res = pipe.process(image, K_CAM)
    rgb_net = cv2.resize(image, (NET_W, NET_H), interpolation=cv2.INTER_AREA)
    want = cloud_loop(res.depth, rgb_net, net_k(), decimation,
                      60.0 if cloud_max is None else cloud_max)
    got = res.points
    assert got.dtype.names == ("x", "y", "z", "rgb") and got.ndim == 1
    assert len(got) * 16 == len(want) > 0
    exp = np.frombuffer(want, dtype=got.dtype)
    for axis in "xyz":
        np.testing.assert_allclose(got[axis], exp[axis], rtol=1e-5, atol=1e-6)
    assert got["rgb"].tobytes() == exp["rgb"].tobytes()


def test_organized_cloud_camera_resolution(image):
    pipe, _ = make({"points": {"organized": True, "decimation": 2, "max_range": 20.0,
                               "rgb_type": "uint32"}}, scale=FixedScale(1.0))
    res = pipe.process(image, K_CAM)
    pts = res.points
    assert pts.shape == ((CAM_H + 1) // 2, (CAM_W + 1) // 2)
    assert pts.dtype["rgb"] == np.uint32
    for v, u in [(300, 600), (374, 0), (200, 1241), (10, 10)]:
        p = pts[v // 2, u // 2]
        z = res.depth[v - v % 2, u - u % 2]
        if np.isfinite(z) and z <= 20.0:
            vv, uu = v - v % 2, u - u % 2
            assert p["z"] == z
            assert p["x"] == pytest.approx((uu - K_CAM[0, 2]) / K_CAM[0, 0] * z, rel=1e-5)
            assert p["y"] == pytest.approx((vv - K_CAM[1, 2]) / K_CAM[1, 1] * z, rel=1e-5)
            r, g, b = image[vv, uu].astype(int)
            assert p["rgb"] == (r << 16) | (g << 8) | b
        else:
            assert np.isnan(p["x"]) and np.isnan(p["z"])
    assert np.isnan(pts["z"]).any() and np.isfinite(pts["z"]).any()


def test_camera_height_scale_end_to_end(image):
    """Unscaled ground at 0.5 'units': the pipeline recovers 1.65 / 0.5 = 3.3."""
    cfg = {"output_resolution": "network",
           "scale": {"method": "camera_height", "camera_height": 1.65, "window": 1}}
    pipe, _ = make(cfg, plane_disparity(height_unscaled=0.5))
    res = pipe.process(image, K_CAM)
    assert res.scale_source == "camera_height"
    assert res.scale == pytest.approx(3.3, rel=1e-4)
    # Metric ground depth: 1.65 / ray_y below the horizon.
    k = net_k()
    v = 80
    assert res.depth[v, 100] == pytest.approx(1.65 / ((v - k[1, 2]) / k[1, 1]), rel=1e-4)


def test_lidar_scale_through_pipeline(image):
    cfg = {"output_resolution": "network", "scale": {"method": "lidar", "window": 1}}
    pipe, backend = make(cfg)
    k = net_k()
    pts = []
    for v in range(50, NET_H, 4):
        for u in range(0, NET_W, 8):
            z = 2.5 / backend.disparity[v, u]
            pts.append(((u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z))
    res = pipe.process(image, K_CAM, lidar_points=np.array(pts))
    assert res.scale_source == "lidar" and res.scale == pytest.approx(2.5, rel=1e-5)


def test_timings_and_result_fields(image):
    pipe, _ = make()
    res = pipe.process(image, K_CAM)
    for key in ("preprocess", "inference", "postprocess", "scale", "cloud", "colored", "total"):
        assert key in res.timings and res.timings[key] >= 0.0
    stages = sum(v for k_, v in res.timings.items() if k_ != "total")
    assert stages <= res.timings["total"] + 1e-6
    assert res.scale_source == "fixed" and res.scale == 1.0
    config = pipe.config
    res = pipe.process(image, K_CAM, outputs=Outputs(points=False, colored=False))
    assert res.points is None and res.colored is None and "cloud" not in res.timings
    assert pipe.config is config  # the call chose its outputs; the configuration is unchanged
    res = pipe.process(image, K_CAM, outputs=Outputs(points=False, colored=True))
    assert res.points is None and res.colored is not None
    off, _ = make({"colored": {"enabled": False}})
    assert off.process(image, K_CAM).colored is None  # colored.enabled false: never computed


def test_ray_cache_reused(image):
    pipe, _ = make({"output_resolution": "network"})
    pipe.process(image, K_CAM)
    rays = pipe._rays.get(net_k(), NET_H, NET_W)
    pipe.process(image, K_CAM)
    assert pipe._rays.get(net_k(), NET_H, NET_W) is rays


def test_bad_inputs_and_config(image):
    pipe, _ = make()
    with pytest.raises(ValueError, match="uint8 RGB"):
        pipe.process(image.astype(np.float32), K_CAM)
    with pytest.raises(ValueError, match="focal"):
        pipe.process(image, np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="output_resolution"):
        from_dict(PipelineConfig, {"output_resolution": "full"})
    with pytest.raises(ConfigError, match="min_range"):
        from_dict(PipelineConfig, {"min_range": 50.0, "max_range": 10.0})
    with pytest.raises(ConfigError, match="decimation"):
        from_dict(PipelineConfig, {"points": {"decimation": 0}})
    with pytest.raises(ConfigError, match="colored.min_range"):
        from_dict(PipelineConfig, {"colored": {"min_range": 90.0}})
    with pytest.raises(ConfigError, match="scale"):
        from_dict(PipelineConfig, {"scale": {"factor": -1.0}})
    cfg = from_dict(PipelineConfig, {"scale": {"method": "fixed", "factor": 5.4}})
    assert cfg.scale == ScaleConfig(method="fixed", factor=5.4)


def test_color_map_against_opencv():
    from oe_depth_ros.colormap import colorize_depth

    depth = np.array([[0.0, 10.0, 40.0, 80.0, 200.0, np.nan]], dtype=np.float32)
    out = colorize_depth(depth, 0.0, 80.0)
    idx = np.array([[255, 223, 128, 0, 0, 0]], dtype=np.uint8)  # round((80 - d) * 255 / 80)
    want = cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)[..., ::-1]
    np.testing.assert_array_equal(out[0, :5], want[0, :5])
    np.testing.assert_array_equal(out[0, 5], [0, 0, 0])


def test_disparity_to_depth_resizes_then_inverts():
    """Bilinear resize of the disparity by hand at pixel centers, then scale / disparity."""
    disp = np.array([[0.5, 1.0], [2.0, 0.0]], np.float32)
    out = disparity_to_depth(disp, (4, 4), scale=2.0)
    want = np.empty((4, 4))
    for v in range(4):
        for u in range(4):
            y = min(max((v + 0.5) / 2 - 0.5, 0.0), 1.0)
            x = min(max((u + 0.5) / 2 - 0.5, 0.0), 1.0)
            top = disp[0, 0] * (1 - x) + disp[0, 1] * x
            bottom = disp[1, 0] * (1 - x) + disp[1, 1] * x
            d = top * (1 - y) + bottom * y
            want[v, u] = 2.0 / d if d > 0 else np.nan
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    assert np.isnan(out[3, 3]) and np.isfinite(out[0, 0])
    same = disparity_to_depth(disp)
    np.testing.assert_array_equal(same, [[2.0, 1.0], [0.5, np.nan]])
    assert disp[1, 1] == 0.0  # the input is not modified


def test_config_from_the_node_parameter_names():
    cfg = PipelineConfig.from_params({"points.organized": True, "colored.min_range": 1.0,
                                      "scale.method": "camera_height", "max_range": 50,
                                      "camera_info.sync": "approximate", "backend": "auto"})
    assert cfg.points.organized and cfg.colored.min_range == 1.0 and cfg.max_range == 50.0
    assert cfg.scale.method == "camera_height"
    with pytest.raises(ConfigError, match="unknown parameter 'points.organised'"):
        PipelineConfig.from_params({"points.organised": True})


def test_color_map_per_pixel_with_an_invalid_color():
    from oe_depth_ros.colormap import colorize_depth, turbo_lut

    rng = np.random.default_rng(3)
    depth = rng.uniform(-10, 120, (7, 9)).astype(np.float32)
    depth[0, :4] = [np.nan, np.inf, -np.inf, 30.0]
    out = colorize_depth(depth, 5.0, 60.0, invalid_color=(9, 8, 7))
    lut = turbo_lut()
    for v in range(7):
        for u in range(9):
            d = float(depth[v, u])
            if not np.isfinite(d):
                want = [9, 8, 7]
            else:
                want = lut[int(min(max((60.0 - d) * 255.0 / 55.0 + 0.5, 0), 255))]
            np.testing.assert_array_equal(out[v, u], want, err_msg=f"pixel {v}, {u}")


def test_empty_and_decimated_clouds():
    from oe_depth_ros.pointcloud import RayCache, depth_to_cloud

    rays = RayCache().get(K_CAM, 4, 6)
    depth = np.full((4, 6), np.nan, np.float32)
    rgb = np.zeros((4, 6, 3), np.uint8)
    assert depth_to_cloud(depth, rays, rgb).shape == (0,)
    depth[1, 2], rgb[1, 2] = 3.0, (1, 2, 3)
    (point,) = depth_to_cloud(depth, rays, rgb)
    assert point["z"] == 3.0 and point["rgb"].view(np.uint32) == 0x010203
    assert point["x"] == pytest.approx((2 - K_CAM[0, 2]) / K_CAM[0, 0] * 3.0, rel=1e-6)
    organized = depth_to_cloud(depth, rays, None, decimation=3, organized=True)
    assert organized.shape == (2, 2) and organized.dtype.names == ("x", "y", "z")
    assert np.isnan(organized["z"]).all()  # row 1 and column 2 are not kept


def test_result_pointcloud2_is_dense_exactly_when_every_point_is_finite(image):
    types = MessageTypes.rclpy()
    header = make_header(0, "cam", types)
    pipe, _ = make({"output_resolution": "network"}, scale=FixedScale(1.0))
    res = pipe.process(image, K_CAM)
    msg = res.pointcloud2(header, types)
    assert msg.is_dense and msg.width == len(res.points) and msg.height == 1
    assert bytes(msg.data) == res.points.tobytes()
    organized, _ = make({"output_resolution": "network", "points": {"organized": True}},
                        scale=FixedScale(1.0))
    res = organized.process(image, K_CAM)
    msg = res.pointcloud2(header, types)
    assert not msg.is_dense and np.isnan(res.points["z"]).any()
    assert (msg.height, msg.width) == res.points.shape
    with pytest.raises(ValueError, match="no points"):
        pipe.process(image, K_CAM, outputs=Outputs(points=False)).pointcloud2(header, types)


def test_prepare_then_finish_is_process_and_device_preprocessing_is_left_to_predict(image):
    """The split the node pipelines: the host input comes from prepare, not from finish."""
    from oe_depth_ros.imageops import to_network_input

    pipeline, backend = make()
    whole = pipeline.process(image, K_CAM)
    prepared = pipeline.prepare(image, K_CAM)
    np.testing.assert_array_equal(prepared.network_input, to_network_input(image, (NET_H, NET_W)))
    assert set(prepared.timings) == {"preprocess"}
    split = pipeline.finish(prepared)
    np.testing.assert_array_equal(split.depth, whole.depth)
    assert len(backend.batches) == 2  # one inference per frame, the prepared input
    np.testing.assert_array_equal(backend.batches[1], prepared.network_input)

    calls = []
    backend.host_preprocess = False  # as the TensorRT backend: predict resizes on its device
    backend.predict = lambda rgb, timings=None: calls.append(rgb) or backend.disparity.copy()
    on_device = pipeline.prepare(image, K_CAM)
    assert on_device.network_input is None and on_device.timings == {}
    np.testing.assert_array_equal(pipeline.finish(on_device).depth, whole.depth)
    assert len(calls) == 1 and calls[0] is image


VELOCITY = DepthUnits("velocity", 1.0)


def test_auto_publishes_a_metric_models_depth_unchanged(image):
    """scale.method auto (the default): a metric model's metres go out as they are."""
    reference = make(scale=FixedScale(1.0))[0].process(image, K_CAM)
    for relative_method in ("none", "fixed", "camera_height"):
        pipe, _ = make({"scale": {"method": "auto", "relative_method": relative_method,
                                  "factor": 3.0}}, units=VELOCITY)
        res = pipe.process(image, K_CAM)
        np.testing.assert_array_equal(res.depth, reference.depth)
        assert (res.scale, res.scale_source) == (1.0, "model:velocity")
    stereo = make({"scale": {"method": "auto"}}, units=DepthUnits("stereo", 5.4))[0]
    res = stereo.process(image, K_CAM)
    assert (res.scale, res.scale_source) == (5.4, "model:stereo")
    times_5_4 = make(scale=FixedScale(5.4))[0].process(image, K_CAM)
    np.testing.assert_array_equal(res.depth, times_5_4.depth)
    assert not np.array_equal(res.depth, reference.depth, equal_nan=True)


def test_auto_scales_a_relative_model_with_the_configured_estimator(image):
    """auto + relative_method X on a relative model is exactly scale.method X."""
    for method, extra in (("camera_height", {"window": 1}), ("fixed", {"factor": 2.5})):
        want = make({"scale": {"method": method, **extra}})[0].process(image, K_CAM)
        got = make({"scale": {"method": "auto", "relative_method": method, **extra}}
                   )[0].process(image, K_CAM)
        np.testing.assert_array_equal(got.depth, want.depth)
        assert (got.scale, got.scale_source) == (want.scale, want.scale_source)
        assert np.isnan(got.scale_check)
    assert want.scale == 2.5 and got.scale_source == "fixed"


def test_auto_refuses_a_relative_model_without_an_estimator():
    for units in (RELATIVE_UNKNOWN, DepthUnits("none", 0.0)):
        with pytest.raises(ScaleSetupError, match=r"relative.*scale.relative_method is none"):
            make({"scale": {"method": "auto"}}, units=units)
    with pytest.raises(ConfigError, match="relative_method"):
        from_dict(PipelineConfig, {"scale": {"relative_method": "guess"}})


def test_camera_height_checks_a_metric_models_scale(image):
    """The ground fit runs beside a metric model: its scale over the model's is reported.

    The plane is rendered with the camera 1.65 units above it: a model in metres agrees
    with a 1.65 m mount (ratio 1) and disagrees with a 1.1 m one (1.1 / 1.65).
    """
    disparity = plane_disparity(height_unscaled=1.65)
    for camera_height in (1.65, 1.1):
        pipe, _ = make({"scale": {"method": "auto", "relative_method": "camera_height",
                                  "camera_height": camera_height, "window": 1}},
                       disparity=disparity, units=VELOCITY)
        res = pipe.process(image, K_CAM)
        assert res.scale == 1.0
        assert res.scale_check == pytest.approx(camera_height / 1.65, rel=1e-3)
    # without a measuring estimator nothing is checked
    res = make({"scale": {"method": "auto", "relative_method": "fixed"}}, disparity=disparity,
               units=VELOCITY)[0].process(image, K_CAM)
    assert np.isnan(res.scale_check)
