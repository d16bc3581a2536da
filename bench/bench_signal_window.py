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
"""How long after its exec a node process still has the default SIGINT/SIGTERM handling.

For each way of starting the node, the time from ``subprocess.Popen`` returning (the
exec has happened) to the process blocking or catching SIGTERM (``SigBlk`` /
``SigCgt`` in /proc, polled every 0.1 ms); the node's executables install their SIGINT
and SIGTERM handlers together, so before that moment a signal kills the process
(SIGTERM, or SIGINT before CPython's own handler) or raises ``KeyboardInterrupt``
(SIGINT after it). The rows:

* ``interpreter -S``: this interpreter without the site module, catching SIGTERM in
  its first statement: CPython's own start, the floor for any Python program.
* ``interpreter + site``: the same with site, i.e. with this environment's ``.pth``
  hooks (setuptools' editable-install finder, ros_wheels_bootstrapper, coverage).
* ``... bootstrapper re-exec``: the same with ``_ROS_WHEELS_BOOTSTRAP_COMPLETE`` unset,
  as in the first Python process of a shell: ros_wheels_bootstrapper then executes the
  interpreter a second time (later processes inherit the variable).
* ``python -m oe_depth_ros.node_main`` (how the tests start the node), the console
  scripts ``pip install -e .`` writes (``.venv/bin/oe_depth_node``,
  ``oe_depth_lifecycle_node``), and setuptools' entry-point wrapper (written here with
  setuptools' own ``ScriptWriter`` for this environment's distribution): with a plain
  ``#!<interpreter>``, and with the ``env --block-signal`` shebang that ``setup.py``
  gives it in ``colcon build``'s ``lib/oe_depth_ros/oe_depth_node``
  (oe_depth_ros/blocked_start.py; the row is left out where ``env`` lacks the option).
  For that row the window ends when ``env`` blocks the signals.

The runs are interleaved (one of each row per round) so that all rows see the same load.

Usage: .venv/bin/python bench/bench_signal_window.py [--runs 30] [--json OUT]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, cpu_name, write_json
from oe_depth_ros.blocked_start import env_blocks_signals, with_blocked_start

#: Seconds between two reads of /proc while a process starts.
POLL = 0.0001
PROBE = "import _signal; _signal.signal(15, print); import time; time.sleep(60)"
BOOTSTRAP_GUARD = "_ROS_WHEELS_BOOTSTRAP_COMPLETE"


def holds_sigterm(pid: int) -> bool:
    """Whether process ``pid`` blocks SIGTERM or has a handler for it (Linux /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    masks = re.findall(r"Sig(?:Blk|Cgt):\s*([0-9a-f]+)", status)
    return any(int(mask, 16) & (1 << (signal.SIGTERM - 1)) for mask in masks)


def window_ms(command: list[str], env: dict[str, str]) -> float:
    """Milliseconds from ``Popen`` returning to the process blocking or catching SIGTERM."""
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    try:
        while not holds_sigterm(proc.pid):
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {proc.returncode} first")
            time.sleep(POLL)
        return (time.perf_counter() - t0) * 1e3
    finally:
        proc.kill()
        proc.wait()


def setuptools_wrapper(directory: Path, blocked: bool = False) -> Path:
    """setuptools' console-script wrapper of ``oe_depth_node`` (colcon build installs it).

    ``blocked``: with the shebang that ``setup.py`` gives it where ``env`` supports
    ``--block-signal`` (oe_depth_ros/blocked_start.py), as ``colcon build`` installs it.
    """
    from importlib.metadata import distribution

    from setuptools.command.easy_install import ScriptWriter  # type: ignore[import-untyped]

    dist = distribution("oe_depth_ros")
    spec = f"{dist.metadata['Name']}=={dist.version}"
    text = ScriptWriter.template % {"spec": spec, "group": "console_scripts",
                                    "name": "oe_depth_node"}
    path = directory / ("blocked" if blocked else "plain") / "oe_depth_node"
    path.parent.mkdir()
    contents = f"#!{sys.executable}\n{text}"
    if blocked:
        contents = with_blocked_start(contents, supported=True)
        if contents.startswith(f"#!{sys.executable}"):
            raise RuntimeError(f"{sys.executable}: no blocked-start shebang for this path")
    path.write_text(contents)
    path.chmod(0o755)
    return path


def rows(directory: Path) -> list[tuple[str, list[str], bool]]:
    """(label, command, keep the bootstrapper's guard variable) per way of starting."""
    bin_dir = Path(sys.executable).parent
    return [
        ("interpreter -S, handler in its first statement", [sys.executable, "-S", "-c", PROBE],
         True),
        ("interpreter + site, handler in its first statement", [sys.executable, "-c", PROBE],
         True),
        ("interpreter + site, bootstrapper re-exec", [sys.executable, "-c", PROBE], False),
        ("python -m oe_depth_ros.node_main", [sys.executable, "-m", "oe_depth_ros.node_main"],
         True),
        ("pip console script oe_depth_node", [str(bin_dir / "oe_depth_node")], True),
        ("pip console script oe_depth_lifecycle_node",
         [str(bin_dir / "oe_depth_lifecycle_node")], True),
        ("setuptools wrapper, plain #!python", [str(setuptools_wrapper(directory))], True),
    ] + ([("setuptools wrapper, env --block-signal (colcon build)",
           [str(setuptools_wrapper(directory, blocked=True))], True)]
         if env_blocks_signals() else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="starts per row")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    bare_env = {k: v for k, v in env.items() if k != BOOTSTRAP_GUARD}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        table = rows(Path(tmp))
        times: dict[str, list[float]] = {label: [] for label, _, _ in table}
        for _ in range(args.runs):
            for label, command, guarded in table:
                times[label].append(window_ms(command, env if guarded else bare_env))
    load_after = os.getloadavg()

    report: dict[str, Any] = {
        "cpu": cpu_name(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "runs": args.runs, "load_average_1min": [load_before[0], load_after[0]],
        "bootstrap_guard_set": BOOTSTRAP_GUARD in os.environ, "rows": []}
    print(f"Popen return -> SIGTERM blocked or caught, ms over {args.runs} starts "
          f"(load average {load_before[0]:.1f} -> {load_after[0]:.1f})")
    print(f"{'start':<62}{'median':>8}{'p90':>8}{'max':>8}")
    for label, values in times.items():
        values.sort()
        row = {"start": label, "median_ms": statistics.median(values),
               "p90_ms": values[int(0.9 * (len(values) - 1))], "max_ms": values[-1]}
        report["rows"].append(row)
        print(f"{label:<62}{row['median_ms']:>8.1f}{row['p90_ms']:>8.1f}{row['max_ms']:>8.1f}")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
