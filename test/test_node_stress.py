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
"""A long stream of malformed messages, interleaved with good frames, over real DDS (slow).

10,000 malformed Images and CameraInfos of 29 kinds go to a node process in batches of
50, each batch followed by a good frame. The node must answer every good frame, count
each bad message under the kind this file expects for it (a hand-written table), drop
nothing, keep its resident memory within 100 MB of what it used after warming up, and
end with exit code 0.
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from test_node import (  # noqa: E402,F401 - model is a fixture
    K_320, NodeProcess, Probe, count, diag_values, image_msg, info_msg, make_image, model,
    stamp_of,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(900)]

BAD_TOTAL = 10_000
BATCH = 50
Stamp = tuple[int, int]


def good_info(stamp: Stamp) -> CameraInfo:
    return info_msg(K_320, 320, 96, stamp)


def small(encoding: str, width: int = 8, height: int = 4, step: int | None = None,
          size: int | None = None, stamp: Stamp = (1, 0)) -> Image:
    """An Image with the given layout fields and ``size`` bytes of data (default step*h)."""
    step = width * 3 if step is None else step
    size = step * height if size is None else size
    msg = Image(width=width, height=height, encoding=encoding, step=step, data=bytes(size))
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


def info_with(stamp: Stamp, k: Any = None, p: Any = None, **fields: Any) -> CameraInfo:
    msg = good_info(stamp)
    if k is not None:
        msg.k = [float(v) for v in np.asarray(k, dtype=float).reshape(-1)]
        msg.p = [0.0] * 12
    if p is not None:
        msg.p = [float(v) for v in np.asarray(p, dtype=float).reshape(-1)]
    for name, value in fields.items():
        target = msg
        *path, last = name.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return msg


def bad_stamp_image(stamp: Stamp) -> Image:
    msg = small("rgb8")
    msg.header.stamp.nanosec = 1_500_000_000  # not a valid builtin_interfaces/Time
    return msg


def bad_stamp_info(stamp: Stamp) -> CameraInfo:
    msg = good_info(stamp)
    msg.header.stamp.nanosec = 1_500_000_000
    return msg


K_NAN = K_320 * np.nan
K_INF = np.where(K_320 == K_320[0, 0], np.inf, K_320)
K_NEG = K_320 * [[-1, 1, 1], [1, 1, 1], [1, 1, 1]]
K_FY0 = K_320 * [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
K_ROW = K_320 + [[0, 0, 0], [0, 0, 0], [0.5, 0, 0]]
P_NAN = np.hstack([np.where(K_320 == K_320[0, 2], np.nan, K_320), np.zeros((3, 1))])

#: Malformed message kind -> (the error counter it must raise, builder from a stamp).
MALFORMED: dict[str, tuple[str, Callable[[Stamp], Any]]] = {
    "unknown encoding": ("unsupported_encoding", lambda s: small("weird8", stamp=s)),
    "empty encoding": ("unsupported_encoding", lambda s: small("", stamp=s)),
    "upper-case encoding": ("unsupported_encoding", lambda s: small("RGB8", stamp=s)),
    "32FC1 depth": ("unsupported_encoding", lambda s: small("32FC1", step=32, stamp=s)),
    "16UC1 depth": ("unsupported_encoding", lambda s: small("16UC1", step=16, stamp=s)),
    "16SC1 data": ("unsupported_encoding", lambda s: small("16SC1", step=16, stamp=s)),
    "8UC3 data": ("unsupported_encoding", lambda s: small("8UC3", stamp=s)),
    "64FC1 data": ("unsupported_encoding", lambda s: small("64FC1", step=64, stamp=s)),
    "zero size": ("malformed_image", lambda s: small("rgb8", 0, 0, stamp=s)),
    "zero width": ("malformed_image", lambda s: small("rgb8", 0, 4, step=0, stamp=s)),
    "step too short": ("malformed_image", lambda s: small("rgb8", step=8 * 3 - 1, stamp=s)),
    "data too short": ("malformed_image", lambda s: small("rgb8", size=8 * 3 * 4 - 1, stamp=s)),
    "data too long": ("malformed_image", lambda s: small("rgb8", size=8 * 3 * 4 + 7, stamp=s)),
    "rgba8 with rgb step": ("malformed_image", lambda s: small("rgba8", stamp=s)),
    "mono16 with one byte per pixel": ("malformed_image",
                                       lambda s: small("mono16", step=8, stamp=s)),
    "huge size, no data": ("malformed_image",
                           lambda s: small("rgb8", 100_000, 100_000, size=16, stamp=s)),
    "invalid stamp (image)": ("malformed_image", bad_stamp_image),
    "other image size": ("camera_info_size_mismatch",
                         lambda s: image_msg(make_image(48, 160, 0), s, "rgb8")),
    "no CameraInfo near the stamp": ("camera_info_unsynced", lambda s: image_msg(
        make_image(96, 320, 0), (s[0] + 100_000, 0), "rgb8")),
    "all-zero K and P": ("camera_info_invalid",
                         lambda s: info_with(s, k=np.zeros((3, 3)))),
    "NaN in K": ("camera_info_invalid", lambda s: info_with(s, k=K_NAN)),
    "inf in K": ("camera_info_invalid", lambda s: info_with(s, k=K_INF)),
    "negative fx": ("camera_info_invalid", lambda s: info_with(s, k=K_NEG)),
    "zero fy": ("camera_info_invalid", lambda s: info_with(s, k=K_FY0)),
    "not a pinhole matrix": ("camera_info_invalid", lambda s: info_with(s, k=K_ROW)),
    "NaN in P": ("camera_info_invalid", lambda s: info_with(s, p=P_NAN)),
    "ROI beyond the sensor": ("camera_info_invalid", lambda s: info_with(
        s, roi__x_offset=300, roi__y_offset=0, roi__width=100, roi__height=50)),
    "binning beyond the image": ("camera_info_invalid",
                                 lambda s: info_with(s, binning_x=1000, binning_y=1000)),
    "invalid stamp (CameraInfo)": ("camera_info_invalid", bad_stamp_info),
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def test_ten_thousand_malformed_messages(model: Path, tmp_path: Path) -> None:  # noqa: F811
    assert len(MALFORMED) >= 25
    node = NodeProcess(tmp_path / "stress.log", "-r", "__ns:=/stress",
                       "-p", f"model_path:={model}", "-p", "backend:=onnxruntime",
                       "-p", "threads:=1",
                       "-p", "qos_overrides./stress/image.subscription.reliability:=reliable",
                       "-p", "qos_overrides./stress/image.subscription.depth:=100",
                       "-p", "qos_overrides./stress/camera_info.subscription.reliability:=reliable",
                       "-p", "qos_overrides./stress/camera_info.subscription.depth:=100",
                       "-p", "camera_info.sync:=approximate")
    probe = Probe()
    try:
        probe.subscribe("/stress/depth/image", Image)
        probe.subscribe("/diagnostics", DiagnosticArray)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        pub_image = probe.node.create_publisher(Image, "/stress/image", qos)
        pub_info = probe.node.create_publisher(CameraInfo, "/stress/camera_info", qos)
        assert probe.spin_until(lambda: pub_image.get_subscription_count() > 0
                                and pub_info.get_subscription_count() > 0, 60), node.log()
        good = make_image(96, 320, seed=12)
        kinds = list(MALFORMED)
        sent: Counter[str] = Counter()
        images_sent = 0

        def good_frame(t: float) -> None:
            nonlocal images_sent
            stamp = stamp_of(t)
            pub_info.publish(good_info(stamp))
            probe.spin_for(0.01)
            pub_image.publish(image_msg(good, stamp, "rgb8"))
            images_sent += 1
            assert probe.spin_until(lambda: probe.find("/stress/depth/image", stamp), 30), \
                f"good frame {stamp} not answered:\n{node.log()[-3000:]}"

        good_frame(5000.0)  # warm-up: the CameraInfo is cached, the model has run
        before = diag_values(probe, "stress", time.monotonic())
        rss_start = rss_mb(node.proc.pid)
        n = 0
        t = 5000.0
        while n < BAD_TOTAL:
            # Bad messages carry the previous good frame's stamp: its CameraInfo is cached
            # for certain (that frame was answered), whereas this batch's CameraInfo, on
            # another topic, may arrive after some of them.
            previous = stamp_of(t)
            t += 1.0
            stamp = stamp_of(t)
            pub_info.publish(good_info(stamp))
            for _ in range(BATCH):
                name = kinds[n % len(kinds)]
                kind, make = MALFORMED[name]
                msg = make(previous)
                if isinstance(msg, CameraInfo):
                    pub_info.publish(msg)
                else:
                    pub_image.publish(msg)
                    images_sent += 1
                sent[kind] += 1
                n += 1
            probe.spin_for(0.005)
            pub_image.publish(image_msg(good, stamp, "rgb8"))
            images_sent += 1
            assert probe.spin_until(lambda: probe.find("/stress/depth/image", stamp), 30), \
                f"good frame {stamp} not answered:\n{node.log()[-3000:]}"
        good_count = BAD_TOTAL // BATCH + 1

        def settled() -> dict[str, str] | None:
            values = diag_values(probe, "stress", time.monotonic())
            done = all(count(values, f"errors.{k}") - count(before, f"errors.{k}") == v
                       for k, v in sent.items())
            return values if done else None

        after = probe.spin_until(settled, 30) or diag_values(probe, "stress", time.monotonic())
        rss_end = rss_mb(node.proc.pid)
        for kind, expected in sent.items():
            key = f"errors.{kind}"
            assert count(after, key) - count(before, key) == expected, (key, expected, after)
        assert count(after, "frames_received") == images_sent
        assert count(after, "frames_processed") == good_count
        assert count(after, "frames_dropped") == 0
        assert node.proc.poll() is None
        assert rss_end - rss_start < 100.0, (rss_start, rss_end)
        print(f"\n{n} malformed messages of {len(kinds)} kinds, {good_count} good frames; "
              f"RSS {rss_start:.0f} -> {rss_end:.0f} MB")
    finally:
        probe.close()
        rc = node.stop(signal.SIGINT, timeout=15)
    assert rc == 0, node.log()[-3000:]
