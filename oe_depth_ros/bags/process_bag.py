"""Run the depth pipeline over a bag's images offline and write the results as a new bag.

Images and CameraInfos go through the node's own frame intake
(:class:`oe_depth_ros.intake.FrameIntake`): the same CameraInfo matching (latest or
approximate sync, REP 104 binning and ROI, fallback intrinsics) and the same checks, so
a bad message is skipped and counted exactly as the node would; the counts are logged
at the end and returned in the summary. Only what makes the whole bag unusable fails
the run (a missing topic, a damaged file, not one frame processed). Where a bag holds
an image and its CameraInfo at the same time stamp, the CameraInfo is taken first.

For every processed image the outputs are written with the image's header and bag
time under a namespace ``NS`` (default ``/oe_depth``, the node's default):

* ``NS/depth/image``: 32FC1 meters, NaN where invalid (REP 118);
* ``NS/depth/camera_info``: matching the depth image's size;
* ``NS/points``: PointCloud2 (x, y, z, rgb) in the camera's optical frame;
* ``NS/depth/colored``: rgb8 colorized depth.

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
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.bags.bagio import BagError, BagReader, BagWriter, atomic_bag
from oe_depth_ros.bags.kitti2bag import LEFT_COLOR_IMAGE_TOPIC, VELO_TOPIC
from oe_depth_ros.bags.lidar_eval import EvalSettings, LidarEvaluator
from oe_depth_ros.bags.tf import TF_STATIC_TOPIC, TransformTree, edge_from_transform_stamped
from oe_depth_ros.intake import (
    DEFAULT_MAX_PIXELS, AnyImageMessage, CameraInfoConfig, FrameIntake,
)
from oe_depth_ros.node_names import DEFAULT_NAMESPACE
from oe_depth_ros.messages import (
    CameraInfoMessage, MessageError, MessageTypes, PointCloud2Message, pointcloud2_to_numpy,
    stamp_to_ns,
)
from oe_depth_ros.metrics import METRIC_NAMES
from oe_depth_ros.node_params import COLORED_TOPIC, POINTS_TOPIC, TOPICS
from oe_depth_ros.outputs import output_messages
from oe_depth_ros.pipeline import Outputs
from oe_depth_ros.progress import bar_disabled

if TYPE_CHECKING:
    from oe_depth_ros.pipeline import DepthPipeline

__all__ = ["ProcessOptions", "ProcessSummary", "process_bag", "read_static_tree",
           "default_metrics_path"]

LOG = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
#: The node's published outputs (relative names), all written by default.
OUTPUT_TOPICS: tuple[str, ...] = tuple(t.name for t in TOPICS
                                       if t.direction == "pub" and not t.name.startswith("/"))


@dataclass(kw_only=True)
class ProcessOptions:
    """What to read, what to write, and how to evaluate."""

    #: An Image topic, or a CompressedImage one (image_transport's ``<base>/compressed``).
    image_topic: str = LEFT_COLOR_IMAGE_TOPIC
    #: None: the image topic's sibling ``camera_info`` (of the base topic when compressed).
    camera_info_topic: str | None = None
    #: How images are matched with CameraInfo (the node's ``camera_info.*`` parameters).
    camera_info: CameraInfoConfig = field(default_factory=CameraInfoConfig)
    namespace: str = "/" + DEFAULT_NAMESPACE
    #: Which of :data:`OUTPUT_TOPICS` to write.
    outputs: tuple[str, ...] = OUTPUT_TOPICS
    copy_input: bool = False
    #: None disables the LiDAR evaluation.
    lidar_topic: str | None = VELO_TOPIC
    #: None: the input bag's storage plugin and distro.
    storage: str | None = None
    distro: str | None = None
    compress: bool = False
    max_frames: int | None = None
    #: Larger images are refused and counted (the node's ``max_input_pixels``).
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    #: None: ``<OUT>_metrics.json`` next to the output bag.
    metrics_path: Path | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.outputs) - set(OUTPUT_TOPICS))
        if unknown or not self.outputs:
            raise ValueError(f"outputs {unknown or '(none)'}: choose from "
                             f"{', '.join(OUTPUT_TOPICS)}")

    def info_topic(self) -> str:
        """The CameraInfo topic read with the images."""
        if self.camera_info_topic:
            return self.camera_info_topic
        base = self.image_topic.removesuffix("/compressed")
        return base.rsplit("/", 1)[0] + "/camera_info"

    def output_topics(self) -> dict[str, str]:
        """Output name (``depth/image``, ...) -> topic under the namespace, for those written."""
        ns = "/" + self.namespace.strip("/") if self.namespace.strip("/") else ""
        return {name: f"{ns}/{name}" for name in self.outputs}


@dataclass(kw_only=True)
class ProcessSummary:
    """What :func:`process_bag` did."""

    out: Path
    frames: int
    #: Images received on the image topic.
    images: int
    #: Bad input by kind (``oe_depth_ros.intake.ERROR_KINDS``, plus ``lidar_invalid``).
    skipped: dict[str, int]
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


def _require_topic(topics: dict[str, str], topic: str, msgtypes: tuple[str, ...],
                   bag: Path) -> None:
    if topics.get(topic) in msgtypes:
        return
    if topic in topics:
        raise BagError(f"bag {bag}: topic {topic} has type {topics[topic]}, expected "
                       f"{' or '.join(msgtypes)}")
    listing = "; ".join(
        f"{msgtype} topics: "
        f"{', '.join(sorted(t for t, ty in topics.items() if ty == msgtype)) or 'none'}"
        for msgtype in msgtypes)
    raise BagError(f"bag {bag} has no topic {topic}; {listing}")


def _cloud_xyz(msg: PointCloud2Message) -> np.ndarray:
    cloud = pointcloud2_to_numpy(msg).reshape(-1)
    for axis in ("x", "y", "z"):
        if axis not in (cloud.dtype.names or ()):
            raise MessageError(f"PointCloud2 has no '{axis}' field")
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float64)


class _Run:
    """State of one pass over the input bag."""

    def __init__(self, dst: BagWriter, pipeline: "DepthPipeline", options: ProcessOptions,
                 evaluator: LidarEvaluator | None, tree: TransformTree) -> None:
        self.dst, self.pipeline, self.options = dst, pipeline, options
        self.evaluator, self.tree = evaluator, tree
        self.types = MessageTypes.rosbags(dst.typestore)
        self.topics = options.output_topics()
        self.outputs = Outputs(points=POINTS_TOPIC in self.topics,
                               colored=COLORED_TOPIC in self.topics)
        self.intake = FrameIntake(options.camera_info, camera_info_topic=options.info_topic(),
                                  max_pixels=options.max_pixels)
        #: An image held back until the next message: a CameraInfo with the same bag time
        #: is taken first (a bag's order within one time stamp is arbitrary).
        self.held: tuple[AnyImageMessage, int] | None = None
        self.frames = 0
        self.images = 0
        self.lidar_invalid = 0
        self.timings: dict[str, list[float]] = {}
        self.latest_cloud: tuple[str, np.ndarray] | None = None
        self.lidar_scale = pipeline.config.scale.wants_lidar

    def on_cloud(self, msg: PointCloud2Message, where: str) -> None:
        self.flush()  # the held image first: scans must follow the images they come after
        try:
            xyz = _cloud_xyz(msg)
            stamp = stamp_to_ns(msg.header.stamp)
        except MessageError as exc:
            if self.lidar_invalid == 0:
                LOG.warning("%s: LiDAR cloud skipped: %s (logged once; counted)", where, exc)
            self.lidar_invalid += 1
            return
        self.latest_cloud = (msg.header.frame_id, xyz)
        if self.evaluator is not None:
            self.evaluator.add_cloud(stamp, msg.header.frame_id, xyz)

    def _lidar_in_camera(self, camera_frame: str) -> np.ndarray | None:
        if not self.lidar_scale or self.latest_cloud is None:
            return None
        frame, xyz = self.latest_cloud
        try:
            t = self.tree.lookup(camera_frame, frame)
        except KeyError:
            return None
        return xyz @ t[:3, :3].T + t[:3, 3]

    def flush(self) -> None:
        """Process the held image, if any."""
        if self.held is not None:
            held, self.held = self.held, None
            self._process(*held)

    def on_info(self, msg: CameraInfoMessage, bag_time: int) -> None:
        if self.held is not None and self.held[1] != bag_time:
            self.flush()
        self.intake.add_camera_info(msg)
        self.flush()

    def on_image(self, msg: AnyImageMessage, bag_time: int) -> None:
        self.flush()
        self.images += 1
        self.held = (msg, bag_time)

    def _process(self, msg: AnyImageMessage, bag_time: int) -> None:
        frame = self.intake.take_image(msg)  # reports and counts what it skips
        if frame is None:
            return
        result = self.pipeline.process(frame.rgb, frame.k,
                                       self._lidar_in_camera(msg.header.frame_id), self.outputs)
        header = msg.header
        for name, out in output_messages(result, header, self.types, self.topics).items():
            self.dst.write(self.topics[name], bag_time, out)
        for stage, ms in result.timings.items():
            self.timings.setdefault(stage, []).append(ms)
        if self.evaluator is not None:
            self.evaluator.add_depth(self.frames, stamp_to_ns(header.stamp), header.frame_id,
                                     result.depth, result.K)
        self.frames += 1

    def skipped(self) -> dict[str, int]:
        """Bad input by kind."""
        out = dict(self.intake.counts)
        if self.lidar_invalid:
            out["lidar_invalid"] = self.lidar_invalid
        return out


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


def process_bag(in_bag: str | Path, out_bag: str | Path, pipeline: "DepthPipeline",
                options: ProcessOptions | None = None) -> ProcessSummary:
    """Run ``pipeline`` over ``in_bag``; bad messages are skipped and counted, as the node does.

    Writes the bag ``out_bag`` atomically and, with LiDAR, the metrics report.
    """
    options = options or ProcessOptions()
    start = time.perf_counter()
    with BagReader(in_bag) as src:
        topics = src.topics()
        _require_topic(topics, options.image_topic, (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE),
                       src.path)
        _require_topic(topics, options.info_topic(), (CAMERA_INFO_TYPE,), src.path)
        tree = read_static_tree(src)
        evaluate = _lidar_plan(src, options, tree)
        evaluator = LidarEvaluator(tree=tree, settings=options.evaluation) if evaluate else None
        read = _topics_to_read(src, options,
                               evaluate or pipeline.config.scale.wants_lidar)
        n_images = src.message_count(options.image_topic)
        if options.max_frames is not None:
            n_images = min(n_images, options.max_frames)
        storage = options.storage or src.info.storage
        distro = options.distro or src.info.distro
        with atomic_bag(out_bag, options.overwrite) as tmp, \
                BagWriter(tmp, storage, distro, options.compress) as dst:
            copies = ({c.id: dst.add_raw_topic(c) for c in src.connections}
                      if options.copy_input else {})
            run = _Run(dst, pipeline, options, evaluator, tree)
            with tqdm(total=n_images, unit="frame", desc=f"process-bag {src.path.name}",
                      disable=bar_disabled(options.progress)) as bar:
                for conn, bag_time, raw in src.messages(read):
                    if options.max_frames is not None and run.images >= options.max_frames \
                            and (run.held is None or conn.topic != options.info_topic()):
                        break
                    if conn.id in copies:
                        dst.write_raw(copies[conn.id], bag_time, raw)
                    if conn.topic == options.info_topic():
                        run.on_info(src.deserialize(raw, conn, bag_time), bag_time)
                    elif conn.topic == options.image_topic:
                        run.on_image(src.deserialize(raw, conn, bag_time), bag_time)
                        bar.update(1)
                    elif conn.topic == options.lidar_topic:
                        where = f"bag {src.path}, {conn.topic} at {bag_time} ns"
                        run.on_cloud(src.deserialize(raw, conn, bag_time), where)
                run.flush()
            skipped = run.skipped()
            if run.frames == 0:
                raise BagError(f"bag {src.path}: none of the {run.images} images on "
                               f"{options.image_topic} could be processed ({_counts(skipped)})")
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
    LOG.info("wrote %s: %d of %d frames in %.1f s (pipeline %.1f ms/frame)", out_bag,
             run.frames, run.images, seconds, timings.get("total", math.nan))
    if skipped:
        LOG.warning("bad input skipped or worked around: %s", _counts(skipped))
    return ProcessSummary(out=Path(out_bag), frames=run.frames, images=run.images,
                          skipped=skipped, seconds=seconds, message_counts=counts,
                          timings_ms=timings, evaluation=evaluation, metrics_path=metrics_path)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "no bad input"


def _finite(value: object) -> object:
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
