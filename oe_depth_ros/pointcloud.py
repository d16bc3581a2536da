"""Depth map -> point cloud as a numpy structured array (x, y, z float32 + packed rgb).

The layout matches what RViz's RGB8 color transformer reads: ``rgb`` holds the bytes
0x00RRGGBB, either as UINT32 or reinterpreted as FLOAT32 (the PCL convention that
``sensor_msgs_py`` users usually follow). Points are in the camera's optical frame
(x right, y down, z forward). Per-pixel rays are cached per (K, size) as two
contiguous planes, so the per-frame work is one multiply per coordinate, written
straight into the fields of the output array (which is what ``make_pointcloud2``
sends, without another copy).
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Literal

import cv2
import numpy as np

from oe_depth_ros.geometry import pixel_rays

RgbType = Literal["float32", "uint32"]

_LITTLE = sys.byteorder == "little"


def cloud_dtype(rgb: bool = True, rgb_type: RgbType = "float32") -> np.dtype:
    """The structured dtype of the clouds built here: x, y, z (+ rgb) at offsets 0, 4, 8 (12)."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb:
        fields.append(("rgb", "<f4" if rgb_type == "float32" else "<u4"))
    return np.dtype(fields).newbyteorder("=")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] (R, G, B) -> uint32 [...] holding 0x00RRGGBB."""
    if rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [..., 3] colors, got {rgb.dtype} {rgb.shape}")
    if _LITTLE and rgb.ndim == 3:
        # BGRA bytes read as a little-endian uint32 are 0xAARRGGBB; clear the alpha byte.
        packed = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA).view(np.uint32)
        packed = packed.reshape(rgb.shape[:2])
        np.bitwise_and(packed, np.uint32(0x00FFFFFF), out=packed)
        return packed
    c = rgb.astype(np.uint32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`; accepts the uint32 or float32 form."""
    bits = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)


class RayCache:
    """Pixel rays per (K, height, width), least recently used first out.

    At most ``maxsize`` entries and ``max_bytes`` in all: rays of a frame larger than
    that (128 MB for 4000 x 4000 pixels) are computed each time and never held, so one
    huge frame does not stay resident after it has been answered.
    """

    def __init__(self, maxsize: int = 4, max_bytes: int = 96 * 2 ** 20) -> None:
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached rays."""
        return sum(r.nbytes for r in self._cache.values())

    def get(self, k: np.ndarray, height: int, width: int) -> np.ndarray:
        """[2, H, W] float32: the planes x/z and y/z of the rays for ``k`` (read-only)."""
        k64 = np.ascontiguousarray(k, dtype=np.float64)
        key = k64.tobytes() + np.array([height, width], np.int64).tobytes()
        rays = self._cache.get(key)
        if rays is None:
            rays = np.ascontiguousarray(np.moveaxis(pixel_rays(k64, height, width)[..., :2],
                                                    -1, 0))
            rays.setflags(write=False)
            if rays.nbytes <= self._max_bytes:
                self._cache[key] = rays
                while len(self._cache) > self._maxsize or self.nbytes > self._max_bytes:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return rays


def depth_to_cloud(depth: np.ndarray, rays: np.ndarray, rgb: np.ndarray | None = None,
                   decimation: int = 1, max_range: float | None = None, organized: bool = False,
                   rgb_type: RgbType = "float32") -> np.ndarray:
    """Back-project depth [H, W] (meters along z, NaN = invalid) to a structured array.

    ``rays`` are the [2, H, W] planes of :meth:`RayCache.get`. ``decimation`` keeps
    every n-th row and column; ``max_range`` drops points whose depth z exceeds it.
    Unorganized: [N] with only finite points, row-major order. Organized:
    [ceil(H/n), ceil(W/n)] with NaN x, y, z where there is no point.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    if rays.shape != (2, *depth.shape):
        raise ValueError(f"rays shape {rays.shape} does not match depth {depth.shape}")
    if rgb is not None and rgb.shape != (*depth.shape, 3):
        raise ValueError(f"rgb shape {rgb.shape} does not match depth {depth.shape}")
    if decimation < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    d = decimation
    z = depth[::d, ::d]
    rx, ry = rays[0, ::d, ::d], rays[1, ::d, ::d]
    # NaN compares false, so one comparison keeps exactly the finite points in range.
    with np.errstate(invalid="ignore"):
        keep = z <= (np.inf if max_range is None else np.float32(max_range))
    packed = None if rgb is None else pack_rgb(rgb[::d, ::d]).view(np.float32)
    if organized:
        zk = np.where(keep, z, np.float32(np.nan))
        planes = [rx * zk, ry * zk, zk]
        if packed is not None:
            planes.append(np.ascontiguousarray(packed))
    else:
        # Gather by flat index, then compute on the kept points only.
        idx = np.flatnonzero(keep)
        zk = z.reshape(-1).take(idx)
        x = rx.reshape(-1).take(idx)
        x *= zk
        y = ry.reshape(-1).take(idx)
        y *= zk
        planes = [x, y, zk]
        if packed is not None:
            planes.append(packed.reshape(-1).take(idx))
    # One interleaving pass builds the records (cv2.merge writes the channels in order).
    dtype = cloud_dtype(rgb is not None, rgb_type)
    if zk.size == 0:
        return np.empty(zk.shape, dtype=dtype)
    return cv2.merge(planes).view(dtype).reshape(zk.shape)
