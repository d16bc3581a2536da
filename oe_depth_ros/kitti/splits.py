"""Eigen-format split files: one ``<date>/<drive> <frame> l|r`` line per image.

Monodepth2's split files (eigen_zhou train/val, eigen test) write the frame index
either plain (``1757``) or zero-padded to ten digits (``0000000069``); both parse.
A missing side means the left camera. Errors name the file and line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from oe_depth_ros.atomic import write_text_atomic

#: KITTI camera index of a split line's side.
SIDE_TO_CAMERA = {"l": 2, "r": 3}
LINE_FORMAT = "'<date>/<drive> <frame> l|r'"


@dataclass(frozen=True)
class SplitEntry:
    """One line of an Eigen-format split file: ``<date>/<drive> <frame> l|r``."""

    folder: str
    frame: int
    side: str = "l"

    @property
    def camera(self) -> int:
        """KITTI camera index of the side (l -> 2, r -> 3)."""
        return SIDE_TO_CAMERA[self.side]

    @property
    def date(self) -> str:
        """The date folder (first part of ``folder``), which holds the calibration."""
        return self.folder.split("/")[0]

    @property
    def line(self) -> str:
        """The canonical line (frame zero-padded), a stable key for caches and reports."""
        return format_split_line(self, zero_pad=True)


def format_split_line(entry: SplitEntry, zero_pad: bool = False) -> str:
    """``<date>/<drive> <frame> <side>``; ``zero_pad`` writes the frame with ten digits."""
    frame = f"{entry.frame:010d}" if zero_pad else str(entry.frame)
    return f"{entry.folder} {frame} {entry.side}"


def parse_split_line(text: str, where: str = "<string>") -> SplitEntry:
    """Parse ``<date>/<drive> <frame> [l|r]``; ``where`` (e.g. ``file:line``) leads errors."""
    parts = text.split()
    if len(parts) not in (2, 3):
        raise ValueError(f"{where}: expected {LINE_FORMAT}, got {text!r}")
    folder, frame_text = parts[0], parts[1]
    side = parts[2] if len(parts) == 3 else "l"
    if side not in SIDE_TO_CAMERA:
        raise ValueError(f"{where}: side must be 'l' or 'r', got {side!r}")
    if folder.count("/") != 1 or folder.startswith("/") or ".." in folder.split("/"):
        raise ValueError(f"{where}: folder must be '<date>/<drive>', got {folder!r}")
    try:
        frame = int(frame_text)
    except ValueError:
        raise ValueError(f"{where}: frame index must be an integer, got {frame_text!r}") from None
    if frame < 0:
        raise ValueError(f"{where}: frame index must be non-negative, got {frame}")
    return SplitEntry(folder, frame, side)


def read_split_file(path: str | os.PathLike[str]) -> list[SplitEntry]:
    """Read a split file (blank lines skipped); errors name ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    entries = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            entries.append(parse_split_line(text, f"{path}:{number}"))
    if not entries:
        raise ValueError(f"split file {path} has no entries")
    return entries


def write_split_file(path: str | os.PathLike[str], entries: Iterable[SplitEntry],
                     zero_pad: bool = False) -> Path:
    """Write ``entries`` one line each (atomically); returns the path."""
    path = Path(path)
    write_text_atomic(path, "".join(format_split_line(e, zero_pad) + "\n" for e in entries))
    return path
