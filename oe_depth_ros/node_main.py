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
"""The depth node's executables, with SIGINT and SIGTERM handled from their first line.

``oe_depth_node`` (:func:`main`) and ``oe_depth_lifecycle_node`` (:func:`lifecycle_main`)
install the handlers of :class:`ShutdownSignals` before anything heavy is imported
(rclpy, NumPy, the inference libraries take a second or more), so a signal at any
moment from then to the exit ends the process with exit code 0 and no traceback. Only
the interpreter's own start, before this module runs, keeps the kernel's default.
This module imports the standard library only.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Sequence


class ShutdownSignals:
    """SIGINT and SIGTERM as a request to stop, never an exception.

    A signal only sets :attr:`requested`: start-up (imports, model loading) finishes its
    current step and the process then exits, and a spinning node leaves its spin loop.
    No ``KeyboardInterrupt`` is raised into library code (an interrupted model load
    reported itself as a failed backend). From teardown on both signals are ignored
    (``SIG_IGN``, which also outlives the interpreter's own finalisation), so a
    terminal's Ctrl-C arriving together with the one ``ros2 launch`` forwards changes
    nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()

    def install(self) -> "ShutdownSignals":
        """Handle SIGINT and SIGTERM (call from the main thread); returns self."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def stopping(self) -> None:
        """Teardown has begun: ignore every further signal (call from the main thread)."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested.set()


def _run(argv: Sequence[str] | None, lifecycle: bool) -> int:
    signals = ShutdownSignals().install()
    from oe_depth_ros import node  # rclpy, NumPy and the backends: after the handlers

    return node.main(argv, signals=signals, lifecycle=lifecycle)


def main(argv: Sequence[str] | None = None) -> int:
    """``oe_depth_node``: the plain node (starts processing at once)."""
    return _run(argv, lifecycle=False)


def lifecycle_main(argv: Sequence[str] | None = None) -> int:
    """``oe_depth_lifecycle_node``: the managed node (waits for configure and activate)."""
    return _run(argv, lifecycle=True)


if __name__ == "__main__":
    sys.exit(lifecycle_main() if "--lifecycle" in sys.argv[1:2] else main())
