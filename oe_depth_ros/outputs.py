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
"""One :class:`~oe_depth_ros.pipeline.DepthResult` -> the node's output messages.

The node publishes and ``oe-depth process-bag`` writes the same messages, built here
for a header and a :class:`~oe_depth_ros.messages.MessageTypes` (rclpy's or a rosbags
typestore's): depth image (32FC1 meters, NaN invalid, REP 118), its CameraInfo, the
PointCloud2 and the colorized depth (rgb8). Keys are the node's topic names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from oe_depth_ros.messages import Header, MessageTypes, RosMessage, numpy_to_image
from oe_depth_ros.node_params import COLORED_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC, POINTS_TOPIC

if TYPE_CHECKING:
    from oe_depth_ros.pipeline import DepthResult

__all__ = ["DEPTH_ENCODING", "COLORED_ENCODING", "OUTPUT_NAMES", "output_message",
           "output_messages"]

#: Encodings of the published images.
DEPTH_ENCODING = "32FC1"
COLORED_ENCODING = "rgb8"
#: The outputs, in publishing order.
OUTPUT_NAMES = (DEPTH_TOPIC, DEPTH_INFO_TOPIC, POINTS_TOPIC, COLORED_TOPIC)


def output_message(result: "DepthResult", name: str, header: Header,
                   types: MessageTypes) -> RosMessage | None:
    """The message of output ``name`` (a key of :data:`OUTPUT_NAMES`) for ``result``.

    None for the cloud or colorized depth when the result has none (not asked for).
    """
    if name == DEPTH_TOPIC:
        return numpy_to_image(result.depth, DEPTH_ENCODING, header, types)
    if name == DEPTH_INFO_TOPIC:
        return result.camera_info(header, types)
    if name == POINTS_TOPIC:
        return result.pointcloud2(header, types) if result.points is not None else None
    if name == COLORED_TOPIC:
        if result.colored is None:
            return None
        return numpy_to_image(result.colored, COLORED_ENCODING, header, types)
    raise ValueError(f"unknown output {name!r}: choose from {', '.join(OUTPUT_NAMES)}")


def output_messages(result: "DepthResult", header: Header, types: MessageTypes,
                    names: Iterable[str] = OUTPUT_NAMES) -> dict[str, RosMessage]:
    """Output name -> message for each of ``names`` the result has."""
    out = {}
    for name in names:
        msg = output_message(result, name, header, types)
        if msg is not None:
            out[name] = msg
    return out
