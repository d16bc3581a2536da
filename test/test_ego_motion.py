"""Camera motion from OXTS poses: closed forms, point transport, mirroring."""
from __future__ import annotations

import numpy as np
import pytest

from training.ego_motion import camera_motion, mirrored

#: KITTI's axes: IMU x forward, y left, z up; camera x right, y down, z forward.
IMU_TO_CAM_ROT = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def rigid(rot: np.ndarray, trans: tuple[float, float, float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = trans
    return out


def yaw(angle: float) -> np.ndarray:
    """Rotation about the IMU's z (up) axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


IMU_TO_CAM = rigid(IMU_TO_CAM_ROT, (0.3, -0.8, 1.1))


def test_driving_straight_ahead_is_a_forward_translation() -> None:
    """2 m forward between frames: the previous camera sees every point 2 m farther."""
    poses = np.stack([np.eye(4), rigid(np.eye(3), (2.0, 0.0, 0.0))])
    to_previous = camera_motion(poses, IMU_TO_CAM, target=1, source=0)
    np.testing.assert_allclose(to_previous, rigid(np.eye(3), (0.0, 0.0, 2.0)), atol=1e-12)
    to_next = camera_motion(poses, IMU_TO_CAM, target=0, source=1)
    np.testing.assert_allclose(to_next, rigid(np.eye(3), (0.0, 0.0, -2.0)), atol=1e-12)


def test_a_world_point_lands_where_the_source_camera_sees_it() -> None:
    """Turning and moving: transport a world point through each camera by hand."""
    poses = np.stack([rigid(yaw(0.1), (5.0, 1.0, 0.2)), rigid(yaw(0.35), (6.2, 1.9, 0.25))])
    point_world = np.array([20.0, 4.0, 1.5, 1.0])

    def seen_by(frame: int) -> np.ndarray:
        imu = np.linalg.solve(poses[frame], point_world)  # world -> IMU of that frame
        return IMU_TO_CAM @ imu

    transform = camera_motion(poses, IMU_TO_CAM, target=1, source=0)
    np.testing.assert_allclose(transform @ seen_by(1), seen_by(0), atol=1e-9)
    np.testing.assert_allclose(transform[:3, :3] @ transform[:3, :3].T, np.eye(3), atol=1e-12)


def test_mirroring_flips_sideways_motion_and_turns() -> None:
    """A flipped image pair: x translation and the turn's direction change sign."""
    angle = 0.2
    c, s = np.cos(angle), np.sin(angle)
    turn_about_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    motion = rigid(turn_about_y, (0.4, -0.1, 1.5))
    expected = rigid(turn_about_y.T, (-0.4, -0.1, 1.5))  # the turn the other way
    np.testing.assert_allclose(mirrored(motion), expected, atol=1e-12)
    np.testing.assert_allclose(mirrored(mirrored(motion)), motion, atol=1e-12)


def test_frames_outside_the_drive_are_refused() -> None:
    poses = np.stack([np.eye(4)] * 3)
    with pytest.raises(IndexError, match="frames 2 and 3.*3 poses"):
        camera_motion(poses, IMU_TO_CAM, target=2, source=3)
