"""Evaluate predicted depth maps against LiDAR scans projected into the camera.

Each depth map is paired with the LiDAR scan nearest in time (within a tolerance),
the scan is moved into the camera's optical frame with a static transform, projected
with the depth map's K (pixel centers at integer coordinates, as in CameraInfo;
the nearest point wins a pixel; depth = z along the optical axis) and compared with
``oe_depth_ros.metrics.evaluate_depth_map``: once with per-frame median scaling (the
paper's protocol for monocular models) and once as metric depth. Pixels where the
prediction is invalid (NaN) are left out, and the coverage reports how many were.

Pairing is streaming: depth maps wait until the first scan after them arrives, so
only a frame or two is held in memory whatever the bag's length.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oe_depth_ros.bags.tf import TransformTree
from oe_depth_ros.lidar_projection import project_to_depth
from oe_depth_ros.metrics import (EIGEN_MAX_DEPTH, EIGEN_MIN_DEPTH, METRIC_NAMES, CropName,
                                  evaluate_depth_map)

__all__ = ["project_to_depth", "LidarEvaluator", "EvalSettings"]

LOG = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """How frames are paired and evaluated."""

    max_dt_s: float = 0.05
    crop: CropName | None = "garg"
    min_depth: float = EIGEN_MIN_DEPTH
    max_depth: float = EIGEN_MAX_DEPTH


@dataclass(kw_only=True)
class _Pending:
    index: int
    stamp_ns: int
    frame_id: str
    depth: np.ndarray
    k: np.ndarray


@dataclass
class _Cloud:
    stamp_ns: int
    frame_id: str
    xyz: np.ndarray


@dataclass(kw_only=True)
class LidarEvaluator:
    """Pairs depth maps with scans and collects per-frame metrics (see module docs)."""

    tree: TransformTree
    settings: EvalSettings = field(default_factory=EvalSettings)
    frames: list[dict[str, Any]] = field(default_factory=list)
    _pending: list[_Pending] = field(default_factory=list)
    _last: _Cloud | None = None
    _warned: set[str] = field(default_factory=set)

    def add_depth(self, index: int, stamp_ns: int, frame_id: str, depth: np.ndarray,
                  k: np.ndarray) -> None:
        """Queue a depth map (meters, NaN invalid) of camera frame ``frame_id``."""
        item = _Pending(index=index, stamp_ns=int(stamp_ns), frame_id=frame_id, depth=depth,
                        k=np.asarray(k, dtype=np.float64))
        if self._last is not None and item.stamp_ns <= self._last.stamp_ns:
            self._evaluate(item, self._last)
        else:
            self._pending.append(item)

    def add_cloud(self, stamp_ns: int, frame_id: str, xyz: np.ndarray) -> None:
        """A LiDAR scan [N, 3] in ``frame_id``; settles the depth maps it follows."""
        cloud = _Cloud(int(stamp_ns), frame_id, np.asarray(xyz, dtype=np.float64))
        waiting = []
        for item in self._pending:
            if item.stamp_ns > cloud.stamp_ns:
                waiting.append(item)
                continue
            prev = self._last
            nearer = (prev if prev is not None and item.stamp_ns - prev.stamp_ns
                      < cloud.stamp_ns - item.stamp_ns else cloud)
            self._evaluate(item, nearer)
        self._pending = waiting
        self._last = cloud

    def finish(self) -> None:
        """Settle the depth maps that came after the last scan."""
        for item in self._pending:
            if self._last is not None:
                self._evaluate(item, self._last)
            else:
                self._skip(item, "no LiDAR scan in the bag")
        self._pending = []

    def _skip(self, item: _Pending, reason: str) -> None:
        self.frames.append({"index": item.index, "stamp_ns": item.stamp_ns, "skipped": reason})

    def _evaluate(self, item: _Pending, cloud: _Cloud) -> None:
        dt = abs(item.stamp_ns - cloud.stamp_ns) / 1e9
        if dt > self.settings.max_dt_s:
            self._skip(item, f"nearest LiDAR scan is {dt * 1e3:.1f} ms away "
                             f"(max {self.settings.max_dt_s * 1e3:.0f} ms)")
            return
        try:
            t_cam_lidar = self.tree.lookup(item.frame_id, cloud.frame_id)
        except KeyError as exc:
            reason = f"no static transform: {exc.args[0]}"
            if reason not in self._warned:
                LOG.warning("LiDAR evaluation: %s", reason)
                self._warned.add(reason)
            self._skip(item, reason)
            return
        pts = cloud.xyz @ t_cam_lidar[:3, :3].T + t_cam_lidar[:3, 3]
        gt = project_to_depth(pts, item.k, item.depth.shape)
        predicted = np.isfinite(item.depth)
        gt_points = int(np.count_nonzero(gt))
        covered = int(np.count_nonzero(gt[predicted]))
        gt[~predicted] = 0.0
        s = self.settings
        try:
            scaled, ratio = evaluate_depth_map(gt, item.depth, median_scaling=True, crop=s.crop,
                                               min_depth=s.min_depth, max_depth=s.max_depth)
            metric, _ = evaluate_depth_map(gt, item.depth, median_scaling=False, crop=s.crop,
                                           min_depth=s.min_depth, max_depth=s.max_depth)
        except ValueError as exc:
            self._skip(item, str(exc))
            return
        self.frames.append({
            "index": item.index, "stamp_ns": item.stamp_ns, "lidar_stamp_ns": cloud.stamp_ns,
            "dt_ms": dt * 1e3, "lidar_pixels": gt_points,
            "coverage": covered / gt_points if gt_points else 0.0,
            "median_ratio": ratio, "median_scaled": scaled, "metric": metric,
        })

    def summary(self) -> dict[str, Any]:
        """Means over evaluated frames (the paper averages per-image errors) and ratios."""
        done = [f for f in self.frames if "skipped" not in f]
        out: dict[str, Any] = {"frames_evaluated": len(done),
                               "frames_skipped": len(self.frames) - len(done)}
        if not done:
            return out
        for key in ("median_scaled", "metric"):
            out[key] = {m: float(np.mean([f[key][m] for f in done])) for m in METRIC_NAMES}
        ratios = np.array([f["median_ratio"] for f in done])
        med = float(np.median(ratios))
        out["median_ratio"] = {"median": med,
                               "std_over_median": float(np.std(ratios / med)) if med else math.nan}
        out["coverage"] = float(np.mean([f["coverage"] for f in done]))
        return out
