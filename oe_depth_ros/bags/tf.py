"""Rigid transforms of a KITTI drive: the static sensor tree and the vehicle's path.

Frames (the names the ROS KITTI tools use): ``world`` (first oxts pose), ``base_link``
(the vehicle, at the IMU), ``imu_link``, ``velo_link`` and one frame per camera,
``camera_gray_left`` (0), ``camera_gray_right`` (1), ``camera_color_left`` (2),
``camera_color_right`` (3). Camera frames are the *rectified optical* frames (x right,
y down, z forward) in which KITTI's ``P_rect_0X`` holds, so that projecting a point
in ``camera_color_left`` with the K of its CameraInfo lands on its pixel.

A transform ``T_a_b`` (4x4) maps coordinates in frame ``b`` to frame ``a``; the
TF edge ``a -> b`` (parent ``a``, child ``b``) carries ``T_a_b``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from oe_depth_ros.bags.names import (BASE_FRAME, CAMERA_FRAMES, IMU_FRAME, TF_STATIC_TOPIC,
                                     TF_TOPIC, VELO_FRAME, WORLD_FRAME)
from oe_depth_ros.kitti.raw import KittiCalib, rotation_rpy

if TYPE_CHECKING:
    from rosbags.typesys.store import MsgType, Typestore

__all__ = [
    "CAMERA_FRAMES",
    "WORLD_FRAME",
    "BASE_FRAME",
    "IMU_FRAME",
    "VELO_FRAME",
    "TF_TOPIC",
    "TF_STATIC_TOPIC",
    "Edge",
    "TransformTree",
    "rigid",
    "invert",
    "quaternion_from_matrix",
    "matrix_from_quaternion",
    "quaternion_from_rpy",
    "kitti_static_edges",
    "transform_stamped",
    "edge_from_transform_stamped",
]


def rigid(rotation: np.ndarray, translation: Sequence[float] | np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a 3-vector."""
    t = np.eye(4)
    t[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    t[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return t


def invert(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (transpose rotation, rotate back translation)."""
    r = t[:3, :3]
    return rigid(r.T, -r.T @ t[:3, 3])


def quaternion_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation (Shepperd's method)."""
    m = np.asarray(r, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] >= m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0))
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0))
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def matrix_from_quaternion(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w); normalized first."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of Rz(yaw) Ry(pitch) Rx(roll), the oxts orientation (radians)."""
    return quaternion_from_matrix(rotation_rpy(roll, pitch, yaw))


@dataclass(frozen=True)
class Edge:
    """One TF edge: ``transform`` = T_parent_child."""

    parent: str
    child: str
    transform: np.ndarray


def kitti_static_edges(calib: KittiCalib, cameras: Iterable[int]) -> list[Edge]:
    """The static tree: base_link -> imu_link -> velo_link -> each requested camera.

    ``base_link`` coincides with ``imu_link`` (KITTI's oxts poses are IMU poses); the
    camera edges carry the inverse of ``calib.T_velo_to_rect(cam)``.
    """
    edges = [
        Edge(BASE_FRAME, IMU_FRAME, np.eye(4)),
        Edge(IMU_FRAME, VELO_FRAME, invert(calib.T_imu_to_velo)),
    ]
    for cam in cameras:
        if cam not in CAMERA_FRAMES:
            raise ValueError(f"unknown KITTI camera {cam}; expected one of 0, 1, 2, 3")
        edges.append(Edge(VELO_FRAME, CAMERA_FRAMES[cam], invert(calib.T_velo_to_rect(cam))))
    return edges


class TransformTree:
    """A tree of static transforms; :meth:`lookup` composes the path between two frames."""

    def __init__(self, edges: Iterable[Edge] = ()) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}
        for edge in edges:
            self.add(edge)

    def add(self, edge: Edge) -> None:
        """Add (or replace) the edge to ``edge.child``; a frame has one parent."""
        if edge.parent == edge.child:
            raise ValueError(f"transform from {edge.child!r} to itself")
        self._parent[edge.child] = (edge.parent, np.asarray(edge.transform, dtype=np.float64))

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | {p for p, _ in self._parent.values()}

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        """(root frame, T_root_frame) by walking up from ``frame``."""
        acc = np.eye(4)
        seen = {frame}
        while frame in self._parent:
            parent, t_parent_child = self._parent[frame]
            if parent in seen:
                raise ValueError(f"transform tree has a cycle through {parent!r}")
            seen.add(parent)
            acc = t_parent_child @ acc
            frame = parent
        return frame, acc

    def lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source: maps coordinates in ``source`` into ``target``."""
        for frame in (target, source):
            if frame not in self.frames:
                known = ", ".join(sorted(self.frames)) or "none"
                raise KeyError(f"frame {frame!r} is not in the transform tree (frames: {known})")
        root_t, t_root_target = self._to_root(target)
        root_s, t_root_source = self._to_root(source)
        if root_t != root_s:
            raise KeyError(f"frames {target!r} and {source!r} are not connected "
                           f"(roots {root_t!r} and {root_s!r})")
        return invert(t_root_target) @ t_root_source


def transform_stamped(edge: Edge, stamp_ns: int, typestore: "Typestore") -> "MsgType":
    """geometry_msgs/TransformStamped (rosbags class) of ``edge`` at ``stamp_ns``."""
    t = typestore.types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    qx, qy, qz, qw = quaternion_from_matrix(edge.transform[:3, :3])
    x, y, z = (float(v) for v in edge.transform[:3, 3])
    return t["geometry_msgs/msg/TransformStamped"](
        header=t["std_msgs/msg/Header"](stamp=stamp, frame_id=edge.parent),
        child_frame_id=edge.child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
            rotation=t["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz),
                                                       w=float(qw))),
    )


def edge_from_transform_stamped(msg: Any) -> Edge:
    """Inverse of :func:`transform_stamped` for any message with the ROS field names."""
    tr, rot = msg.transform.translation, msg.transform.rotation
    q = (rot.x, rot.y, rot.z, rot.w)
    if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"transform {msg.header.frame_id} -> {msg.child_frame_id} has an "
                         f"invalid rotation quaternion {q}")
    return Edge(msg.header.frame_id, msg.child_frame_id,
                rigid(matrix_from_quaternion(q), (tr.x, tr.y, tr.z)))
