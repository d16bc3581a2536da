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
"""Frame mailbox and node statistics (ROS-free), checked against hand-worked figures."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from oe_depth_ros.diagnostics import ERROR, OK, WARN, FrameMailbox, NodeStats, percentile


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_mailbox_keeps_the_newest_and_counts_replaced_frames():
    box: FrameMailbox[int] = FrameMailbox()
    assert box.take() is None
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.take() == 3
    assert box.take() is None
    assert box.put(4) is False
    assert box.dropped == 2


def test_mailbox_under_concurrent_producers_loses_nothing_unaccounted():
    box: FrameMailbox[int] = FrameMailbox()
    taken: list[int] = []
    n_threads, per_thread = 4, 2000

    def produce(base: int) -> None:
        for i in range(per_thread):
            box.put(base + i)

    def consume(stop: threading.Event) -> None:
        while not stop.is_set():
            item = box.take()
            if item is not None:
                taken.append(item)

    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(stop,))
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k * per_thread,)) for k in range(n_threads)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    stop.set()
    consumer.join()
    leftover = 1 if box.take() is not None else 0
    assert len(taken) + box.dropped + leftover == n_threads * per_thread
    assert len(set(taken)) == len(taken)


def test_percentile_matches_the_hand_computed_interpolation():
    # 1..100: the 50th percentile by linear interpolation is 50.5, the 99th 99.01.
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(1 + 0.99 * 99)
    assert np.isnan(percentile([], 50))


def test_rate_latency_and_stage_times():
    clock = FakeClock()
    stats = NodeStats(window=4, rate_window=5.0, clock=clock)
    for i in range(11):  # 11 frames 0.5 s apart -> 2 Hz over the last 5 s
        stats.frame_received()
        stats.frame_processed(latency_ms=10.0 * (i + 1), stages_ms={"inference": float(i)})
        clock.t += 0.5
    clock.t -= 0.5
    assert stats.rate() == pytest.approx(2.0)
    # Only the last 4 latencies (80, 90, 100, 110) are kept.
    p50, p99 = stats.latency()
    assert p50 == pytest.approx(95.0)
    assert p99 == pytest.approx(80 + 0.99 * 3 * 10)
    assert stats.stage_p50() == {"inference": pytest.approx(8.5)}
    clock.t += 10.0  # nothing for 10 s: the rate drops to 0
    assert stats.rate() == 0.0


def test_report_levels_and_counters():
    clock = FakeClock()
    stats = NodeStats(clock=clock)
    report = stats.report(dropped=0)
    assert report.level == OK and "waiting" in report.message

    stats.frame_received()
    stats.frame_processed(12.0, {"inference": 5.0})
    stats.set_info("backend", "onnxruntime")
    report = stats.report(dropped=3)
    values = report.as_dict()
    assert report.level == OK
    assert values["frames_received"] == "1" and values["frames_processed"] == "1"
    assert values["frames_dropped"] == "3" and values["backend"] == "onnxruntime"
    assert values["latency_p50_ms"] == "12.0" and values["stage_p50_ms.inference"] == "5.00"

    # A bad frame next to a good one: WARN, counted by kind.
    stats.frame_received()
    assert stats.error("malformed_image", "step mismatch") == 1
    stats.frame_received()
    stats.frame_processed(10.0, {})
    report = stats.report(dropped=3)
    assert report.level == WARN and "malformed_image" in report.message
    assert report.as_dict()["errors.malformed_image"] == "1"

    # Only bad frames since the last report: ERROR naming the latest problem.
    stats.frame_received()
    assert stats.error("malformed_image", "step mismatch") == 2
    stats.frame_received()
    stats.error("unsupported_encoding", "encoding 'weird'")
    report = stats.report(dropped=3)
    assert report.level == ERROR and "unsupported_encoding" in report.message
    assert report.as_dict()["errors_total"] == "3"

    # Quiet again: back to OK, counters kept.
    report = stats.report(dropped=3)
    assert report.level == OK and report.as_dict()["errors.malformed_image"] == "2"

    # Frames arrive but nobody subscribes: OK, and the message says why none is processed.
    for _ in range(4):
        stats.frame_received()
        stats.frame_skipped()
    report = stats.report(dropped=3)
    assert report.level == OK and report.message.startswith("idle: 4 frame(s)")
    assert "nobody subscribes" in report.message
    assert report.as_dict()["frames_skipped_no_subscribers"] == "4"
    # a processed frame in the same period: the usual rate message
    stats.frame_received()
    stats.frame_skipped()
    stats.frame_received()
    stats.frame_processed(10.0, {})
    assert "Hz" in stats.report(dropped=3).message


def test_fallback_intrinsics_is_a_warning():
    stats = NodeStats()
    stats.frame_received()
    stats.frame_processed(1.0, {})
    stats.set_info("intrinsics", "fallback")
    stats.report(dropped=0)
    report = stats.report(dropped=0)
    assert report.level == WARN and "fallback" in report.message
