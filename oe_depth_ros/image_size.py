"""Image sizes: the network's default input size and the one text form of a size.

Code holds a size as (height, width), the order of numpy shapes. Command-line options
and the manual write it WIDTHxHEIGHT (``640x192``), the way KITTI and the paper name
sizes; :func:`parse_size` accepts only that form and :func:`format_size` writes it.
"""
from __future__ import annotations

import argparse

#: Network input (height, width) when neither the caller nor a checkpoint gives one: the
#: paper's KITTI size, 640x192.
DEFAULT_NETWORK_SIZE: tuple[int, int] = (192, 640)


class ImageSizeError(ValueError, argparse.ArgumentTypeError):
    """A size that is not WIDTHxHEIGHT; argparse shows its message for ``type=parse_size``."""


def parse_size(text: str) -> tuple[int, int]:
    """``'WIDTHxHEIGHT'`` (e.g. ``'640x192'``) -> (height, width), both positive."""
    parts = text.strip().lower().split("x")
    try:
        width, height = (int(v) for v in parts)
    except ValueError:
        raise ImageSizeError(f"expected WIDTHxHEIGHT such as 640x192, got {text!r}") from None
    if width < 1 or height < 1:
        raise ImageSizeError(f"width and height must be positive, got {text!r}")
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """(height, width) -> ``'WIDTHxHEIGHT'``, the form :func:`parse_size` reads."""
    height, width = size
    return f"{width}x{height}"
