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
"""oe_depth_node: camera images in, metric depth, CameraInfo and point clouds out.

The only module of the package that imports rclpy. Frame flow:

* ``image`` and ``camera_info`` arrive with sensor-data QoS (best effort unless
  ``qos_reliability`` says reliable, keep last ``qos_depth``) in the *input* callback
  group. The image callback only stores the message in a one-slot
  :class:`~oe_depth_ros.diagnostics.FrameMailbox` (an unprocessed older frame is
  dropped and counted) and triggers a guard condition.
* The guard condition's callback runs in its own mutually exclusive *inference*
  callback group under a :class:`MultiThreadedExecutor`: it takes the newest frame,
  converts it, runs :class:`~oe_depth_ros.pipeline.DepthPipeline` and publishes only
  the outputs that have subscribers.
* A timer in a third group publishes ``/diagnostics``.

Bad input (unsupported encodings, inconsistent sizes, invalid or missing CameraInfo) is
logged once per kind, counted in the diagnostics, and the next good frame is processed.
A backend that cannot start ends the process with exit code 1 and a message; SIGINT
and SIGTERM end it cleanly with exit code 0.
"""
from __future__ import annotations

import array
import functools
import logging
import math
import signal
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from oe_depth_ros import node_params
from oe_depth_ros.diagnostics import CALLBACK_FAILURES, FrameMailbox, NodeStats
from oe_depth_ros.inference.backends import CPU_BACKENDS, DepthBackend
from oe_depth_ros.intake import FrameIntake, InputError, camera_info_config
from oe_depth_ros.messages import (
    MessageTypes, make_camera_info, numpy_to_image,
)
from oe_depth_ros.pipeline import DepthPipeline, Outputs
from oe_depth_ros.scale import ScaleSetupError, make_scale_estimator
from oe_depth_ros.node_params import PARAMS, ParamError, ParamSpec

NODE_NAME = "oe_depth_node"
LOG = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, model or backend); the text says why."""


# ---------------------------------------------------------------------- parameters


def _plain(value: Any) -> Any:
    """Parameter values as plain Python (double arrays arrive as array.array)."""
    if isinstance(value, (array.array, np.ndarray, tuple)):
        return [float(v) for v in value]
    return value


def descriptor_for(p: ParamSpec) -> ParameterDescriptor:
    """The ROS ParameterDescriptor of a parameter spec (ranges, read-only, text).

    Float parameters are dynamically typed so that an integer (``max_range: 80`` in a
    file, ``ros2 param set ... max_range 50``) is accepted; the node's own validation
    checks the type and :func:`coerce_numbers` turns run-time integers into doubles.
    """
    desc = ParameterDescriptor(description=p.description + (f" [{p.unit}]" if p.unit else ""),
                               read_only=p.read_only,
                               dynamic_typing=p.type_name in ("float", "float[]"))
    if p.choices:
        desc.additional_constraints = "one of: " + ", ".join(p.choices)
    if p.limits is not None:
        lo, hi = p.limits
        if p.type_name == "int":
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif p.type_name == "float":
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
        else:
            desc.additional_constraints = f"each value in [{lo:g}, {hi:g}]"
    return desc


def coerce_numbers(params: Sequence[Parameter]) -> list[Parameter]:
    """Integer values of float (and float list) parameters as doubles; the rest unchanged."""
    out = []
    for param in params:
        kind = node_params.type_name(param.name)
        if kind == "float" and param.type_ == Parameter.Type.INTEGER:
            param = Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
        elif kind == "float[]" and param.type_ == Parameter.Type.INTEGER_ARRAY:
            param = Parameter(param.name, Parameter.Type.DOUBLE_ARRAY,
                              [float(v) for v in param.value])
        out.append(param)
    return out


class _RosLogHandler(logging.Handler):
    """Forward the package's Python logging (backends, pipeline) to the node's logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._ros.error(text)
        elif record.levelno >= logging.WARNING:
            self._ros.warning(text)
        elif record.levelno >= logging.INFO:
            self._ros.info(text)
        else:
            self._ros.debug(text)


class CallbackGate:
    """Counts callbacks in flight; once closed, callbacks skip their work.

    rclpy's executor shutdown does not wait for callbacks running on its thread pool, so
    the node closes this gate and waits for it before destroying publishers (a publish
    on a destroyed publisher can crash the process).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    def enter(self) -> bool:
        """Register a running callback; False (nothing registered) once closed."""
        with self._cond:
            if self._closed:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        """A callback registered by :meth:`enter` has finished."""
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new callbacks and wait for running ones; False on timeout."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._active == 0, timeout)


class ShutdownSignals:
    """SIGINT and SIGTERM handling that never interrupts teardown.

    A first signal during start-up (model loading) abandons it (KeyboardInterrupt); once
    the node spins, a signal only asks the spin loop to stop. From teardown on, both are
    ignored (``SIG_IGN``, which also outlives the interpreter's own finalisation, where
    Python handlers are gone), so a terminal's Ctrl-C arriving together with the one
    ``ros2 launch`` forwards can neither raise inside teardown nor kill the process.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._phase = "starting"

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (call from the main thread)."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def spinning(self) -> None:
        """Start-up is done: a signal now stops the spin loop."""
        self._phase = "spinning"

    def stopping(self) -> None:
        """Teardown has begun: ignore every further signal (call from the main thread)."""
        self._phase = "stopping"
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: Any) -> None:
        first = not self.requested.is_set()
        self.requested.set()
        if first and self._phase == "starting":
            self._phase = "stopping"
            raise KeyboardInterrupt


# ---------------------------------------------------------------------------- node


class DepthNode(Node):
    """The depth node. ``backend``: an already loaded backend (else from parameters)."""

    def __init__(self, backend: DepthBackend | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("oe_depth_ros").addHandler(self._log_handler)
        logging.getLogger("oe_depth_ros").setLevel(logging.INFO)
        self._gate = CallbackGate()
        self._last_status_log = -math.inf
        self._values = self._declare_parameters()
        self._types = MessageTypes.rclpy()
        self._stats = NodeStats()
        #: (message, RGB, K, perf_counter at arrival, conversion ms) of the newest good frame
        self._mailbox: FrameMailbox[tuple[Image, np.ndarray, np.ndarray, float, float]] = \
            FrameMailbox()
        self._intake = FrameIntake(
            camera_info_config(self._values), report=self._bad_input,
            camera_info_topic=self.resolve_topic_name(node_params.CAMERA_INFO_TOPIC))
        self._pending_lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last_size: tuple[int, int] | None = None
        self._backend = backend if backend is not None else self._create_backend()
        self._pipeline = self._make_pipeline(self._values)
        self._stats.set_info("backend", getattr(self._backend, "name", type(self._backend)))
        self._stats.set_info("network_input",
                             "x".join(str(v) for v in self._backend.input_size[::-1]))
        self._stats.set_info("scale_method", self._values["scale.method"])
        self._stats.set_info("depth_units", self._backend.units.describe())
        self._stats.set_info("intrinsics", "waiting")

        reliability = (ReliabilityPolicy.RELIABLE if self._values["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos_in = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._values["qos_depth"],
                            reliability=reliability)
        input_group = MutuallyExclusiveCallbackGroup()
        self._inference_group = MutuallyExclusiveCallbackGroup()
        diag_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, node_params.IMAGE_TOPIC,
                                 self._guarded("image", self._on_image), qos_in,
                                 callback_group=input_group)
        self.create_subscription(CameraInfo, node_params.CAMERA_INFO_TOPIC,
                                 self._guarded("camera_info", self._on_camera_info), qos_in,
                                 callback_group=input_group)
        self._pub_depth = self.create_publisher(Image, node_params.DEPTH_TOPIC, 1)
        self._pub_info = self.create_publisher(CameraInfo, node_params.DEPTH_INFO_TOPIC, 1)
        self._pub_points = self.create_publisher(PointCloud2, node_params.POINTS_TOPIC, 1)
        self._pub_colored = self.create_publisher(Image, node_params.COLORED_TOPIC, 1)
        self._pub_diag = self.create_publisher(DiagnosticArray, node_params.DIAGNOSTICS_TOPIC, 10)
        self._frame_ready = self.create_guard_condition(
            self._guarded("inference", self._on_frame_ready),
            callback_group=self._inference_group)
        # Housekeeping runs on steady time: with use_sim_time and no /clock (or a paused
        # bag) the node's clock stands still, but diagnostics must keep coming.
        self.create_timer(self._values["diagnostics_period"],
                          self._guarded("diagnostics", self._publish_diagnostics),
                          callback_group=diag_group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_pre_set_parameters_callback(
            self._guarded("parameters", coerce_numbers, gated=False, on_error=lambda: None))
        self.add_on_set_parameters_callback(self._guarded(
            "parameters", self._on_set_parameters, gated=False,
            on_error=lambda: SetParametersResult(
                successful=False, reason="internal error while checking the change (see the "
                                         "node's log)")))
        self.get_logger().info(
            f"ready: {self._stats.info['backend']} backend, network input "
            f"{self._stats.info['network_input']}, subscribed to "
            f"{self.resolve_topic_name(node_params.IMAGE_TOPIC)} and "
            f"{self.resolve_topic_name(node_params.CAMERA_INFO_TOPIC)}")

    # -- start-up

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in PARAMS:
            try:
                param = self.declare_parameter(p.name, p.default, descriptor_for(p))
            except Exception as exc:  # rclpy raises several ParameterException types
                raise StartupError(f"parameter {p.name}: {exc} (expected {p.type_name}, "
                                   f"default {p.default!r})") from None
            values[p.name] = _plain(param.value)
        try:
            return node_params.validate_all(values)  # integers of float parameters -> float
        except ParamError as exc:
            raise StartupError(str(exc)) from None

    def _create_backend(self) -> DepthBackend:
        from oe_depth_ros.inference.backends import create_backend, model_format

        name, path = self._values["backend"], self._values["model_path"]
        if not path:
            raise StartupError("parameter model_path is empty: set it to an ONNX model, a "
                               "TensorRT engine or a checkpoint (-p model_path:=FILE or "
                               "params_file)")
        options: dict[str, Any] = {}
        threads = self._values["threads"]
        try:
            cpu_backend = name in CPU_BACKENDS or (
                name == "auto" and model_format(path) != "engine")
            if threads and cpu_backend:
                options["threads"] = threads
            return create_backend(name, path, device=self._values["device"],
                                  model_config=self._values["model_config"] or None, **options)
        except Exception as exc:  # BackendError and whatever a library raises on load
            raise StartupError(f"cannot start backend '{name}' with model {path}: {exc}") from exc

    def _make_pipeline(self, values: dict[str, Any]) -> DepthPipeline:
        self._config = node_params.pipeline_config(values)
        try:
            return DepthPipeline(self._backend, self._config)
        except ScaleSetupError as exc:  # e.g. a relative model with no scale estimator
            raise StartupError(str(exc)) from None

    # -- parameters at run time

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Validate a parameter change as a whole; the worker applies it before its next frame."""
        with self._pending_lock:
            candidate = dict(self._pending if self._pending is not None else self._values)
        for p in params:
            if p.name in candidate:
                candidate[p.name] = _plain(p.value)
        try:
            node_params.validate_all(candidate)
            make_scale_estimator(node_params.pipeline_config(candidate).scale,
                                 self._backend.units)
            camera_info_config(candidate)
        except (ParamError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._pending_lock:
            self._pending = candidate
        return SetParametersResult(successful=True)

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None or pending == self._values:
            return
        changed = sorted(k for k in pending if pending[k] != self._values.get(k))
        self._values = pending
        self._pipeline = self._make_pipeline(pending)
        self._intake.config = camera_info_config(pending)
        self._stats.set_info("scale_method", pending["scale.method"])
        self.get_logger().info(f"parameters changed: {', '.join(changed)}")

    # -- callbacks

    def _on_image(self, msg: Image) -> None:
        received = time.perf_counter()
        self._stats.frame_received()
        if not self._outputs_wanted():
            self._stats.frame_skipped()
            return
        # Checked and converted here, before the one-slot mailbox: a bad frame is counted
        # as what it is and never displaces a good one that waits for the worker.
        frame = self._intake.take_image(msg)  # reports and counts what it skips
        if frame is None:
            return
        self._stats.set_info("intrinsics", frame.intrinsics)
        convert_ms = (time.perf_counter() - received) * 1e3
        self._mailbox.put((msg, frame.rgb, frame.k, received, convert_ms))
        self._frame_ready.trigger()

    def _outputs_wanted(self) -> bool:
        """Whether any output has a subscriber (else frames are skipped, not processed)."""
        return any(pub.get_subscription_count() > 0 for pub in (
            self._pub_depth, self._pub_info, self._pub_points, self._pub_colored))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._intake.add_camera_info(msg)  # an invalid one is reported and counted

    def _guarded(self, name: str, callback: Any, gated: bool = True,
                 on_error: Any = lambda: None) -> Any:
        """``callback`` as the executor should call it: never raising, and idle once stopped.

        An exception is counted as ``CALLBACK_FAILURES[name]`` (its first occurrence logged
        with the traceback) and ``on_error()`` is returned instead. ``gated`` callbacks are
        skipped once :meth:`stop` has closed the gate (they publish or touch the backend).
        """
        kind = CALLBACK_FAILURES[name]

        @functools.wraps(callback)
        def run(*args: Any) -> Any:
            if gated and not self._gate.enter():
                return on_error()
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001 - no callback may end the node
                self._callback_failed(kind, exc)
                return on_error()
            finally:
                if gated:
                    self._gate.leave()

        return run

    def _callback_failed(self, kind: str, exc: Exception) -> None:
        try:
            self._bad_input(kind, f"{type(exc).__name__}: {exc}", exc_info=True)
        except Exception:  # noqa: BLE001 - even a failing logger must not end the node
            pass

    def _bad_input(self, kind: str, message: str, exc_info: bool = False) -> None:
        count = self._stats.error(kind, message)
        if count == 1:
            text = f"{kind}: {message} (logged once; every occurrence is counted in /diagnostics)"
            if exc_info:
                import traceback

                text += "\n" + traceback.format_exc()
            self.get_logger().warning(text)

    def _on_frame_ready(self) -> None:
        item = self._mailbox.take()
        if item is None:
            return
        try:
            self._process(*item)
        except InputError as exc:
            self._bad_input(exc.kind, str(exc))

    # -- the work

    def _process(self, msg: Image, rgb: np.ndarray, k: np.ndarray, received: float,
                 convert_ms: float) -> None:
        self._apply_pending()
        want_depth = self._pub_depth.get_subscription_count() > 0
        want_info = self._pub_info.get_subscription_count() > 0
        want_points = self._pub_points.get_subscription_count() > 0
        want_colored = (self._values["colored.enabled"]
                        and self._pub_colored.get_subscription_count() > 0)
        if not (want_depth or want_info or want_points or want_colored):
            self._stats.frame_skipped()
            return
        size = (int(msg.height), int(msg.width))
        if self._last_size is not None and size != self._last_size:
            self.get_logger().info(f"input resolution changed from {self._last_size[1]}x"
                                   f"{self._last_size[0]} to {size[1]}x{size[0]}")
        self._last_size = size
        stages = {"convert": convert_ms}

        result = self._pipeline.process(rgb, k,
                                        outputs=Outputs(points=want_points, colored=want_colored))
        stages.update({name: ms for name, ms in result.timings.items() if name != "total"})

        t0 = time.perf_counter()
        header = msg.header
        if want_depth:
            self._pub_depth.publish(numpy_to_image(result.depth, "32FC1", header, self._types))
        if want_info:
            self._pub_info.publish(make_camera_info(result.K, result.size[1], result.size[0],
                                                    header, self._types))
        if want_colored and result.colored is not None:
            self._pub_colored.publish(numpy_to_image(result.colored, "rgb8", header,
                                                     self._types))
        stages["publish"] = (time.perf_counter() - t0) * 1e3
        if want_points and result.points is not None:
            t0 = time.perf_counter()
            self._pub_points.publish(result.pointcloud2(header, self._types))
            stages["publish_points"] = (time.perf_counter() - t0) * 1e3
        latency_ms = (time.perf_counter() - received) * 1e3
        self._stats.frame_processed(latency_ms, stages)
        self._stats.set_info("scale", f"{result.scale:.4g}")
        self._stats.set_info("scale_source", result.scale_source)
        self._stats.set_info("scale_confidence", f"{result.scale_confidence:.2f}")
        if math.isfinite(result.scale_check):  # a metric model beside the camera-height fit
            self._stats.set_info("scale_check", f"{result.scale_check:.4g}")
        self._stats.set_info("output_size", f"{result.size[1]}x{result.size[0]}")

    # -- diagnostics

    def _publish_diagnostics(self) -> None:
        report = self._stats.report(self._mailbox.dropped)
        status = DiagnosticStatus(
            level=bytes([report.level]), name=f"{self.get_fully_qualified_name()}: depth",
            message=report.message, hardware_id=self._stats.info.get("backend", ""),
            values=[KeyValue(key=k, value=v) for k, v in report.values],
        )
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(array_msg)
        # Throttled here, not by rclpy: rclpy fixes a call site's throttle_duration_sec at
        # its first use and raises when log_throttle later changes.
        throttle = self._values["log_throttle"]
        now = time.monotonic()
        if throttle > 0 and now - self._last_status_log >= throttle:
            self._last_status_log = now
            self.get_logger().info(f"{report.message}; dropped {self._mailbox.dropped}")

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking callbacks and wait for running ones (a frame in inference)."""
        return self._gate.close(timeout)

    def destroy_node(self) -> None:
        """Detach the logging bridge, release the backend, destroy the ROS entities."""
        self.stop()
        logging.getLogger("oe_depth_ros").removeHandler(self._log_handler)
        close = getattr(getattr(self, "_backend", None), "close", None)
        if callable(close):
            close()
        super().destroy_node()


def main(args: Sequence[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0, whatever signals follow); 1 if it cannot start."""
    signals = ShutdownSignals()
    signals.install()
    node: DepthNode | None = None
    try:
        rclpy.init(args=list(args) if args is not None else sys.argv,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = DepthNode()
        except StartupError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        signals.spinning()
        try:
            while not signals.requested.is_set():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            signals.stopping()
            if not node.stop(timeout=5.0):
                rclpy.logging.get_logger(NODE_NAME).warning("a callback did not finish "
                                                            "within 5 s of shutdown")
            executor.shutdown(timeout_sec=0.0)
        return 0
    except KeyboardInterrupt:  # the first signal arrived during start-up
        return 0
    finally:
        signals.stopping()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
