"""The ROS-free depth pipeline: RGB image + intrinsics -> metric depth, cloud, colours.

The node, ``oe-depth process-bag`` and the demo all run :class:`DepthPipeline`, so
they produce the same numbers. Per frame:

1. the backend predicts the scaled disparity at network resolution (it resizes the
   image with the training interpolation, ``imageops.to_network_input``);
2. at ``output_resolution: camera`` the *disparity* is resized bilinearly to the camera
   size (as the KITTI evaluation protocol does, so the published figures describe these
   depths; interpolating inverse depth also keeps far surfaces from being smeared into
   huge values across edges); at ``network`` the intrinsics are scaled exactly to the
   network size (``geometry.resize_intrinsics``);
3. depth = scale / disparity, the scale from the configured strategy (``oe_depth_ros.scale``);
   pixels outside [min_range, max_range] become NaN (REP 118);
4. the cloud is back-projected with cached per-pixel rays, and the depth is colourised.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from oe_depth_ros.colormap import colorize_depth
from oe_depth_ros.geometry import check_intrinsics, resize_intrinsics
from oe_depth_ros.imageops import resize_depth, resize_rgb, to_network_input
from oe_depth_ros.pointcloud import RayCache, RgbType, depth_to_cloud
from oe_depth_ros.scale import ScaleConfig, ScaleEstimate, ScaleEstimator, make_scale_estimator

LOG = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Pipeline settings (build from YAML with ``oe_depth_ros.config.from_dict``)."""

    #: "camera": depth at the input image size; "network": at the network's input size.
    output_resolution: Literal["camera", "network"] = "camera"
    #: Valid depth range in metres; outside it the depth is NaN.
    min_range: float = 0.1
    max_range: float = 80.0
    #: Point cloud: off, decimation (every n-th row/column), z limit (None = max_range),
    #: organised ([H, W] with NaN holes) or not, rgb stored as float32 or uint32 bits.
    cloud: bool = True
    cloud_decimation: int = 1
    cloud_max_range: float | None = None
    cloud_organised: bool = False
    cloud_rgb_type: Literal["float32", "uint32"] = "float32"
    #: Colourised depth image on a fixed scale [colour_min_range, colour_max_range] metres.
    colourise: bool = True
    colour_min_range: float = 0.0
    colour_max_range: float = 80.0
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.min_range < self.max_range:
            raise ValueError(f"need 0 <= min_range < max_range, got {self.min_range}, "
                             f"{self.max_range}")
        if self.cloud_decimation < 1:
            raise ValueError(f"cloud_decimation must be >= 1, got {self.cloud_decimation}")
        if self.cloud_max_range is not None and not self.cloud_max_range > 0:
            raise ValueError(f"cloud_max_range must be positive, got {self.cloud_max_range}")
        if not self.colour_max_range > self.colour_min_range:
            raise ValueError("colour_max_range must exceed colour_min_range")


@dataclass
class DepthResult:
    """One frame's outputs. ``depth`` is float32 metres with NaN where invalid."""

    depth: np.ndarray
    valid: np.ndarray
    K: np.ndarray
    points: np.ndarray | None
    colored: np.ndarray | None
    scale: float
    scale_source: str
    scale_confidence: float
    disparity: np.ndarray  # the backend's scaled disparity at network resolution
    timings: dict[str, float]  # milliseconds per stage, plus "total"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the depth image."""
        return (int(self.depth.shape[0]), int(self.depth.shape[1]))

    def camera_info(self, header: Any, types: Any) -> Any:
        """The CameraInfo matching the depth image (size and K)."""
        from oe_depth_ros.messages import make_camera_info

        return make_camera_info(self.K, self.size[1], self.size[0], header, types)


def _backend_splits_preprocessing(backend: Any) -> bool:
    """True when ``predict`` is the CPU default (resize + infer), so the stages can be timed."""
    try:
        from oe_depth_ros.inference.backends import DepthBackend
    except ImportError:
        return False
    return isinstance(backend, DepthBackend) and type(backend).predict is DepthBackend.predict


class DepthPipeline:
    """Image + intrinsics -> :class:`DepthResult` with a backend and a scale strategy.

    ``backend`` follows the contract of ``oe_depth_ros.inference.backends.DepthBackend``
    (``input_size`` and ``predict(image) -> scaled disparity [H, W]``).
    """

    def __init__(self, backend: Any, config: PipelineConfig | None = None,
                 scale_estimator: ScaleEstimator | None = None) -> None:
        self.backend = backend
        self.config = config or PipelineConfig()
        self.scale_estimator = scale_estimator or make_scale_estimator(self.config.scale)
        self._rays = RayCache()
        self._split = _backend_splits_preprocessing(backend)

    def _predict(self, image: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        t0 = time.perf_counter()
        if self._split:
            batch = to_network_input(image, tuple(self.backend.input_size))
            t1 = time.perf_counter()
            disp = self.backend.infer(batch)[0, 0]
            timings["preprocess"] = (t1 - t0) * 1e3
            timings["inference"] = (time.perf_counter() - t1) * 1e3
        else:
            disp = self.backend.predict(image)
            timings["preprocess"] = 0.0  # done inside the backend, counted as inference
            timings["inference"] = (time.perf_counter() - t0) * 1e3
        disp = np.asarray(disp, dtype=np.float32)
        if disp.ndim != 2:
            raise ValueError(f"backend returned disparity of shape {disp.shape}, expected [H, W]")
        return disp

    def process(self, image_rgb: np.ndarray, k: np.ndarray,
                lidar_points: np.ndarray | None = None) -> DepthResult:
        """Run one frame. ``lidar_points``: [N, 3+] in the camera optical frame, for LiDAR scale."""
        cfg = self.config
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be uint8 RGB [H, W, 3], got {image_rgb.dtype} "
                             f"{image_rgb.shape}")
        k = check_intrinsics(k)
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        disp = self._predict(image_rgb, timings)

        t0 = time.perf_counter()
        cam_size = (int(image_rgb.shape[0]), int(image_rgb.shape[1]))
        if cfg.output_resolution == "camera":
            out_size, k_out = cam_size, k
            disp_out = resize_depth(disp, cam_size)
        else:
            out_size = (int(disp.shape[0]), int(disp.shape[1]))
            k_out = resize_intrinsics(k, cam_size, out_size)
            disp_out = disp
        with np.errstate(divide="ignore", invalid="ignore"):
            depth_unscaled = np.where(disp_out > 0, 1.0 / disp_out, np.float32(np.nan))
        depth_unscaled = depth_unscaled.astype(np.float32, copy=False)
        timings["postprocess"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        est: ScaleEstimate = self.scale_estimator.estimate(depth_unscaled, k_out, lidar_points)
        timings["scale"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        depth = depth_unscaled * np.float32(est.scale)
        with np.errstate(invalid="ignore"):
            valid = (depth >= cfg.min_range) & (depth <= cfg.max_range)
        depth[~valid] = np.nan
        timings["postprocess"] += (time.perf_counter() - t0) * 1e3

        points = None
        if cfg.cloud:
            t0 = time.perf_counter()
            rgb_out = image_rgb if out_size == cam_size else resize_rgb(image_rgb, out_size)
            rays = self._rays.get(k_out, *out_size)
            max_range = cfg.cloud_max_range if cfg.cloud_max_range is not None else cfg.max_range
            rgb_type: RgbType = cfg.cloud_rgb_type
            points = depth_to_cloud(depth, rays, rgb_out, cfg.cloud_decimation, max_range,
                                    cfg.cloud_organised, rgb_type)
            timings["cloud"] = (time.perf_counter() - t0) * 1e3

        colored = None
        if cfg.colourise:
            t0 = time.perf_counter()
            colored = colorize_depth(depth, cfg.colour_min_range, cfg.colour_max_range)
            timings["colour"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return DepthResult(depth, valid, k_out, points, colored, est.scale, est.source,
                           est.confidence, disp, timings)
