"""Write colored point clouds as binary PLY files that any viewer opens."""
from __future__ import annotations

import os

import numpy as np

from oe_depth_ros.atomic import write_bytes_atomic


def write_ply(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """Write N points (``xyz`` [N, 3] float) with optional colors (``rgb`` [N, 3] uint8).

    Non-finite points are dropped. The file is binary little-endian PLY 1.0, written
    atomically.
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    keep = np.all(np.isfinite(xyz), axis=1)
    if rgb is not None:
        rgb = np.asarray(rgb).reshape(-1, 3)
        if rgb.shape[0] != xyz.shape[0]:
            raise ValueError(f"xyz has {xyz.shape[0]} points but rgb has {rgb.shape[0]} colors")
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
        rgb = rgb[keep]
    xyz = xyz[keep]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(xyz.shape[0], dtype=fields)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {xyz.shape[0]}",
              "property float x", "property float y", "property float z"]
    if rgb is not None:
        rec["red"], rec["green"], rec["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    write_bytes_atomic(path, ("\n".join(header) + "\n").encode("ascii") + rec.tobytes())


def read_ply(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a binary little-endian PLY vertex list written by :func:`write_ply`."""
    data = open(path, "rb").read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    types = {"float": "<f4", "uchar": "u1"}
    fields = [(ln.split()[2], types[ln.split()[1]]) for ln in lines if ln.startswith("property")]
    return np.frombuffer(data[end + len(b"end_header\n"):], dtype=fields, count=count)
