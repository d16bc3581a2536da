"""One frame of the synthetic rig: four camera images, camera 2's depth and labels, a scan.

Camera poses come from the vehicle (IMU) pose and the calibration parsed from the
written files, so images, depth, LiDAR and calibration agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oe_depth_ros.synthetic.lidar import Lidar
from oe_depth_ros.kitti.raw import KittiCalib
from oe_depth_ros.synthetic.render import NOTHING, cast, pinhole_grid
from oe_depth_ros.synthetic.shading import camera_image, surface_albedo
from oe_depth_ros.synthetic.world import World

#: Camera ray-casting limit (meters); farther surfaces dissolve into the sky haze.
CAMERA_FAR = 250.0
#: Largest depth a uint16 PNG at meters x 256 can hold.
MAX_PNG_DEPTH = 65535 / 256.0
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Frame:
    """Rendered sensor data of one time step."""

    images: dict[int, np.ndarray]   # 0/1: gray uint8 [H, W]; 2/3: RGB uint8 [H, W, 3]
    depth: np.ndarray               # camera 2 z-depth, float32 [H, W], 0 = none (sky)
    labels: np.ndarray              # camera 2 Cityscapes labelIds, uint8 [H, W]
    points: np.ndarray              # LiDAR [N, 4] float32 in the Velodyne frame


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


class SensorRig:
    """Renders frames of a world for a calibration and image size."""

    def __init__(self, calib: KittiCalib, width: int, height: int, lidar: Lidar | None = None,
                 cameras: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        self.calib = calib
        self.width, self.height = width, height
        self.lidar = lidar if lidar is not None else Lidar()
        self.cameras = cameras
        self.grids = {c: pinhole_grid(calib.rect_intrinsics(c), height, width) for c in cameras}
        self.cam_from_imu = {c: np.linalg.inv(calib.T_imu_to_rect(c)) for c in cameras}
        self.velo_from_imu = np.linalg.inv(calib.T_imu_to_velo)

    def camera_pose(self, imu_pose: np.ndarray, cam: int) -> np.ndarray:
        """World pose (4x4, rectified camera -> road frame) of camera ``cam``."""
        return imu_pose @ self.cam_from_imu[cam]

    def render_camera(self, world: World, imu_pose: np.ndarray, cam: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Float RGB [H, W, 3] in [0, 1], z-depth (0 = none) and labels of one camera."""
        grid = self.grids[cam]
        hits = cast(world, grid, self.camera_pose(imu_pose, cam), CAMERA_FAR)
        albedo, normal, labels = surface_albedo(world, hits, grid.pixel_angle)
        rgb = camera_image(world, hits, albedo, normal, CAMERA_FAR)
        depth = np.where(hits.prim != NOTHING, hits.t, 0.0).astype(np.float32)
        return rgb, depth, labels

    def render(self, world: World, imu_pose: np.ndarray, lidar: bool = True) -> Frame:
        """All sensors at the vehicle pose ``imu_pose`` (4x4 IMU -> road frame)."""
        images: dict[int, np.ndarray] = {}
        depth = labels = np.zeros((self.height, self.width), dtype=np.float32)
        for cam in self.cameras:
            rgb, d, lab = self.render_camera(world, imu_pose, cam)
            if cam >= 2:
                images[cam] = _to_uint8(rgb)
            else:
                images[cam] = _to_uint8(rgb @ _LUMA)
            if cam == 2:
                depth, labels = d, lab
        points = (self.lidar.scan(world, imu_pose @ self.velo_from_imu) if lidar
                  else np.zeros((0, 4), dtype=np.float32))
        return Frame(images, depth, labels, points)


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Meters -> KITTI depth PNG values (uint16 meters x 256; 0 = no depth)."""
    ok = (depth > 0) & (depth < MAX_PNG_DEPTH)
    return np.where(ok, np.clip(np.round(depth * 256.0), 1, 65535), 0).astype(np.uint16)
