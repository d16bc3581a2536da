"""The sensor rig and vehicle motion of the synthetic world, in KITTI's conventions.

Geometry follows the KITTI recording platform: an OXTS IMU 0.93 m above the road,
a Velodyne 0.80 m above and 0.81 m ahead of it (1.73 m), camera 0 0.27 m ahead of
the Velodyne at 1.65 m, camera 1 0.54 m to its right, color camera 2 0.06 m to its
left and camera 3 0.54 m right of camera 2. The calibration files are written in
KITTI's text format; rendering uses the values parsed back from those files, so
the data and its calibration agree to the last digit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing

from oe_depth_ros.kitti.raw import EARTH_RADIUS, OxtsPacket, mercator, rotation_rpy

#: KITTI's rectified camera intrinsics at 1242 x 375 (drive date 2011_09_26).
KITTI_FX = 721.5377
KITTI_CX_RATIO = 609.5593 / 1242.0
KITTI_CY_RATIO = 172.854 / 375.0
KITTI_WIDTH = 1242

IMU_HEIGHT = 0.93
#: Velodyne origin in the IMU frame (x forward, y left, z up).
VELO_IN_IMU = np.array([0.81, -0.32, 0.80])
#: Unrectified camera 0 origin in the Velodyne frame.
CAM0_IN_VELO = np.array([0.27, 0.0, -0.08])
#: Rectified camera centers along camera 0's x axis (meters, positive = right).
CAMERA_OFFSETS = {0: 0.0, 1: 0.54, 2: -0.06, 3: 0.48}

_VELO_TO_CAM_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
GRAVITY = 9.80665
#: Range of the vehicle's speed (m/s): slow town driving, 0.25-0.5 m between 10 Hz frames.
#: On faster drives (up to 0.75 m per frame, and more often up to 1.5 m) a pose network
#: trained from scratch settled on a sideways direction of travel (docs/synthetic.md,
#: "Motion per frame").
SPEED_RANGE = (2.5, 5.0)


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out = np.eye(3)
    out[i, i] = out[j, j] = c
    out[i, j], out[j, i] = -s, s
    return out


def _fmt(values: np.typing.ArrayLike) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, dtype=np.float64).ravel())


def calibration_texts(width: int, height: int) -> dict[str, str]:
    """The three KITTI calibration files of the synthetic rig for a ``width`` x ``height`` image."""
    f = KITTI_FX * width / KITTI_WIDTH
    k = np.array([[f, 0.0, KITTI_CX_RATIO * width], [0.0, f, KITTI_CY_RATIO * height],
                  [0.0, 0.0, 1.0]])
    # A small rectifying rotation, as in KITTI; the Velodyne-to-camera rotation
    # undoes it so that the rectified cameras look level along the vehicle's x axis.
    r_rect = _rot(0, 0.004) @ _rot(1, -0.003) @ _rot(2, 0.002)
    r_v2c = r_rect.T @ _VELO_TO_CAM_AXES
    t_v2c = -r_v2c @ CAM0_IN_VELO
    lines = ["calib_time: 01-Jun-2020 09:00:00", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        t_cam = np.array([-CAMERA_OFFSETS[cam], 0.0, 0.0])
        p_rect = np.hstack([k, (k @ t_cam)[:, None]])
        lines += [
            f"S_{cam:02d}: {_fmt([width, height])}",
            f"K_{cam:02d}: {_fmt(k)}",
            f"D_{cam:02d}: {_fmt(np.zeros(5))}",
            f"R_{cam:02d}: {_fmt(np.eye(3))}",
            f"T_{cam:02d}: {_fmt(r_rect.T @ t_cam)}",
            f"S_rect_{cam:02d}: {_fmt([width, height])}",
            f"R_rect_{cam:02d}: {_fmt(r_rect)}",
            f"P_rect_{cam:02d}: {_fmt(p_rect)}",
        ]
    cam_to_cam = "\n".join(lines) + "\n"
    velo_to_cam = (f"calib_time: 01-Jun-2020 09:00:00\nR: {_fmt(r_v2c)}\nT: {_fmt(t_v2c)}\n"
                   f"delta_f: {_fmt(np.zeros(2))}\ndelta_c: {_fmt(np.zeros(2))}\n")
    imu_to_velo = (f"calib_time: 01-Jun-2020 09:00:00\nR: {_fmt(np.eye(3))}\n"
                   f"T: {_fmt(-VELO_IN_IMU)}\n")
    return {"calib_cam_to_cam.txt": cam_to_cam, "calib_velo_to_cam.txt": velo_to_cam,
            "calib_imu_to_velo.txt": imu_to_velo}


@dataclass(frozen=True, kw_only=True)
class Trajectory:
    """Vehicle motion in the road frame: gentle weaving in a lane within ``SPEED_RANGE``.

    The vehicle's center line (the Velodyne's lateral position) follows
    y = lane + A sin(2 pi x / wavelength + phase) with x(t) = v0 t + a t^2 / 2; yaw
    follows the path's tangent; small pitch and roll oscillations mimic the
    suspension. Poses are those of the IMU, 0.32 m left of the center line.
    """

    v0: float
    accel: float
    lane_y: float
    amplitude: float
    wavelength: float
    phase: float
    pitch_amp: float
    roll_amp: float
    sway_period: float

    @classmethod
    def random(cls, rng: np.random.Generator, duration: float, lane_y: float) -> "Trajectory":
        """Draw a trajectory whose speed stays within ``SPEED_RANGE`` over ``duration`` seconds."""
        low, high = SPEED_RANGE
        v0 = float(rng.uniform(low, high))
        accel = float(rng.uniform(-0.4, 0.4))
        if duration > 0:
            accel = float(np.clip(accel, (low - v0) / duration, (high - v0) / duration))
        return cls(v0=v0, accel=accel, lane_y=lane_y, amplitude=float(rng.uniform(0.2, 0.6)),
                   wavelength=float(rng.uniform(50.0, 110.0)),
                   phase=float(rng.uniform(0, 2 * np.pi)),
                   pitch_amp=float(rng.uniform(0.002, 0.006)),
                   roll_amp=float(rng.uniform(0.001, 0.004)),
                   sway_period=float(rng.uniform(1.2, 2.5)))

    def lateral_range(self) -> tuple[float, float]:
        """Range of the vehicle center line's lateral position (meters)."""
        return self.lane_y - self.amplitude, self.lane_y + self.amplitude

    def x_at(self, t: float) -> float:
        """Distance along the road at time ``t`` (seconds)."""
        return self.v0 * t + 0.5 * self.accel * t * t

    def pose(self, t: float) -> np.ndarray:
        """4x4 IMU-to-road-frame transform at time ``t``."""
        x = self.x_at(t)
        w = 2 * math.pi / self.wavelength
        y = self.lane_y + self.amplitude * math.sin(w * x + self.phase)
        yaw = math.atan(self.amplitude * w * math.cos(w * x + self.phase))
        s = 2 * math.pi * t / self.sway_period
        pitch = self.pitch_amp * math.sin(s)
        roll = self.roll_amp * math.sin(0.7 * s + 1.0)
        out = np.eye(4)
        out[:3, :3] = rotation_rpy(roll, pitch, yaw)
        # The IMU sits left of the center line by -VELO_IN_IMU[1] in the vehicle frame.
        out[:3, 3] = np.array([x, y, IMU_HEIGHT]) + out[:3, :3] @ np.array([0.0, -VELO_IN_IMU[1],
                                                                            0.0])
        return out


@dataclass(frozen=True)
class GeoReference:
    """Where the first frame lies on the Earth and which way the road's x axis points."""

    lat0: float
    lon0: float
    alt0: float
    heading: float   # road x axis, radians counter-clockwise from east

    @classmethod
    def random(cls, rng: np.random.Generator) -> "GeoReference":
        """Somewhere around Karlsruhe, any heading."""
        return cls(float(49.0 + rng.uniform(-0.05, 0.05)), float(8.4 + rng.uniform(-0.05, 0.05)),
                   float(rng.uniform(110.0, 120.0)), float(rng.uniform(-math.pi, math.pi)))

    def to_enu(self, pose_road: np.ndarray) -> np.ndarray:
        """Road-frame pose -> east/north/up pose (origin at the reference point)."""
        rz = np.eye(4)
        rz[:3, :3] = _rot(2, self.heading)
        return rz @ pose_road

    def lat_lon(self, east: float, north: float) -> tuple[float, float]:
        """Invert the devkit's Mercator exactly for a point ``east``/``north`` of the reference.

        The reference is the first frame's position, so the devkit's scale (from the
        first latitude) is ``cos(lat0)``.
        """
        scale = math.cos(self.lat0 * math.pi / 180.0)
        mx0, my0 = mercator(self.lat0, self.lon0, scale)
        lon = (mx0 + east) * 180.0 / (scale * math.pi * EARTH_RADIUS)
        lat = 360.0 / math.pi * math.atan(math.exp((my0 + north) / (scale * EARTH_RADIUS))) - 90.0
        return lat, lon


def _skew_to_vec(m: np.ndarray) -> np.ndarray:
    return np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) * 0.5


def oxts_packet(traj: Trajectory, geo: GeoReference, t: float, h: float = 1e-3) -> OxtsPacket:
    """The OXTS packet of the vehicle at time ``t`` (velocities by central differences).

    The geographic reference point is the vehicle's position at t = 0 (the first frame).
    """
    pose = geo.to_enu(traj.pose(t))
    origin = geo.to_enu(traj.pose(0.0))[:3, 3]
    before, after = geo.to_enu(traj.pose(t - h)), geo.to_enu(traj.pose(t + h))
    rot = pose[:3, :3]
    vel = (after[:3, 3] - before[:3, 3]) / (2 * h)
    acc = (after[:3, 3] - 2 * pose[:3, 3] + before[:3, 3]) / (h * h)
    omega = _skew_to_vec(rot.T @ (after[:3, :3] - before[:3, :3]) / (2 * h))
    v_body = rot.T @ vel
    a_body = rot.T @ (acc + np.array([0.0, 0.0, GRAVITY]))
    yaw = math.atan2(rot[1, 0], rot[0, 0])
    pitch = math.asin(-max(-1.0, min(1.0, rot[2, 0])))
    roll = math.atan2(rot[2, 1], rot[2, 2])
    lat, lon = geo.lat_lon(pose[0, 3] - origin[0], pose[1, 3] - origin[1])
    return OxtsPacket(
        lat=lat, lon=lon, alt=geo.alt0 + pose[2, 3] - origin[2], roll=roll, pitch=pitch, yaw=yaw,
        vn=vel[1], ve=vel[0], vf=v_body[0], vl=v_body[1], vu=v_body[2],
        ax=a_body[0], ay=a_body[1], az=a_body[2], af=a_body[0], al=a_body[1], au=a_body[2],
        wx=omega[0], wy=omega[1], wz=omega[2], wf=omega[0], wl=omega[1], wu=omega[2],
        pos_accuracy=0.02, vel_accuracy=0.02, navstat=4, numsats=10, posmode=4, velmode=4,
        orimode=0,
    )
