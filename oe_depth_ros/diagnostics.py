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
"""Frame accounting and statistics of the depth node, with no ROS import.

:class:`FrameMailbox` is the one-slot hand-over between the image callback and the
inference worker: a new frame replaces an unprocessed one, which counts as dropped, so
the worker always runs on the newest frame and never builds a backlog.
:class:`NodeStats` keeps the counters (received, processed, dropped, skipped, errors by
kind), the processing rate, end-to-end latency percentiles and per-stage times, and
turns them into a :class:`StatusReport` that the node publishes on ``/diagnostics``.
Everything here is thread-safe: the callbacks and the worker run on executor threads.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, TypeVar

import numpy as np

T = TypeVar("T")

#: Diagnostic levels (the values of diagnostic_msgs/DiagnosticStatus).
OK, WARN, ERROR = 0, 1, 2

#: Error kind counted when a node callback raises (callback name -> kind). The node
#: catches, logs the first of each kind with its traceback, counts it and carries on.
CALLBACK_FAILURES: dict[str, str] = {
    "image": "image_callback_failed",
    "camera_info": "camera_info_callback_failed",
    "inference": "processing_failed",
    "diagnostics": "diagnostics_failed",
    "parameters": "parameters_callback_failed",
}


class FrameMailbox(Generic[T]):
    """A one-slot mailbox: ``put`` replaces what was not yet taken (counted as dropped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; return True when it replaced a frame nobody took (a drop)."""
        with self._lock:
            replaced = self._item is not None
            self._item = item
            if replaced:
                self._dropped += 1
            return replaced

    def take(self) -> T | None:
        """Remove and return the newest item, or None when the slot is empty."""
        with self._lock:
            item, self._item = self._item, None
            return item

    @property
    def dropped(self) -> int:
        """How many frames were replaced before the worker took them."""
        with self._lock:
            return self._dropped


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation) of a sequence; NaN when empty."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return float("nan")
    return float(np.percentile(arr, q))


@dataclass
class StatusReport:
    """One diagnostics status: level (OK/WARN/ERROR), a message and key/value pairs."""

    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, str]:
        """The key/value pairs as a dict."""
        return dict(self.values)


def _fmt(value: float, digits: int = 1) -> str:
    return "nan" if value != value else f"{value:.{digits}f}"


class NodeStats:
    """Counters, rate and latency statistics of the node (thread-safe).

    ``window`` is how many recent frames the latency percentiles cover; ``rate_window``
    the time span (seconds) over which the processing rate is measured. ``clock`` gives
    monotonic seconds (injectable for tests).
    """

    def __init__(self, window: int = 200, rate_window: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rate_window = rate_window
        self._latencies: deque[float] = deque(maxlen=window)
        self._stages: dict[str, deque[float]] = {}
        self._window = window
        self._done_times: deque[float] = deque()
        self.received = 0
        self.processed = 0
        self.skipped = 0  # frames not processed because no output had a subscriber
        self.errors: dict[str, int] = {}
        self._last_error: dict[str, str] = {}
        self._last_kind = ""
        self._errors_at_last_report = 0
        self._processed_at_last_report = 0
        self._received_at_last_report = 0
        self._skipped_at_last_report = 0
        self.info: dict[str, str] = {}

    def frame_received(self) -> None:
        """An image arrived."""
        with self._lock:
            self.received += 1

    def frame_skipped(self) -> None:
        """A frame was not processed because nobody subscribes to any output."""
        with self._lock:
            self.skipped += 1

    def frame_processed(self, latency_ms: float, stages_ms: dict[str, float]) -> None:
        """A frame was published: its receive-to-publish latency and per-stage times (ms)."""
        with self._lock:
            self.processed += 1
            self._latencies.append(float(latency_ms))
            for name, ms in stages_ms.items():
                self._stages.setdefault(name, deque(maxlen=self._window)).append(float(ms))
            now = self._clock()
            self._done_times.append(now)
            self._trim(now)

    def error(self, kind: str, message: str) -> int:
        """Count an error of ``kind``; return its count (1 = first time: log it)."""
        with self._lock:
            count = self.errors.get(kind, 0) + 1
            self.errors[kind] = count
            self._last_error[kind] = message
            self._last_kind = kind
            return count

    def set_info(self, key: str, value: object) -> None:
        """A descriptive value shown in every report (backend, scale source, ...)."""
        with self._lock:
            self.info[key] = str(value)

    def _trim(self, now: float) -> None:
        while self._done_times and now - self._done_times[0] > self._rate_window:
            self._done_times.popleft()

    def rate(self) -> float:
        """Frames processed per second over the last ``rate_window`` seconds."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            n = len(self._done_times)
            if n < 2:
                return float(n) / self._rate_window if n else 0.0
            span = max(now - self._done_times[0], self._done_times[-1] - self._done_times[0])
            return (n - 1) / span if span > 0 else 0.0

    def latency(self) -> tuple[float, float]:
        """(p50, p99) of the receive-to-publish latency in ms over the recent window."""
        with self._lock:
            lat = list(self._latencies)
        return percentile(lat, 50), percentile(lat, 99)

    def stage_p50(self) -> dict[str, float]:
        """Median time per pipeline stage (ms) over the recent window."""
        with self._lock:
            stages = {k: list(v) for k, v in self._stages.items()}
        return {k: percentile(v, 50) for k, v in stages.items()}

    def report(self, dropped: int) -> StatusReport:
        """The status since the previous report; ``dropped`` comes from the mailbox.

        ERROR when frames arrived since the last report but none could be processed
        because of errors; WARN when new errors occurred or fallback intrinsics are in
        use; else OK, saying so when frames were only skipped for want of subscribers
        (the rate then reads 0).
        """
        rate = self.rate()
        p50, p99 = self.latency()
        stages = self.stage_p50()
        with self._lock:
            total_errors = sum(self.errors.values())
            new_errors = total_errors - self._errors_at_last_report
            new_processed = self.processed - self._processed_at_last_report
            new_received = self.received - self._received_at_last_report
            new_skipped = self.skipped - self._skipped_at_last_report
            self._errors_at_last_report = total_errors
            self._skipped_at_last_report = self.skipped
            self._processed_at_last_report = self.processed
            self._received_at_last_report = self.received
            values = [
                ("rate_hz", _fmt(rate, 2)),
                ("latency_p50_ms", _fmt(p50)),
                ("latency_p99_ms", _fmt(p99)),
                ("frames_received", str(self.received)),
                ("frames_processed", str(self.processed)),
                ("frames_dropped", str(dropped)),
                ("frames_skipped_no_subscribers", str(self.skipped)),
                ("errors_total", str(total_errors)),
            ]
            values += [(f"errors.{k}", str(v)) for k, v in sorted(self.errors.items())]
            values += [(f"stage_p50_ms.{k}", _fmt(v, 2)) for k, v in sorted(stages.items())]
            values += sorted(self.info.items())
            last = dict(self._last_error)
            last_kind = self._last_kind
            fallback = self.info.get("intrinsics") == "fallback"
        if new_received and not new_processed and new_errors:
            return StatusReport(ERROR, f"no frame processed: {last_kind}: {last[last_kind]}",
                                values)
        if new_errors:
            kinds = ", ".join(sorted(last))
            return StatusReport(WARN, f"{new_errors} bad input(s) since last report ({kinds})",
                                values)
        if fallback:
            return StatusReport(WARN, "no CameraInfo received: using fallback intrinsics", values)
        if not self.received:
            return StatusReport(OK, "waiting for images", values)
        if new_skipped and not new_processed:
            return StatusReport(OK, f"idle: {new_skipped} frame(s) since last report not "
                                "processed, nobody subscribes to an output", values)
        return StatusReport(OK, f"{rate:.1f} Hz, latency p50 {_fmt(p50)} ms", values)
