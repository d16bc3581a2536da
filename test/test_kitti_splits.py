"""Eigen-format split files: parsing, errors that name file and line, and writing."""
from __future__ import annotations

from pathlib import Path

import pytest

from oe_depth_ros.kitti.splits import (
    SplitEntry,
    format_split_line,
    parse_split_line,
    read_split_file,
    write_split_file,
)

DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def test_parse_split_lines_and_errors(tmp_path: Path) -> None:
    entry = parse_split_line("2011_09_26/2011_09_26_drive_0002_sync 69 l")
    assert entry == SplitEntry("2011_09_26/2011_09_26_drive_0002_sync", 69, "l")
    assert entry.camera == 2 and entry.line.endswith(" 0000000069 l")
    assert entry.date == "2011_09_26"
    assert parse_split_line("a/b 0000000005 r").camera == 3
    assert parse_split_line("a/b 5") == SplitEntry("a/b", 5, "l")  # side defaults to left
    split = tmp_path / "split.txt"
    split.write_text("a/b 1 l\n\na/b 2 x\n")
    with pytest.raises(ValueError, match=r"split\.txt:3: side must be"):
        read_split_file(split)
    with pytest.raises(ValueError, match="integer"):
        parse_split_line("a/b five l")
    with pytest.raises(ValueError, match="<date>/<drive>"):
        parse_split_line("drive 5 l")
    with pytest.raises(ValueError, match="non-negative"):
        parse_split_line("a/b -1 l")
    with pytest.raises(ValueError, match="expected"):
        parse_split_line("a/b 1 l extra")
    with pytest.raises(FileNotFoundError):
        read_split_file(tmp_path / "missing.txt")


def test_split_parse_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{DRIVE} 1 l\n{DRIVE} one l\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: frame index must be an integer, got 'one'"):
        read_split_file(bad)
    bad.write_text(f"{DRIVE} 1 x\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: side must be 'l' or 'r', got 'x'"):
        read_split_file(bad)
    bad.write_text("\n\n")
    with pytest.raises(ValueError, match="no entries"):
        read_split_file(bad)


def test_write_and_read_back(tmp_path: Path) -> None:
    entries = [SplitEntry(DRIVE, 7, "l"), SplitEntry(DRIVE, 1757, "r")]
    plain = write_split_file(tmp_path / "sub" / "plain.txt", entries)
    assert plain.read_text() == f"{DRIVE} 7 l\n{DRIVE} 1757 r\n"
    padded = write_split_file(tmp_path / "padded.txt", entries, zero_pad=True)
    assert padded.read_text() == f"{DRIVE} 0000000007 l\n{DRIVE} 0000001757 r\n"
    assert read_split_file(plain) == entries == read_split_file(padded)
    assert [e.line for e in entries] == [format_split_line(e, zero_pad=True) for e in entries]
