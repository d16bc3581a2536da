"""colcon build and colcon test of the package in a throwaway workspace, as ROS users run them.

The package's files are copied into ``<tmp>/src/oe_depth_ros`` and colcon's build,
install, log and test-result directories are in ``<tmp>`` too, so nothing is written
into the repository. colcon (pinned in requirements.txt) runs with this interpreter, as
apt's colcon runs with the system Python: the console scripts' shebangs name the
interpreter that has the dependencies (a colcon from another environment would write
its own, and ``ros2 run`` would fail on ``import numpy``). ``colcon test`` runs the
linter tests only (explicit files and ``-m linter``), not the whole suite again.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "oe_depth_ros"
#: What setup.py installs and the linter tests check (copied into the workspace).
SOURCES = ("package.xml", "setup.py", "setup.cfg", "resource", "oe_depth_ros", "training",
           "launch", "config", "test", "bench")
LINTER_TESTS = ("test/test_flake8.py", "test/test_pep257.py", "test/test_copyright.py")
EXECUTABLES = ("oe_depth_node", "oe_depth_lifecycle_node", "oe-depth")
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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colcon workspace with a copy of the package, built (``colcon build``)."""
    workspace = tmp_path_factory.mktemp("colcon_ws")
    source = workspace / "src" / PACKAGE
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    result = colcon(workspace, "build", "--event-handlers", "desktop_notification-")
    assert result.returncode == 0, output(result)
    return workspace


def files_below(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_colcon_build_installs_executables_launch_and_config_files(workspace: Path) -> None:
    prefix = workspace / "install" / PACKAGE
    for name in EXECUTABLES:
        script = prefix / "lib" / PACKAGE / name
        assert script.is_file() and os.access(script, os.X_OK), script
        assert script.read_text().splitlines()[0] == f"#!{sys.executable}", script
    share = prefix / "share" / PACKAGE
    assert files_below(share / "launch") == {p.name for p in (REPO / "launch").glob("*.py")}
    repo_config = {p for p in files_below(REPO / "config") if "__pycache__" not in p}
    assert files_below(share / "config") == repo_config
    assert (share / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()

    # The installed scripts run the installed package (not the repository's).
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import oe_depth_ros, oe_depth_training; "
                            "print(oe_depth_ros.__file__); print(oe_depth_training.__file__)"],
                           cwd=workspace, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    usage = subprocess.run([str(prefix / "lib" / PACKAGE / "oe-depth"), "--help"], cwd=workspace,
                           env=env, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "usage: oe-depth" in usage.stdout, usage.stderr


def junit_outcomes(path: Path) -> dict[str, str]:
    """Outcome of each test case in a junit file: passed, skipped, failure or error."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return outcomes


def test_colcon_test_runs_the_linters_and_test_result_reports_no_failures(
        workspace: Path) -> None:
    result = colcon(workspace, "test", "--packages-select", PACKAGE,
                    "--event-handlers", "desktop_notification-",
                    "--pytest-args", *LINTER_TESTS, "-m", "linter")
    assert result.returncode == 0, output(result)
    outcomes = junit_outcomes(workspace / "build" / PACKAGE / "pytest.xml")
    # pytest ran (not colcon's unittest fallback), and only the linter tests.
    assert outcomes["test_flake8"] == outcomes["test_pep257"] == "passed", outcomes
    assert set(outcomes) <= {"test_flake8", "test_pep257", "test_copyright", "test.test_copyright"}
    summary = colcon(workspace, "test-result", "--test-result-base",
                     str(workspace / "build"), "--all")
    assert summary.returncode == 0, output(summary)
    assert "0 errors, 0 failures" in summary.stdout, summary.stdout


def test_colcon_test_result_reports_a_failing_test(workspace: Path) -> None:
    """The check above can fail: a failing test in the package gives a non-zero test-result."""
    failing = workspace / "src" / PACKAGE / "test" / "test_failing_on_purpose.py"
    failing.write_text('"""A test that fails."""\n\n\ndef test_fails():\n    assert 1 == 2\n')
    results = workspace / "failing_results"
    try:
        result = colcon(workspace, "test", "--packages-select", PACKAGE,
                        "--test-result-base", str(results),
                        "--event-handlers", "desktop_notification-",
                        "--pytest-args", str(failing.relative_to(failing.parents[1])))
    finally:
        failing.unlink()
    assert result.returncode == 0, output(result)  # colcon test itself succeeds
    summary = colcon(workspace, "test-result", "--test-result-base", str(results))
    assert summary.returncode != 0, output(summary)
    assert "1 failure" in summary.stdout, summary.stdout
