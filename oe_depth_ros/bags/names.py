"""Frame ids and topic names of the bags that ``oe-depth kitti2bag`` writes.

The one home of these names: the converter, the offline depth tools and the launch
files import them. No imports beyond the standard library, so that launch files can
use it on a ROS machine without the bag tools' dependencies.
"""
from __future__ import annotations

#: The ROS topics of the moving and the static transforms.
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"

WORLD_FRAME = "world"
BASE_FRAME = "base_link"
IMU_FRAME = "imu_link"
VELO_FRAME = "velo_link"

#: KITTI camera index -> optical frame name (also the topic stem /kitti/<frame>/...).
CAMERA_FRAMES: dict[int, str] = {
    0: "camera_gray_left",
    1: "camera_gray_right",
    2: "camera_color_left",
    3: "camera_color_right",
}

VELO_TOPIC = "/kitti/velo/pointcloud"
IMU_TOPIC = "/kitti/oxts/imu"
GPS_TOPIC = "/kitti/oxts/gps/fix"


def image_topic(cam: int) -> str:
    """``/kitti/<camera frame>/image_raw`` of KITTI camera ``cam``."""
    return f"/kitti/{CAMERA_FRAMES[cam]}/image_raw"


def camera_info_topic(cam: int) -> str:
    """``/kitti/<camera frame>/camera_info`` of KITTI camera ``cam``."""
    return f"/kitti/{CAMERA_FRAMES[cam]}/camera_info"


#: KITTI's left color camera (image_02): the camera the depth tools read by default.
LEFT_COLOR_CAMERA = 2
LEFT_COLOR_IMAGE_TOPIC = image_topic(LEFT_COLOR_CAMERA)
LEFT_COLOR_INFO_TOPIC = camera_info_topic(LEFT_COLOR_CAMERA)
