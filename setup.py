"""ament_python package definition for oe_depth_ros (also installable with pip)."""
import importlib.util
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install_scripts import install_scripts

PACKAGE = "oe_depth_ros"
#: The training/ folder installs under this project-specific import name (not as a
#: top-level `training`); its modules import each other relatively, so the checkout's
#: `python -m training.train` and the installed name run the same code (docs/design.md).
TRAINING = "oe_depth_training"


def _load_blocked_start():
    """oe_depth_ros/blocked_start.py, loaded by path (standard library only)."""
    spec = importlib.util.spec_from_file_location(
        "blocked_start", Path(__file__).resolve().parent / PACKAGE / "blocked_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCKED_START = _load_blocked_start()


class _BlockedStart:
    """Write the node executables with SIGINT and SIGTERM blocked from the exec on.

    Used for the scripts setuptools writes itself (``setup.py install``, as ``colcon
    build`` runs it, and ``setup.py develop``); see oe_depth_ros/blocked_start.py.
    """

    def write_script(self, script_name, contents, *args, **kwargs):
        """Write the script; a node executable gets the blocked-start shebang."""
        if script_name in BLOCKED_START.NODE_EXECUTABLES:
            contents = BLOCKED_START.with_blocked_start(
                contents, supported=BLOCKED_START.env_blocks_signals())
        return super().write_script(script_name, contents, *args, **kwargs)


class InstallScripts(_BlockedStart, install_scripts):
    """``install_scripts`` with the node executables' blocked start."""


class Develop(_BlockedStart, develop):
    """``develop`` with the node executables' blocked start."""


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + [TRAINING] + [f"{TRAINING}.{sub}" for sub in find_packages(where="training")],
    package_dir={TRAINING: "training"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config",
         glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/model", glob("config/model/*.yaml")),
        (f"share/{PACKAGE}/config/training", glob("config/training/*.yaml")),
    ],
    package_data={PACKAGE: ["py.typed"]},
    install_requires=["setuptools"],
    # Optional CPU backend (oe_depth_ros.inference.openvino_backend); pins: requirements.txt.
    zip_safe=False,
    cmdclass={"install_scripts": InstallScripts, "develop": Develop},
    maintainer="oe_depth_ros maintainers",
    maintainer_email="maintainers@oe-depth-ros.dev",
    description="OE-Depth monocular depth: training, TensorRT deployment and a ROS 2 node.",
    license="Apache-2.0",
    # colcon test runs pytest when the package names it as a test extra (tests_require
    # is gone from setuptools 72 on, and colcon then falls back to unittest).
    extras_require={"openvino": ["openvino", "onnx"], "test": ["pytest"]},
    entry_points={
        "console_scripts": [
            f"oe_depth_node = {PACKAGE}.node_main:main",
            f"oe_depth_lifecycle_node = {PACKAGE}.node_main:lifecycle_main",
            f"oe-depth = {PACKAGE}.cli:main",
        ],
        # Subcommands of `oe-depth` that live outside oe_depth_ros (see oe_depth_ros.cli).
        f"{PACKAGE}.commands": [
            f"demo = {TRAINING}.experiments.demo_command",
        ],
    },
)
