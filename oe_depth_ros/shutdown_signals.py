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
"""SIGINT and SIGTERM as a request to stop: what the node's executables install first.

Its own module, importing ``signal`` and ``threading`` only, so that the executables
(:mod:`oe_depth_ros.node_main`) install it before anything heavy and the node
(:mod:`oe_depth_ros.node`) uses it without importing the executables back.
"""
from __future__ import annotations

import signal
import threading


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
        """Handle SIGINT and SIGTERM, then unblock them (call from the main thread).

        A signal held pending since before the exec is delivered to the handler here.
        Returns self.
        """
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)
        return self

    def stopping(self) -> None:
        """Teardown has begun: ignore every further signal (call from the main thread)."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested.set()
