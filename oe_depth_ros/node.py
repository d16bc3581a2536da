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
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from oe_depth_ros import node_params
from oe_depth_ros.diagnostics import FrameMailbox, NodeStats
from oe_depth_ros.geometry import check_intrinsics
from oe_depth_ros.messages import (
    ENCODINGS, MessageError, MessageTypes, camera_info_to_intrinsics, image_to_rgb,
    make_camera_info, make_pointcloud2, numpy_to_image, stamp_to_ns,
)
from oe_depth_ros.node_params import PARAMS, ParamError, ParamSpec

NODE_NAME = "oe_depth_node"
LOG = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, model or backend); the text says why."""


class InputError(ValueError):
    """A frame cannot be processed; ``kind`` names the problem for logs and counters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ------------------------------------------------------------------------ intrinsics


@dataclass(frozen=True)
class CameraModel:
    """A validated CameraInfo: stamp (ns), 3x3 intrinsics and the image size it describes."""

    stamp_ns: int
    k: np.ndarray
    width: int
    height: int


class IntrinsicsSource:
    """Intrinsics for each image from the cached CameraInfo(s), or the fallback.

    ``sync="latest"`` uses the newest valid CameraInfo; ``"approximate"`` the one whose
    stamp is nearest the image's, if within ``slop`` seconds (kept: the last ``history``).
    A CameraInfo whose size differs from the image's is not used for it (it belongs to
    another resolution, e.g. while a camera switches modes). Thread-safe.
    """

    def __init__(self, history: int = 30) -> None:
        self._lock = threading.Lock()
        self._models: deque[CameraModel] = deque(maxlen=history)

    def add(self, model: CameraModel) -> None:
        """Cache a validated CameraInfo."""
        with self._lock:
            self._models.append(model)

    @property
    def has_any(self) -> bool:
        """Whether a valid CameraInfo has been received."""
        with self._lock:
            return bool(self._models)

    def lookup(self, stamp_ns: int, width: int, height: int, sync: str,
               slop_s: float) -> np.ndarray:
        """K for an image of ``width`` x ``height`` stamped ``stamp_ns``; InputError if none."""
        with self._lock:
            models = list(self._models)
        if not models:
            raise InputError("no_camera_info", "no CameraInfo received")
        if sync == "approximate":
            best = min(models, key=lambda m: abs(m.stamp_ns - stamp_ns))
            gap = abs(best.stamp_ns - stamp_ns) * 1e-9
            if gap > slop_s:
                raise InputError("camera_info_unsynced",
                                 f"nearest CameraInfo is {gap:.3f} s from the image, more than "
                                 f"camera_info.slop = {slop_s} s")
        else:
            best = models[-1]
        if best.width and best.height and (best.width, best.height) != (width, height):
            raise InputError("camera_info_size_mismatch",
                             f"CameraInfo is for {best.width}x{best.height} but the image is "
                             f"{width}x{height}")
        return best.k


def camera_model_from_msg(msg: Any) -> CameraModel:
    """Validate a CameraInfo message; InputError('camera_info_invalid') when unusable."""
    try:
        k = check_intrinsics(camera_info_to_intrinsics(msg))
        stamp = stamp_to_ns(msg.header.stamp)
    except (MessageError, ValueError) as exc:
        raise InputError("camera_info_invalid", f"CameraInfo rejected: {exc}") from None
    return CameraModel(stamp, k, int(msg.width), int(msg.height))


def image_rgb_from_msg(msg: Any) -> np.ndarray:
    """Image -> uint8 RGB, raising InputError with kind unsupported_encoding / malformed_image."""
    enc = ENCODINGS.get(msg.encoding)
    if enc is None or enc.kind == "data":
        supported = sorted(k for k, v in ENCODINGS.items() if v.kind != "data")
        raise InputError("unsupported_encoding",
                         f"image encoding {msg.encoding!r} is not supported; use one of "
                         f"{', '.join(supported)}")
    try:
        return image_to_rgb(msg)
    except MessageError as exc:
        raise InputError("malformed_image", f"image rejected: {exc}") from None


# ---------------------------------------------------------------------- parameters


def _plain(value: Any) -> Any:
    """Parameter values as plain Python (double arrays arrive as array.array)."""
    if isinstance(value, (array.array, np.ndarray, tuple)):
        return [float(v) for v in value]
    return value


def descriptor_for(p: ParamSpec) -> ParameterDescriptor:
    """The ROS ParameterDescriptor of a parameter spec (ranges, read-only, text)."""
    desc = ParameterDescriptor(description=p.description + (f" [{p.unit}]" if p.unit else ""),
                               read_only=p.read_only)
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


def _gated(method: Any) -> Any:
    """Run a node callback only while the node's gate is open."""
    @functools.wraps(method)
    def wrapper(self: "DepthNode", *args: Any) -> None:
        if not self._gate.enter():
            return
        try:
            method(self, *args)
        finally:
            self._gate.leave()

    return wrapper


# ---------------------------------------------------------------------------- node


class DepthNode(Node):
    """The depth node. ``backend``: an already loaded backend (else from parameters)."""

    def __init__(self, backend: Any = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("oe_depth_ros").addHandler(self._log_handler)
        logging.getLogger("oe_depth_ros").setLevel(logging.INFO)
        self._gate = CallbackGate()
        self._values = self._declare_parameters()
        self._types = MessageTypes.rclpy()
        self._stats = NodeStats()
        self._mailbox: FrameMailbox[tuple[Image, float]] = FrameMailbox()
        self._intrinsics = IntrinsicsSource()
        self._pending_lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last_size: tuple[int, int] | None = None
        self._backend = backend if backend is not None else self._create_backend()
        self._pipeline = self._make_pipeline(self._values)
        self._stats.set_info("backend", getattr(self._backend, "name", type(self._backend)))
        self._stats.set_info("network_input",
                             "x".join(str(v) for v in self._backend.input_size[::-1]))
        self._stats.set_info("scale_method", self._values["scale.method"])
        self._stats.set_info("intrinsics", "waiting")

        reliability = (ReliabilityPolicy.RELIABLE if self._values["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos_in = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._values["qos_depth"],
                            reliability=reliability)
        input_group = MutuallyExclusiveCallbackGroup()
        self._inference_group = MutuallyExclusiveCallbackGroup()
        diag_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, "image", self._on_image, qos_in,
                                 callback_group=input_group)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_in,
                                 callback_group=input_group)
        self._pub_depth = self.create_publisher(Image, "depth/image", 1)
        self._pub_info = self.create_publisher(CameraInfo, "depth/camera_info", 1)
        self._pub_points = self.create_publisher(PointCloud2, "points", 1)
        self._pub_colored = self.create_publisher(Image, "depth/colored", 1)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._frame_ready = self.create_guard_condition(self._on_frame_ready,
                                                        callback_group=self._inference_group)
        self.create_timer(self._values["diagnostics_period"], self._publish_diagnostics,
                          callback_group=diag_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"ready: {self._stats.info['backend']} backend, network input "
            f"{self._stats.info['network_input']}, subscribed to "
            f"{self.resolve_topic_name('image')} and {self.resolve_topic_name('camera_info')}")

    # -- start-up

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        # A parameter file's `max_range: 80` is an integer to rcl; accept it for floats.
        overrides = getattr(self, "_parameter_overrides", {})
        for p in PARAMS:
            given = overrides.get(p.name)
            if p.type_name == "float" and given is not None and \
                    given.type_ == Parameter.Type.INTEGER:
                overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE, float(given.value))
        for p in PARAMS:
            try:
                param = self.declare_parameter(p.name, p.default, descriptor_for(p))
            except Exception as exc:  # rclpy raises several ParameterException types
                raise StartupError(f"parameter {p.name}: {exc} (expected {p.type_name}, "
                                   f"default {p.default!r})") from None
            values[p.name] = _plain(param.value)
        try:
            node_params.validate_all(values)
        except ParamError as exc:
            raise StartupError(str(exc)) from None
        return values

    def _create_backend(self) -> Any:
        from oe_depth_ros.inference.backends import create_backend, model_format

        name, path = self._values["backend"], self._values["model_path"]
        if not path:
            raise StartupError("parameter model_path is empty: set it to an ONNX model, a "
                               "TensorRT engine or a checkpoint (-p model_path:=FILE or "
                               "params_file)")
        options: dict[str, Any] = {}
        threads = self._values["threads"]
        try:
            cpu_backend = name in ("onnxruntime", "torch") or (
                name == "auto" and model_format(path) != "engine")
            if threads and cpu_backend:
                options["threads"] = threads
            return create_backend(name, path, device=self._values["device"],
                                  model_config=self._values["model_config"] or None, **options)
        except Exception as exc:  # BackendError and whatever a library raises on load
            raise StartupError(f"cannot start backend '{name}' with model {path}: {exc}") from exc

    def _make_pipeline(self, values: dict[str, Any]) -> Any:
        from oe_depth_ros.pipeline import DepthPipeline

        self._config = node_params.pipeline_config(values)
        return DepthPipeline(self._backend, self._config)

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
            node_params.pipeline_config(candidate)
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
        self._stats.set_info("scale_method", pending["scale.method"])
        self.get_logger().info(f"parameters changed: {', '.join(changed)}")

    # -- callbacks

    @_gated
    def _on_image(self, msg: Image) -> None:
        self._stats.frame_received()
        self._mailbox.put((msg, time.perf_counter()))
        self._frame_ready.trigger()

    @_gated
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics.add(camera_model_from_msg(msg))
        except InputError as exc:
            self._bad_input(exc.kind, str(exc))

    def _bad_input(self, kind: str, message: str, exc_info: bool = False) -> None:
        count = self._stats.error(kind, message)
        if count == 1:
            text = f"{kind}: {message} (logged once; every occurrence is counted in /diagnostics)"
            if exc_info:
                import traceback

                text += "\n" + traceback.format_exc()
            self.get_logger().warning(text)

    @_gated
    def _on_frame_ready(self) -> None:
        item = self._mailbox.take()
        if item is None:
            return
        msg, received = item
        try:
            self._process(msg, received)
        except InputError as exc:
            self._bad_input(exc.kind, str(exc))
        except Exception as exc:  # never let one frame end the node
            self._bad_input("processing_failed", f"{type(exc).__name__}: {exc}", exc_info=True)

    # -- the work

    def _intrinsics_for(self, msg: Image) -> np.ndarray:
        v = self._values
        stamp = stamp_to_ns(msg.header.stamp)
        if not self._intrinsics.has_any and v["camera_info.use_fallback"]:
            k = np.array(node_params.fallback_k(v["camera_info.fallback_intrinsics"],
                                                msg.width, msg.height))
            self._stats.set_info("intrinsics", "fallback")
            self._bad_input("no_camera_info",
                            f"no CameraInfo received on {self.resolve_topic_name('camera_info')}"
                            f": using camera_info.fallback_intrinsics "
                            f"{v['camera_info.fallback_intrinsics']}")
            return k
        k = self._intrinsics.lookup(stamp, msg.width, msg.height, v["camera_info.sync"],
                                    v["camera_info.slop"])
        self._stats.set_info("intrinsics", "camera_info")
        return k

    def _process(self, msg: Image, received: float) -> None:
        self._apply_pending()
        want_depth = self._pub_depth.get_subscription_count() > 0
        want_info = self._pub_info.get_subscription_count() > 0
        want_points = self._pub_points.get_subscription_count() > 0
        want_colored = (self._values["colored.enabled"]
                        and self._pub_colored.get_subscription_count() > 0)
        if not (want_depth or want_info or want_points or want_colored):
            self._stats.frame_skipped()
            return
        t0 = time.perf_counter()
        rgb = image_rgb_from_msg(msg)
        k = self._intrinsics_for(msg)
        size = (int(msg.height), int(msg.width))
        if self._last_size is not None and size != self._last_size:
            self.get_logger().info(f"input resolution changed from {self._last_size[1]}x"
                                   f"{self._last_size[0]} to {size[1]}x{size[0]}")
        self._last_size = size
        stages = {"convert": (time.perf_counter() - t0) * 1e3}

        self._pipeline.config = replace(self._config, cloud=want_points, colourise=want_colored)
        result = self._pipeline.process(rgb, k)
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
            self._pub_points.publish(make_pointcloud2(result.points, header, self._types))
            stages["publish_points"] = (time.perf_counter() - t0) * 1e3
        latency_ms = (time.perf_counter() - received) * 1e3
        self._stats.frame_processed(latency_ms, stages)
        self._stats.set_info("scale", f"{result.scale:.4g}")
        self._stats.set_info("scale_source", result.scale_source)
        self._stats.set_info("scale_confidence", f"{result.scale_confidence:.2f}")
        self._stats.set_info("output_size", f"{result.size[1]}x{result.size[0]}")

    # -- diagnostics

    @_gated
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
        throttle = self._values["log_throttle"]
        if throttle > 0:
            self.get_logger().info(f"{report.message}; dropped {self._mailbox.dropped}",
                                   throttle_duration_sec=throttle)

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
    """Run the node until SIGINT/SIGTERM (exit 0); exit 1 when it cannot start."""
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: DepthNode | None = None
    try:
        try:
            node = DepthNode()
        except StartupError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if not node.stop(timeout=5.0):
                rclpy.logging.get_logger(NODE_NAME).warning("a callback did not finish "
                                                            "within 5 s of shutdown")
            executor.shutdown(timeout_sec=0.0)
        return 0
    except KeyboardInterrupt:  # SIGINT while loading the model
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
