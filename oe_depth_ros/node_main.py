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
"""The depth node's executables, with SIGINT and SIGTERM handled from their first step.

``oe_depth_node`` (:func:`main`) and ``oe_depth_lifecycle_node`` (:func:`lifecycle_main`)
install the handlers of :class:`ShutdownSignals` before anything else is imported
(rclpy, NumPy, the inference libraries take a second or more), so a signal at any
moment from then to the exit ends the process with exit code 0 and no traceback.
Installing them also unblocks both signals: where they were blocked before the exec (a
blocked signal stays pending across ``execve``, and CPython does not unblock it) a
signal at any moment from then on ends the process cleanly, delivered once the
handlers are in. The executables ``colcon build`` installs block them in their shebang
(:mod:`oe_depth_ros.blocked_start`), and a supervisor can block them too. Otherwise
the interpreter's own start (site hooks, the console-script wrapper, this module's
import) keeps the kernel's and Python's defaults; docs/node.md gives its length.
This module and :mod:`oe_depth_ros.shutdown_signals` import ``signal``, ``sys`` and
``threading`` only.
"""
from __future__ import annotations

import sys

from oe_depth_ros.shutdown_signals import ShutdownSignals


def _run(argv: list[str] | None, lifecycle: bool) -> int:
    signals = ShutdownSignals().install()
    from oe_depth_ros import node  # rclpy, NumPy and the backends: after the handlers

    return node.main(argv, signals=signals, lifecycle=lifecycle)


def main(argv: list[str] | None = None) -> int:
    """``oe_depth_node``: the plain node (starts processing at once)."""
    return _run(argv, lifecycle=False)


def lifecycle_main(argv: list[str] | None = None) -> int:
    """``oe_depth_lifecycle_node``: the managed node (waits for configure and activate)."""
    return _run(argv, lifecycle=True)


if __name__ == "__main__":
    sys.exit(lifecycle_main() if "--lifecycle" in sys.argv[1:2] else main())
