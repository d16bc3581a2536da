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

The only module of the package that imports rclpy. Two node classes share one
:class:`DepthCore`: :class:`DepthNode` (plain: loads the model and runs at once) and
:class:`DepthLifecycleNode` (managed: configure loads the model and creates the
publishers, activate subscribes, deactivate stops, cleanup frees the model). Frame flow:

* ``image`` and ``camera_info`` arrive with the sensor-data QoS of REP 2003 in the
  *input* callback group; outputs are published reliable. Every one of these QoS
  profiles takes the standard ``qos_overrides.<topic>.<subscription|publisher>.<policy>``
  parameters (rclpy's ``QoSOverridingOptions``).
* The image callback checks and converts the frame and runs the backend's host
  pre-processing (:meth:`DepthPipeline.prepare`), then stores it in a one-slot
  :class:`~oe_depth_ros.diagnostics.FrameMailbox` (an unprocessed older frame is
  dropped and counted) and triggers a guard condition. So while the worker infers one
  frame, the next one is already being prepared: with frames waiting, the rate
  approaches 1 / (inference + output) instead of 1 / (all stages).
* The guard condition's callback runs in its own mutually exclusive *inference*
  callback group under a :class:`MultiThreadedExecutor`: it applies accepted parameter
  changes (also without frames), takes the newest frame, runs inference and
  post-processing (:meth:`DepthPipeline.finish`) and publishes only the outputs that
  have subscribers, in the order the frames were taken.
* A timer in a third group publishes ``/diagnostics``.

Bad input (unsupported encodings, inconsistent sizes, invalid or missing CameraInfo) is
logged once per kind, counted in the diagnostics, and the next good frame is processed.
A plain node whose backend cannot start ends with exit code 1 and a message; a managed
node reports a failed configure and stays unconfigured. SIGINT and SIGTERM end either
cleanly with exit code 0 (see :mod:`oe_depth_ros.node_main`).
"""
from __future__ import annotations

import array
import copy
import functools
import logging
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.guard_condition import GuardCondition
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.lifecycle import LifecycleNode, LifecycleState
from rclpy.lifecycle.node import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from oe_depth_ros import node_params
from oe_depth_ros.compressed import transport_topic
from oe_depth_ros.diagnostics import CALLBACK_FAILURES, FrameMailbox, NodeStats
from oe_depth_ros.build import build_pipeline, create_backend_from_params, pipeline_config
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.intake import FrameIntake, InputError, camera_info_config
from oe_depth_ros.messages import MessageTypes
from oe_depth_ros.shutdown_signals import ShutdownSignals
from oe_depth_ros.node_names import NODE_NAME
from oe_depth_ros.node_params import PARAMS, ParamError, ParamSpec, ParamValue, value_of
from oe_depth_ros.outputs import output_message, output_messages
from oe_depth_ros.pipeline import DepthPipeline, Outputs, PreparedFrame
from oe_depth_ros.scale import ScaleSetupError, make_scale_estimator

LOG = logging.getLogger(__name__)

#: Default QoS of the image and camera_info subscriptions: REP 2003's sensor data
#: (best effort, volatile, keep last 5), as image_pipeline's nodes subscribe.
INPUT_QOS = qos_profile_sensor_data
#: Default QoS of the depth, depth/camera_info, points and depth/colored publishers:
#: reliable, volatile, keep last 1 (REP 2003: publishers use the reliable system default).
OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
#: QoS of /diagnostics (as diagnostic_updater publishes it).
DIAGNOSTICS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def own_qos(profile: QoSProfile) -> QoSProfile:
    """Return a copy of ``profile`` for one topic.

    rclpy writes a topic's QoS overrides into the profile object it is given, so a
    shared one would carry them to every other topic (and ``qos_profile_sensor_data`` is
    rclpy's own module-level object).
    """
    return copy.copy(profile)


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, model or backend); the text says why."""


# ---------------------------------------------------------------------- parameters


def _plain(value: object) -> object:
    """Parameter values as plain Python (double arrays arrive as array.array)."""
    if isinstance(value, (array.array, np.ndarray, tuple)):
        return [float(v) for v in value]
    return value


def descriptor_for(p: ParamSpec) -> ParameterDescriptor:
    """The ROS ParameterDescriptor of a parameter spec (ranges, read-only, text).

    Float parameters are dynamically typed so that an integer (``max_range: 80`` in a
    file, ``ros2 param set ... max_range 50``) is accepted; the node stores it as a
    double (:func:`coerce_numbers`, and :meth:`DepthCore._declare_parameters` for files).
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

    def __init__(self, ros_logger: RcutilsLogger) -> None:
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
    """Counts callbacks in flight; while closed, callbacks skip their work.

    rclpy's executor shutdown does not wait for callbacks running on its thread pool, so
    the node closes this gate and waits for it before destroying publishers (a publish
    on a destroyed publisher can crash the process). A managed node reopens it after
    deactivating.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False

    def enter(self) -> bool:
        """Register a running callback; False (nothing registered) while closed."""
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

    def open(self) -> None:
        """Accept callbacks again."""
        with self._cond:
            self._closed = False


#: (message, prepared frame, perf_counter at arrival, intake ms) of the newest good frame
_Frame = tuple[Image | CompressedImage, PreparedFrame, float, float]

# ---------------------------------------------------------------------------- node

if TYPE_CHECKING:
    _NodeBase = Node
else:
    _NodeBase = object


class DepthCore(_NodeBase):
    """The depth node's work, shared by :class:`DepthNode` and :class:`DepthLifecycleNode`.

    A mixin over rclpy's ``Node``. Its pieces follow the managed life cycle: ``_setup``
    (constructor: logging, parameters, intake), ``_load_backend`` and
    ``_create_publishers`` (configure), ``_create_inputs`` (activate: subscriptions,
    worker, diagnostics timer), ``_destroy_inputs`` (deactivate), ``_release``
    (cleanup). The plain node runs the first four in its constructor.
    """

    def _setup(self) -> None:
        """Logging bridge, parameters, intake, statistics, parameter callbacks (constructor)."""
        self._log_handler = _RosLogHandler(self.get_logger())
        logging.getLogger("oe_depth_ros").addHandler(self._log_handler)
        logging.getLogger("oe_depth_ros").setLevel(logging.INFO)
        self._gate = CallbackGate()
        #: Set when the node has finished for good (a managed node's shutdown transition).
        self.finished = threading.Event()
        self._last_status_log = -math.inf
        self._pending_lock = threading.Lock()
        self._pending: dict[str, ParamValue] | None = None
        self._last_size: tuple[int, int] | None = None
        self._backend: DepthBackend | None = None
        self._pipeline: DepthPipeline | None = None
        self._publishers: list[Publisher] = []
        self._inputs: list[Subscription | GuardCondition | Timer] = []
        self._frame_ready: GuardCondition | None = None
        self.add_pre_set_parameters_callback(self._guarded(
            "parameters", self._coerce_parameters, gated=False,
            on_error=lambda params: list(params)))
        self._values = self._declare_parameters()
        self._types = MessageTypes.rclpy()
        self._stats = NodeStats()
        self._mailbox: FrameMailbox[_Frame] = FrameMailbox()
        self._intake = FrameIntake(
            camera_info_config(self._values), report=self._bad_input,
            camera_info_topic=self.resolve_topic_name(node_params.CAMERA_INFO_TOPIC),
            max_pixels=value_of(self._values, "max_input_pixels", int))
        self._stats.set_info("scale_method", self._values["scale.method"])
        self._stats.set_info("intrinsics", "waiting")
        check = self._guarded(
            "parameters", self._on_set_parameters, gated=False,
            on_error=lambda params: SetParametersResult(
                successful=False, reason="internal error while checking the change (see the "
                                         "node's log)"))

        def on_set(params: list[Parameter]) -> SetParametersResult:
            # Only the node's own parameters: rclpy's (use_sim_time, qos_overrides.*, which
            # it declares while creating topics) are none of this check's business.
            ours = [p for p in params if node_params.type_name(p.name) is not None]
            return check(ours) if ours else SetParametersResult(successful=True)

        self.add_on_set_parameters_callback(on_set)

    def _declare_parameters(self) -> dict[str, ParamValue]:
        """Declare every parameter of the table; integers of float parameters become doubles.

        A parameter file's ``max_range: 60`` arrives as an integer override; rclpy would
        keep it an integer (``ros2 param get`` shows 60), so it is stored as a double,
        also for read-only parameters (declared writable, then made read-only).
        """
        values: dict[str, object] = {}
        for p in PARAMS:
            final = descriptor_for(p)
            writable = descriptor_for(p)
            writable.read_only = False
            try:
                param = self.declare_parameter(p.name, p.default, writable)
                (coerced,) = coerce_numbers([param])
                if coerced.type_ != param.type_:
                    self.set_parameters([coerced])
                    param = coerced
                if p.read_only:
                    final.type = param.type_.value
                    self.set_descriptor(p.name, final)
            except Exception as exc:  # rclpy raises several ParameterException types
                raise StartupError(f"parameter {p.name}: {exc} (expected {p.type_name}, "
                                   f"default {p.default!r})") from None
            values[p.name] = _plain(param.value)
        try:
            return node_params.validate_all(values)  # integers of float parameters -> float
        except ParamError as exc:
            raise StartupError(str(exc)) from None

    # -- configure / activate / deactivate / cleanup

    def _load_backend(self, backend: DepthBackend | None = None) -> None:
        """Load the model (or take ``backend``) and build the pipeline (StartupError)."""
        self._apply_pending()
        self._backend = backend if backend is not None else self._create_backend()
        self._pipeline = self._make_pipeline(self._values)
        self._stats.set_info("backend", getattr(self._backend, "name", type(self._backend)))
        self._stats.set_info("network_input",
                             "x".join(str(v) for v in self._backend.input_size[::-1]))
        self._stats.set_info("depth_units", self._backend.units.describe())

    def _create_backend(self) -> DepthBackend:
        name = value_of(self._values, "backend", str)
        path = value_of(self._values, "model_path", str)
        if not path:
            raise StartupError("parameter model_path is empty: set it to an ONNX model, a "
                               "TensorRT engine or a checkpoint (-p model_path:=FILE or "
                               "params_file)")
        try:
            return create_backend_from_params(self._values)
        except Exception as exc:  # BackendError and whatever a library raises on load
            raise StartupError(f"cannot start backend '{name}' with model {path}: {exc}") from exc

    def _make_pipeline(self, values: dict[str, ParamValue]) -> DepthPipeline:
        assert self._backend is not None
        try:
            return build_pipeline(values, self._backend)[1]
        except ScaleSetupError as exc:  # e.g. a relative model with no scale estimator
            raise StartupError(str(exc)) from None

    def _create_publishers(self, create: Callable[..., Publisher]) -> None:
        """The output publishers, made by ``create`` (a plain or a lifecycle publisher)."""
        overrides = QoSOverridingOptions.with_default_policies()

        def output(msg_type: type, topic: str) -> Publisher:
            return create(msg_type, topic, own_qos(OUTPUT_QOS),
                          qos_overriding_options=overrides)

        try:
            self._pub_depth = output(Image, node_params.DEPTH_TOPIC)
            self._pub_info = output(CameraInfo, node_params.DEPTH_INFO_TOPIC)
            self._pub_points = output(PointCloud2, node_params.POINTS_TOPIC)
            self._pub_colored = output(Image, node_params.COLORED_TOPIC)
        except Exception as exc:  # InvalidQosOverridesError, RuntimeError of a bad policy
            raise StartupError(f"output QoS: {exc}") from None
        self._pub_diag = create(DiagnosticArray, node_params.DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self._publishers = [self._pub_depth, self._pub_info, self._pub_points,
                            self._pub_colored, self._pub_diag]

    def _create_inputs(self) -> None:
        """Subscriptions, the inference worker and the diagnostics timer (StartupError)."""
        overrides = QoSOverridingOptions.with_default_policies()
        input_group = MutuallyExclusiveCallbackGroup()
        inference_group = MutuallyExclusiveCallbackGroup()
        diag_group = MutuallyExclusiveCallbackGroup()
        transport = value_of(self._values, "image_transport", str)
        try:
            self._inputs = [
                self.create_subscription(CompressedImage if transport == "compressed" else Image,
                                         self._image_topic(),
                                         self._guarded("image", self._on_image),
                                         own_qos(INPUT_QOS),
                                         callback_group=input_group,
                                         qos_overriding_options=overrides),
                self.create_subscription(CameraInfo, node_params.CAMERA_INFO_TOPIC,
                                         self._guarded("camera_info", self._on_camera_info),
                                         own_qos(INPUT_QOS), callback_group=input_group,
                                         qos_overriding_options=overrides),
            ]
        except Exception as exc:  # InvalidQosOverridesError, RuntimeError of a bad policy
            for sub in self._inputs:
                if isinstance(sub, Subscription):
                    self.destroy_subscription(sub)
            self._inputs = []
            raise StartupError(f"input QoS: {exc}") from None
        self._frame_ready = self.create_guard_condition(
            self._guarded("inference", self._on_frame_ready), callback_group=inference_group)
        # Housekeeping runs on steady time: with use_sim_time and no /clock (or a paused
        # bag) the node's clock stands still, but diagnostics must keep coming.
        timer = self.create_timer(value_of(self._values, "diagnostics_period", float),
                                  self._guarded("diagnostics", self._publish_diagnostics),
                                  callback_group=diag_group,
                                  clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._inputs += [self._frame_ready, timer]
        self._frame_ready.trigger()  # applies parameter changes made while inactive

    def _destroy_inputs(self, timeout: float = 5.0) -> None:
        """Stop intake and the worker; wait for a frame in flight (deactivate)."""
        if not self._gate.close(timeout):
            self.get_logger().warning(f"a callback did not finish within {timeout:g} s")
        for entity in self._inputs:
            if isinstance(entity, GuardCondition):
                self.destroy_guard_condition(entity)
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._inputs, self._frame_ready = [], None
        self._mailbox.take()  # a frame of before the pause is never published after it
        self._gate.open()

    def _release(self, destroy: Callable[[Any], Any]) -> None:
        """Destroy the publishers (with ``destroy``) and free the backend (cleanup)."""
        for pub in self._publishers:
            destroy(pub)
        self._publishers = []
        self._pipeline = None
        backend, self._backend = self._backend, None
        close = getattr(backend, "close", None)
        if callable(close):
            close()

    def _image_topic(self) -> str:
        """The image subscription's topic for the chosen ``image_transport``.

        As image_transport does: the transport's topic hangs off the resolved (remapped)
        base topic, so remapping ``image`` moves ``image/compressed`` with it.
        """
        return transport_topic(self.resolve_topic_name(node_params.IMAGE_TOPIC),
                               value_of(self._values, "image_transport", str))

    def _ready_text(self) -> str:
        return (f"{self._stats.info['backend']} backend, network input "
                f"{self._stats.info['network_input']}, subscribed to "
                f"{self._image_topic()} and "
                f"{self.resolve_topic_name(node_params.CAMERA_INFO_TOPIC)}")

    # -- parameters at run time

    def _coerce_parameters(self, params: Sequence[Parameter]) -> list[Parameter]:
        return coerce_numbers(params)

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Validate a change as a whole; the worker applies it at once, frames or not."""
        with self._pending_lock:
            candidate = dict(self._pending if self._pending is not None else self._values)
        try:
            for p in params:  # the others were validated when they were set
                candidate[p.name] = node_params.validate(p.name, _plain(p.value))
            node_params.check_combination(candidate)
            if self._backend is not None:  # unconfigured: configure checks it with the model
                make_scale_estimator(pipeline_config(candidate).scale, self._backend.units)
        except (ParamError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._pending_lock:
            self._pending = candidate
        if self._frame_ready is not None:  # active: the worker applies it now
            self._frame_ready.trigger()
        return SetParametersResult(successful=True)

    def _apply_pending(self) -> None:
        """Make an accepted change effective (worker thread, or while inactive)."""
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None or pending == self._values:
            return
        changed = sorted(k for k in pending if pending[k] != self._values.get(k))
        self._values = pending
        if self._backend is not None:
            self._pipeline = self._make_pipeline(pending)
        self._intake.config = camera_info_config(pending)
        self._stats.set_info("scale_method", pending["scale.method"])
        self.get_logger().info(f"parameters changed: {', '.join(changed)}")

    # -- callbacks

    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = time.perf_counter()
        self._stats.frame_received()
        pipeline = self._pipeline
        if pipeline is None or not self._outputs_wanted():
            self._stats.frame_skipped()
            return
        # Checked, converted and prepared for the network here, before the one-slot
        # mailbox: a bad frame is counted as what it is and never displaces a good one,
        # and this work overlaps the worker's inference of the previous frame.
        frame = self._intake.take_image(msg)  # reports and counts what it skips
        if frame is None:
            return
        self._stats.set_info("intrinsics", frame.intrinsics)
        convert_ms = (time.perf_counter() - received) * 1e3
        prepared = pipeline.prepare(frame.rgb, frame.k)
        self._mailbox.put((msg, prepared, received, convert_ms))
        frame_ready = self._frame_ready
        if frame_ready is not None:
            frame_ready.trigger()

    def _outputs_wanted(self) -> bool:
        """Whether any output has a subscriber (else frames are skipped, not processed)."""
        return any(pub.get_subscription_count() > 0 for pub in (
            self._pub_depth, self._pub_info, self._pub_points, self._pub_colored))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._intake.add_camera_info(msg)  # an invalid one is reported and counted

    def _guarded(self, name: str, callback: Callable[..., Any], gated: bool = True,
                 on_error: Callable[..., Any] = lambda *args: None) -> Callable[..., Any]:
        """``callback`` as the executor should call it: never raising, and idle once stopped.

        An exception is counted as ``CALLBACK_FAILURES[name]`` (its first occurrence logged
        with the traceback) and ``on_error(*args)`` (the callback's own arguments) is
        returned instead: rclpy needs a list from a pre-set parameter callback and a
        result from an on-set one. ``gated`` callbacks are skipped while the gate is
        closed (they publish or touch the backend).
        """
        kind = CALLBACK_FAILURES[name]

        @functools.wraps(callback)
        def run(*args: Any) -> Any:
            if gated and not self._gate.enter():
                return on_error(*args)
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001 - no callback may end the node
                self._callback_failed(kind, exc)
                return on_error(*args)
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
        self._apply_pending()
        item = self._mailbox.take()
        if item is None:
            return
        try:
            self._process(*item)
        except InputError as exc:
            self._bad_input(exc.kind, str(exc))

    # -- the work

    def _process(self, msg: Image | CompressedImage, frame: PreparedFrame, received: float,
                 convert_ms: float) -> None:
        want_depth = self._pub_depth.get_subscription_count() > 0
        want_info = self._pub_info.get_subscription_count() > 0
        want_points = self._pub_points.get_subscription_count() > 0
        want_colored = (value_of(self._values, "colored.enabled", bool)
                        and self._pub_colored.get_subscription_count() > 0)
        pipeline = self._pipeline
        if pipeline is None or not (want_depth or want_info or want_points or want_colored):
            self._stats.frame_skipped()
            return
        size = (int(frame.image_rgb.shape[0]), int(frame.image_rgb.shape[1]))
        if self._last_size is not None and size != self._last_size:
            self.get_logger().info(f"input resolution changed from {self._last_size[1]}x"
                                   f"{self._last_size[0]} to {size[1]}x{size[0]}")
        self._last_size = size
        stages = {"convert": convert_ms}

        result = pipeline.finish(frame, outputs=Outputs(points=want_points,
                                                        colored=want_colored))
        stages.update({name: ms for name, ms in result.timings.items() if name != "total"})

        t0 = time.perf_counter()
        header = msg.header
        publishers = {node_params.DEPTH_TOPIC: (want_depth, self._pub_depth),
                      node_params.DEPTH_INFO_TOPIC: (want_info, self._pub_info),
                      node_params.COLORED_TOPIC: (want_colored, self._pub_colored)}
        names = [name for name, (wanted, _) in publishers.items() if wanted]
        for name, msg_out in output_messages(result, header, self._types, names).items():
            publishers[name][1].publish(msg_out)
        stages["publish"] = (time.perf_counter() - t0) * 1e3
        if want_points:
            t0 = time.perf_counter()
            cloud = output_message(result, node_params.POINTS_TOPIC, header, self._types)
            if cloud is not None:
                self._pub_points.publish(cloud)
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
        throttle = value_of(self._values, "log_throttle", float)
        now = time.monotonic()
        if throttle > 0 and now - self._last_status_log >= throttle:
            self._last_status_log = now
            self.get_logger().info(f"{report.message}; dropped {self._mailbox.dropped}")

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking callbacks and wait for running ones (a frame in inference)."""
        return self._gate.close(timeout)

    def _detach_logging(self) -> None:
        logging.getLogger("oe_depth_ros").removeHandler(self._log_handler)


class DepthNode(DepthCore, Node):
    """The plain depth node: loads the model and runs from its constructor.

    ``backend``: an already loaded backend (else one from the parameters).
    """

    def __init__(self, backend: DepthBackend | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._setup()
        self._load_backend(backend)
        self._create_publishers(self.create_publisher)
        self._create_inputs()
        self.get_logger().info(f"ready: {self._ready_text()}")

    def destroy_node(self) -> None:
        """Detach the logging bridge, release the backend, destroy the ROS entities."""
        self.stop()
        self._detach_logging()
        self._release(lambda pub: None)  # super().destroy_node() destroys the publishers
        super().destroy_node()


_Transition = Callable[["DepthLifecycleNode", LifecycleState], TransitionCallbackReturn]


def _logged(step: _Transition) -> _Transition:
    """A transition callback whose exception is logged with its traceback, then ERROR.

    rclpy turns an exception in a transition into ERROR silently; ERROR then runs
    :meth:`DepthLifecycleNode.on_error`, which frees everything (unconfigured).
    """
    @functools.wraps(step)
    def run(node: "DepthLifecycleNode", state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return step(node, state)
        except Exception:  # noqa: BLE001 - reported; the state machine handles ERROR
            import traceback

            node.get_logger().error(f"{step.__name__} raised:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return run


class DepthLifecycleNode(DepthCore, LifecycleNode):
    """The managed depth node (``oe_depth_lifecycle_node``), driven by ``lifecycle_msgs``.

    configure: load the model, create the (lifecycle) publishers; a failure is reported
    and leaves the node unconfigured. activate: subscribe, start the worker and the
    diagnostics, enable the publishers. deactivate: stop all of that (publishers
    disabled). cleanup: destroy the publishers and free the model. shutdown: all of it,
    and the process exits with code 0.
    """

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._setup()
        self.get_logger().info("unconfigured: waiting for the configure transition")

    @_logged
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers; FAILURE (unconfigured) if it cannot."""
        try:
            self._load_backend()
            self._create_publishers(self.create_lifecycle_publisher)
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._release(self.destroy_lifecycle_publisher)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self._stats.info['backend']} backend, network "
                               f"input {self._stats.info['network_input']}")
        return super().on_configure(state)

    @_logged
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start processing; FAILURE (inactive) on invalid QoS overrides."""
        try:
            self._create_inputs()
        except StartupError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"active: {self._ready_text()}")
        return super().on_activate(state)

    @_logged
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, wait for a frame in flight, disable the publishers."""
        self._destroy_inputs()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the model."""
        self._release(self.destroy_lifecycle_publisher)
        self.get_logger().info("unconfigured")
        return super().on_cleanup(state)

    @_logged
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything; the process then exits with code 0."""
        self._destroy_inputs()
        self._release(self.destroy_lifecycle_publisher)
        self.finished.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free everything and go back to unconfigured."""
        self._destroy_inputs()
        self._release(self.destroy_lifecycle_publisher)
        self.get_logger().error("unconfigured after a failed transition")
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Detach the logging bridge, release the backend, destroy the ROS entities."""
        self.stop()
        self._detach_logging()
        self._release(lambda pub: None)
        super().destroy_node()


#: Seconds the process keeps serving after a managed node's shutdown transition, so
#: that the change_state reply reaches the manager before the process exits.
_SHUTDOWN_REPLY_S = 0.2


class DrainingExecutor(MultiThreadedExecutor):
    """rclpy's multi-threaded executor that can wait for the callbacks it has started.

    rclpy 7.1's ``Executor.shutdown`` never waits for them (its wait is skipped once
    the shutdown flag is set) and destroys the guard condition that a callback just
    taken from its entity still triggers; that callback's task then holds an
    ``InvalidHandle`` nobody reads, printed at exit as "The following exception was
    never retrieved: cannot use Destroyable because destruction was requested". Call
    :meth:`drain` after the last ``spin_once`` and before ``shutdown``.
    """

    def drain(self, timeout_sec: float) -> bool:
        """Wait for every started callback and read its outcome; False on timeout.

        An exception a callback raised is logged (never left unread).
        """
        deadline = time.monotonic() + timeout_sec
        # the tasks spin_once handed to the threads (rclpy's private list: absent in
        # another rclpy, the drain waits for nothing rather than failing the exit)
        for task in list(getattr(self, "_futures", ())):
            while not task.done():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
            exc = task.exception()
            if exc is not None:
                rclpy.logging.get_logger(NODE_NAME).error(f"a callback raised: {exc!r}")
        return True


def main(args: Sequence[str] | None = None, *, signals: ShutdownSignals | None = None,
         lifecycle: bool = False) -> int:
    """Run a node until SIGINT/SIGTERM or its shutdown transition: exit 0; 1 if it cannot start.

    ``signals``: handlers installed earlier (``oe_depth_ros.node_main`` does that before
    the heavy imports); else they are installed here.
    """
    if signals is None:
        signals = ShutdownSignals().install()
    node: DepthCore | None = None
    try:
        if signals.requested.is_set():  # a signal during the imports
            return 0
        rclpy.init(args=list(args) if args is not None else sys.argv,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = DepthLifecycleNode() if lifecycle else DepthNode()
        except StartupError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor = DrainingExecutor(num_threads=4)
        executor.add_node(node)
        try:
            while not (signals.requested.is_set() or node.finished.is_set()):
                executor.spin_once(timeout_sec=0.1)
            if node.finished.is_set() and not signals.requested.is_set():
                signals.requested.wait(_SHUTDOWN_REPLY_S)
        except ExternalShutdownException:
            pass
        finally:
            signals.stopping()
            if not (node.stop(timeout=5.0) and executor.drain(timeout_sec=5.0)):
                rclpy.logging.get_logger(NODE_NAME).warning("a callback did not finish "
                                                            "within 5 s of shutdown")
            executor.shutdown(timeout_sec=0.0)
        return 0
    finally:
        signals.stopping()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
