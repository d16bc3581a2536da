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
"""The node prepares the next frame while it infers the current one.

A backend double whose pre-processing and inference sleep (timing must be under the
test's control; everything else is the real node, rclpy and DDS between two contexts of
this process) records when each stage of each frame starts and ends. With frames
waiting, the assertions are about the order of those recorded times, never about wall
time bounds: the next frame's pre-processing starts before the current inference ends,
the worker does not wait a pre-processing between two inferences, and outputs keep the
order of their input headers.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from oe_depth_ros.inference.backends import DepthBackend  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

PREPARE_S, INFER_S = 0.05, 0.15
HEIGHT, WIDTH = 96, 320


class SleepingBackend(DepthBackend):
    """A DepthBackend whose host pre-processing and inference take a known time.

    The frame number is the image's (uniform) pixel value; it survives the resize and
    scaling, so ``infer`` knows which frame it runs. Stages are recorded as
    (stage, frame, start, end) in perf_counter seconds.
    """

    name = "sleeping"

    def __init__(self) -> None:
        self.input_size = (64, 192)
        self.min_depth, self.max_depth = 0.1, 100.0
        self.stages: list[tuple[str, int, float, float]] = []
        self._lock = threading.Lock()

    def _record(self, stage: str, frame: int, start: float) -> None:
        with self._lock:
            self.stages.append((stage, frame, start, time.perf_counter()))

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        time.sleep(PREPARE_S)
        batch = super().prepare(image_rgb)
        self._record("prepare", int(image_rgb[0, 0, 0]), start)
        return batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        time.sleep(INFER_S)
        self._record("infer", int(round(float(batch[0, 0, 0, 0]) * 255)), start)
        return np.full((1, 1, *self.input_size), 0.5, np.float32)

    def of(self, stage: str) -> dict[int, tuple[float, float]]:
        with self._lock:
            return {f: (t0, t1) for s, f, t0, t1 in self.stages if s == stage}


def frame(number: int) -> Image:
    msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3,
                data=bytes([number]) * (HEIGHT * WIDTH * 3))
    msg.header.stamp.sec = 100 + number
    msg.header.frame_id = "camera"
    return msg


def test_the_next_frame_is_prepared_while_the_current_one_is_inferred() -> None:
    from oe_depth_ros.node import DepthNode

    domain = 20 + (os.getpid() * 11 + 5) % 180  # this test's own DDS domain
    backend = SleepingBackend()
    node_ctx, probe_ctx = rclpy.Context(), rclpy.Context()
    rclpy.init(context=node_ctx, domain_id=domain)
    rclpy.init(context=probe_ctx, domain_id=domain)
    node = DepthNode(backend=backend, context=node_ctx, namespace="/pipe",
                     parameter_overrides=[Parameter("scale.relative_method", value="fixed")])
    node_exec = MultiThreadedExecutor(num_threads=4, context=node_ctx)
    node_exec.add_node(node)
    spinner = threading.Thread(target=node_exec.spin, daemon=True)
    spinner.start()
    probe = rclpy.create_node("pipelining_probe", context=probe_ctx)
    probe_exec = SingleThreadedExecutor(context=probe_ctx)
    probe_exec.add_node(probe)
    outputs: list[int] = []
    diagnostics: list[Any] = []
    probe.create_subscription(
        Image, "/pipe/depth/image", lambda m: outputs.append(m.header.stamp.sec),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    pub = probe.create_publisher(Image, "/pipe/image", 10)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            probe_exec.spin_once(timeout_sec=0.01)

    try:
        end = time.monotonic() + 30
        while pub.get_subscription_count() == 0 or node._pub_depth.get_subscription_count() == 0:
            assert time.monotonic() < end, "the node and the probe did not match"
            spin_for(0.05)
        for number in range(1, 81):  # 80 frames at 50 Hz: always one waiting
            pub.publish(frame(number))
            spin_for(0.02)
        spin_for(1.5)
    finally:
        node_exec.shutdown(timeout_sec=0.0)
        node.stop()
        spinner.join(5)
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=node_ctx)
        rclpy.shutdown(context=probe_ctx)

    prepared, inferred = backend.of("prepare"), backend.of("infer")
    order = sorted(inferred, key=lambda f: inferred[f][0])
    assert len(order) >= 6, backend.stages
    # Outputs keep the order of their input headers (and each one was inferred).
    stamps = [sec - 100 for sec in outputs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
    assert set(stamps) <= set(order)
    steady = list(zip(order, order[1:]))[1:-1]  # frames kept arriving around these
    # Overlap: the next frame's pre-processing began before the current inference ended
    # (never, when one thread runs both; a stalled sender may leave a rare gap).
    overlapped = [prepared[b][0] < inferred[a][1] for a, b in steady]
    assert sum(overlapped) >= 0.8 * len(overlapped), (overlapped, backend.stages)
    # So the worker never waits for a pre-processing: its gaps are shorter than one.
    gaps = [inferred[b][0] - inferred[a][1] for a, b in steady]
    prepare_times = [t1 - t0 for t0, t1 in prepared.values()]
    assert statistics.median(gaps) < statistics.median(prepare_times), (gaps, prepare_times)
    # The end-to-end latency (arrival to publish) is still reported and includes both
    # stages, which sleep at least PREPARE_S and INFER_S.
    values = {kv.key: kv.value for msg in diagnostics for s in msg.status
              if s.name == "/pipe/oe_depth_node: depth" for kv in s.values}
    assert float(values["latency_p50_ms"]) >= (PREPARE_S + INFER_S) * 1e3, values
    assert "stage_p50_ms.preprocess" in values and "stage_p50_ms.inference" in values
