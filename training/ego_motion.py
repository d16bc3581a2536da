"""Camera motion between two frames of a drive from its OXTS poses (metres).

Training can take the ego-motion of each target/source pair from the vehicle's GNSS/INS
instead of the pose network (``model.ego_motion: oxts``). The transform follows the
pose network's convention: it takes points from the target camera's frame into the
source camera's frame.
"""
from __future__ import annotations

import numpy as np

#: Mirror about the camera's y-z plane: what a horizontal image flip does to 3-D points
#: (exact when the principal point is at the image center, as Monodepth2 assumes).
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0])


def camera_motion(poses: np.ndarray, imu_to_cam: np.ndarray, target: int, source: int
                  ) -> np.ndarray:
    """4x4 transform taking points in camera coordinates at ``target`` into ``source``'s.

    ``poses`` [N, 4, 4] are IMU-to-world poses of the drive's frames
    (:meth:`oe_depth_ros.kitti.raw.KittiDrive.poses`); ``imu_to_cam`` is the 4x4
    IMU-to-rectified-camera transform of the camera (``T_imu_to_rect``).
    """
    n = len(poses)
    if not (0 <= target < n and 0 <= source < n):
        raise IndexError(f"frames {target} and {source} must lie within the drive's {n} poses")
    world_from_target = poses[target] @ np.linalg.inv(imu_to_cam)
    source_from_world = imu_to_cam @ np.linalg.inv(poses[source])
    return source_from_world @ world_from_target


def mirrored(transform: np.ndarray) -> np.ndarray:
    """The same motion seen in horizontally flipped images."""
    return MIRROR_X @ transform @ MIRROR_X
