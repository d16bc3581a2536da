"""Frame intake: REP 104 camera models, refused encodings, and one treatment live and offline.

The unit tests feed real rclpy messages to :class:`oe_depth_ros.intake.FrameIntake` and
check K against values worked out by hand. The last test sends one sequence of good and
bad messages to the node in its own process over real DDS, and writes the same
messages (the same CDR bytes) into a real rosbag2 file for ``process_bag``; both must
answer the same frames with the same intrinsics and depth, and count the same problems.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from oe_depth_ros.intake import (
    ERROR_KINDS, CameraInfoConfig, FrameIntake, camera_info_config, fallback_intrinsics,
)

rclpy = pytest.importorskip("rclpy")

from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
K_FULL = np.array([[420.0, 0.0, 319.5], [0.0, 410.0, 95.5], [0.0, 0.0, 1.0]])  # 640x192 sensor


def image_msg(height: int, width: int, stamp_ns: int, encoding: str = "rgb8",
              seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(encoding, 1)
    dtype = {"16UC1": np.uint16, "32FC1": np.float32}.get(encoding, np.uint8)
    if dtype == np.uint8:
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    else:
        pixels = rng.uniform(1, 50, (height, width)).astype(dtype)
    data = pixels.tobytes()
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                step=len(data) // height, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "cam"
    return msg


def info_msg(stamp_ns: int, k: np.ndarray = K_FULL, size: tuple[int, int] = (640, 192),
             binning: tuple[int, int] = (0, 0), roi: tuple[int, int, int, int] = (0, 0, 0, 0),
             use_p: bool = True) -> CameraInfo:
    msg = CameraInfo(width=size[0], height=size[1], distortion_model="plumb_bob")
    msg.k = [float(v) for v in k.reshape(-1)]
    if use_p:
        p = np.zeros((3, 4))
        p[:, :3] = k
        msg.p = [float(v) for v in p.reshape(-1)]
    msg.binning_x, msg.binning_y = binning
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "cam"
    return msg


def recorder() -> tuple[list[tuple[str, str]], Callable[[str, str], None]]:
    seen: list[tuple[str, str]] = []
    return seen, lambda kind, message: seen.append((kind, message))


# REP 104 by hand for the 640x192 sensor: fx' = fx / bx, cx' = (cx - x_offset) / bx.
@pytest.mark.parametrize("binning, roi, image_size, fx, fy, cx, cy", [
    ((1, 1), (0, 0, 0, 0), (640, 192), 420.0, 410.0, 319.5, 95.5),
    ((2, 2), (0, 0, 0, 0), (320, 96), 210.0, 205.0, 159.75, 47.75),
    ((4, 4), (0, 0, 0, 0), (160, 48), 105.0, 102.5, 79.875, 23.875),
    ((0, 0), (100, 50, 320, 96), (320, 96), 420.0, 410.0, 219.5, 45.5),
    ((2, 2), (100, 50, 320, 96), (160, 48), 210.0, 205.0, 109.75, 22.75),
    ((4, 2), (64, 0, 512, 192), (128, 96), 105.0, 205.0, 63.875, 47.75),
])
@pytest.mark.parametrize("use_p", [True, False])
def test_binning_and_roi_map_the_calibration_onto_the_image(binning, roi, image_size, fx, fy,
                                                            cx, cy, use_p):
    seen, report = recorder()
    intake = FrameIntake(CameraInfoConfig(use_fallback=False), report)
    assert intake.add_camera_info(info_msg(0, binning=binning, roi=roi, use_p=use_p))
    frame = intake.take_image(image_msg(image_size[1], image_size[0], 1))
    assert frame is not None and frame.intrinsics == "camera_info" and not seen
    np.testing.assert_allclose(frame.k, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-12)
    # The full-resolution image is not what this CameraInfo describes (unless unbinned).
    if image_size != (640, 192):
        assert intake.take_image(image_msg(192, 640, 2)) is None
        assert [k for k, _ in seen] == ["camera_info_size_mismatch"]
        assert f"{image_size[0]}x{image_size[1]} image" in seen[0][1]


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC1", "yuv422"])
def test_depth_and_unknown_encodings_are_refused_and_counted(encoding):
    seen, report = recorder()
    intake = FrameIntake(report=report)
    msg = image_msg(4, 6, 0, "16UC1" if encoding == "yuv422" else encoding)
    msg.encoding = encoding
    assert intake.take_image(msg) is None
    assert intake.counts == {"unsupported_encoding": 1}
    assert encoding in seen[0][1]
    assert intake.take_image(image_msg(4, 6, 0, "mono8")) is not None  # the next good one


def test_invalid_camera_info_keeps_the_last_valid_one():
    intake = FrameIntake(CameraInfoConfig(use_fallback=False))
    assert intake.take_image(image_msg(192, 640, 0)) is None
    assert intake.counts == {"no_camera_info": 1}
    assert intake.add_camera_info(info_msg(0))
    bad = [info_msg(1, k=np.zeros((3, 3)), use_p=False),
           info_msg(2, binning=(2, 2), roi=(600, 0, 100, 192)),  # ROI beyond the sensor
           info_msg(3, k=K_FULL * np.nan)]
    assert not any(intake.add_camera_info(m) for m in bad)
    frame = intake.take_image(image_msg(192, 640, 4))
    np.testing.assert_array_equal(frame.k, K_FULL)
    assert intake.counts == {"no_camera_info": 1, "camera_info_invalid": 3}
    assert set(intake.counts) <= set(ERROR_KINDS)


def test_fallback_and_approximate_sync():
    seen, report = recorder()
    intake = FrameIntake(camera_info_config({"camera_info.sync": "approximate",
                                             "camera_info.slop": 0.02, "max_range": 3.0}),
                         report)
    frame = intake.take_image(image_msg(96, 320, 0))
    assert frame.intrinsics == "fallback"
    np.testing.assert_allclose(frame.k, [[0.58 * 320, 0, 160], [0, 1.92 * 96, 48], [0, 0, 1]])
    np.testing.assert_array_equal(fallback_intrinsics([0.58, 1.92, 0.5, 0.5], 320, 96),
                                  frame.k)
    k_a, k_b = K_FULL.copy(), K_FULL * [[1.1], [1.1], [1]]
    intake.add_camera_info(info_msg(1_000_000_000, k=k_a))
    intake.add_camera_info(info_msg(1_100_000_000, k=k_b))
    np.testing.assert_array_equal(intake.take_image(image_msg(192, 640, 1_010_000_000)).k, k_a)
    np.testing.assert_array_equal(intake.take_image(image_msg(192, 640, 1_095_000_000)).k, k_b)
    assert intake.take_image(image_msg(192, 640, 1_050_000_000)) is None
    assert [k for k, _ in seen] == ["no_camera_info", "camera_info_unsynced"]
    with pytest.raises(ValueError, match="sync"):
        CameraInfoConfig(sync="nearest")  # type: ignore[arg-type]


# ------------------------------------------------------- live and offline, same input

NET_H, NET_W = 64, 192
DOMAIN = 20 + (os.getpid() * 11 + 5) % 180


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-built ONNX network: disparity = 0.05 + 0.5 * mean of the color channels."""
    import onnx
    from onnx import TensorProto, helper

    from oe_depth_ros.inference.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo

    nodes = [helper.make_node("ReduceMean", [INPUT_NAME], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "half"], ["s"]),
             helper.make_node("Add", ["s", "offset"], [OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, NET_H, NET_W])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 1, NET_H, NET_W])],
        [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
         helper.make_tensor("offset", TensorProto.FLOAT, [], [0.05])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    info = ModelInfo(model_name="tiny", input_height=NET_H, input_width=NET_W, min_depth=0.1,
                     max_depth=100.0, config_hash="0" * 64, oe_depth_ros_version="test")
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def sequence() -> list[tuple[str, Any, str | None]]:
    """(topic, message, expected outcome) in order; outcome: 'frame', an error kind, None."""
    t = iter(range(10**9, 10**9 + 100 * 10**8, 10**8))
    k_320 = K_FULL * [[0.5], [0.5], [1]]
    k_320[2, 2] = 1.0
    return [
        ("image", image_msg(96, 320, next(t), "rgb8", 1), "frame"),  # fallback intrinsics
        ("camera_info", info_msg(next(t), k_320, (320, 96)), None),
        ("image", image_msg(96, 320, next(t), "bgr8", 2), "frame"),
        ("image", image_msg(96, 320, next(t), "16UC1", 3), "unsupported_encoding"),
        ("image", _short_step(image_msg(96, 320, next(t), "rgb8", 4)), "malformed_image"),
        ("camera_info", info_msg(next(t), np.zeros((3, 3)), (320, 96), use_p=False),
         "camera_info_invalid"),
        ("image", image_msg(96, 320, next(t), "mono8", 5), "frame"),  # the last valid info
        ("camera_info", info_msg(next(t), binning=(2, 2)), None),  # 640x192 binned 2x2
        ("image", image_msg(96, 320, next(t), "rgb8", 6), "frame"),
        ("camera_info", info_msg(next(t), roi=(100, 50, 320, 96)), None),
        ("image", image_msg(96, 320, next(t), "rgb8", 7), "frame"),
        ("camera_info", info_msg(next(t), binning=(4, 4), roi=(0, 0, 640, 192)), None),
        ("image", image_msg(96, 320, next(t), "rgb8", 8), "camera_info_size_mismatch"),
        ("image", image_msg(48, 160, next(t), "32FC1", 9), "unsupported_encoding"),
        ("image", image_msg(48, 160, next(t), "rgb8", 10), "frame"),
    ]


def _short_step(msg: Image) -> Image:
    msg.step = msg.width * 3 - 3
    return msg


def expected_counts() -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for _, _, outcome in sequence():
        if outcome not in (None, "frame"):
            counts[outcome] += 1
    counts["no_camera_info"] += 1  # the first image, answered with the fallback
    return dict(counts)


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def run_bag(tiny_model: Path, tmp: Path) -> tuple[Any, dict[int, tuple[np.ndarray, np.ndarray]]]:
    from oe_depth_ros.bags.bagio import BagReader, BagWriter
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.build import pipeline_config
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.messages import camera_info_to_intrinsics, image_to_numpy
    from oe_depth_ros.pipeline import DepthPipeline

    types = {"image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo"}
    with BagWriter(tmp / "in", "mcap", "jazzy") as bag:
        conns = {name: bag.add_topic(f"/cam/{name}", t) for name, t in types.items()}
        for topic, msg, _ in sequence():
            bag.write_raw(conns[topic], stamp_of(msg), serialize_message(msg))
    pipeline = DepthPipeline(create_backend("onnxruntime", tiny_model, threads=1),
                             pipeline_config({"scale.relative_method": "fixed"}))
    summary = process_bag(tmp / "in", tmp / "out", pipeline, ProcessOptions(
        image_topic="/cam/image", lidar_topic=None, progress=False))
    out: dict[int, list[Any]] = defaultdict(list)
    with BagReader(tmp / "out") as reader:
        for conn, stamp, raw in reader.messages(["/oe_depth/depth/image",
                                                 "/oe_depth/depth/camera_info"]):
            out[stamp].append(reader.deserialize(raw, conn, stamp))
    results = {}
    for stamp, msgs in out.items():
        depth = next(image_to_numpy(m) for m in msgs if hasattr(m, "encoding"))
        info = next(m for m in msgs if hasattr(m, "binning_x"))
        results[stamp] = (depth, camera_info_to_intrinsics(info))
    return summary, results


class NodeUnderTest:
    """The node in its own process and this test's rclpy context publishing to it."""

    def __init__(self, model: Path, log: Path, extra: tuple[str, ...] = ()) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN), "PYTHONUNBUFFERED": "1",
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oe_depth_ros.node_main", "--ros-args", "-r", "__ns:=/cam",
             "-p", f"model_path:={model}", "-p", "backend:=onnxruntime", "-p", "threads:=1",
             "-p", "scale.relative_method:=fixed",  # the test model is relative
             "-p", "qos_overrides./cam/image.subscription.reliability:=reliable",
             "-p", "qos_overrides./cam/image.subscription.depth:=20",
             "-p", "qos_overrides./cam/image/compressed.subscription.reliability:=reliable",
             "-p", "qos_overrides./cam/image/compressed.subscription.depth:=20",
             "-p", "qos_overrides./cam/camera_info.subscription.reliability:=reliable",
             "-p", "qos_overrides./cam/camera_info.subscription.depth:=20",
             "-p", "diagnostics_period:=0.2", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("intake_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.got: dict[str, dict[int, Any]] = defaultdict(dict)
        self.diagnostics: list[Any] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        from diagnostic_msgs.msg import DiagnosticArray

        for topic, t in (("depth/image", Image), ("depth/camera_info", CameraInfo)):
            self.node.create_subscription(
                t, f"/cam/{topic}", lambda m, k=topic: self.got[k].__setitem__(stamp_of(m), m),
                qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append(m), qos)
        self.pubs = {name: self.node.create_publisher(t, f"/cam/{name}", qos) for name, t in
                     (("image", Image), ("camera_info", CameraInfo))}

    def spin_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def errors(self) -> dict[str, int]:
        for msg in reversed(self.diagnostics):
            for status in msg.status:
                if status.name == "/cam/oe_depth_node: depth":
                    return {kv.key[len("errors."):]: int(kv.value) for kv in status.values
                            if kv.key.startswith("errors.")}
        return {}

    def close(self) -> str:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        return self.log_path.read_text()


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_node_and_process_bag_treat_the_same_input_alike(tiny_model, tmp_path):
    summary, offline = run_bag(tiny_model, tmp_path)
    frames = [stamp_of(m) for _, m, outcome in sequence() if outcome == "frame"]
    assert summary.skipped == expected_counts()
    assert sorted(offline) == frames and summary.frames == len(frames)

    live = NodeUnderTest(tiny_model, tmp_path / "node.log")
    try:
        ready = live.spin_until(lambda: all(p.get_subscription_count() > 0
                                            for p in live.pubs.values()) and
                                live.node.count_publishers("/cam/depth/image") > 0, 60)
        assert ready, "the node did not come up"
        live.spin_until(lambda: False, 1.0)  # let the node see this test's subscriptions
        for topic, msg, outcome in sequence():
            live.pubs[topic].publish(msg)
            if outcome == "frame":
                assert live.spin_until(lambda: stamp_of(msg) in live.got["depth/camera_info"]
                                       and stamp_of(msg) in live.got["depth/image"], 20), \
                    f"no output for the frame at {stamp_of(msg)}"
            else:
                live.spin_until(lambda: False, 0.4)
        live.spin_until(lambda: live.errors() == expected_counts(), 5)
        assert live.errors() == expected_counts()
    finally:
        log = live.close()
    from oe_depth_ros.messages import camera_info_to_intrinsics, image_to_numpy

    assert sorted(live.got["depth/image"]) == frames, log
    for stamp in frames:
        depth_bag, k_bag = offline[stamp]
        k_live = camera_info_to_intrinsics(live.got["depth/camera_info"][stamp])
        np.testing.assert_array_equal(k_live, k_bag)
        depth_live = image_to_numpy(live.got["depth/image"][stamp])
        np.testing.assert_array_equal(np.isnan(depth_live), np.isnan(depth_bag))
        np.testing.assert_allclose(depth_live, depth_bag, rtol=1e-6)
    # The intrinsics are REP 104's, by hand: binned 2x2, then a 320x96 ROI at (100, 50).
    binned, roi = offline[frames[3]][1], offline[frames[4]][1]
    np.testing.assert_allclose(binned, [[210, 0, 159.75], [0, 205, 47.75], [0, 0, 1]])
    np.testing.assert_allclose(roi, [[420, 0, 219.5], [0, 410, 45.5], [0, 0, 1]])
    np.testing.assert_allclose(offline[frames[0]][1], fallback_intrinsics(
        [0.58, 1.92, 0.5, 0.5], 320, 96))
