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
"""Launch oe_depth_node on a camera stream (and RViz on request).

    ros2 launch oe_depth_ros oe_depth.launch.py model_path:=/path/model.onnx
        image_topic:=/camera/image_rect camera_info_topic:=/camera/camera_info

(one command line). ``lifecycle:=true`` starts the managed ``oe_depth_lifecycle_node``
instead, for a lifecycle manager to configure and activate.

``backend`` and ``model_path`` override the parameter file only when given (non-empty),
so a model configured in ``params_file`` is kept otherwise. RViz starts only when
installed; the launch ends (non-zero when the node failed) when the node exits; the
node uses config/fastdds_shm.xml unless ``FASTRTPS_DEFAULT_PROFILES_FILE`` is set (the
camera driver needs the same profile for shared memory: see the README's
troubleshooting).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from oe_depth_ros.launch_common import (LIFECYCLE_ARGUMENT, NODE_ARGUMENTS, argument_values,
                                        declare_arguments, depth_node, is_true, rviz_nodes,
                                        shut_down_with, transport_profile)

#: (name, default, description) of every launch argument (see oe_depth_ros.launch_common).
ARGUMENTS = NODE_ARGUMENTS + (
    ("image_topic", "/camera/image_rect", "input rectified image (base topic; the "
     "image_transport parameter picks Image or <topic>/compressed)"),
    ("camera_info_topic", "/camera/camera_info", "input sensor_msgs/CameraInfo topic"),
    ("use_sim_time", "false", "use /clock (true when replaying a bag)"),
    ("use_rviz", "false", "start RViz with config/oe_depth.rviz"),
    LIFECYCLE_ARGUMENT,
)


def _node_and_rviz(context):
    """Build the node with the launch arguments' values (overrides only when set)."""
    arg = argument_values(context, ARGUMENTS)
    use_sim_time = is_true(arg["use_sim_time"])
    remappings = [("image", arg["image_topic"]), ("camera_info", arg["camera_info_topic"])]
    node = depth_node(arg, remappings, use_sim_time)
    return [*transport_profile(arg), node, shut_down_with(node),
            *rviz_nodes(arg, use_sim_time)]


def generate_launch_description():
    """Declare the arguments, then start the node (and RViz)."""
    return LaunchDescription([*declare_arguments(ARGUMENTS),
                              OpaqueFunction(function=_node_and_rviz)])
