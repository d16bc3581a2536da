"""What the package's launch files share: the depth node, RViz and their arguments.

Used by ``launch/*.launch.py``. ``launch`` and ``launch_ros`` are imported inside the
functions, so importing this module (or the package) never needs them.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

PACKAGE = "oe_depth_ros"

#: A launch argument: (name, default, description). A default of None makes the
#: argument required; a tuple names a file in the package share (path parts).
Argument = tuple[str, Union[str, tuple[str, ...], None], str]

#: Arguments of the node that every launch file declares.
NODE_ARGUMENTS: tuple[Argument, ...] = (
    ("params_file", ("config", "oe_depth.yaml"), "ROS parameter file of the node"),
    ("backend", "", "auto | tensorrt | onnxruntime | torch (empty: from params_file)"),
    ("model_path", "", "engine, ONNX or checkpoint (empty: from params_file)"),
    ("namespace", "oe_depth", "namespace of the node and its output topics"),
    ("log_level", "info", "debug | info | warn | error | fatal"),
)
#: Node arguments that override the parameter file only when given (non-empty).
OVERRIDES = ("backend", "model_path")


def share_file(*parts: str) -> Any:
    """A substitution for ``parts`` below the package's share directory."""
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def declare_arguments(arguments: Sequence[Argument]) -> list[Any]:
    """``DeclareLaunchArgument`` actions for ``arguments`` (see :data:`Argument`)."""
    from launch.actions import DeclareLaunchArgument

    declared = []
    for name, default, description in arguments:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=description))
        else:
            value = share_file(*default) if isinstance(default, tuple) else default
            declared.append(DeclareLaunchArgument(name, default_value=value,
                                                  description=description))
    return declared


def argument_values(context: Any, arguments: Sequence[Argument]) -> dict[str, str]:
    """The values of ``arguments`` in a launch context, as strings."""
    from launch.substitutions import LaunchConfiguration

    return {name: LaunchConfiguration(name).perform(context) for name, _, _ in arguments}


def is_true(text: str) -> bool:
    """A launch argument's boolean value (true, 1, yes; any case)."""
    return text.lower() in ("true", "1", "yes")


def depth_node(values: dict[str, str], remappings: Sequence[tuple[str, str]],
               use_sim_time: bool) -> Any:
    """oe_depth_node with the parameter file, the given overrides and the log level."""
    from launch_ros.actions import Node

    overrides: dict[str, Any] = {"use_sim_time": use_sim_time}
    overrides.update({name: values[name] for name in OVERRIDES if values[name]})
    return Node(
        package=PACKAGE,
        executable="oe_depth_node",
        name="oe_depth_node",
        namespace=values["namespace"],
        parameters=[values["params_file"], overrides],
        remappings=list(remappings),
        arguments=["--ros-args", "--log-level", values["log_level"]],
        output="screen",
        emulate_tty=True,
    )


def rviz_node(use_sim_time: bool) -> Any:
    """RViz with config/oe_depth.rviz, started when the ``use_rviz`` argument is true."""
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    return Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", share_file("config", "oe_depth.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="screen",
    )
