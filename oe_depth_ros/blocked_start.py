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
"""The node executables' shebang: start the interpreter with SIGINT and SIGTERM blocked.

Between the exec of a Python program and its first statement (CPython's start, the
site hooks, the console-script wrapper) a signal kills the process or raises
``KeyboardInterrupt``: about 150-300 ms in which the node cannot exit cleanly. GNU
``env`` (coreutils 8.31 and later) closes most of it: ``env --block-signal=INT,TERM``
blocks both signals and then executes the interpreter, a blocked signal stays pending
across ``execve``, and :class:`oe_depth_ros.shutdown_signals.ShutdownSignals` unblocks
them once its handlers are in. What is left is ``env``'s own start, about 1 ms.

``setup.py`` writes this shebang into the node executables that ``colcon build``
installs in ``lib/oe_depth_ros`` (where ``ros2 run`` and ``ros2 launch`` find them) when
the build machine's ``env`` supports it, and keeps setuptools' plain ``#!<interpreter>``
otherwise. Standard library only: ``setup.py`` loads this file by path.
"""
from __future__ import annotations

import functools
import os
import subprocess

#: The executables that start blocked: their entry points (oe_depth_ros.node_main)
#: install the signal handlers before anything else and unblock the signals.
NODE_EXECUTABLES = ("oe_depth_node", "oe_depth_lifecycle_node")
#: GNU env, at the path every Linux distribution has.
ENV = "/usr/bin/env"
#: The signals the node's handlers take over (``ShutdownSignals``), in env's spelling.
SIGNALS = "INT,TERM"
#: Linux reads at most this many bytes of a shebang line (BINPRM_BUF_SIZE - 1, 5.1+).
MAX_SHEBANG_BYTES = 255
#: Characters that ``env -S`` would interpret (quotes, escapes, variables, comments).
_ENV_SPECIAL = set("\\'\"$#")


@functools.lru_cache(maxsize=None)
def env_blocks_signals(env: str = ENV) -> bool:
    """Whether ``env`` runs a command with ``--block-signal`` (GNU coreutils >= 8.31).

    Probed once per ``env`` and process (setup.py asks for every node executable).
    """
    try:
        probe = subprocess.run([env, "-S", f"--block-signal={SIGNALS} true"],
                               capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def blocked_shebang(interpreter: str) -> str | None:
    """``#!/usr/bin/env -S --block-signal=INT,TERM <interpreter>``, or None if unusable.

    ``interpreter`` is the command of a ``#!`` line (an absolute path, possibly with
    options). None where it is relative (a wheel's ``python`` placeholder, rewritten
    by the installer), holds characters ``env -S`` would interpret, or makes a line
    longer than Linux reads.
    """
    if not os.path.isabs(interpreter) or _ENV_SPECIAL & set(interpreter):
        return None
    line = f"#!{ENV} -S --block-signal={SIGNALS} {interpreter}"
    return line if len(line.encode()) <= MAX_SHEBANG_BYTES else None


def with_blocked_start(contents: str, supported: bool) -> str:
    """``contents`` of a script with its shebang replaced by :func:`blocked_shebang`.

    Unchanged where ``env`` does not support blocking (``supported`` False), the script
    has no shebang, or the shebang cannot be rewritten.
    """
    first, newline, rest = contents.partition("\n")
    if not supported or not first.startswith("#!"):
        return contents
    line = blocked_shebang(first[2:].strip())
    return contents if line is None else line + newline + rest
