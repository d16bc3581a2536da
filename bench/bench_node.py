# Copyright 2025 oe_depth_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""oe_depth_node end to end over real DDS, and the cost of PointCloud2 from Python.

Part 1 starts the node (its own process, ONNX Runtime, diffnet_small exported with
random weights) for each configuration, publishes KITTI-sized frames one at a time and
measures the time from publishing an Image to receiving the PointCloud2 with its stamp
(and, where subscribed, the other outputs). The per-stage split is the node's own
median per stage from /diagnostics. Baseline in the same run: the offline
``DepthPipeline.process`` on the same frame in this process (no ROS). The inputs are
subscribed reliably in the timed configurations; the last one uses the default best
effort and shows how many 1.4 MB frames arrive over a localhost-only (UDP) transport.

Part 2 streams camera frames at a fixed rate (``--rate``, default 10 Hz) with the
default best-effort input, as a camera driver publishes them, once over the middleware's
default transport (Fast DDS without a profile: frames larger than its 0.5 MB shared
memory segment travel over UDP) and once with ``config/fastdds_shm.xml`` (what the
launch files set), each in a child process so that Fast DDS reads its profile afresh.
It reports frames published, received by the node, processed and dropped (the node's
own counters from /diagnostics), and the outputs that came back.

Part 3 measures, in this process, building a PointCloud2 from the pipeline's cloud
(``messages.make_pointcloud2``) and ``publisher.publish`` (rclpy's conversion to the C
message + serialization) with a subscriber in another context, for a full cloud and
decimated ones; ratios are against the full cloud. The node's per-step post-processing
against a naive implementation is ``bench/bench_postprocess.py``.

Part 4 is compressed input (image_transport's ``compressed`` plugin): in this process,
the frame intake's cost to turn one camera frame into RGB, for the raw Image (the
baseline) and for the same frame as jpeg (quality ``--jpeg-quality``, default 90) and
png (level 3) CompressedImage built as the plugin builds them; then the node over DDS
with ``image_transport`` raw and compressed (jpeg), one frame at a time, with its own
per-stage medians from /diagnostics. "Node's own work" is the sum of its stages except
the network's inference (decode or conversion, pre- and post-processing, scale, cloud,
color, publishing). ``--compressed-only`` runs Part 4 alone.

Usage: .venv/bin/python bench/bench_node.py [--frames 20] [--height 192 --width 640]
       [--camera 1242x375] [--stream-frames 30 --rate 10] [--json OUT]
       [--compressed-only] [--jpeg-quality 90]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO, write_json
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, format_size, parse_size
from oe_depth_ros.node_names import NODE_NAME

K_KITTI = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
DOMAIN = 30 + os.getpid() % 150
ALL_OUTPUTS = ("points", "depth/image", "depth/camera_info", "depth/colored")
#: (label, points.decimation, outputs the bench subscribes to, reliability of the inputs)
CONFIGS = (
    ("points, full cloud", 1, ("points",), "reliable"),
    ("points, decimation 4", 4, ("points",), "reliable"),
    ("all outputs, decimation 4", 4, ALL_OUTPUTS, "reliable"),
    ("points, dec. 4, best effort", 4, ("points",), "best_effort"),
)
#: How long to wait for a frame's outputs before counting it as lost.
FRAME_TIMEOUT_S = 5.0
#: Transports of the streaming comparison: (label, Fast DDS profile file or None).
TRANSPORTS = (("default (UDP for large frames)", None),
              ("shared memory (config/fastdds_shm.xml)", REPO / "config" / "fastdds_shm.xml"))
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "n": int(arr.size)}


def kitti_like_image(height: int, width: int) -> np.ndarray:
    """A textured RGB frame of the camera size (the content does not change the cost)."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:height, 0:width]
    base = np.stack([u * 255.0 / width, v * 255.0 / height, (u + v) % 255], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


class Probe:
    """This process's rclpy context: publishes frames, records arrival times."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("oe_depth_bench", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.arrivals: dict[tuple[str, tuple[int, int]], float] = {}
        self.diagnostics: list[Any] = []
        self.subs: list[Any] = []

    def subscribe(self, topic: str, msg_type: Any) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        def record(msg: Any, topic: str = topic) -> None:
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            self.arrivals.setdefault((topic, stamp), time.perf_counter())

        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.subs.append(self.node.create_subscription(msg_type, topic, record, qos))

    def spin_until(self, predicate: Any, timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            result = predicate()
            if result:
                return result
            self.executor.spin_once(timeout_sec=0.05)  # returns as soon as data arrives
        return predicate()

    def close(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs.clear()
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def start_node(model: Path, ns: str, decimation: int, log: Path,
               reliability: str = "reliable", extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "oe_depth_ros.node_main", "--ros-args", "-r", f"__ns:=/{ns}",
           "-p", f"model_path:={model}", "-p", "backend:=onnxruntime",
           "-p", f"points.decimation:={decimation}", "-p", "log_throttle:=0.0",
           "-p", f"qos_overrides./{ns}/image.subscription.reliability:={reliability}",
           "-p", f"qos_overrides./{ns}/image/compressed.subscription.reliability:={reliability}",
           "-p", f"qos_overrides./{ns}/camera_info.subscription.reliability:={reliability}",
           "-p", "scale.relative_method:=fixed",  # the benchmark's model is relative
           *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def node_values(diag_msgs: list[Any], ns: str) -> dict[str, str]:
    """The key/values of node ``ns``'s newest /diagnostics status ({} if none)."""
    name = f"/{ns}/{NODE_NAME}: depth"
    for msg in reversed(diag_msgs):
        for status in msg.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def stage_medians(diag_msgs: list[Any], ns: str) -> dict[str, float]:
    return {k.split(".", 1)[1]: float(v) for k, v in node_values(diag_msgs, ns).items()
            if k.startswith("stage_p50_ms.")}


def stream(model: Path, image: np.ndarray, frames: int, rate: float,
           workdir: Path) -> dict[str, Any]:
    """Publish ``frames`` frames at ``rate`` Hz, best effort; the node's counters after."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    ns = "stream"
    proc = start_node(model, ns, 4, workdir / f"{ns}.log", "best_effort")
    probe = Probe()
    try:
        probe.subscribe(f"/{ns}/depth/image", Image)
        diag: list[Any] = []
        probe.subs.append(probe.node.create_subscription(
            DiagnosticArray, "/diagnostics", diag.append, 10))
        pub_img = probe.node.create_publisher(Image, f"/{ns}/image", qos_profile_sensor_data)
        pub_info = probe.node.create_publisher(CameraInfo, f"/{ns}/camera_info",
                                               qos_profile_sensor_data)
        if not probe.spin_until(lambda: pub_img.get_subscription_count() > 0, 60):
            raise RuntimeError("node did not start:\n" + (workdir / f"{ns}.log").read_text())
        probe.spin_until(lambda: False, 1.0)  # discovery settles
        h, w = image.shape[:2]
        info = CameraInfo(width=w, height=h)
        info.k = [float(v) for v in K_KITTI.reshape(-1)]
        data = image.tobytes()
        start = time.perf_counter()
        for i in range(frames):
            stamp = (200 + i, 0)
            info.header.stamp.sec = stamp[0]
            msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=data)
            msg.header.stamp.sec = stamp[0]
            msg.header.frame_id = "camera_color_left"  # the node refuses an empty one
            pub_info.publish(info)
            pub_img.publish(msg)
            probe.spin_until(lambda: False, start + (i + 1) / rate - time.perf_counter())
        probe.spin_until(lambda: False, 3.0)  # the last frame, then a diagnostics period
        values = node_values(diag, ns)
        answered = sum(1 for (topic, _) in probe.arrivals if topic == f"/{ns}/depth/image")
    finally:
        probe.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    return {"published": frames, "received": int(values.get("frames_received", 0)),
            "processed": int(values.get("frames_processed", 0)),
            "dropped": int(values.get("frames_dropped", 0)), "answered": answered,
            "rate_hz": rate}


def measure_transports(model: Path, frames: int, rate: float, camera: tuple[int, int],
                       workdir: Path) -> list[dict[str, Any]]:
    """:func:`stream` once per transport, each in a child process with its own profile."""
    rows = []
    for label, profile in TRANSPORTS:
        env = dict(os.environ)
        env.pop(PROFILE_VARIABLE, None)
        if profile is not None:
            env[PROFILE_VARIABLE] = str(profile)
        cmd = [sys.executable, __file__, "--stream-child", str(model), "--stream-frames",
               str(frames), "--rate", str(rate), "--camera", format_size(camera)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"streaming over {label} failed:\n{out.stderr[-3000:]}")
        rows.append({"transport": label, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def node_latency(model: Path, ns: str, workdir: Path, msg: Any, size: tuple[int, int],
                 image_topic: str, frames: int, outputs: tuple[str, ...] = ("depth/image",),
                 decimation: int = 4, reliability: str = "reliable",
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Node ``ns`` answering ``msg`` (its stamp set per frame) one frame at a time.

    A CameraInfo of ``size`` (H, W) goes before each frame; 3 warm-up frames are not
    timed. Returns the frames answered on every one of ``outputs`` (``delivered``), each
    output's latencies in ms from publishing the image (``latencies``) and the node's
    stage medians (``stages``).
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    types = {"points": PointCloud2, "depth/image": Image, "depth/camera_info": CameraInfo,
             "depth/colored": Image}
    proc = start_node(model, ns, decimation, workdir / f"{ns}.log", reliability, extra)
    probe = Probe()
    try:
        for topic in outputs:
            probe.subscribe(f"/{ns}/{topic}", types[topic])
        diag: list[Any] = []
        probe.subs.append(probe.node.create_subscription(
            DiagnosticArray, "/diagnostics", diag.append, 10))
        pub_img = probe.node.create_publisher(type(msg), f"/{ns}/{image_topic}", 1)
        pub_info = probe.node.create_publisher(CameraInfo, f"/{ns}/camera_info", 1)
        if not probe.spin_until(lambda: pub_img.get_subscription_count() > 0
                                and pub_info.get_subscription_count() > 0, 60):
            raise RuntimeError(f"node {ns} did not start:\n"
                               + (workdir / f"{ns}.log").read_text())
        h, w = size
        info = CameraInfo(width=w, height=h)
        info.k = [float(v) for v in K_KITTI.reshape(-1)]
        info.header.frame_id = "camera_color_left"
        latencies: dict[str, list[float]] = {t: [] for t in outputs}
        delivered = 0
        for i in range(frames + 3):  # 3 warm-up frames
            stamp = (100 + i, 0)
            info.header.stamp.sec = msg.header.stamp.sec = stamp[0]
            pub_info.publish(info)
            probe.spin_until(lambda: False, 0.05)
            t0 = time.perf_counter()
            pub_img.publish(msg)
            keys = [(f"/{ns}/{t}", stamp) for t in outputs]
            if not probe.spin_until(lambda: all(k in probe.arrivals for k in keys),
                                    FRAME_TIMEOUT_S):
                continue  # the image (or an output) was lost on the way
            if i >= 3:
                delivered += 1
                for t, k in zip(outputs, keys):
                    latencies[t].append((probe.arrivals[k] - t0) * 1e3)
        probe.spin_until(lambda: False, 1.5)  # one more diagnostics period
        return {"delivered": delivered, "latencies": latencies,
                "stages": stage_medians(diag, ns)}
    finally:
        probe.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


def measure_end_to_end(model: Path, image: np.ndarray, frames: int, workdir: Path,
                       configs: list[tuple[str, int, tuple[str, ...], str]],
                       ) -> list[dict[str, Any]]:
    """:func:`node_latency` of raw images per (label, decimation, outputs, reliability)."""
    results = []
    for index, (label, decimation, outputs, reliability) in enumerate(configs):
        size = (image.shape[0], image.shape[1])
        run = node_latency(model, f"bench{index}", workdir, raw_message(image), size, "image",
                           frames, outputs, decimation, reliability)
        results.append({"label": label, "decimation": decimation, "outputs": list(outputs),
                        "input_reliability": reliability, "frames": frames,
                        "delivered": run["delivered"],
                        "latency_ms": {t: percentiles(v) for t, v in run["latencies"].items()
                                       if v},
                        "node_stage_p50_ms": run["stages"]})
    return results


def measure_offline(model: Path, image: np.ndarray, frames: int) -> dict[str, Any]:
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig

    pipeline = DepthPipeline(create_backend("onnxruntime", model),
                             PipelineConfig.from_params({"scale.relative_method": "fixed"}))
    for _ in range(3):
        pipeline.process(image, K_KITTI)
    totals, stages = [], {}
    for _ in range(frames):
        result = pipeline.process(image, K_KITTI)
        totals.append(result.timings["total"])
        for k, v in result.timings.items():
            stages.setdefault(k, []).append(v)
    return {"total_ms": percentiles(totals),
            "stage_p50_ms": {k: float(np.median(v)) for k, v in stages.items() if k != "total"}}


def measure_cloud_publish(model: Path, image: np.ndarray, reps: int) -> list[dict[str, Any]]:
    """make_pointcloud2 + publish for decimation 1, 2, 4, 8 of one frame's cloud."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.messages import MessageTypes, make_header, make_pointcloud2
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig

    backend = create_backend("onnxruntime", model)
    types = MessageTypes.rclpy()
    header = make_header(0, "camera_color_left", types)
    pub_ctx, sub_ctx = rclpy.Context(), rclpy.Context()
    rclpy.init(context=pub_ctx, domain_id=DOMAIN)
    rclpy.init(context=sub_ctx, domain_id=DOMAIN)
    pub_node = rclpy.create_node("cloud_pub", context=pub_ctx)
    sub_node = rclpy.create_node("cloud_sub", context=sub_ctx)
    received: list[int] = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    sub_node.create_subscription(PointCloud2, "/bench_cloud", lambda m: received.append(1), qos)
    pub = pub_node.create_publisher(PointCloud2, "/bench_cloud", qos)
    from rclpy.executors import SingleThreadedExecutor

    sub_exec = SingleThreadedExecutor(context=sub_ctx)
    sub_exec.add_node(sub_node)
    end = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < end:
        sub_exec.spin_once(timeout_sec=0.01)
    rows = []
    try:
        for decimation in (1, 2, 4, 8):
            config = PipelineConfig.from_params({"points.decimation": decimation,
                                                 "scale.relative_method": "fixed"})
            cloud = DepthPipeline(backend, config).process(image, K_KITTI).points
            make, publish = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                msg = make_pointcloud2(cloud, header, types)
                t1 = time.perf_counter()
                pub.publish(msg)
                t2 = time.perf_counter()
                make.append((t1 - t0) * 1e3)
                publish.append((t2 - t1) * 1e3)
                sub_exec.spin_once(timeout_sec=0.05)  # let the subscriber take it
            rows.append({"decimation": decimation, "points": int(cloud.size),
                         "bytes": int(cloud.nbytes), "make_ms": float(np.median(make)),
                         "publish_ms": float(np.median(publish)),
                         "total_ms": float(np.median(np.add(make, publish)))})
    finally:
        sub_exec.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
        rclpy.shutdown(context=pub_ctx)
        rclpy.shutdown(context=sub_ctx)
    full = rows[0]["total_ms"]
    for row in rows:
        row["ratio_vs_full"] = row["total_ms"] / full
    return rows


def plugin_message(image: np.ndarray, codec: str, quality: int) -> Any:
    """The rgb8 frame as a CompressedImage, as image_transport's compressed plugin builds it."""
    from sensor_msgs.msg import CompressedImage

    from oe_depth_ros.compressed import encode_like_plugin

    fmt, data = encode_like_plugin(image, "rgb8", codec, quality=quality)
    msg = CompressedImage(format=fmt, data=data)
    msg.header.frame_id = "camera_color_left"
    return msg


def raw_message(image: np.ndarray) -> Any:
    from sensor_msgs.msg import Image

    h, w = image.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=image.tobytes())
    msg.header.frame_id = "camera_color_left"
    return msg


def measure_decode(image: np.ndarray, quality: int, reps: int) -> list[dict[str, Any]]:
    """Frame intake conversion to RGB per message kind (median ms); ratios vs the raw Image."""
    from oe_depth_ros.compressed import header_size, parse_format
    from oe_depth_ros.intake import any_image_rgb_from_msg
    from oe_depth_ros.messages import data_bytes

    rows = []
    kinds = (("raw rgb8 Image", raw_message(image)),
             (f"jpeg q{quality}", plugin_message(image, "jpeg", quality)),
             ("png level 3", plugin_message(image, "png", quality)))
    for label, msg in kinds:
        times, header = [], []
        for _ in range(reps + 3):
            t0 = time.perf_counter()
            rgb = any_image_rgb_from_msg(msg)
            times.append((time.perf_counter() - t0) * 1e3)
            if hasattr(msg, "format"):
                t0 = time.perf_counter()
                header_size(data_bytes(msg.data, "data"), parse_format(msg.format).codec)
                header.append((time.perf_counter() - t0) * 1e3)
        error = np.abs(rgb.astype(np.int16) - image.astype(np.int16))
        rows.append({"input": label, "bytes": len(msg.data), "format": getattr(msg, "format", ""),
                     "to_rgb_ms": float(np.median(times[3:])),
                     "header_size_ms": float(np.median(header[3:])) if header else 0.0,
                     "mean_abs_error": float(error.mean()), "max_abs_error": int(error.max())})
    for row in rows:
        row["ratio_vs_raw"] = row["to_rgb_ms"] / rows[0]["to_rgb_ms"]
    return rows


def measure_transport_node(model: Path, image: np.ndarray, frames: int, quality: int,
                           workdir: Path) -> list[dict[str, Any]]:
    """The node with image_transport raw, then compressed (jpeg): latency and its stages."""
    rows = []
    for transport in ("raw", "compressed"):
        compressed = transport == "compressed"
        msg = plugin_message(image, "jpeg", quality) if compressed else raw_message(image)
        size = (image.shape[0], image.shape[1])
        run = node_latency(model, f"transport_{transport}", workdir, msg, size,
                           "image/compressed" if compressed else "image", frames,
                           extra=("-p", f"image_transport:={transport}"))
        latencies, stages = run["latencies"]["depth/image"], run["stages"]
        own = sum(v for k, v in stages.items() if k != "inference")
        rows.append({"image_transport": transport, "input_bytes": len(msg.data),
                     "frames": frames, "delivered": len(latencies),
                     "latency_ms": percentiles(latencies) if latencies else {},
                     "node_stage_p50_ms": stages, "node_own_ms": own})
    return rows


def print_compressed(report: dict[str, Any]) -> None:
    print(f"\nCompressed input: frame intake to RGB, {report['camera']} frame, median of "
          f"{report['decode_reps']} (this process)")
    print(f"{'input':<18}{'bytes':>10}{'to RGB ms':>11}{'header ms':>11}{'x raw':>8}"
          f"{'mean err':>10}{'max err':>9}")
    for row in report["decode"]:
        print(f"{row['input']:<18}{row['bytes']:>10}{row['to_rgb_ms']:>11.2f}"
              f"{row['header_size_ms']:>11.3f}{row['ratio_vs_raw']:>8.2f}"
              f"{row['mean_abs_error']:>10.2f}{row['max_abs_error']:>9}")
    rows = report["transport_node"]
    stages = sorted({k for r in rows for k in r["node_stage_p50_ms"]})
    print("\nNode per image_transport (points decimation 4, depth/image subscribed), "
          "median ms")
    print(f"{'stage':<22}" + "".join(f"{r['image_transport']:>14}" for r in rows))
    for stage in stages:
        print(f"{stage:<22}" + "".join(f"{r['node_stage_p50_ms'].get(stage, float('nan')):>14.2f}"
                                       for r in rows))
    print(f"{'own work (no infer.)':<22}" + "".join(f"{r['node_own_ms']:>14.2f}" for r in rows))
    print(f"{'latency p50':<22}" + "".join(
        f"{r['latency_ms'].get('p50', float('nan')):>14.2f}" for r in rows))
    print(f"{'delivered':<22}" + "".join(f"{r['delivered']:>11}/{r['frames']:<2}" for r in rows))


def print_tables(report: dict[str, Any]) -> None:
    offline = report["offline_pipeline"]["total_ms"]["p50"]
    print(f"\nEnd to end over DDS (camera {report['camera']}, network {report['network']}, "
          f"{report['frames']} frames; offline DepthPipeline p50 = {offline:.1f} ms)")
    print(f"{'configuration':<30}{'output':<20}{'delivered':>10}{'p50 ms':>9}{'p90 ms':>9}"
          f"{'p99 ms':>9}{'x offline':>11}")
    for res in report["end_to_end"]:
        got = f"{res['delivered']}/{res['frames']}"
        if not res["latency_ms"]:
            print(f"{res['label']:<30}{'-':<20}{got:>10}")
        for topic, st in res["latency_ms"].items():
            print(f"{res['label']:<30}{topic:<20}{got:>10}{st['p50']:>9.1f}{st['p90']:>9.1f}"
                  f"{st['p99']:>9.1f}{st['p50'] / offline:>11.2f}")
    stage_names = sorted({k for r in report["end_to_end"] for k in r["node_stage_p50_ms"]})
    print("\nNode stages, median ms (from /diagnostics) | offline pipeline")
    header = f"{'stage':<16}" + "".join(f"{r['label'][:27]:>29}" for r in report["end_to_end"])
    print(header + f"{'offline':>10}")
    for stage in stage_names:
        cells = "".join(f"{r['node_stage_p50_ms'].get(stage, float('nan')):>29.2f}"
                        for r in report["end_to_end"])
        off = report["offline_pipeline"]["stage_p50_ms"].get(stage, float("nan"))
        print(f"{stage:<16}{cells}{off:>10.2f}")
    print(f"\nStreaming {report['camera']} rgb8 at {report['transports'][0]['rate_hz']:g} Hz, "
          "best-effort input (node counters from /diagnostics)")
    print(f"{'transport':<42}{'published':>10}{'received':>10}{'processed':>10}"
          f"{'dropped':>9}{'answered':>10}{'x default':>11}")
    base = max(report["transports"][0]["received"], 1)
    for row in report["transports"]:
        print(f"{row['transport']:<42}{row['published']:>10}{row['received']:>10}"
              f"{row['processed']:>10}{row['dropped']:>9}{row['answered']:>10}"
              f"{row['received'] / base:>11.2f}")
    print("\nPointCloud2 from Python (make_pointcloud2 + rclpy publish, median ms)")
    print(f"{'decimation':>10}{'points':>10}{'MB':>8}{'make':>9}{'publish':>9}{'total':>9}"
          f"{'x full':>8}")
    for row in report["cloud_publish"]:
        print(f"{row['decimation']:>10}{row['points']:>10}{row['bytes'] / 1e6:>8.2f}"
              f"{row['make_ms']:>9.2f}{row['publish_ms']:>9.2f}{row['total_ms']:>9.2f}"
              f"{row['ratio_vs_full']:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per configuration")
    parser.add_argument("--height", type=int, default=DEFAULT_NETWORK_SIZE[0],
                        help="network input height")
    parser.add_argument("--width", type=int, default=DEFAULT_NETWORK_SIZE[1],
                        help="network input width")
    parser.add_argument("--camera", type=parse_size, default="1242x375", help="camera image WxH")
    parser.add_argument("--reps", type=int, default=15, help="repetitions of the cloud test")
    parser.add_argument("--configs", default="",
                        help="comma-separated indices of the end-to-end configurations "
                             f"to run (default: all {len(CONFIGS)})")
    parser.add_argument("--fastdds-profile", type=Path,
                        help="Fast DDS XML profile for the node and this process "
                             "(FASTRTPS_DEFAULT_PROFILES_FILE), e.g. config/fastdds_shm.xml")
    parser.add_argument("--stream-frames", type=int, default=30,
                        help="frames streamed per transport")
    parser.add_argument("--rate", type=float, default=10.0, help="streaming rate (Hz)")
    parser.add_argument("--stream-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--compressed-only", action="store_true",
                        help="run Part 4 (compressed input) only")
    parser.add_argument("--jpeg-quality", type=int, default=90,
                        help="jpeg quality of the compressed frames (Part 4)")
    args = parser.parse_args(argv)
    cam_h, cam_w = args.camera
    if args.stream_child:  # one transport, in a process of its own (see measure_transports)
        row = stream(args.stream_child, kitti_like_image(cam_h, cam_w), args.stream_frames,
                     args.rate, Path.cwd())
        print(json.dumps(row))
        return 0
    configs = [CONFIGS[int(i)] for i in args.configs.split(",") if i.strip()] or list(CONFIGS)
    if args.fastdds_profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(args.fastdds_profile.resolve())

    import torch

    from oe_depth_ros.inference.export import export_onnx

    torch.set_num_threads(2)
    image = kitti_like_image(cam_h, cam_w)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "diffnet_small.onnx"
        export_onnx("diffnet_small", model, args.height, args.width)
        report: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "loadavg_at_start": list(os.getloadavg())},
            "camera": f"{cam_w}x{cam_h}", "network": f"{args.width}x{args.height}",
            "model": "diffnet_small (random weights), ONNX Runtime CPU",
            "frames": args.frames,
            "offline_pipeline": measure_offline(model, image, args.frames),
            "fastdds_profile": str(args.fastdds_profile or ""),
        }
        if not args.compressed_only:
            report["end_to_end"] = measure_end_to_end(model, image, args.frames, work, configs)
            report["transports"] = measure_transports(model, args.stream_frames, args.rate,
                                                      args.camera, work)
            report["cloud_publish"] = measure_cloud_publish(model, image, args.reps)
        report["decode_reps"] = 50
        report["decode"] = measure_decode(image, args.jpeg_quality, report["decode_reps"])
        report["transport_node"] = measure_transport_node(model, image, args.frames,
                                                          args.jpeg_quality, work)
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    if not args.compressed_only:
        print_tables(report)
    print_compressed(report)
    print(f"\nload average (1, 5, 15 min) at start {report['machine']['loadavg_at_start']}, "
          f"at end {report['machine']['loadavg_at_end']} on {os.cpu_count()} CPUs")
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
