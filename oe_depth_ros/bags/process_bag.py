"""Run the depth pipeline over a bag's images offline and write the results as a new bag.

For every image on ``image_topic`` (with the latest CameraInfo seen on
``camera_info_topic``) the pipeline's outputs are written with the image's header
and bag time under a namespace ``NS`` (default ``/oe_depth``, the node's default):

* ``NS/depth/image``: 32FC1 metres, NaN where invalid (REP 118);
* ``NS/depth/camera_info``: matching the depth image's size;
* ``NS/points``: PointCloud2 (x, y, z, rgb) in the camera's optical frame;
* ``NS/depth/colored``: rgb8 colourised depth.

With ``copy_input`` every input topic is copied unchanged. When the bag has a LiDAR
topic and ``/tf_static`` links the LiDAR to the camera, each depth map is evaluated
against the projected scan (``oe_depth_ros.bags.lidar_eval``), per frame and overall,
and a JSON report is written. Needs no ROS installation (``rosbags`` only).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.bags.bagio import BagError, BagReader, BagWriter, atomic_bag
from oe_depth_ros.bags.lidar_eval import EvalSettings, LidarEvaluator
from oe_depth_ros.bags.tf import TF_STATIC_TOPIC, TransformTree, edge_from_transform_stamped
from oe_depth_ros.messages import (
    MessageError,
    MessageTypes,
    camera_info_to_intrinsics,
    image_to_rgb,
    make_pointcloud2,
    numpy_to_image,
    pointcloud2_to_numpy,
    stamp_to_ns,
)
from oe_depth_ros.metrics import METRIC_NAMES

__all__ = ["ProcessOptions", "ProcessSummary", "process_bag", "read_static_tree",
           "default_metrics_path"]

LOG = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"


@dataclass
class ProcessOptions:
    """What to read, what to write, and how to evaluate."""

    image_topic: str = "/kitti/camera_color_left/image_raw"
    #: None: the image topic's sibling ``camera_info``.
    camera_info_topic: str | None = None
    namespace: str = "/oe_depth"
    copy_input: bool = False
    #: None disables the LiDAR evaluation.
    lidar_topic: str | None = "/kitti/velo/pointcloud"
    #: None: the input bag's storage plugin and distro.
    storage: str | None = None
    distro: str | None = None
    compress: bool = False
    max_frames: int | None = None
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    #: None: ``<OUT>_metrics.json`` next to the output bag.
    metrics_path: Path | None = None
    overwrite: bool = False
    progress: bool = True

    def info_topic(self) -> str:
        if self.camera_info_topic:
            return self.camera_info_topic
        return self.image_topic.rsplit("/", 1)[0] + "/camera_info"

    def output_topics(self) -> dict[str, str]:
        ns = "/" + self.namespace.strip("/") if self.namespace.strip("/") else ""
        return {"depth": f"{ns}/depth/image", "info": f"{ns}/depth/camera_info",
                "points": f"{ns}/points", "colored": f"{ns}/depth/colored"}


@dataclass
class ProcessSummary:
    """What :func:`process_bag` did."""

    out: Path
    frames: int
    skipped_no_info: int
    seconds: float
    message_counts: dict[str, int]
    timings_ms: dict[str, float]
    evaluation: dict[str, Any] | None
    metrics_path: Path | None


def default_metrics_path(out: str | Path) -> Path:
    """``<OUT>_metrics.json`` beside the output bag directory."""
    out = Path(out)
    return out.with_name(out.name + "_metrics.json")


def read_static_tree(bag: BagReader) -> TransformTree:
    """Every transform published on ``/tf_static`` in the bag, as a tree."""
    tree = TransformTree()
    if TF_STATIC_TOPIC not in bag.topics():
        return tree
    for conn, stamp, raw in bag.messages([TF_STATIC_TOPIC]):
        msg = bag.deserialize(raw, conn, stamp)
        for transform in msg.transforms:
            try:
                tree.add(edge_from_transform_stamped(transform))
            except ValueError as exc:
                raise BagError(f"bag {bag.path}: /tf_static at {stamp} ns: {exc}") from exc
    return tree


def _require_topic(topics: dict[str, str], topic: str, msgtype: str, bag: Path) -> None:
    if topics.get(topic) == msgtype:
        return
    if topic in topics:
        raise BagError(f"bag {bag}: topic {topic} has type {topics[topic]}, expected {msgtype}")
    candidates = sorted(t for t, ty in topics.items() if ty == msgtype) or ["none"]
    raise BagError(f"bag {bag} has no topic {topic}; {msgtype} topics: {', '.join(candidates)}")


def _cloud_xyz(msg: Any) -> np.ndarray:
    cloud = pointcloud2_to_numpy(msg).reshape(-1)
    for axis in ("x", "y", "z"):
        if axis not in (cloud.dtype.names or ()):
            raise MessageError(f"PointCloud2 has no '{axis}' field")
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float64)


class _Run:
    """State of one pass over the input bag."""

    def __init__(self, src: BagReader, dst: BagWriter, pipeline: Any, options: ProcessOptions,
                 evaluator: LidarEvaluator | None, tree: TransformTree) -> None:
        self.src, self.dst, self.pipeline, self.options = src, dst, pipeline, options
        self.evaluator, self.tree = evaluator, tree
        self.types = MessageTypes.rosbags(dst.typestore)
        self.topics = options.output_topics()
        self.info_msg: Any = None
        #: The latest image that came before any CameraInfo (same-stamp pairs may come
        #: in either order), processed when the first CameraInfo arrives.
        self.waiting: tuple[Any, int, str] | None = None
        self.frames = 0
        self.skipped = 0
        self.timings: dict[str, list[float]] = {}
        self.latest_cloud: tuple[str, np.ndarray] | None = None
        self.lidar_scale = _uses_lidar_scale(pipeline)

    def on_cloud(self, msg: Any, where: str) -> None:
        try:
            xyz = _cloud_xyz(msg)
        except MessageError as exc:
            raise BagError(f"{where}: {exc}") from exc
        self.latest_cloud = (msg.header.frame_id, xyz)
        if self.evaluator is not None:
            self.evaluator.add_cloud(stamp_to_ns(msg.header.stamp), msg.header.frame_id, xyz)

    def _lidar_in_camera(self, camera_frame: str) -> np.ndarray | None:
        if not self.lidar_scale or self.latest_cloud is None:
            return None
        frame, xyz = self.latest_cloud
        try:
            t = self.tree.lookup(camera_frame, frame)
        except KeyError:
            return None
        return xyz @ t[:3, :3].T + t[:3, 3]

    def on_info(self, msg: Any) -> None:
        self.info_msg = msg
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            self.on_image(*waiting)

    def on_image(self, msg: Any, bag_time: int, where: str) -> None:
        if self.info_msg is None:
            if self.waiting is not None:
                if self.skipped == 0:
                    LOG.warning("%s: images before any CameraInfo on %s; skipping them", where,
                                self.options.info_topic())
                self.skipped += 1
            self.waiting = (msg, bag_time, where)
            return
        try:
            rgb = image_to_rgb(msg)
            k = camera_info_to_intrinsics(self.info_msg)
        except MessageError as exc:
            raise BagError(f"{where}: {exc}") from exc
        info_size = (int(self.info_msg.height), int(self.info_msg.width))
        if info_size != (0, 0) and info_size != rgb.shape[:2]:
            raise BagError(f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]} but "
                           f"{self.options.info_topic()} describes {info_size[1]}x{info_size[0]}")
        result = self.pipeline.process(rgb, k, self._lidar_in_camera(msg.header.frame_id))
        header = msg.header
        self.dst.write(self.topics["depth"], bag_time,
                       numpy_to_image(result.depth, "32FC1", header, self.types))
        self.dst.write(self.topics["info"], bag_time, result.camera_info(header, self.types))
        if result.points is not None:
            self.dst.write(self.topics["points"], bag_time,
                           make_pointcloud2(result.points, header, self.types))
        if result.colored is not None:
            self.dst.write(self.topics["colored"], bag_time,
                           numpy_to_image(result.colored, "rgb8", header, self.types))
        for stage, ms in result.timings.items():
            self.timings.setdefault(stage, []).append(ms)
        if self.evaluator is not None:
            self.evaluator.add_depth(self.frames, stamp_to_ns(header.stamp), header.frame_id,
                                     result.depth, result.K)
        self.frames += 1


def _lidar_plan(src: BagReader, options: ProcessOptions, tree: TransformTree) -> bool:
    """Whether the bag supports the LiDAR evaluation; logs why not."""
    topic = options.lidar_topic
    if not topic:
        return False
    topics = src.topics()
    if topics.get(topic) != CLOUD_TYPE:
        LOG.info("no LiDAR evaluation: the bag has no PointCloud2 topic %s", topic)
        return False
    if not tree.frames:
        LOG.info("no LiDAR evaluation: the bag has no /tf_static to place %s in the camera", topic)
        return False
    return True


def _uses_lidar_scale(pipeline: Any) -> bool:
    """Whether the pipeline's scale strategy wants LiDAR points with each image."""
    return getattr(getattr(pipeline.config, "scale", None), "method", "") == "lidar"


def _topics_to_read(src: BagReader, options: ProcessOptions, lidar: bool) -> set[str]:
    """Image and CameraInfo, the LiDAR topic when used, and everything for ``copy_input``."""
    topics = src.topics()
    read = {options.image_topic, options.info_topic()}
    if lidar and options.lidar_topic and topics.get(options.lidar_topic) == CLOUD_TYPE:
        read.add(options.lidar_topic)
    if options.copy_input:
        clash = sorted(set(options.output_topics().values()) & set(topics))
        if clash:
            raise BagError(f"bag {src.path} already has {', '.join(clash)}; choose another "
                           "--namespace to copy the input next to the results")
        read |= set(topics)
    return read


def process_bag(in_bag: str | Path, out_bag: str | Path, pipeline: Any,
                options: ProcessOptions | None = None) -> ProcessSummary:
    """Run ``pipeline`` (a :class:`oe_depth_ros.pipeline.DepthPipeline`) over ``in_bag``.

    Writes the bag ``out_bag`` atomically and, with LiDAR, the metrics report.
    """
    options = options or ProcessOptions()
    start = time.perf_counter()
    with BagReader(in_bag) as src:
        topics = src.topics()
        _require_topic(topics, options.image_topic, IMAGE_TYPE, src.path)
        _require_topic(topics, options.info_topic(), CAMERA_INFO_TYPE, src.path)
        tree = read_static_tree(src)
        evaluate = _lidar_plan(src, options, tree)
        evaluator = LidarEvaluator(tree, options.evaluation) if evaluate else None
        read = _topics_to_read(src, options, evaluate or _uses_lidar_scale(pipeline))
        n_images = src.message_count(options.image_topic)
        if options.max_frames is not None:
            n_images = min(n_images, options.max_frames)
        storage = options.storage or src.info.storage
        distro = options.distro or src.info.distro
        with atomic_bag(out_bag, options.overwrite) as tmp, \
                BagWriter(tmp, storage, distro, options.compress) as dst:
            copies = ({c.id: dst.add_raw_topic(c) for c in src.connections}
                      if options.copy_input else {})
            run = _Run(src, dst, pipeline, options, evaluator, tree)
            with tqdm(total=n_images, unit="frame", desc=f"process-bag {src.path.name}",
                      disable=not options.progress) as bar:
                for conn, bag_time, raw in src.messages(read):
                    if options.max_frames is not None and run.frames >= options.max_frames:
                        break
                    if conn.id in copies:
                        dst.write_raw(copies[conn.id], bag_time, raw)
                    where = f"bag {src.path}, {conn.topic} at {bag_time} ns"
                    if conn.topic == options.info_topic():
                        run.on_info(src.deserialize(raw, conn, bag_time))
                    elif conn.topic == options.image_topic:
                        run.on_image(src.deserialize(raw, conn, bag_time), bag_time, where)
                        bar.update(1)
                    elif conn.topic == options.lidar_topic:
                        run.on_cloud(src.deserialize(raw, conn, bag_time), where)
            if run.frames == 0:
                lost = run.skipped + (run.waiting is not None)
                raise BagError(f"bag {src.path}: no image on {options.image_topic} could be "
                               f"processed ({lost} arrived before any CameraInfo)")
            counts = dict(dst.counts)
    evaluation = None
    metrics_path = None
    if evaluator is not None:
        evaluator.finish()
        evaluation = evaluator.summary()
        metrics_path = options.metrics_path or default_metrics_path(out_bag)
        report = {
            "input": str(in_bag), "output": str(out_bag),
            "image_topic": options.image_topic, "lidar_topic": options.lidar_topic,
            "settings": vars(options.evaluation),
            "projection": "pinhole with the depth image's K, pixel = round(u, v), depth = z "
                          "in the camera optical frame, nearest point per pixel",
            "overall": evaluation,
            "per_frame": sorted(evaluator.frames, key=lambda f: f["index"]),
        }
        write_text_atomic(metrics_path, json.dumps(_finite(report), indent=2) + "\n")
        _log_evaluation(evaluation, metrics_path)
    timings = {k: float(np.mean(v)) for k, v in run.timings.items()}
    seconds = time.perf_counter() - start
    LOG.info("wrote %s: %d frames in %.1f s (pipeline %.1f ms/frame)", out_bag, run.frames,
             seconds, timings.get("total", math.nan))
    return ProcessSummary(Path(out_bag), run.frames, run.skipped, seconds, counts, timings,
                          evaluation, metrics_path)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_evaluation(evaluation: dict[str, Any], path: Path) -> None:
    if not evaluation.get("frames_evaluated"):
        LOG.warning("LiDAR evaluation: no frame could be evaluated (%d skipped); see %s",
                    evaluation.get("frames_skipped", 0), path)
        return
    header = " ".join(f"{m:>9}" for m in METRIC_NAMES)
    LOG.info("LiDAR evaluation over %d frames (%d skipped), report %s",
             evaluation["frames_evaluated"], evaluation["frames_skipped"], path)
    LOG.info("%-14s %s", "", header)
    for key in ("median_scaled", "metric"):
        LOG.info("%-14s %s", key, " ".join(f"{evaluation[key][m]:9.4f}" for m in METRIC_NAMES))
    ratio = evaluation["median_ratio"]
    LOG.info("median scaling ratio %.4f (std/median %.4f)", ratio["median"],
             ratio["std_over_median"])
