"""A throwaway colcon workspace with a copy of the package, built as ROS users build it.

The package's files are copied into ``<tmp>/src/oe_depth_ros`` and colcon's build,
install, log and test-result directories are in ``<tmp>`` too, so nothing is written
into the repository. colcon (pinned in requirements.txt) runs with this interpreter, as
apt's colcon runs with the system Python: the console scripts' shebangs name the
interpreter that has the dependencies (a colcon from another environment would write
its own, and ``ros2 run`` would fail on ``import numpy``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "oe_depth_ros"
#: What setup.py installs and the linter tests check (copied into the workspace).
SOURCES = ("package.xml", "setup.py", "setup.cfg", "resource", "oe_depth_ros", "training",
           "launch", "config", "test", "bench")
COLCON = Path(sys.executable).with_name("colcon")


def colcon(workspace: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run colcon with this interpreter in ``workspace`` (its own log directory and home)."""
    assert COLCON.is_file(), f"{COLCON} is missing: run scripts/setup (colcon is pinned)"
    env = dict(os.environ, COLCON_HOME=str(workspace / "colcon_home"),
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([str(COLCON), "--log-base", str(workspace / "log"), *args],
                          cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"


def build_workspace(workspace: Path, *build_args: str) -> Path:
    """Copy the package into ``workspace/src`` and ``colcon build`` it; returns ``workspace``.

    ``build_args``: more options of ``colcon build`` (e.g. ``--symlink-install``).
    """
    source = workspace / "src" / PACKAGE
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    result = colcon(workspace, "build", "--event-handlers", "desktop_notification-",
                    *build_args)
    assert result.returncode == 0, output(result)
    return workspace


def installed_site_packages(workspace: Path) -> Path:
    """The install tree's site-packages (what ``setup.bash`` puts on PYTHONPATH)."""
    return (workspace / "install" / PACKAGE / "lib"
            / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages")


def installed_executable(workspace: Path, name: str) -> Path:
    """``lib/oe_depth_ros/<name>``, where ``ros2 run`` and ``ros2 launch`` find it."""
    return workspace / "install" / PACKAGE / "lib" / PACKAGE / name
