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
"""Launch files, the RViz configuration and the bag-replay QoS override.

``launch`` and ``launch_ros`` are not on PyPI, so the launch files are checked by
parsing and compiling them and by running ``generate_launch_description()`` (and the
OpaqueFunction inside it) against small stand-in modules that record what would be
launched. Where the real packages are installed (a ROS 2 machine, the ROS CI workflow),
the stand-ins' calls are checked against the real signatures, and both launch files run
under the real ``LaunchService`` as ``ros2 launch`` runs them: the node failing at
start-up ends the launch with a non-zero code (the bag player with it), and RViz is
skipped with a warning where it is not installed.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from oe_depth_ros import launch_common as common
from oe_depth_ros import node_params

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / "launch"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))
NAMESPACE = "oe_depth"
KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
KITTI_INFO = "/kitti/camera_color_left/camera_info"


# ----------------------------------------------------------------- stand-ins


class StandInContext:
    """What the stand-in substitutions read: launch configurations and the share dir."""

    def __init__(self, configurations: dict[str, str]) -> None:
        self.launch_configurations = dict(configurations)


def perform(value: Any, context: StandInContext) -> Any:
    """Evaluate stand-in substitutions (recursively in lists) to strings."""
    if hasattr(value, "perform"):
        return value.perform(context)
    if isinstance(value, list):
        return [perform(v, context) for v in value]
    return value


class Recorded:
    """Base of the stand-in actions: keeps the constructor's arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


def make_stand_ins() -> dict[str, types.ModuleType]:
    """Modules named like launch/launch_ros with the few classes the launch files use."""

    class LaunchDescription:
        def __init__(self, entities=()):
            self.entities = list(entities)

    class DeclareLaunchArgument(Recorded):
        def __init__(self, name, default_value=None, description="", **kwargs):
            super().__init__(name, default_value=default_value, description=description,
                             **kwargs)
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction(Recorded):
        def __init__(self, function, **kwargs):
            super().__init__(function=function, **kwargs)
            self.function = function

    class ExecuteProcess(Recorded):
        pass

    class SetEnvironmentVariable(Recorded):
        pass

    class RegisterEventHandler(Recorded):
        pass

    class EmitEvent(Recorded):
        pass

    class OnProcessExit(Recorded):
        pass

    class Shutdown(Recorded):
        pass

    class LaunchConfiguration:
        def __init__(self, variable_name, default=None):
            self.variable_name = variable_name

        def perform(self, context):
            return context.launch_configurations[self.variable_name]

    class PathJoinSubstitution:
        def __init__(self, parts):
            self.parts = list(parts)

        def perform(self, context):
            return os.path.join(*[str(perform(p, context)) for p in self.parts])

    class Node(Recorded):
        pass

    class FindPackageShare:
        def __init__(self, package):
            self.package = package

        def perform(self, context):
            assert self.package == "oe_depth_ros"
            return str(REPO)  # a source checkout is laid out like the installed share

    def module(name: str, **members: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(members)
        return mod

    return {
        "launch": module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                 OpaqueFunction=OpaqueFunction, ExecuteProcess=ExecuteProcess,
                                 SetEnvironmentVariable=SetEnvironmentVariable,
                                 RegisterEventHandler=RegisterEventHandler,
                                 EmitEvent=EmitEvent),
        "launch.event_handlers": module("launch.event_handlers", OnProcessExit=OnProcessExit),
        "launch.events": module("launch.events", Shutdown=Shutdown),
        "launch.logging": module("launch.logging", get_logger=logging.getLogger),
        "launch.substitutions": module("launch.substitutions",
                                       LaunchConfiguration=LaunchConfiguration,
                                       PathJoinSubstitution=PathJoinSubstitution),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=Node),
        "launch_ros.substitutions": module("launch_ros.substitutions",
                                           FindPackageShare=FindPackageShare),
    }


def load_launch_file(path: Path) -> types.ModuleType:
    name = "launch_file_" + path.name.replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, types.ModuleType]:
    mods = make_stand_ins()
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv(common.PROFILE_VARIABLE, raising=False)
    monkeypatch.setattr(common, "package_installed", lambda name: True)  # rviz2 "installed"
    return mods


def describe(path: Path, **given: str) -> tuple[dict[str, Any], list[Any]]:
    """(declared arguments by name, entities the OpaqueFunction returns for ``given``)."""
    ld = load_launch_file(path).generate_launch_description()
    declared = {e.name: e for e in ld.entities if type(e).__name__ == "DeclareLaunchArgument"}
    opaque = [e for e in ld.entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    defaults = {name: perform(arg.default_value, StandInContext({}))
                for name, arg in declared.items() if arg.default_value is not None}
    missing = set(declared) - set(defaults) - set(given)
    assert not missing, f"required launch arguments not given: {missing}"
    context = StandInContext({**defaults, **given})
    return declared, opaque[0].function(context)


# ----------------------------------------------------------------- checks


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_parse_and_compile(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    compile(tree, str(path), "exec")
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    imported = {alias.name for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for alias in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module)])}
    # launch, launch_ros, the package's shared launch code and the bag names, nothing heavy.
    outside = {name for name in imported if name.split(".")[0] not in ("launch", "launch_ros")}
    assert outside <= {"oe_depth_ros.launch_common", "oe_depth_ros.bags.names"}, outside


@pytest.mark.parametrize("module", ["bags/names.py", "node_names.py"])
def test_names_modules_import_only_the_standard_library(module: str) -> None:
    tree = ast.parse((REPO / "oe_depth_ros" / module).read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                for alias in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__"}, imported


def test_shared_launch_code_imports_launch_only_when_called() -> None:
    """oe_depth_ros.launch_common imports at module level only what the package may."""
    path = REPO / "oe_depth_ros" / "launch_common.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = set()
    for n in tree.body:
        if isinstance(n, ast.Import):
            top_level.update(alias.name for alias in n.names)
        elif isinstance(n, ast.ImportFrom):
            top_level.add(n.module)
    # the node's name and default namespace (constants that import nothing) and the
    # backend names of the registry (numpy at most): no launch, launch_ros, rclpy or torch
    assert top_level <= {"__future__", "os", "typing", "oe_depth_ros.node_names",
                         "oe_depth_ros.inference.backends"}, top_level
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, oe_depth_ros.launch_common; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'rclpy', 'launch', "
         "'launch_ros', 'onnxruntime', 'openvino', 'cv2'}))"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert heavy.returncode == 0 and heavy.stdout.strip() == "[]", heavy.stdout + heavy.stderr
    import oe_depth_ros.launch_common as common  # works without launch installed

    assert [a[0] for a in common.NODE_ARGUMENTS] == ["params_file", "backend", "model_path",
                                                     "namespace", "log_level", "fastdds_profile"]


def test_both_launch_files_exist_and_are_installed() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {"oe_depth.launch.py", "kitti_replay.launch.py"}
    setup = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert 'glob("config/*.rviz")' in setup
    assert "oe_depth_node = {PACKAGE}.node_main:main" in setup
    assert "oe_depth_lifecycle_node = {PACKAGE}.node_main:lifecycle_main" in setup


def kinds(entities: list[Any]) -> dict[str, list[Any]]:
    """Entities by class name."""
    out: dict[str, list[Any]] = {}
    for e in entities:
        out.setdefault(type(e).__name__, []).append(e)
    return out


def test_oe_depth_launch_arguments_and_node(stand_ins) -> None:
    path = LAUNCH_DIR / "oe_depth.launch.py"
    declared, entities = describe(path, model_path="/models/m.onnx",
                                  image_topic="/cam/image_raw", use_rviz="true")
    assert set(declared) == {"params_file", "backend", "model_path", "image_topic",
                             "camera_info_topic", "namespace", "use_sim_time", "use_rviz",
                             "log_level", "fastdds_profile", "lifecycle"}
    assert declared["namespace"].default_value == NAMESPACE
    assert all(arg.description for arg in declared.values())
    params_file = Path(perform(declared["params_file"].default_value, StandInContext({})))
    assert params_file == REPO / "config" / "oe_depth.yaml" and params_file.is_file()

    by = kinds(entities)
    (node, rviz) = by["Node"]
    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["namespace"]) == (
        "oe_depth_ros", "oe_depth_node", NAMESPACE)
    assert ("image", "/cam/image_raw") in kw["remappings"]
    assert ("camera_info", "/camera/camera_info") in kw["remappings"]
    assert Path(kw["parameters"][0]) == params_file
    # Only the arguments that were given override the parameter file.
    assert kw["parameters"][1] == {"use_sim_time": False, "model_path": "/models/m.onnx"}
    assert kw["arguments"] == ["--ros-args", "--log-level", "info"]
    for name in kw["parameters"][1]:
        if name != "use_sim_time":
            node_params.spec(name)  # a parameter the node declares

    assert rviz.kwargs["package"] == "rviz2"
    flag, rviz_file = rviz.kwargs["arguments"]
    assert flag == "-d" and Path(perform(rviz_file, StandInContext({}))) == \
        REPO / "config" / "oe_depth.rviz"
    # The shared-memory profile is set before the node starts.
    (profile,) = by["SetEnvironmentVariable"]
    assert entities.index(profile) < entities.index(node)
    name, value = profile.args
    assert name == "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert Path(perform(value, StandInContext({}))) == REPO / "config" / "fastdds_shm.xml"


def test_the_lifecycle_argument_starts_the_managed_node(stand_ins) -> None:
    path = LAUNCH_DIR / "oe_depth.launch.py"
    for value, executable in (("false", "oe_depth_node"), ("true", "oe_depth_lifecycle_node")):
        _, entities = describe(path, model_path="/models/m.onnx", lifecycle=value)
        (node,) = kinds(entities)["Node"]
        assert node.kwargs["executable"] == executable
        assert node.kwargs["name"] == "oe_depth_node"


def test_rviz_only_when_asked_and_installed(stand_ins, monkeypatch, caplog) -> None:
    path = LAUNCH_DIR / "oe_depth.launch.py"
    _, entities = describe(path, use_rviz="false")
    assert [n.kwargs["package"] for n in kinds(entities)["Node"]] == ["oe_depth_ros"]
    assert not caplog.records
    monkeypatch.setattr(common, "package_installed", lambda name: name != "rviz2")
    with caplog.at_level(logging.WARNING):
        _, entities = describe(path, use_rviz="true")
    assert [n.kwargs["package"] for n in kinds(entities)["Node"]] == ["oe_depth_ros"]
    assert "package 'rviz2' is not installed" in caplog.text


def test_a_profile_chosen_by_the_user_is_kept(stand_ins, monkeypatch) -> None:
    path = LAUNCH_DIR / "oe_depth.launch.py"
    _, entities = describe(path, fastdds_profile=common.NO_PROFILE)
    assert "SetEnvironmentVariable" not in kinds(entities)
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    _, entities = describe(path)
    assert "SetEnvironmentVariable" not in kinds(entities)


#: The manual's command lines (README and docs), whose ``name:=value`` arguments users type.
DOCUMENTED = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LAUNCH_ARGUMENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*:=[^\s`]*")


def ros2launch_rule(arguments: list[str]) -> dict[str, str]:
    """``name:=value`` arguments as ``ros2 launch`` parses them.

    The rule of ``parse_launch_arguments`` in ros2launch/api/api.py (ros2/launch_ros, jazzy,
    ros2launch 0.26.6, commit 62c56e53e868): an argument without ``:=``, starting with
    ``:=``, or whose only ``:=`` ends it is malformed (a RuntimeError); otherwise the
    name is what precedes the first ``:=``, and the last value given for a name wins.
    """
    parsed: dict[str, str] = {}
    for argument in arguments:
        separators = argument.count(":=")
        if (separators == 0 or argument.startswith(":=")
                or (separators == 1 and argument.endswith(":="))):
            raise RuntimeError(f"malformed launch argument '{argument}', "
                               "expected format '<name>:=<value>'")
        name, value = argument.split(":=", 1)
        parsed[name] = value
    return parsed


def launch_argument_parser(which: str) -> Any:
    """The rule above, or the real parser of ros2launch (skipped where not installed).

    Imported in the test, not at collection: the real ``launch`` reconfigures logging.
    """
    if which == "rule":
        return ros2launch_rule
    api = pytest.importorskip("ros2launch.api.api", reason="ros2launch is not installed")
    return lambda arguments: dict(api.parse_launch_arguments(arguments))


@pytest.mark.parametrize("which", ["rule", "ros2launch"])
def test_ros2_launch_rejects_an_empty_value_and_accepts_the_no_profile_word(which) -> None:
    parse = launch_argument_parser(which)
    for typed in ('fastdds_profile:=""', "fastdds_profile:=''", "fastdds_profile:=",
                  ":=none", "fastdds_profile"):
        with pytest.raises(RuntimeError, match="malformed launch argument"):
            parse(shlex.split(typed))
    typed = f"fastdds_profile:={common.NO_PROFILE} a:=b:=c a:=d rate:=0.5"
    assert parse(shlex.split(typed)) == {"fastdds_profile": common.NO_PROFILE, "a": "d",
                                         "rate": "0.5"}


@pytest.mark.parametrize("which", ["rule", "ros2launch"])
def test_documented_launch_arguments_are_accepted_and_turn_the_profile_off(
        which, monkeypatch) -> None:
    parse = launch_argument_parser(which)
    for name, mod in make_stand_ins().items():  # after the real parser's import
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv(common.PROFILE_VARIABLE, raising=False)
    monkeypatch.setattr(common, "package_installed", lambda name: True)
    typed = [(path.name, token) for path in DOCUMENTED
             for token in LAUNCH_ARGUMENT.findall(path.read_text())]
    assert {name for name, _ in typed} >= {"README.md", "node.md"}
    for name, token in typed:
        (argument,) = shlex.split(token)  # as a shell passes it to ros2 launch
        parse([argument])  # raises for a value ros2 launch rejects
    profiles = {parse(shlex.split(token))["fastdds_profile"] for _, token in typed
                if token.startswith("fastdds_profile:=")}
    assert profiles == {common.NO_PROFILE}
    for path, given in ((LAUNCH_DIR / "oe_depth.launch.py", {}),
                        (LAUNCH_DIR / "kitti_replay.launch.py", {"bag": "/b"})):
        declared, entities = describe(path, fastdds_profile=common.NO_PROFILE, **given)
        assert "SetEnvironmentVariable" not in kinds(entities)
        assert f"{common.NO_PROFILE}: the middleware's default" in \
            declared["fastdds_profile"].description


def test_the_launch_ends_when_the_node_exits(stand_ins) -> None:
    """The exit handler: a failed node raises (launch's non-zero code), a clean exit shuts down."""
    for path, given in ((LAUNCH_DIR / "oe_depth.launch.py", {}),
                        (LAUNCH_DIR / "kitti_replay.launch.py", {"bag": "/b"})):
        _, entities = describe(path, **given)
        by = kinds(entities)
        node = next(n for n in by["Node"] if n.kwargs["package"] == "oe_depth_ros")
        (register,) = by["RegisterEventHandler"]
        (on_exit,) = register.args
        assert on_exit.kwargs["target_action"] is node
        handler = on_exit.kwargs["on_exit"]
        running = types.SimpleNamespace(is_shutdown=False)
        with pytest.raises(common.NodeFailed, match="exited with code 1"):
            handler(types.SimpleNamespace(returncode=1), running)
        (emit,) = handler(types.SimpleNamespace(returncode=0), running)
        assert type(emit.kwargs["event"]).__name__ == "Shutdown"
        stopping = types.SimpleNamespace(is_shutdown=True)
        assert handler(types.SimpleNamespace(returncode=-2), stopping) is None


def test_oe_depth_launch_passes_backend_and_sim_time(stand_ins) -> None:
    _, entities = describe(LAUNCH_DIR / "oe_depth.launch.py", backend="tensorrt",
                           use_sim_time="true", namespace="cam0", log_level="debug")
    (node,) = kinds(entities)["Node"]
    kw = node.kwargs
    assert kw["parameters"][1] == {"use_sim_time": True, "backend": "tensorrt"}
    assert kw["namespace"] == "cam0"
    assert kw["arguments"][-1] == "debug"


def test_kitti_replay_plays_the_bag_with_sim_time_and_tf_static_override(stand_ins) -> None:
    path = LAUNCH_DIR / "kitti_replay.launch.py"
    declared, entities = describe(path, bag="/data/drive_0001_bag", model_path="/m.onnx")
    assert declared["bag"].default_value is None  # required
    assert {"bag", "model_path", "backend", "use_rviz", "rate", "loop",
            "fastdds_profile"} <= set(declared)
    by = kinds(entities)
    (play,) = by["ExecuteProcess"]
    node, rviz = by["Node"]
    (profile,) = by["SetEnvironmentVariable"]
    assert entities.index(profile) < entities.index(play)  # the player uses it too

    cmd = [str(perform(c, StandInContext({}))) for c in play.kwargs["cmd"]]
    assert cmd[:4] == ["ros2", "bag", "play", "/data/drive_0001_bag"]
    assert "--clock" in cmd and "--loop" not in cmd
    overrides = Path(cmd[cmd.index("--qos-profile-overrides-path") + 1])
    assert overrides == REPO / "config" / "tf_static_qos.yaml"
    qos = yaml.safe_load(overrides.read_text())
    assert qos["/tf_static"]["durability"] == "transient_local"
    assert qos["/tf_static"]["reliability"] == "reliable"

    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["namespace"]) == (
        "oe_depth_ros", "oe_depth_node", NAMESPACE)
    assert dict(kw["remappings"]) == {"image": KITTI_IMAGE, "camera_info": KITTI_INFO}
    assert kw["parameters"][1] == {"use_sim_time": True, "model_path": "/m.onnx"}
    assert Path(perform(kw["parameters"][0], StandInContext({}))) == \
        REPO / "config" / "oe_depth.yaml"
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]

    _, entities = describe(path, bag="/b", loop="true", rate="0.5")
    (play,) = kinds(entities)["ExecuteProcess"]
    cmd = [str(perform(c, StandInContext({}))) for c in play.kwargs["cmd"]]
    assert "--loop" in cmd and cmd[cmd.index("--rate") + 1] == "0.5"


def test_kitti_topics_match_the_converter() -> None:
    kitti2bag = pytest.importorskip("oe_depth_ros.bags.kitti2bag")
    assert kitti2bag.image_topic(2) == KITTI_IMAGE
    assert kitti2bag.camera_info_topic(2) == KITTI_INFO


def _displays() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    data = yaml.safe_load((REPO / "config" / "oe_depth.rviz").read_text())
    return data, {d["Name"]: d for d in data["Visualization Manager"]["Displays"]}


def _topic(display: dict[str, Any]) -> str:
    topic = display["Topic"]
    return topic["Value"] if isinstance(topic, dict) else topic


def test_rviz_config_shows_the_node_outputs() -> None:
    data, displays = _displays()
    by_class: dict[str, list[dict[str, Any]]] = {}
    for d in displays.values():
        by_class.setdefault(d["Class"], []).append(d)
    out = {t.name: f"/{NAMESPACE}/{t.name}" for t in node_params.TOPICS if t.direction == "pub"}

    images = {_topic(d): d for d in by_class["rviz_default_plugins/Image"]}
    assert KITTI_IMAGE in images
    depth = images[out["depth/image"]]
    assert depth["Normalize Range"] is False
    assert (depth["Min Value"], depth["Max Value"]) == (0, 80)

    (cloud,) = by_class["rviz_default_plugins/PointCloud2"]
    assert _topic(cloud) == out["points"] and cloud["Color Transformer"] == "RGB8"

    (depth_cloud,) = by_class["rviz_default_plugins/DepthCloud"]
    assert depth_cloud["Depth Map Topic"] == out["depth/image"]
    assert depth_cloud["CameraInfo Topic"] == out["depth/camera_info"]
    assert depth_cloud["Color Image Topic"] == KITTI_IMAGE

    assert "rviz_default_plugins/TF" in by_class
    fixed = data["Visualization Manager"]["Global Options"]["Fixed Frame"]
    tf = pytest.importorskip("oe_depth_ros.bags.tf")
    assert fixed in {tf.WORLD_FRAME, tf.BASE_FRAME, tf.VELO_FRAME, *tf.CAMERA_FRAMES.values()}


# ----------------------------------------------------------------- real launch (ROS)

REAL_LAUNCH = (importlib.util.find_spec("launch") is not None
               and importlib.util.find_spec("launch_ros") is not None)
needs_real_launch = pytest.mark.skipif(
    not REAL_LAUNCH, reason="launch/launch_ros are not installed (only on a ROS 2 machine)")


def recorded(value: Any) -> list[Recorded]:
    """Every stand-in call recorded in ``value`` (entities nest others in their arguments)."""
    if isinstance(value, Recorded):
        return [value, *recorded(list(value.args)), *recorded(list(value.kwargs.values()))]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in recorded(v)]
    return []


@needs_real_launch
def test_the_stand_ins_match_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stand-in exists in the real module and each recorded call binds to its signature."""
    stand_ins = make_stand_ins()
    calls: list[tuple[str, Recorded]] = []
    with monkeypatch.context() as patch:
        for name, mod in stand_ins.items():
            patch.setitem(sys.modules, name, mod)
        patch.setattr(common, "package_installed", lambda name: True)
        patch.delenv(common.PROFILE_VARIABLE, raising=False)
        for path, given in ((LAUNCH_DIR / "oe_depth.launch.py", {}),
                            (LAUNCH_DIR / "kitti_replay.launch.py", {"bag": "/b"})):
            ld = load_launch_file(path).generate_launch_description()
            _, entities = describe(path, **given)
            calls += [(type(r).__name__, r) for r in recorded(ld.entities + entities)]
    real = {name: importlib.import_module(name) for name in stand_ins}
    owner = {}
    for name, mod in stand_ins.items():
        for member in vars(mod):
            if not member.startswith("__"):
                assert hasattr(real[name], member), f"{name}.{member} is not in the real API"
                owner[member] = name
    assert {kind for kind, _ in calls} >= {"Node", "DeclareLaunchArgument", "OpaqueFunction",
                                           "SetEnvironmentVariable", "RegisterEventHandler",
                                           "OnProcessExit", "ExecuteProcess"}
    for kind, call in calls:
        cls = getattr(real[owner[kind]], kind)
        inspect.signature(cls).bind(*call.args, **call.kwargs)  # TypeError if it drifted


LAUNCH_LIKE_ROS2 = """
import sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

path, *args = sys.argv[1:]
service = launch.LaunchService(argv=args)
service.include_launch_description(launch.LaunchDescription([IncludeLaunchDescription(
    AnyLaunchDescriptionSource(path), launch_arguments=[a.split(":=", 1) for a in args])]))
sys.exit(service.run())
"""


def run_real_launch(path: Path, *args: str, path_prefix: Path | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a launch file under the real LaunchService, as ``ros2 launch`` does."""
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run([sys.executable, "-c", LAUNCH_LIKE_ROS2, str(path), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def installed_package() -> bool:
    return REAL_LAUNCH and common.package_installed("oe_depth_ros")


needs_installed_package = pytest.mark.skipif(
    not installed_package(), reason="needs launch, launch_ros and oe_depth_ros in the ament "
                                    "index (a built and sourced ROS 2 workspace)")


@needs_installed_package
def test_a_node_failing_at_startup_ends_the_launch_non_zero() -> None:
    result = run_real_launch(LAUNCH_DIR / "oe_depth.launch.py",
                             "model_path:=/nonexistent/model.onnx", "use_rviz:=true")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "model file not found: /nonexistent/model.onnx" in out
    assert "oe_depth_node exited with code 1" in out
    if not common.package_installed("rviz2"):
        assert "package 'rviz2' is not installed" in out


@needs_installed_package
def test_kitti_replay_stops_the_player_when_the_node_fails(tmp_path: Path) -> None:
    # A player that would run for ten minutes: the launch must end it, not wait for it.
    fake_ros2 = tmp_path / "ros2"
    fake_ros2.write_text("#!/bin/sh\necho stand-in player \"$@\"\nexec sleep 600\n")
    fake_ros2.chmod(0o755)
    result = run_real_launch(LAUNCH_DIR / "kitti_replay.launch.py", "bag:=/nonexistent_bag",
                             "model_path:=/nonexistent/model.onnx", path_prefix=tmp_path,
                             timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "stand-in player bag play /nonexistent_bag" in out
    assert "oe_depth_node exited with code 1" in out
    assert "sending signal 'SIGINT' to process[bag_play" in out
