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
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "oe_depth_ros"
#: Topics that ``oe-depth kitti2bag`` writes for KITTI camera 2 (the left colour camera).
KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
KITTI_CAMERA_INFO = "/kitti/camera_color_left/camera_info"

ARGUMENTS = (
    ("bag", None, "rosbag2 directory written by `oe-depth kitti2bag` (required)"),
    ("model_path", "", "engine, ONNX or checkpoint (empty: from params_file)"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: from params_file)"),
    ("params_file", "", "ROS parameter file of the node (empty: config/oe_depth.yaml)"),
    ("namespace", "oe_depth", "namespace of the node and its output topics"),
    ("rate", "1.0", "replay rate of ros2 bag play"),
    ("loop", "false", "replay the bag in a loop"),
    ("use_rviz", "true", "start RViz with config/oe_depth.rviz"),
    ("log_level", "info", "debug | info | warn | error | fatal"),
)


def _share(*parts):
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def _replay(context):
    """The bag player, the node with sim time and the KITTI topics, and RViz."""
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    play = ["ros2", "bag", "play", arg["bag"], "--clock", "100", "--rate", arg["rate"],
            "--qos-profile-overrides-path", _share("config", "tf_static_qos.yaml")]
    if arg["loop"].lower() in ("true", "1", "yes"):
        play.append("--loop")
    overrides = {"use_sim_time": True}
    for name in ("backend", "model_path"):
        if arg[name]:
            overrides[name] = arg[name]
    params_file = arg["params_file"] or _share("config", "oe_depth.yaml")
    node = Node(
        package=PACKAGE,
        executable="oe_depth_node",
        name="oe_depth_node",
        namespace=arg["namespace"],
        parameters=[params_file, overrides],
        remappings=[("image", KITTI_IMAGE), ("camera_info", KITTI_CAMERA_INFO)],
        arguments=["--ros-args", "--log-level", arg["log_level"]],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", _share("config", "oe_depth.rviz")],
        parameters=[{"use_sim_time": True}],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="screen",
    )
    return [ExecuteProcess(cmd=play, name="bag_play", output="screen"), node, rviz]


def generate_launch_description():
    """Declare the arguments, then start the player, the node and RViz."""
    declared = []
    for name, default, description in ARGUMENTS:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=description))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default,
                                                  description=description))
    return LaunchDescription([*declared, OpaqueFunction(function=_replay)])
