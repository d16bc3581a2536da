"""Atomic file output: write to a temporary sibling, then rename over the final name.

Readers never see a half-written file, and a failed write leaves any previous file intact.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it to ``final``.

    Works for files and directories (a rosbag2 is a directory). On an exception the
    temporary is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + suffix,
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it (file or directory)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary {tmp} for {final}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    write_bytes_atomic(final, text.encode("utf-8"))
