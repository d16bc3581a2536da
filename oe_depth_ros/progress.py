"""Progress bars that show on a terminal only.

tqdm's ``disable=None`` turns a bar off when its stream is not a terminal, so log files
and CI output carry no bar frames; ``disable=True`` turns it off everywhere. Every bar in
the project takes its ``disable`` from here.
"""
from __future__ import annotations


def bar_disabled(wanted: bool) -> bool | None:
    """tqdm's ``disable`` for a bar: off unless ``wanted``, and then off the terminal."""
    return None if wanted else True
