"""The ROS-free depth pipeline: RGB image + intrinsics -> metric depth, cloud, colors.

The node, ``oe-depth process-bag`` and the demo all run :class:`DepthPipeline`, so
they produce the same numbers. Per frame:

1. the backend predicts the scaled disparity at network resolution (it resizes the
   image with the training interpolation, ``imageops.to_network_input``) and reports
   its own stage times;
2. at ``output_resolution: camera`` the *disparity* is resized bilinearly to the camera
   size and then inverted (:func:`disparity_to_depth`, as the KITTI evaluation protocol
   does, so the published figures describe these depths; interpolating inverse depth
   also keeps far surfaces from being smeared into huge values across edges); at
   ``network`` the intrinsics are scaled exactly to the network size
   (``geometry.resize_intrinsics``);
3. depth = scale * unscaled depth, the scale from the configured strategy
   (``oe_depth_ros.scale``); pixels outside [min_range, max_range] become NaN (REP 118);
4. the cloud is back-projected with cached per-pixel rays, and the depth is colorized;
   which of these a call computes is its ``outputs`` argument (the node asks only for
   what has subscribers), never shared configuration.

:class:`PipelineConfig`'s sections and names are the node's parameter names
(``points.organized``, ``colored.min_range``, ``scale.method``), so one ROS parameter
file drives the node and the bag tool (:meth:`PipelineConfig.from_params`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np

from oe_depth_ros.colormap import colorize_depth
from oe_depth_ros.config import ConfigError
from oe_depth_ros.geometry import check_intrinsics, resize_intrinsics
from oe_depth_ros.imageops import resize_depth, resize_rgb
from oe_depth_ros.node_params import (
    ParamError, ParamValue, build_config, check_fields, field_default, validate_all,
)
from oe_depth_ros.pointcloud import RayCache, depth_to_cloud
from oe_depth_ros.scale import ScaleConfig, ScaleEstimate, ScaleEstimator, make_scale_estimator

if TYPE_CHECKING:
    from oe_depth_ros.inference.backends import DepthBackend
    from oe_depth_ros.messages import Header, MessageTypes, RosMessage

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointsConfig:
    """The point cloud (node parameters ``points.*``)."""

    #: Keep every n-th row and column.
    decimation: int = field_default("points.decimation")
    #: Drop points farther than this (z, meters); 0 = the pipeline's max_range.
    max_range: float = field_default("points.max_range")
    #: Organized cloud ([H, W] with NaN holes) instead of a list of valid points.
    organized: bool = field_default("points.organized")
    #: Storage of the packed 0x00RRGGBB color field.
    rgb_type: Literal["float32", "uint32"] = field_default("points.rgb_type")

    def __post_init__(self) -> None:
        check_fields(self, "points")


@dataclass(frozen=True)
class ColoredConfig:
    """The colorized depth image (node parameters ``colored.*``)."""

    enabled: bool = field_default("colored.enabled")
    #: Depth (meters) shown in the nearest and in the farthest color.
    min_range: float = field_default("colored.min_range")
    max_range: float = field_default("colored.max_range")

    def __post_init__(self) -> None:
        check_fields(self, "colored")  # with colored.min_range < colored.max_range


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Pipeline settings, named as the node's parameters (YAML: ``config.from_dict``)."""

    #: "camera": depth at the input image size; "network": at the network's input size.
    output_resolution: Literal["camera", "network"] = field_default("output_resolution")
    #: Valid depth range in meters; outside it the depth is NaN.
    min_range: float = field_default("min_range")
    max_range: float = field_default("max_range")
    points: PointsConfig = field(default_factory=PointsConfig)
    colored: ColoredConfig = field(default_factory=ColoredConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        check_fields(self)  # with min_range < max_range

    @classmethod
    def from_params(cls, values: Mapping[str, ParamValue],
                    source: str = "parameters") -> "PipelineConfig":
        """Build from the node's dotted parameter names, each value checked once.

        Names outside the pipeline's sections (``backend``, ``camera_info.sync``) are
        ignored; a bad value raises ``ConfigError`` naming it, prefixed by ``source``.
        """
        sections = {f.name for f in fields(cls)}
        ours = {name: value for name, value in values.items()
                if name.split(".", 1)[0] in sections}
        try:
            return build_config(cls, validate_all(ours, offline=True))
        except ParamError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @property
    def cloud_max_range(self) -> float:
        """The z limit of the cloud in meters (``points.max_range``, else ``max_range``)."""
        return self.points.max_range or self.max_range


@dataclass(frozen=True)
class Outputs:
    """What one :meth:`DepthPipeline.process` call computes besides the depth."""

    points: bool = True
    colored: bool = True  # only when ``colored.enabled`` too


ALL_OUTPUTS = Outputs()


@dataclass
class PreparedFrame:
    """A frame after :meth:`DepthPipeline.prepare`, ready for inference.

    ``network_input`` is the backend's host-prepared input, or None when the backend
    prepares the image on its device; ``timings`` holds ``preprocess`` (ms) if any.
    """

    image_rgb: np.ndarray
    k: np.ndarray
    network_input: np.ndarray | None
    timings: dict[str, float]


@dataclass(kw_only=True)
class DepthResult:
    """One frame's outputs. ``depth`` is float32 meters with NaN where invalid."""

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
    #: A metric model's check: the measuring estimator's scale over the model's own
    #: (``scale.method: auto`` with ``scale.relative_method`` camera_height or lidar).
    scale_check: float = math.nan

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the depth image."""
        return (int(self.depth.shape[0]), int(self.depth.shape[1]))

    def camera_info(self, header: "Header", types: "MessageTypes") -> "RosMessage":
        """The CameraInfo matching the depth image (size and K)."""
        from oe_depth_ros.messages import make_camera_info

        return make_camera_info(self.K, self.size[1], self.size[0], header, types)

    def pointcloud2(self, header: "Header", types: "MessageTypes") -> "RosMessage":
        """The PointCloud2 of ``points`` (which must have been computed)."""
        from oe_depth_ros.messages import make_pointcloud2

        if self.points is None:
            raise ValueError("this result has no points (Outputs(points=False))")
        # An unorganized cloud of depth_to_cloud holds finite points only.
        dense = True if self.points.ndim == 1 else None
        return make_pointcloud2(self.points, header, types, is_dense=dense)


def disparity_to_depth(disp: np.ndarray, size: tuple[int, int] | None = None,
                       scale: float = 1.0) -> np.ndarray:
    """Resize a disparity map bilinearly to ``size`` (H, W), then invert: float32 depth.

    depth = scale / disparity; NaN where the disparity is not positive. Resizing the
    disparity rather than the depth is what the KITTI evaluation protocol does.
    """
    d = np.asarray(disp, dtype=np.float32)
    resized = resize_depth(d, size) if size is not None else d
    out = resized.copy() if resized is disp or resized is d else resized
    invalid = out <= 0  # a NaN disparity stays NaN through the division
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(np.float32(scale), out, out=out)
    np.copyto(out, np.float32(np.nan), where=invalid)
    return out


def _apply_range(depth: np.ndarray, scale: float, lo: float, hi: float) -> np.ndarray:
    """In place: depth *= scale; NaN outside [lo, hi]. Returns the validity mask."""
    if scale != 1.0:
        np.multiply(depth, np.float32(scale), out=depth)
    with np.errstate(invalid="ignore"):
        valid = depth >= lo
        valid &= depth <= hi
    np.copyto(depth, np.float32(np.nan), where=~valid)
    return valid


class DepthPipeline:
    """Image + intrinsics -> :class:`DepthResult` with a backend and a scale strategy."""

    def __init__(self, backend: "DepthBackend", config: PipelineConfig | None = None,
                 scale_estimator: ScaleEstimator | None = None) -> None:
        self.backend = backend
        self.config = config or PipelineConfig()
        self.scale_estimator = scale_estimator or make_scale_estimator(self.config.scale,
                                                                       backend.units)
        self._rays = RayCache()

    def prepare(self, image_rgb: np.ndarray, k: np.ndarray) -> PreparedFrame:
        """The part of a frame that needs no earlier frame: checks and host pre-processing.

        It uses the backend only (no configuration or state), so it may run on one thread
        for the next frame while another thread runs :meth:`finish` on the current one.
        """
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be uint8 RGB [H, W, 3], got {image_rgb.dtype} "
                             f"{image_rgb.shape}")
        k = check_intrinsics(k)
        timings: dict[str, float] = {}
        batch = None
        if self.backend.host_preprocess:
            t0 = time.perf_counter()
            batch = self.backend.prepare(image_rgb)
            timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        return PreparedFrame(image_rgb, k, batch, timings)

    def process(self, image_rgb: np.ndarray, k: np.ndarray,
                lidar_points: np.ndarray | None = None,
                outputs: Outputs = ALL_OUTPUTS) -> DepthResult:
        """Run one frame. ``lidar_points``: [N, 3+] in the camera optical frame, for LiDAR scale."""
        return self.finish(self.prepare(image_rgb, k), lidar_points, outputs)

    def finish(self, frame: PreparedFrame, lidar_points: np.ndarray | None = None,
               outputs: Outputs = ALL_OUTPUTS) -> DepthResult:
        """Inference and everything after it for a :meth:`prepare` result."""
        cfg = self.config
        image_rgb, k = frame.image_rgb, frame.k
        timings = dict(frame.timings)
        t_start = time.perf_counter()
        if frame.network_input is not None:
            raw = self.backend.predict_prepared(frame.network_input, timings)
        else:
            raw = self.backend.predict(image_rgb, timings)
        disp = np.asarray(raw, dtype=np.float32)
        if disp.ndim != 2:
            raise ValueError(f"backend returned disparity of shape {disp.shape}, expected [H, W]")

        t0 = time.perf_counter()
        cam_size = (int(image_rgb.shape[0]), int(image_rgb.shape[1]))
        if cfg.output_resolution == "camera":
            out_size, k_out = cam_size, k
        else:
            out_size = (int(disp.shape[0]), int(disp.shape[1]))
            k_out = resize_intrinsics(k, cam_size, out_size)
        depth = disparity_to_depth(disp, out_size)  # unscaled
        timings["postprocess"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        est: ScaleEstimate = self.scale_estimator.estimate(depth, k_out, lidar_points)
        timings["scale"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        valid = _apply_range(depth, est.scale, cfg.min_range, cfg.max_range)
        timings["postprocess"] += (time.perf_counter() - t0) * 1e3

        points = None
        if outputs.points:
            t0 = time.perf_counter()
            rgb_out = image_rgb if out_size == cam_size else resize_rgb(image_rgb, out_size)
            p = cfg.points
            points = depth_to_cloud(depth, self._rays.get(k_out, *out_size), rgb_out,
                                    p.decimation, cfg.cloud_max_range, p.organized, p.rgb_type)
            timings["cloud"] = (time.perf_counter() - t0) * 1e3

        colored = None
        if outputs.colored and cfg.colored.enabled:
            t0 = time.perf_counter()
            colored = colorize_depth(depth, cfg.colored.min_range, cfg.colored.max_range)
            timings["colored"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3 + timings.get("preprocess", 0.0)
        return DepthResult(depth=depth, valid=valid, K=k_out, points=points, colored=colored,
                           scale=est.scale, scale_source=est.source,
                           scale_confidence=est.confidence, disparity=disp, timings=timings,
                           scale_check=est.check)
