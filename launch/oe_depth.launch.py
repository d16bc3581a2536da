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
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info

(one command line).

``backend`` and ``model_path`` override the parameter file only when given (non-empty),
so a model configured in ``params_file`` is kept otherwise.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "oe_depth_ros"

#: (name, default, description) of every launch argument; None = package share paths.
ARGUMENTS = (
    ("params_file", None, "ROS parameter file of the node"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: from params_file)"),
    ("model_path", "", "engine, ONNX or checkpoint (empty: from params_file)"),
    ("image_topic", "/camera/image_raw", "input sensor_msgs/Image topic"),
    ("camera_info_topic", "/camera/camera_info", "input sensor_msgs/CameraInfo topic"),
    ("namespace", "oe_depth", "namespace of the node and its output topics"),
    ("use_sim_time", "false", "use /clock (true when replaying a bag)"),
    ("use_rviz", "false", "start RViz with config/oe_depth.rviz"),
    ("log_level", "info", "debug | info | warn | error | fatal"),
)


def _share(*parts):
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def _node_and_rviz(context):
    """Build the node with the launch arguments' values (overrides only when set)."""
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    use_sim_time = arg["use_sim_time"].lower() in ("true", "1", "yes")
    overrides = {"use_sim_time": use_sim_time}
    for name in ("backend", "model_path"):
        if arg[name]:
            overrides[name] = arg[name]
    node = Node(
        package=PACKAGE,
        executable="oe_depth_node",
        name="oe_depth_node",
        namespace=arg["namespace"],
        parameters=[arg["params_file"], overrides],
        remappings=[("image", arg["image_topic"]), ("camera_info", arg["camera_info_topic"])],
        arguments=["--ros-args", "--log-level", arg["log_level"]],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", _share("config", "oe_depth.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="screen",
    )
    return [node, rviz]


def generate_launch_description():
    """Declare the arguments, then start the node (and RViz)."""
    declared = [
        DeclareLaunchArgument(
            name,
            default_value=_share("config", "oe_depth.yaml") if default is None else default,
            description=description,
        )
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_node_and_rviz)])
