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
"""The depth node's parameters and topics as data, with no ROS import.

One table, every user: ``oe_depth_ros.node`` declares its ROS parameters from it
(types, ranges, read-only flags, descriptions); the pipeline dataclasses
(``PipelineConfig``, ``PointsConfig``, ``ColoredConfig``, ``ScaleConfig``,
``CameraInfoConfig``) take their defaults from it (:func:`field_default`) and check
their fields against it (:func:`check_fields`); ``oe-depth process-bag`` reads
``--params-file`` / ``--set`` through it; ``config/oe_depth.yaml`` is checked against it
by the tests, and the docs' tables are generated from it
(``python -m oe_depth_ros.node_params --markdown``), so none of them can drift.

Each entry point checks a value once: the node and ``process-bag`` with
:func:`validate` and :func:`check_combination`, after which :func:`build_config` makes
the dataclasses without checking again; code that constructs a dataclass itself is
checked by that dataclass (:func:`check_fields`).

Names with dots (``points.decimation``) are nested keys in a ROS parameter file.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, TypeVar, Union

from oe_depth_ros.compressed import TRANSPORTS
from oe_depth_ros.config import CHECKED_BY_DATACLASS
from oe_depth_ros.geometry import KITTI_NORMALIZED_INTRINSICS
from oe_depth_ros.inference.backends import BACKEND_NAMES as BACKENDS
from oe_depth_ros.node_names import NODE_NAME

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")

PARAMS_FILE_KEY = "ros__parameters"

#: A parameter value: the Python types of the ROS parameter types the node declares.
ParamValue = Union[bool, int, float, str, list[float]]


class ParamError(ValueError):
    """A parameter value is of the wrong type, out of range or not an allowed choice."""


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One node parameter: name, default (whose Python type is the ROS type), limits, text.

    ``limits`` is an inclusive (min, max) for int and float parameters (and for every
    element of a float list); ``choices`` lists the allowed strings; ``offline_choices``
    the further ones that only ``oe-depth process-bag`` accepts (it reads a bag's LiDAR
    scans, the node subscribes to none).
    """

    name: str
    default: ParamValue
    description: str
    unit: str = ""
    limits: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    offline_choices: tuple[str, ...] = ()
    read_only: bool = False
    length: int | None = None  # required length of a list parameter

    def allowed(self, offline: bool = False) -> tuple[str, ...]:
        """The accepted strings: the node's, plus process-bag's own when ``offline``."""
        return self.choices + self.offline_choices if offline else self.choices

    @property
    def type_name(self) -> str:
        """'bool', 'int', 'float', 'string' or 'float[]' (ROS parameter types)."""
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        if isinstance(self.default, str):
            return "string"
        if isinstance(self.default, list) and all(isinstance(v, float) for v in self.default):
            return "float[]"
        raise TypeError(f"parameter {self.name}: unsupported default {self.default!r}")


def _p(name: str, default: ParamValue, description: str, **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, default=default, description=description, **kw)


#: Every parameter the node declares, in documentation order.
PARAMS: tuple[ParamSpec, ...] = (
    # --- model (fixed for the node's lifetime)
    _p("backend", "auto", "Inference backend; auto picks TensorRT for engines on a GPU, "
       "else the fastest installed CPU backend for the file (docs/deployment.md).",
       choices=BACKENDS, read_only=True),
    _p("model_path", "", "Model file: TensorRT engine (.engine/.plan), ONNX (.onnx) or "
       "checkpoint (.pt/.pth/.ckpt). Required.", read_only=True),
    _p("model_config", "", "Architecture name or YAML for a plain state_dict (torch backend "
       "only); empty = read it from the checkpoint.", read_only=True),
    _p("device", "auto", "auto, cpu, cuda or cuda:N.", read_only=True),
    _p("threads", 0, "Intra-op threads of the CPU backends; 0 = the library's default.",
       limits=(0, 256), read_only=True),
    # --- input
    _p("image_transport", "raw", "How images arrive (image_transport's transport names): raw "
       "subscribes to image (sensor_msgs/Image), compressed to image/compressed "
       "(CompressedImage, jpeg or png).", choices=TRANSPORTS, read_only=True),
    # max_input_pixels: 4096 x 4096, above 4K UHD and 12 MP cameras.
    _p("max_input_pixels", 4096 * 4096, "Larger images (width x height) are refused "
       "and counted before they are converted or decoded.", unit="pixels",
       limits=(1, 2 ** 31 - 1), read_only=True),
    _p("camera_info.sync", "latest", "latest: use the newest valid CameraInfo; approximate: "
       "use the one whose stamp is nearest the image's, within camera_info.slop.",
       choices=("latest", "approximate")),
    _p("camera_info.slop", 0.05, "Largest stamp difference accepted by approximate sync.",
       unit="s", limits=(0.0, 10.0)),
    _p("camera_info.use_fallback", True, "Without any CameraInfo, use "
       "camera_info.fallback_intrinsics (with a warning) instead of dropping frames."),
    _p("camera_info.fallback_intrinsics", list(KITTI_NORMALIZED_INTRINSICS), "Normalized "
       "[fx/W, fy/H, cx/W, cy/H] used without CameraInfo (default: KITTI's, as in training).",
       limits=(0.0, 100.0), length=4),
    # --- depth output
    _p("output_resolution", "camera", "camera: depth at the input image size; network: at "
       "the network's input size (cheaper).", choices=("camera", "network")),
    _p("min_range", 0.1, "Depths below this are invalid (NaN).", unit="m",
       limits=(0.0, 1000.0)),
    _p("max_range", 80.0, "Depths above this are invalid (NaN).", unit="m",
       limits=(0.01, 1000.0)),
    # --- point cloud
    _p("points.decimation", 1, "Keep every n-th row and column in the cloud.",
       limits=(1, 64)),
    _p("points.max_range", 0.0, "Drop points farther than this (z); 0 = max_range.",
       unit="m", limits=(0.0, 1000.0)),
    _p("points.organized", False, "Organized cloud (rows x columns with NaN holes) "
       "instead of a list of valid points."),
    _p("points.rgb_type", "float32", "Storage of the packed 0x00RRGGBB color field "
       "(RViz's RGB8 reads both).", choices=("float32", "uint32")),
    # --- colorized depth
    _p("colored.enabled", True, "Publish depth/colored (only computed while subscribed)."),
    _p("colored.min_range", 0.0, "Depth shown in the nearest color.", unit="m",
       limits=(0.0, 1000.0)),
    _p("colored.max_range", 80.0, "Depth shown in the farthest color.", unit="m",
       limits=(0.01, 1000.0)),
    # --- metric scale
    _p("scale.method", "auto", "auto: a metric model's own metres, scale.relative_method "
       "for a relative model; fixed: multiply by scale.factor; camera_height: fit the "
       "ground plane and use the known mounting height; lidar (process-bag only): the "
       "median ratio to the bag's LiDAR scan.",
       choices=("auto", "fixed", "camera_height"), offline_choices=("lidar",)),
    _p("scale.relative_method", "none", "With auto: the estimator for a relative model "
       "(none: such a model is refused at start-up); camera_height also checks a metric "
       "model's scale in the diagnostics; lidar: process-bag only.",
       choices=("none", "fixed", "camera_height"), offline_choices=("lidar",)),
    _p("scale.factor", 1.0, "Fixed scale factor; for camera_height the scale used before "
       "the first good fit.", limits=(1e-6, 1e6)),
    _p("scale.camera_height", 1.65, "Camera height over the ground (KITTI: 1.65).", unit="m",
       limits=(0.01, 100.0)),
    _p("scale.window", 5, "Temporal median window of the camera_height scale.",
       unit="frames", limits=(1, 1000)),
    _p("scale.min_confidence", 0.3, "Ground fits with a lower inlier ratio keep the last "
       "good scale.", limits=(0.0, 1.0)),
    # --- runtime
    _p("diagnostics_period", 1.0, "Period of the /diagnostics status.", unit="s",
       limits=(0.1, 60.0), read_only=True),
    _p("log_throttle", 10.0, "Least time between two periodic status log lines.", unit="s",
       limits=(0.0, 3600.0)),
)

_BY_NAME = {p.name: p for p in PARAMS}


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """One topic of the node (names are relative: they follow the node's namespace)."""

    name: str
    msg_type: str
    direction: str  # "sub" or "pub"
    qos: str
    description: str


#: The node's topic names (relative ones follow the node's namespace); one home for
#: the node, ``process-bag`` and the tables below.
IMAGE_TOPIC = "image"
#: Where image_transport's compressed plugin publishes for the base topic IMAGE_TOPIC.
COMPRESSED_IMAGE_TOPIC = IMAGE_TOPIC + "/compressed"
CAMERA_INFO_TOPIC = "camera_info"
DEPTH_TOPIC = "depth/image"
DEPTH_INFO_TOPIC = "depth/camera_info"
POINTS_TOPIC = "points"
COLORED_TOPIC = "depth/colored"
DIAGNOSTICS_TOPIC = "/diagnostics"

#: The QoS defaults as the tables state them (the profiles are oe_depth_ros.node's
#: INPUT_QOS and OUTPUT_QOS); both take ``qos_overrides`` parameters (:func:`qos_override`).
INPUT_QOS_TEXT = "sensor data: best effort, keep last 5; qos_overrides"
OUTPUT_QOS_TEXT = "reliable, keep last 1; qos_overrides"
#: The QoS policies that ``qos_overrides`` parameters may set (rclpy's default policies).
QOS_OVERRIDE_POLICIES = ("history", "depth", "reliability")

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(name=IMAGE_TOPIC, msg_type="sensor_msgs/msg/Image", direction="sub",
              qos=INPUT_QOS_TEXT,
              description="Rectified camera image (rgb8, bgr8, rgba8, bgra8, mono8/16, bayer_*); "
                          "with image_transport raw."),
    TopicSpec(name=COMPRESSED_IMAGE_TOPIC, msg_type="sensor_msgs/msg/CompressedImage",
              direction="sub", qos=INPUT_QOS_TEXT,
              description="The same image, jpeg or png as image_transport's compressed plugin "
                          "writes it; with image_transport compressed."),
    TopicSpec(name=CAMERA_INFO_TOPIC, msg_type="sensor_msgs/msg/CameraInfo", direction="sub",
              qos=INPUT_QOS_TEXT, description="Calibration of the rectified image (P, else K)."),
    TopicSpec(name=DEPTH_TOPIC, msg_type="sensor_msgs/msg/Image", direction="pub",
              qos=OUTPUT_QOS_TEXT,
              description="32FC1 depth in meters along the optical axis, NaN = invalid; "
                          "input header."),
    TopicSpec(name=DEPTH_INFO_TOPIC, msg_type="sensor_msgs/msg/CameraInfo", direction="pub",
              qos=OUTPUT_QOS_TEXT,
              description="Intrinsics of depth/image (scaled to its size); input header."),
    TopicSpec(name=POINTS_TOPIC, msg_type="sensor_msgs/msg/PointCloud2", direction="pub",
              qos=OUTPUT_QOS_TEXT,
              description="x, y, z float32 + rgb in the camera's optical frame "
                          "(input frame_id)."),
    TopicSpec(name=COLORED_TOPIC, msg_type="sensor_msgs/msg/Image", direction="pub",
              qos=OUTPUT_QOS_TEXT,
              description="rgb8 colorized depth on a fixed colored.min_range..max_range "
                          "scale."),
    TopicSpec(name=DIAGNOSTICS_TOPIC, msg_type="diagnostic_msgs/msg/DiagnosticArray",
              direction="pub", qos="reliable, keep last 10",
              description="Rate, latency p50/p99, per-stage times, dropped frames, backend, "
                          "scale, error counts; every diagnostics_period."),
)


def qos_override(topic: str, entity: str, policy: str) -> str:
    """The name of a standard QoS override parameter (REP 2003, rclpy/rclcpp).

    ``topic`` is the fully resolved topic (``/oe_depth/image``, after remapping),
    ``entity`` ``subscription`` or ``publisher``, ``policy`` one of
    :data:`QOS_OVERRIDE_POLICIES`. Such parameters are read-only: set them at start-up
    (``-p qos_overrides./oe_depth/image.subscription.reliability:=reliable`` or a
    parameter file).
    """
    if entity not in ("subscription", "publisher"):
        raise ParamError(f"QoS override entity must be subscription or publisher, got {entity!r}")
    if policy not in QOS_OVERRIDE_POLICIES:
        raise ParamError(f"QoS override policy must be one of {', '.join(QOS_OVERRIDE_POLICIES)}, "
                         f"got {policy!r}")
    if not topic.startswith("/"):
        raise ParamError(f"QoS overrides name the fully resolved topic (/namespace/topic), "
                         f"got {topic!r}")
    return f"qos_overrides.{topic}.{entity}.{policy}"


def spec(name: str) -> ParamSpec:
    """The spec of parameter ``name`` (ParamError if the node has no such parameter)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ParamError(f"unknown parameter {name!r}; known: {', '.join(_BY_NAME)}") from None


def type_name(name: str) -> str | None:
    """The ROS type of parameter ``name`` ('float', 'int', ...), None for other names."""
    p = _BY_NAME.get(name)
    return p.type_name if p is not None else None


def defaults() -> dict[str, ParamValue]:
    """Parameter name -> default value (lists copied)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default)
            for p in PARAMS}


def field_default(name: str) -> Any:
    """A dataclass field with parameter ``name``'s default (a list as a tuple).

    The pipeline dataclasses declare their fields' defaults with it, so the table is
    the one place that states them; the field is marked as checked by its dataclass
    (:func:`check_fields`), so ``config.from_dict`` leaves its value to that one check.
    """
    default = spec(name).default
    return dataclasses.field(default=tuple(default) if isinstance(default, list) else default,
                             metadata={CHECKED_BY_DATACLASS: name})


#: Set while :func:`build_config` builds dataclasses from values an entry point checked.
_CHECKED: ContextVar[bool] = ContextVar("oe_depth_ros_checked_values", default=False)


def check_fields(config: "DataclassInstance", section: str = "") -> None:
    """Check a configuration dataclass's fields that are node parameters (ParamError).

    ``section`` is the parameters' prefix (``points`` for ``points.decimation``); fields
    that are no parameter (nested sections, settings only code sets) are left to the
    dataclass. process-bag's choices count: a dataclass serves both entry points. The
    checks that span parameters run when the section holds all of their names. Inside
    :func:`build_config` nothing is checked: its values were checked on entry. Checked
    values are stored normalized (an int given for a float parameter becomes a float).
    """
    if _CHECKED.get():
        return
    values = {}
    for f in dataclasses.fields(config):
        name = f"{section}.{f.name}" if section else f.name
        if name in _BY_NAME:
            value = values[name] = validate(name, getattr(config, f.name), offline=True)
            object.__setattr__(config, f.name, tuple(value) if isinstance(value, list) else value)
    for error in _combination_errors(values):
        raise ParamError(error)


def build_config(cls: type[T], values: Mapping[str, ParamValue], section: str = "") -> T:
    """Build configuration dataclass ``cls`` from checked parameter values, not checking again.

    ``values`` are the node's dotted names as an entry point has checked them
    (:func:`validate`, :func:`check_combination`); absent names take their defaults.
    Fields are the parameters of ``section`` (``camera_info`` for ``CameraInfoConfig``)
    and nested sections, built alike; fields that are no parameter keep their defaults.
    """
    token = _CHECKED.set(True)
    try:
        return _build(cls, {**defaults(), **values}, section)
    finally:
        _CHECKED.reset(token)


def _build(cls: type[T], values: Mapping[str, ParamValue], section: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{section}.{f.name}" if section else f.name
        if name in _BY_NAME:
            value = values[name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        elif dataclasses.is_dataclass(hints[f.name]) and any(
                n.startswith(name + ".") for n in _BY_NAME):
            kwargs[f.name] = _build(hints[f.name], values, name)
    return cls(**kwargs)


def _in_limits(p: ParamSpec, value: float) -> bool:
    lo, hi = p.limits if p.limits is not None else (-math.inf, math.inf)
    return math.isfinite(value) and lo <= value <= hi


def validate(name: str, value: object, offline: bool = False) -> ParamValue:
    """Check ``value`` for parameter ``name``; return it normalized, else raise ParamError.

    Ints are accepted for float parameters (YAML ``80`` for ``80.0``, ``ros2 param set
    ... max_range 50``) and returned as floats. ``offline``: process-bag's choices count.
    """
    p = spec(name)
    kind = p.type_name
    if kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(f"parameter {name} must be a bool, got {value!r}")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise ParamError(f"parameter {name} must be a string, got {value!r}")
        allowed = p.allowed(offline)
        if allowed and value not in allowed:
            only_offline = (f" ({', '.join(p.offline_choices)}: oe-depth process-bag only)"
                            if value in p.offline_choices else "")
            raise ParamError(f"parameter {name} = {value!r} is not one of "
                             f"{', '.join(p.choices)}{only_offline}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"parameter {name} must be a number, got {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise ParamError(f"parameter {name} must be an integer, got {value!r}")
        if not _in_limits(p, float(value)):
            raise ParamError(f"parameter {name} = {value} is out of range {_range_text(p)}")
        return float(value) if kind == "float" else int(value)
    # float[]
    if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise ParamError(f"parameter {name} must be a list of numbers, got {value!r}")
    if p.length is not None and len(value) != p.length:
        raise ParamError(f"parameter {name} needs {p.length} values, got {len(value)}")
    bad = [v for v in value if not _in_limits(p, float(v))]
    if bad:
        raise ParamError(f"parameter {name}: values {bad} are out of range {_range_text(p)}")
    return [float(v) for v in value]


def validate_all(values: Mapping[str, object], offline: bool = False) -> dict[str, ParamValue]:
    """Validate a name -> value mapping, including the checks that span parameters.

    Names not given take their defaults in the checks that span parameters; the
    returned mapping holds the given names only, normalized.
    """
    out = {name: validate(name, value, offline) for name, value in values.items()}
    check_combination({**defaults(), **out})
    return out


def check_combination(merged: Mapping[str, ParamValue]) -> None:
    """The checks that span parameters, on a full set of validated values."""
    for error in _combination_errors(merged):
        raise ParamError(error)


def _combination_errors(values: Mapping[str, ParamValue]) -> Iterator[str]:
    """What breaks the checks that span parameters, for those whose names ``values`` holds."""
    for lo, hi in (("min_range", "max_range"), ("colored.min_range", "colored.max_range")):
        if lo in values and hi in values and not _number(values, lo) < _number(values, hi):
            yield f"{lo} ({values[lo]}) must be less than {hi} ({values[hi]})"
    name = "camera_info.fallback_intrinsics"
    intrinsics = values.get(name)
    if isinstance(intrinsics, (list, tuple)) and not (intrinsics[0] > 0 and intrinsics[1] > 0):
        yield f"{name} needs positive fx/W and fy/H, got {list(intrinsics)}"


def _number(values: Mapping[str, ParamValue], name: str) -> float:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"parameter {name} must be a number, got {value!r}")
    return float(value)


V = TypeVar("V", bool, int, float, str)


def value_of(values: Mapping[str, ParamValue], name: str, kind: type[V]) -> V:
    """Parameter ``name`` of checked ``values`` as its declared ``kind`` (bool, int, float, str).

    ParamError when the value is of another type (it was not checked, or ``kind`` is not
    the spec's).
    """
    value = values[name]
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ParamError(f"parameter {name} must be of type {kind.__name__}, got {value!r}")


def flatten_params_file(data: Mapping[str, object], node_name: str = NODE_NAME,
                        source: str = "<params>") -> dict[str, object]:
    """A ROS parameter file's mapping -> dotted name -> value for ``node_name``.

    Sections are ``/**``, the node name or its fully qualified name; later sections
    override earlier ones, as in rcl. Nested keys join with dots.
    """
    out: dict[str, object] = {}
    for section, body in data.items():
        key = str(section).rstrip("/")
        if key not in ("/**", node_name, f"/{node_name}") and not key.endswith(f"/{node_name}"):
            continue
        if not isinstance(body, Mapping) or PARAMS_FILE_KEY not in body:
            raise ParamError(f"{source}: section {section!r} needs a '{PARAMS_FILE_KEY}' mapping")

        def walk(prefix: str, node: object) -> None:
            if isinstance(node, Mapping):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = node

        walk("", body[PARAMS_FILE_KEY])
    return out


def read_params_file(path: str | Path, node_name: str = NODE_NAME,
                     offline: bool = False) -> dict[str, ParamValue]:
    """Read a ROS parameter YAML file for the node, each value validated (ParamError names it).

    The checks that span parameters are the caller's (:func:`check_combination`), once
    any later values are in; :func:`load_params_file` is the file alone.
    ``offline``: for ``oe-depth process-bag``, whose choices include its own.
    """
    from oe_depth_ros.config import load_yaml

    flat = flatten_params_file(load_yaml(path), node_name, str(path))
    for name in [n for n in flat if n.startswith("qos_overrides.")]:
        if name.rsplit(".", 1)[-1] not in QOS_OVERRIDE_POLICIES:
            raise ParamError(f"{path}: {name}: the node takes QoS overrides of "
                             f"{', '.join(QOS_OVERRIDE_POLICIES)} only")
        del flat[name]  # rclpy checks the values when the node creates the topic
    try:
        return {name: validate(name, value, offline) for name, value in flat.items()}
    except ParamError as exc:
        raise ParamError(f"{path}: {exc}") from None


def load_params_file(path: str | Path, node_name: str = NODE_NAME,
                     offline: bool = False) -> dict[str, ParamValue]:
    """Read and validate a ROS parameter YAML file for the node (ParamError names the file).

    ``offline``: for ``oe-depth process-bag``, whose choices include its own.
    """
    values = read_params_file(path, node_name, offline)
    try:
        check_combination({**defaults(), **values})
    except ParamError as exc:
        raise ParamError(f"{path}: {exc}") from None
    return values


def _range_text(p: ParamSpec) -> str:
    if p.limits is None:
        return ""
    lo, hi = p.limits
    return f"[{lo:g}, {hi:g}]"


def _default_text(p: ParamSpec) -> str:
    if isinstance(p.default, bool):
        return "true" if p.default else "false"
    if isinstance(p.default, str):
        return f'`"{p.default}"`'
    if isinstance(p.default, list):
        return "`[" + ", ".join(f"{v:g}" for v in p.default) + "]`"
    return f"`{p.default}`"


def markdown_params() -> str:
    """The parameter table in Markdown."""
    rows = ["| parameter | type | default | unit | range / choices | read-only | description |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in PARAMS:
        allowed = " \\| ".join(p.choices) if p.choices else _range_text(p)
        if p.offline_choices:
            allowed += " (process-bag: " + " \\| ".join(p.offline_choices) + ")"
        rows.append(f"| `{p.name}` | {p.type_name} | {_default_text(p)} | {p.unit} | {allowed} "
                    f"| {'yes' if p.read_only else ''} | {p.description} |")
    return "\n".join(rows) + "\n"


def markdown_topics() -> str:
    """The topic table in Markdown."""
    rows = ["| topic | type | direction | QoS | content |", "| --- | --- | --- | --- | --- |"]
    for t in TOPICS:
        direction = "subscribed" if t.direction == "sub" else "published"
        rows.append(f"| `{t.name}` | `{t.msg_type}` | {direction} | {t.qos} | {t.description} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown tables (``--markdown``) or check a parameter file (``--check``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print topic and parameter tables")
    parser.add_argument("--check", metavar="YAML", help="validate a ROS parameter file")
    args = parser.parse_args(argv)
    if args.check:
        try:
            values = load_params_file(args.check)
        except (ParamError, ValueError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1
        sys.stdout.write(f"{args.check}: {len(values)} parameters OK\n")
    if args.markdown or not args.check:
        sys.stdout.write(markdown_topics() + "\n" + markdown_params())
    return 0


if __name__ == "__main__":
    sys.exit(main())
