"""What the package's launch files share: the depth node, RViz and their arguments.

Used by ``launch/*.launch.py``. ``launch`` and ``launch_ros`` are imported inside the
functions, so importing this module (or the package) never needs them.

Behavior every launch file gets from here:

* the Fast DDS profile ``config/fastdds_shm.xml`` (shared memory with room for full-size
  frames) for every process of the launch, unless ``FASTRTPS_DEFAULT_PROFILES_FILE`` is
  already set or the ``fastdds_profile`` argument is ``none`` (:data:`NO_PROFILE`);
* RViz only when it is installed, else a warning naming the missing package;
* when the node exits, the whole launch shuts down, with a non-zero exit code of
  ``ros2 launch`` when the node failed (the real ``launch`` sets a non-zero code only for
  an exception raised in the launch loop, so the exit handler raises one).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, Union

from oe_depth_ros.inference.backends import BACKEND_NAMES
from oe_depth_ros.node_names import DEFAULT_NAMESPACE, NODE_NAME

if TYPE_CHECKING:
    from launch.action import Action
    from launch.launch_context import LaunchContext
    from launch.launch_description_entity import LaunchDescriptionEntity
    from launch.substitution import Substitution
    from launch.events.process import ProcessExited
    from launch_ros.actions import Node

PACKAGE = "oe_depth_ros"

#: A launch argument: (name, default, description). A default of None makes the
#: argument required; a tuple names a file in the package share (path parts).
Argument = tuple[str, Union[str, tuple[str, ...], None], str]

#: The ``fastdds_profile`` value for "no profile" (the middleware's default). A word, not an
#: empty value: ``ros2 launch`` rejects ``fastdds_profile:=`` (what ``fastdds_profile:=""``
#: becomes in a shell) as a malformed argument.
NO_PROFILE = "none"
#: Arguments of the node that every launch file declares.
NODE_ARGUMENTS: tuple[Argument, ...] = (
    ("params_file", ("config", "oe_depth.yaml"), "ROS parameter file of the node"),
    ("backend", "", f"{' | '.join(BACKEND_NAMES)} (empty: from params_file)"),
    ("model_path", "", "engine, ONNX or checkpoint (empty: from params_file)"),
    ("namespace", DEFAULT_NAMESPACE, "namespace of the node and its output topics"),
    ("log_level", "info", "debug | info | warn | error | fatal"),
    ("fastdds_profile", ("config", "fastdds_shm.xml"),
     "Fast DDS profile for every process of this launch (shared memory for full-size "
     f"frames); {NO_PROFILE}: the middleware's default; FASTRTPS_DEFAULT_PROFILES_FILE, when "
     "set, wins"),
)
#: The launch argument that chooses the managed node (a lifecycle manager configures and
#: activates it) instead of the plain one; the executable for each choice.
LIFECYCLE_ARGUMENT: Argument = (
    "lifecycle", "false", "true: start oe_depth_lifecycle_node, a managed node that waits "
    "for a lifecycle manager's configure and activate; false: oe_depth_node")
EXECUTABLES = {False: "oe_depth_node", True: "oe_depth_lifecycle_node"}
#: The environment variable that selects a Fast DDS XML profile (Fast DDS 2.x: Humble, Jazzy).
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
#: Node arguments that override the parameter file only when given (non-empty).
OVERRIDES = ("backend", "model_path")


def share_file(*parts: str) -> "Substitution":
    """A substitution for ``parts`` below the package's share directory."""
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def declare_arguments(arguments: Sequence[Argument]) -> list["Action"]:
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


def argument_values(context: "LaunchContext", arguments: Sequence[Argument]) -> dict[str, str]:
    """The values of ``arguments`` in a launch context, as strings."""
    from launch.substitutions import LaunchConfiguration

    return {name: LaunchConfiguration(name).perform(context) for name, _, _ in arguments}


def is_true(text: str) -> bool:
    """A launch argument's boolean value (true, 1, yes; any case)."""
    return text.lower() in ("true", "1", "yes")


class NodeFailed(RuntimeError):
    """oe_depth_node exited with a non-zero code: ``ros2 launch`` ends with a non-zero code."""


def transport_profile(values: dict[str, str]) -> list["Action"]:
    """``SetEnvironmentVariable`` for the Fast DDS profile, unless the user chose one or none."""
    from launch.actions import SetEnvironmentVariable

    if os.environ.get(PROFILE_VARIABLE) or values["fastdds_profile"] in ("", NO_PROFILE):
        return []
    return [SetEnvironmentVariable(PROFILE_VARIABLE, values["fastdds_profile"])]


def shut_down_with(node: "Node") -> "Action":
    """An event handler: when ``node`` exits, the launch shuts down (non-zero if it failed)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown

    def on_exit(event: "ProcessExited", context: "LaunchContext",
                ) -> list["LaunchDescriptionEntity"] | None:
        if context.is_shutdown:  # launch is already stopping (Ctrl-C): nothing to add
            return None
        if event.returncode != 0:
            raise NodeFailed(f"oe_depth_node exited with code {event.returncode}; shutting "
                             "down the launch (the node's log above says why)")
        return [EmitEvent(event=Shutdown(reason="oe_depth_node exited"))]

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))


def depth_node(values: dict[str, str], remappings: Sequence[tuple[str, str]],
               use_sim_time: bool) -> "Node":
    """The depth node with the parameter file, the given overrides and the log level.

    The managed executable when ``values`` has a true ``lifecycle`` (:data:`LIFECYCLE_ARGUMENT`).
    """
    from launch_ros.actions import Node

    overrides: dict[str, bool | str] = {"use_sim_time": use_sim_time}
    overrides.update({name: values[name] for name in OVERRIDES if values[name]})
    return Node(
        package=PACKAGE,
        executable=EXECUTABLES[is_true(values.get("lifecycle", "false"))],
        name=NODE_NAME,
        namespace=values["namespace"],
        parameters=[values["params_file"], overrides],
        remappings=list(remappings),
        arguments=["--ros-args", "--log-level", values["log_level"]],
        output="screen",
        emulate_tty=True,
    )


def package_installed(name: str) -> bool:
    """Whether ROS package ``name`` is in the ament index (sourced workspaces).

    No index at all (``AMENT_PREFIX_PATH`` unset: nothing sourced) means not installed.
    """
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(name)
    except (PackageNotFoundError, OSError):
        return False
    return True


def rviz_nodes(values: dict[str, str], use_sim_time: bool) -> list["Node"]:
    """RViz with config/oe_depth.rviz when ``use_rviz`` is true and rviz2 is installed.

    Without rviz2 a warning names the missing package and everything else runs.
    """
    from launch.logging import get_logger
    from launch_ros.actions import Node

    if not is_true(values["use_rviz"]):
        return []
    if not package_installed("rviz2"):
        get_logger("launch.oe_depth_ros").warning(
            "use_rviz is true but package 'rviz2' is not installed: starting without RViz "
            "(install ros-$ROS_DISTRO-rviz2, or pass use_rviz:=false)")
        return []
    return [Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", share_file("config", "oe_depth.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        output="screen",
    )]
