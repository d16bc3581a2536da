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
"""Replay a KITTI rosbag2 (from ``oe-depth kitti2bag``) through oe_depth_node into RViz.

    ros2 launch oe_depth_ros kitti_replay.launch.py bag:=/data/drive_0001_bag
        model_path:=/path/model.onnx

(one command line).

``ros2 bag play`` publishes /clock (the node and RViz use sim time) and replays
/tf_static with transient-local durability (config/tf_static_qos.yaml), so that RViz
gets the static sensor tree even though it subscribes after the bag's only message.
Player, node and RViz share the Fast DDS shared-memory profile (config/fastdds_shm.xml,
unless ``FASTRTPS_DEFAULT_PROFILES_FILE`` is set), so full-size frames arrive without
loss; RViz starts only when installed; when the node exits the launch ends (with a
non-zero code when the node failed), the player with it.
"""
from launch import LaunchDescription
from launch.actions import ExecuteProcess, OpaqueFunction

from oe_depth_ros.bags.names import LEFT_COLOR_IMAGE_TOPIC, LEFT_COLOR_INFO_TOPIC
from oe_depth_ros.launch_common import (NODE_ARGUMENTS, argument_values, declare_arguments,
                                        depth_node, is_true, rviz_nodes, share_file,
                                        shut_down_with, transport_profile)

#: (name, default, description) of every launch argument (see oe_depth_ros.launch_common).
ARGUMENTS = (("bag", None, "rosbag2 directory written by `oe-depth kitti2bag` (required)"),
             *NODE_ARGUMENTS,
             ("rate", "1.0", "replay rate of ros2 bag play"),
             ("loop", "false", "replay the bag in a loop"),
             ("use_rviz", "true", "start RViz with config/oe_depth.rviz"))


def _replay(context):
    """The bag player, the node with sim time and the KITTI topics, and RViz."""
    arg = argument_values(context, ARGUMENTS)
    play = ["ros2", "bag", "play", arg["bag"], "--clock", "100", "--rate", arg["rate"],
            "--qos-profile-overrides-path", share_file("config", "tf_static_qos.yaml")]
    if is_true(arg["loop"]):
        play.append("--loop")
    remappings = [("image", LEFT_COLOR_IMAGE_TOPIC), ("camera_info", LEFT_COLOR_INFO_TOPIC)]
    node = depth_node(arg, remappings, use_sim_time=True)
    return [*transport_profile(arg), ExecuteProcess(cmd=play, name="bag_play", output="screen"),
            node, shut_down_with(node), *rviz_nodes(arg, use_sim_time=True)]


def generate_launch_description():
    """Declare the arguments, then start the player, the node and RViz."""
    return LaunchDescription([*declare_arguments(ARGUMENTS), OpaqueFunction(function=_replay)])
