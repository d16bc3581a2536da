"""Metric scale for self-supervised monocular depth, which is known only up to a factor.

Three strategies share one interface, ``estimate(depth_unscaled, K, lidar_points_cam)
-> ScaleEstimate``:

* :class:`FixedScale`: a constant, e.g. the median ratio measured in an evaluation.
* :class:`CameraHeightScale`: the camera's mounting height over a flat ground. The
  lower part of the image is back-projected with the unscaled depth, a plane is fitted
  (RANSAC, then a total-least-squares refit on the inliers) and must face the camera's
  up axis (-y in the optical frame); scale = known height / fitted height. The
  per-frame values are smoothed by a median over a window, each fit has a confidence
  (inlier ratio) and low-confidence frames keep the last good scale.
* :class:`LidarMedianScale`: the median ratio of LiDAR depth to predicted depth at the
  pixels the LiDAR points project to (points given in the camera optical frame).

``method: auto`` asks the model first (:mod:`oe_depth_ros.units`): a metric model's own
unit is used as it is (:class:`ModelScale`), with ``relative_method``'s measuring
estimator, if any, run beside it as a live check of the two scales; a relative model
gets the ``relative_method`` estimator, and without one the pipeline refuses to start.

Depths are z along the optical axis; the optical frame has x right, y down, z forward.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from oe_depth_ros.geometry import check_intrinsics, pixel_rays
from oe_depth_ros.lidar_projection import pinhole_pixels
from oe_depth_ros.node_params import check_fields, field_default
from oe_depth_ros.units import RELATIVE_UNKNOWN, DepthUnits

LOG = logging.getLogger(__name__)


#: How the pipeline scales depth to meters: ``auto`` follows the model's units.
ScaleMethod = Literal["auto", "fixed", "camera_height", "lidar"]
#: The estimator ``auto`` applies to a relative model (``none``: refuse such a model).
RelativeMethod = Literal["none", "fixed", "camera_height", "lidar"]
#: The estimators that measure a scale, and so can check a metric model's own.
MEASURING_METHODS = ("camera_height", "lidar")


class ScaleSetupError(ValueError):
    """The scale settings do not fit the model (e.g. a relative model with no estimator)."""


@dataclass(frozen=True, kw_only=True)
class ScaleEstimate:
    """The factor to multiply unscaled depth by, where it came from and how sure it is.

    ``source`` is the strategy name, with ``:held`` when this frame's measurement was
    rejected and the last good scale is reused, or ``:initial`` when there was none yet.
    ``raw`` is this frame's own measurement before smoothing (NaN when there was none).
    ``check`` is, for a metric model with a measuring estimator beside it, the
    estimator's scale over the model's own (1 = they agree; NaN when nothing checks).
    """

    scale: float
    source: str
    confidence: float
    raw: float = math.nan
    check: float = math.nan


class ScaleEstimator(Protocol):
    """What the pipeline needs from a scale strategy."""

    def estimate(self, depth_unscaled: np.ndarray, k: np.ndarray,
                 lidar_points_cam: np.ndarray | None = None) -> ScaleEstimate:
        """Scale for one frame's unscaled depth [H, W] under 3x3 intrinsics ``k``."""

    def reset(self) -> None:
        """Forget the temporal history (e.g. when a bag loops)."""


@dataclass(kw_only=True)
class ScaleConfig:
    """Scale settings (the ``scale`` section of the pipeline configuration)."""

    method: ScaleMethod = field_default("scale.method")
    #: With ``method: auto``, the estimator for a relative model (and the check of a
    #: metric model's scale when it measures one: camera_height or lidar).
    relative_method: RelativeMethod = field_default("scale.relative_method")
    #: The fixed factor; for the other methods the scale used before the first good fit.
    factor: float = field_default("scale.factor")
    camera_height: float = field_default("scale.camera_height")
    #: Ground region as fractions of the image: rows [top, bottom), columns [left, right).
    ground_rows: tuple[float, float] = (0.6, 1.0)
    ground_cols: tuple[float, float] = (0.2, 0.8)
    max_tilt_deg: float = 15.0
    #: Inlier distance to the plane, relative to the fitted camera height.
    inlier_threshold: float = 0.1
    ransac_iterations: int = 100
    max_points: int = 2000
    min_confidence: float = field_default("scale.min_confidence")
    #: Temporal median window (frames); 1 = no smoothing.
    window: int = field_default("scale.window")
    lidar_min_points: int = 20
    seed: int = 0

    @property
    def wants_lidar(self) -> bool:
        """Whether the configured estimator reads LiDAR points."""
        return "lidar" in (self.method, self.relative_method if self.method == "auto" else "")

    def __post_init__(self) -> None:
        check_fields(self, "scale")  # the node parameters among the fields
        for name in ("ground_rows", "ground_cols"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"scale.{name} must satisfy 0 <= start < end <= 1, "
                                 f"got {(lo, hi)}")
        if not 0 < self.max_tilt_deg < 90:
            raise ValueError(f"scale.max_tilt_deg must be in (0, 90), got {self.max_tilt_deg}")
        if not 0 < self.inlier_threshold < 1:
            raise ValueError(f"scale.inlier_threshold must be in (0, 1), "
                             f"got {self.inlier_threshold}")
        for name in ("ransac_iterations", "lidar_min_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"scale.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_points < 3:
            raise ValueError(f"scale.max_points must be >= 3, got {self.max_points}")


class FixedScale:
    """A constant factor: ``scale.factor``, checked where the configuration was built."""

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)

    def estimate(self, depth_unscaled: np.ndarray, k: np.ndarray,
                 lidar_points_cam: np.ndarray | None = None) -> ScaleEstimate:
        return ScaleEstimate(scale=self.factor, source="fixed", confidence=1.0, raw=self.factor)

    def reset(self) -> None:
        """Nothing to forget."""


class _Smoothed:
    """Median over the last ``window`` accepted measurements, holding it on rejection."""

    def __init__(self, name: str, initial: float, window: int) -> None:
        self.name = name
        self.initial = float(initial)
        self._history: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def accept(self, raw: float, confidence: float) -> ScaleEstimate:
        self._history.append(raw)
        self._last = float(np.median(self._history))
        return ScaleEstimate(scale=self._last, source=self.name, confidence=confidence,
                             raw=raw)

    def hold(self, confidence: float, raw: float = math.nan) -> ScaleEstimate:
        if self._last is None:
            return ScaleEstimate(scale=self.initial, source=f"{self.name}:initial",
                                 confidence=confidence, raw=raw)
        return ScaleEstimate(scale=self._last, source=f"{self.name}:held", confidence=confidence,
                             raw=raw)

    def reset(self) -> None:
        self._history.clear()
        self._last = None


@dataclass(frozen=True, kw_only=True)
class PlaneFit:
    """A plane n . p = height with unit normal ``normal`` pointing down (+y side)."""

    normal: np.ndarray
    height: float
    inlier_ratio: float
    rms: float  # RMS inlier distance relative to ``height``
    tilt_deg: float  # angle between the normal and the optical frame's down axis


def fit_ground_plane(points: np.ndarray, rng: np.random.Generator, iterations: int = 100,
                     inlier_threshold: float = 0.1, max_tilt_deg: float = 15.0
                     ) -> PlaneFit | None:
    """Robustly fit the ground plane below the camera to [N, 3] optical-frame points.

    RANSAC over 3-point samples whose normal is within ``max_tilt_deg`` of +y and whose
    plane lies below the camera; inliers are within ``inlier_threshold`` x height of the
    plane (scale-free, so unscaled depth works). The best hypothesis is refined twice by
    total least squares on its inliers. Returns None when no hypothesis qualifies.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got shape {pts.shape}")
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if pts.shape[0] < 3:
        return None
    cos_tilt = math.cos(math.radians(max_tilt_deg))
    sample = pts[rng.integers(0, pts.shape[0], size=(iterations, 3))]
    normals = np.cross(sample[:, 1] - sample[:, 0], sample[:, 2] - sample[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals[ok] /= norms[ok, None]
    normals *= np.where(normals[:, 1] < 0, -1.0, 1.0)[:, None]
    heights = np.einsum("ij,ij->i", normals, sample[:, 0])
    ok &= (normals[:, 1] >= cos_tilt) & (heights > 0)
    if not np.any(ok):
        return None
    normals, heights = normals[ok], heights[ok]
    dist = np.abs(pts @ normals.T - heights)  # [N, hypotheses]
    counts = np.count_nonzero(dist < inlier_threshold * heights, axis=0)
    best = int(np.argmax(counts))
    normal, height = normals[best], float(heights[best])
    for _ in range(2):
        inliers = pts[np.abs(pts @ normal - height) < inlier_threshold * height]
        if inliers.shape[0] < 3:
            return None
        centroid = inliers.mean(axis=0)
        normal = np.linalg.svd(inliers - centroid, full_matrices=False)[2][-1]
        normal = normal if normal[1] >= 0 else -normal
        height = float(normal @ centroid)
        if height <= 0:
            return None
    resid = np.abs(pts @ normal - height)
    inlier = resid < inlier_threshold * height
    tilt = math.degrees(math.acos(min(1.0, float(normal[1]))))
    if tilt > max_tilt_deg:
        return None
    rms = float(np.sqrt(np.mean(resid[inlier] ** 2))) / height if np.any(inlier) else math.inf
    return PlaneFit(normal=normal, height=height, inlier_ratio=float(np.mean(inlier)), rms=rms,
                    tilt_deg=tilt)


class CameraHeightScale:
    """Scale from the camera's known height above a flat ground plane."""

    def __init__(self, camera_height_m: float, config: ScaleConfig | None = None) -> None:
        self.config = config or ScaleConfig(method="camera_height")
        if not camera_height_m > 0:
            raise ValueError(f"camera height must be positive, got {camera_height_m}")
        self.camera_height = float(camera_height_m)
        self._smooth = _Smoothed("camera_height", self.config.factor, self.config.window)
        self._rng = np.random.default_rng(self.config.seed)
        self._rays_key: tuple[bytes, int, int] | None = None
        self._rays: np.ndarray | None = None
        self.last_fit: PlaneFit | None = None

    def _region_rays(self, k: np.ndarray, height: int, width: int) -> np.ndarray:
        """Rays of a subsampled grid in the ground region, cached per (K, size)."""
        key = (np.ascontiguousarray(k, np.float64).tobytes(), height, width)
        if key != self._rays_key:
            c = self.config
            r0, r1 = int(c.ground_rows[0] * height), int(c.ground_rows[1] * height)
            c0, c1 = int(c.ground_cols[0] * width), int(c.ground_cols[1] * width)
            n = max(1, (r1 - r0) * (c1 - c0))
            stride = max(1, int(math.ceil(math.sqrt(n / c.max_points))))
            rays = pixel_rays(k, height, width)
            self._rays = rays[r0:r1:stride, c0:c1:stride]
            self._rows = (r0, r1, stride)
            self._cols = (c0, c1, stride)
            self._rays_key = key
        assert self._rays is not None
        return self._rays

    def estimate(self, depth_unscaled: np.ndarray, k: np.ndarray,
                 lidar_points_cam: np.ndarray | None = None) -> ScaleEstimate:
        k = check_intrinsics(k)
        if depth_unscaled.ndim != 2:
            raise ValueError(f"depth must be [H, W], got shape {depth_unscaled.shape}")
        rays = self._region_rays(k, *depth_unscaled.shape)
        r0, r1, s = self._rows
        c0, c1, _ = self._cols
        z = depth_unscaled[r0:r1:s, c0:c1:s]
        good = np.isfinite(z) & (z > 0)
        points = rays[good] * z[good, None]
        c = self.config
        fit = fit_ground_plane(points, self._rng, c.ransac_iterations, c.inlier_threshold,
                               c.max_tilt_deg)
        self.last_fit = fit
        if fit is None:
            LOG.debug("camera-height scale: no ground plane found")
            return self._smooth.hold(0.0)
        raw = self.camera_height / fit.height
        if fit.inlier_ratio < c.min_confidence:
            LOG.debug("camera-height scale: low confidence %.2f, holding", fit.inlier_ratio)
            return self._smooth.hold(fit.inlier_ratio, raw)
        return self._smooth.accept(raw, fit.inlier_ratio)

    def reset(self) -> None:
        self._smooth.reset()


class LidarMedianScale:
    """Median of LiDAR depth / predicted depth over the pixels LiDAR points project to."""

    def __init__(self, config: ScaleConfig | None = None, agreement: float = 0.1) -> None:
        self.config = config or ScaleConfig(method="lidar")
        self.agreement = agreement
        self._smooth = _Smoothed("lidar", self.config.factor, self.config.window)

    def estimate(self, depth_unscaled: np.ndarray, k: np.ndarray,
                 lidar_points_cam: np.ndarray | None = None) -> ScaleEstimate:
        """``lidar_points_cam``: [N, 3+] points in this camera's optical frame (meters).

        Confidence is the fraction of ratios within ``agreement`` (relative) of the median.
        """
        if lidar_points_cam is None:
            return self._smooth.hold(0.0)
        ratios = lidar_depth_ratios(depth_unscaled, k, lidar_points_cam)
        if ratios.size < self.config.lidar_min_points:
            return self._smooth.hold(0.0)
        raw = float(np.median(ratios))
        confidence = float(np.mean(np.abs(ratios / raw - 1.0) <= self.agreement))
        if confidence < self.config.min_confidence:
            return self._smooth.hold(confidence, raw)
        return self._smooth.accept(raw, confidence)

    def reset(self) -> None:
        self._smooth.reset()


def lidar_depth_ratios(depth: np.ndarray, k: np.ndarray, points_cam: np.ndarray) -> np.ndarray:
    """LiDAR z / predicted depth at the nearest pixel of each point in front of the camera."""
    u, v, z = pinhole_pixels(points_cam, check_intrinsics(k))
    col, row = np.rint(u), np.rint(v)
    h, w = depth.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    pred = depth[row[inside].astype(np.int64), col[inside].astype(np.int64)].astype(np.float64)
    good = np.isfinite(pred) & (pred > 0)
    return z[inside][good] / pred[good]


class ModelScale:
    """A metric model's own unit, optionally checked against a measuring estimator."""

    def __init__(self, units: DepthUnits, check: ScaleEstimator | None = None) -> None:
        if not units.metric:
            raise ScaleSetupError(f"ModelScale needs a metric model, got {units.describe()}")
        self.units = units
        self.check = check

    def estimate(self, depth_unscaled: np.ndarray, k: np.ndarray,
                 lidar_points_cam: np.ndarray | None = None) -> ScaleEstimate:
        factor = self.units.metres_per_unit
        ratio = math.nan
        if self.check is not None:
            measured = self.check.estimate(depth_unscaled, k, lidar_points_cam)
            if not measured.source.endswith(":initial"):
                ratio = measured.scale / factor
        return ScaleEstimate(scale=factor, source=f"model:{self.units.scale_source}",
                             confidence=1.0, raw=factor, check=ratio)

    def reset(self) -> None:
        if self.check is not None:
            self.check.reset()


def _estimator(method: str, config: ScaleConfig) -> ScaleEstimator:
    if method == "fixed":
        return FixedScale(config.factor)
    if method == "camera_height":
        return CameraHeightScale(config.camera_height, config)
    if method == "lidar":
        return LidarMedianScale(config)
    raise ValueError(f"unknown scale method {method!r}")


def make_scale_estimator(config: ScaleConfig,
                         units: DepthUnits = RELATIVE_UNKNOWN) -> ScaleEstimator:
    """The estimator that ``config.method`` names for a model of ``units``.

    ``auto``: :class:`ModelScale` for a metric model (checked by ``relative_method``
    when that measures a scale), the ``relative_method`` estimator for a relative one;
    raises :class:`ScaleSetupError` for a relative model when ``relative_method`` is
    ``none``.
    """
    if config.method != "auto":
        return _estimator(config.method, config)
    if units.metric:
        check = (_estimator(config.relative_method, config)
                 if config.relative_method in MEASURING_METHODS else None)
        return ModelScale(units, check)
    if config.relative_method == "none":
        raise ScaleSetupError(
            f"scale.method is auto but the model's depth is {units.describe()} and "
            "scale.relative_method is none: set scale.relative_method to camera_height, "
            "lidar or fixed (with scale.factor), or scale.method to one of them, or use a "
            "metric model (docs/training.md, \"Metric depth\")")
    return _estimator(config.relative_method, config)
