"""colcon build and colcon test of the package in a throwaway workspace, as ROS users run them.

The workspace is test/colcon_helpers.py's (built once per run, ``colcon_workspace``).
``colcon test`` runs the linter tests only (explicit files and ``-m linter``), not the
whole suite again.
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from colcon_helpers import (PACKAGE, REPO, build_workspace, colcon, installed_executable,
                            installed_site_packages, output)

from oe_depth_ros.blocked_start import NODE_EXECUTABLES, blocked_shebang, env_blocks_signals

LINTER_TESTS = ("test/test_flake8.py", "test/test_pep257.py", "test/test_copyright.py")
EXECUTABLES = (*NODE_EXECUTABLES, "oe-depth")


def expected_shebang(name: str) -> str:
    """The first line of an installed executable: blocked start for the node executables.

    Where this machine's ``env`` lacks ``--block-signal`` setup.py keeps the plain line.
    """
    if name in NODE_EXECUTABLES and env_blocks_signals():
        line = blocked_shebang(sys.executable)
        assert line is not None, f"{sys.executable}: no blocked-start shebang for this path"
        return line
    return f"#!{sys.executable}"


def files_below(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_colcon_build_installs_executables_launch_and_config_files(colcon_workspace: Path) -> None:
    prefix = colcon_workspace / "install" / PACKAGE
    for name in EXECUTABLES:
        script = installed_executable(colcon_workspace, name)
        assert script.is_file() and os.access(script, os.X_OK), script
        assert script.read_text().splitlines()[0] == expected_shebang(name), script
    share = prefix / "share" / PACKAGE
    assert files_below(share / "launch") == {p.name for p in (REPO / "launch").glob("*.py")}
    repo_config = {p for p in files_below(REPO / "config") if "__pycache__" not in p}
    assert files_below(share / "config") == repo_config
    assert (share / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()

    # The installed scripts run the installed package (not the repository's).
    site = installed_site_packages(colcon_workspace)
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import oe_depth_ros, oe_depth_training; "
                            "print(oe_depth_ros.__file__); print(oe_depth_training.__file__)"],
                           cwd=colcon_workspace, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    usage = subprocess.run([str(installed_executable(colcon_workspace, "oe-depth")), "--help"],
                           cwd=colcon_workspace, env=env, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0 and "usage: oe-depth" in usage.stdout, usage.stderr


def test_a_symlink_install_writes_the_same_executables(tmp_path: Path) -> None:
    """``colcon build --symlink-install`` (``setup.py develop``): the same shebangs."""
    workspace = build_workspace(tmp_path, "--symlink-install")
    for name in EXECUTABLES:
        first = installed_executable(workspace, name).read_text().splitlines()[0]
        assert first == expected_shebang(name), (name, first)


def junit_outcomes(path: Path) -> dict[str, str]:
    """Outcome of each test case in a junit file: passed, skipped, failure or error."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return outcomes


def test_colcon_test_runs_the_linters_and_test_result_reports_no_failures(
        colcon_workspace: Path) -> None:
    result = colcon(colcon_workspace, "test", "--packages-select", PACKAGE,
                    "--event-handlers", "desktop_notification-",
                    "--pytest-args", *LINTER_TESTS, "-m", "linter")
    assert result.returncode == 0, output(result)
    outcomes = junit_outcomes(colcon_workspace / "build" / PACKAGE / "pytest.xml")
    # pytest ran (not colcon's unittest fallback), and only the linter tests.
    assert outcomes["test_flake8"] == outcomes["test_pep257"] == "passed", outcomes
    assert set(outcomes) <= {"test_flake8", "test_pep257", "test_copyright", "test.test_copyright"}
    summary = colcon(colcon_workspace, "test-result", "--test-result-base",
                     str(colcon_workspace / "build"), "--all")
    assert summary.returncode == 0, output(summary)
    assert "0 errors, 0 failures" in summary.stdout, summary.stdout


def test_colcon_test_result_reports_a_failing_test(colcon_workspace: Path) -> None:
    """The check above can fail: a failing test in the package gives a non-zero test-result."""
    failing = colcon_workspace / "src" / PACKAGE / "test" / "test_failing_on_purpose.py"
    failing.write_text('"""A test that fails."""\n\n\ndef test_fails():\n    assert 1 == 2\n')
    results = colcon_workspace / "failing_results"
    try:
        result = colcon(colcon_workspace, "test", "--packages-select", PACKAGE,
                        "--test-result-base", str(results),
                        "--event-handlers", "desktop_notification-",
                        "--pytest-args", str(failing.relative_to(failing.parents[1])))
    finally:
        failing.unlink()
    assert result.returncode == 0, output(result)  # colcon test itself succeeds
    summary = colcon(colcon_workspace, "test-result", "--test-result-base", str(results))
    assert summary.returncode != 0, output(summary)
    assert "1 failure" in summary.stdout, summary.stdout
