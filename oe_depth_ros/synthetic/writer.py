"""Writing data in the KITTI raw layout (images, scans, OXTS, timestamps)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from oe_depth_ros.kitti.raw import OXTS_FIELDS, OxtsPacket, format_oxts, format_timestamp

_OXTS_UNITS = {
    "lat": "latitude of the oxts-unit (deg)", "lon": "longitude of the oxts-unit (deg)",
    "alt": "altitude of the oxts-unit (m)", "roll": "roll angle (rad)",
    "pitch": "pitch angle (rad)", "yaw": "heading (rad), 0 = east, counter-clockwise",
}


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 gray/RGB or uint16 single-channel image as PNG bytes (RGB order in)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def write_png(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as PNG to ``path`` (creating parent folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(image))


def write_velodyne(path: Path, points: np.ndarray) -> None:
    """Write a scan as KITTI's little-endian float32 N x 4 ``.bin``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.ascontiguousarray(points, dtype="<f4").tobytes())


def write_oxts(path: Path, packet: OxtsPacket) -> None:
    """Write one OXTS packet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_oxts(packet), encoding="ascii")


def write_timestamps(path: Path, stamps_ns: Iterable[int]) -> None:
    """Write a ``timestamps.txt`` (one KITTI time string per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_timestamp(int(s)) + "\n" for s in stamps_ns), encoding="ascii")


def oxts_dataformat() -> str:
    """The ``oxts/dataformat.txt`` describing the 30 packet fields."""
    return "".join(f"{name}: {_OXTS_UNITS.get(name, name)}\n" for name in OXTS_FIELDS)
