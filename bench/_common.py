"""What the benchmark scripts share: the checkout on sys.path, timing, reports.

The scripts run as ``.venv/bin/python bench/<name>.py``; importing this module (found
next to them) puts the repository root first on ``sys.path``, so they import the
package from the checkout.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_name() -> str:
    """The processor's name as the platform reports it (the machine type if none)."""
    return platform.processor() or platform.machine()


def time_passes(fn: Callable[[int], Any], count: int,
                repeats: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds per item of ``fn(i)``, i < ``count``, one value per pass.

    One warm-up call first. CPU time is this process's; on a busy machine it is the
    steadier figure.
    """
    fn(0)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(count):
            fn(i)
        walls.append((time.perf_counter() - t0) / count)
        cpus.append((time.process_time() - c0) / count)
    return walls, cpus


def write_json(path: str | Path, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``data`` as indented JSON (atomically), the ``--json`` report of every script."""
    from oe_depth_ros.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=default) + "\n")
