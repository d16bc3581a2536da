"""Convert a KITTI raw drive into a rosbag2 that ``ros2 bag play`` replays.

Topics (frames in brackets):

* ``/kitti/<camera>/image_raw`` (rgb8 for the color cameras, mono8 for the gray ones)
  and ``/kitti/<camera>/camera_info`` [the camera's rectified optical frame]; camera 2
  (``camera_color_left``) by default, the others on request. With ``compressed``
  (``jpeg`` or ``png``) the images go to ``/kitti/<camera>/image_raw/compressed`` as
  sensor_msgs/CompressedImage instead, written as image_transport's ``compressed``
  plugin writes them (its default jpeg quality 95 and png level 3).
* ``/kitti/velo/pointcloud``: x, y, z, intensity as FLOAT32 [velo_link].
* ``/tf_static`` once, offered with transient-local durability so that late joiners
  get it on replay: base_link -> imu_link -> velo_link -> camera frames.
* ``/tf``: world -> base_link from the oxts poses (KITTI devkit convention).
* ``/kitti/oxts/imu`` (sensor_msgs/Imu) and ``/kitti/oxts/gps/fix`` (NavSatFix) [imu_link].

Every message is stamped (header and bag time) with its sensor's timestamp from
KITTI's ``timestamps.txt`` read as UTC, and messages are written in time order.
CameraInfo describes the rectified image: K = the left 3x3 of ``P_rect_0X``, zero
distortion, R = I, and P = [K | t] with t = 0 for the left camera of a stereo pair
and the ROS stereo term -fx * baseline for the right one (the offsets to the other
cameras live in TF, not in P).
"""
from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from oe_depth_ros.bags import tf
from oe_depth_ros.bags.names import (GPS_TOPIC, IMU_TOPIC, LEFT_COLOR_CAMERA,
                                     LEFT_COLOR_IMAGE_TOPIC, LEFT_COLOR_INFO_TOPIC, VELO_TOPIC,
                                     camera_info_topic, image_topic)
from oe_depth_ros.bags.bagio import (
    DEFAULT_QOS,
    Qos,
    TRANSIENT_LOCAL_QOS,
    BagError,
    BagWriter,
    atomic_bag,
)
from oe_depth_ros.compressed import CODECS, encode_like_plugin, transport_topic
from oe_depth_ros.kitti.raw import KittiCalib, KittiDrive, OxtsPacket, oxts_poses
from oe_depth_ros.messages import (
    MessageTypes,
    make_camera_info,
    make_header,
    make_pointcloud2,
    numpy_to_image,
)
from oe_depth_ros.progress import bar_disabled

__all__ = [
    "VELO_TOPIC",
    "LEFT_COLOR_CAMERA",
    "LEFT_COLOR_IMAGE_TOPIC",
    "LEFT_COLOR_INFO_TOPIC",
    "IMU_TOPIC",
    "GPS_TOPIC",
    "image_topic",
    "camera_info_topic",
    "camera_projection",
    "ConversionSummary",
    "convert",
]

LOG = logging.getLogger(__name__)

#: Stereo partner (left camera) of each right camera.
_STEREO_LEFT = {1: 0, 3: 2}

_VELO_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])


def camera_projection(calib: KittiCalib, cam: int) -> np.ndarray:
    """3x4 ROS projection P of rectified camera ``cam``: [K | K @ (t_cam - t_left)].

    ``t`` is each camera's offset from rectified camera 0, so the left cameras (0, 2)
    get a zero fourth column and the right ones (1, 3) get Tx = -fx * baseline.
    """
    k = calib.rect_intrinsics(cam)
    p = np.zeros((3, 4))
    p[:, :3] = k
    if cam in _STEREO_LEFT:
        offset = (calib.T_rect0_to_rect(cam)[:3, 3]
                  - calib.T_rect0_to_rect(_STEREO_LEFT[cam])[:3, 3])
        p[:2, 3] = (k @ offset)[:2]
    return p


@dataclass(kw_only=True)
class ConversionSummary:
    """What :func:`convert` wrote."""

    out: Path
    storage: str
    distro: str
    frames: int
    seconds: float
    message_counts: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def _count_files(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix == suffix) if folder.is_dir() else -1


def _check_sensor(drive: KittiDrive, sensor: str, suffix: str) -> np.ndarray:
    """The sensor's timestamps after checking that it has one file per timestamp."""
    folder = drive.drive_dir / sensor
    count = _count_files(folder / "data", suffix)
    if count < 0:
        raise FileNotFoundError(f"{drive.drive_dir}: missing sensor folder {folder / 'data'}")
    stamps = drive.timestamps(sensor)
    if count != len(stamps):
        raise BagError(f"{folder}: {count} {suffix} files in data/ but {len(stamps)} "
                       f"timestamps in {folder / 'timestamps.txt'}")
    return stamps


def _check_drive(drive: KittiDrive, cameras: Sequence[int],
                 max_frames: int | None) -> tuple[int, dict[str, np.ndarray]]:
    """(frames to convert, sensor -> timestamps); raises on missing or mismatched inputs."""
    stamps = {f"image_{c:02d}": _check_sensor(drive, f"image_{c:02d}", ".png") for c in cameras}
    stamps["velodyne_points"] = _check_sensor(drive, "velodyne_points", ".bin")
    stamps["oxts"] = _check_sensor(drive, "oxts", ".txt")
    counts = {name: len(s) for name, s in stamps.items()}
    if len(set(counts.values())) != 1:
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise BagError(f"{drive.drive_dir}: sensors have different frame counts ({listing}); "
                       "expected a synchronized drive (*_sync)")
    frames = next(iter(counts.values()))
    if frames == 0:
        raise BagError(f"{drive.drive_dir}: the drive has no frames")
    if max_frames is not None:
        if max_frames <= 0:
            raise BagError(f"--max-frames must be positive, got {max_frames}")
        frames = min(frames, max_frames)
    return frames, {k: v[:frames] for k, v in stamps.items()}


# A stream item: (stamp ns, tie-break order, topic, message, QoS profile).
_Item = tuple[int, int, str, object, Qos]


def _camera_stream(drive: KittiDrive, cam: int, stamps: np.ndarray, calib: KittiCalib,
                   types: MessageTypes, order: int, compressed: str | None = None,
                   typestore: Any = None) -> Iterator[_Item]:
    frame = tf.CAMERA_FRAMES[cam]
    encoding = "rgb8" if cam >= 2 else "mono8"
    k = calib.rect_intrinsics(cam)
    p = camera_projection(calib, cam).reshape(-1)
    topic = transport_topic(image_topic(cam), "compressed" if compressed else "raw")
    for idx, stamp in enumerate(stamps):
        header = make_header(int(stamp), frame, types)
        image = drive.image(cam, idx)
        info = make_camera_info(k, image.shape[1], image.shape[0], header, types)
        info.p = p.copy()
        yield int(stamp), order, camera_info_topic(cam), info, DEFAULT_QOS
        if compressed:
            fmt, data = encode_like_plugin(image, encoding, compressed)
            msg = typestore.types["sensor_msgs/msg/CompressedImage"](
                header=header, format=fmt, data=np.frombuffer(data, np.uint8))
        else:
            msg = numpy_to_image(image, encoding, header, types)
        yield int(stamp), order + 1, topic, msg, DEFAULT_QOS


def _velodyne_stream(drive: KittiDrive, stamps: np.ndarray, types: MessageTypes,
                     order: int) -> Iterator[_Item]:
    for idx, stamp in enumerate(stamps):
        scan = np.ascontiguousarray(drive.velodyne(idx), dtype="<f4")
        points = scan.view(_VELO_DTYPE).reshape(-1)
        header = make_header(int(stamp), tf.VELO_FRAME, types)
        yield int(stamp), order, VELO_TOPIC, make_pointcloud2(points, header, types), DEFAULT_QOS


def _imu(packet: OxtsPacket, header: Any, typestore: Any) -> Any:
    t = typestore.types
    vec = t["geometry_msgs/msg/Vector3"]
    qx, qy, qz, qw = tf.quaternion_from_rpy(packet.roll, packet.pitch, packet.yaw)
    return t["sensor_msgs/msg/Imu"](
        header=header,
        orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        orientation_covariance=np.zeros(9),
        angular_velocity=vec(x=packet.wf, y=packet.wl, z=packet.wu),
        angular_velocity_covariance=np.zeros(9),
        linear_acceleration=vec(x=packet.af, y=packet.al, z=packet.au),
        linear_acceleration_covariance=np.zeros(9),
    )


def _navsat(packet: OxtsPacket, header: Any, typestore: Any) -> Any:
    t = typestore.types
    fix_cls, status_cls = t["sensor_msgs/msg/NavSatFix"], t["sensor_msgs/msg/NavSatStatus"]
    var = packet.pos_accuracy ** 2
    return fix_cls(
        header=header,
        status=status_cls(status=status_cls.STATUS_FIX, service=status_cls.SERVICE_GPS),
        latitude=packet.lat, longitude=packet.lon, altitude=packet.alt,
        position_covariance=np.diag([var, var, var]).reshape(-1),
        position_covariance_type=fix_cls.COVARIANCE_TYPE_APPROXIMATED,
    )


def _oxts_stream(packets: list[OxtsPacket], stamps: np.ndarray, typestore: Any,
                 types: MessageTypes, order: int) -> Iterator[_Item]:
    tf_message = typestore.types["tf2_msgs/msg/TFMessage"]
    poses = oxts_poses(packets)
    for packet, pose, stamp in zip(packets, poses, stamps):
        stamp = int(stamp)
        edge = tf.Edge(tf.WORLD_FRAME, tf.BASE_FRAME, pose)
        yield stamp, order, tf.TF_TOPIC, tf_message(
            transforms=[tf.transform_stamped(edge, stamp, typestore)]), DEFAULT_QOS
        header = make_header(stamp, tf.IMU_FRAME, types)
        yield stamp, order + 1, IMU_TOPIC, _imu(packet, header, typestore), DEFAULT_QOS
        yield stamp, order + 2, GPS_TOPIC, _navsat(packet, header, typestore), DEFAULT_QOS


def convert(drive_dir: str | Path, out: str | Path, storage: str = "mcap", distro: str = "jazzy",
            cameras: Sequence[int] = (2,), max_frames: int | None = None,
            overwrite: bool = False, compress: bool = False,
            progress: bool = True, compressed: str | None = None) -> ConversionSummary:
    """Write the KITTI raw drive ``drive_dir`` as the rosbag2 directory ``out``.

    ``storage`` is ``mcap`` or ``sqlite3``; ``distro`` ``humble`` (metadata version 8)
    or ``jazzy`` (version 9); ``compress`` uses zstd; ``compressed`` (jpeg or png)
    writes the images as CompressedImage. ``out`` appears only when the bag is complete.
    """
    if compressed is not None and compressed not in CODECS:
        raise BagError(f"compressed must be one of {', '.join(CODECS)}, got {compressed!r}")
    cameras = sorted(set(int(c) for c in cameras))
    if not cameras or any(c not in tf.CAMERA_FRAMES for c in cameras):
        raise BagError(f"cameras must be a non-empty subset of 0 1 2 3, got {cameras}")
    drive = KittiDrive(drive_dir)
    try:
        calib = drive.calib
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"calibration of {drive.drive_dir}: {exc}") from exc
    frames, stamps = _check_drive(drive, cameras, max_frames)
    packets = [drive.oxts(i) for i in range(frames)]
    start = time.perf_counter()
    out = Path(out)
    with atomic_bag(out, overwrite) as tmp, \
            BagWriter(tmp, storage, distro, compress) as bag:
        typestore = bag.typestore
        types = MessageTypes.rosbags(typestore)
        t0 = int(min(s[0] for s in stamps.values()))
        static = typestore.types["tf2_msgs/msg/TFMessage"](transforms=[
            tf.transform_stamped(e, t0, typestore) for e in tf.kitti_static_edges(calib, cameras)])
        streams: list[Iterator[_Item]] = [
            iter([(t0, 0, tf.TF_STATIC_TOPIC, static, TRANSIENT_LOCAL_QOS)]),
            _oxts_stream(packets, stamps["oxts"], typestore, types, 10),
            _velodyne_stream(drive, stamps["velodyne_points"], types, 20),
        ]
        streams += [_camera_stream(drive, c, stamps[f"image_{c:02d}"], calib, types, 30 + 2 * c,
                                   compressed, typestore) for c in cameras]
        total = 1 + frames * (4 + 2 * len(cameras))
        with tqdm(total=total, unit="msg", desc=f"kitti2bag {drive.name}",
                  disable=bar_disabled(progress)) as bar:
            for stamp, _, topic, msg, qos in heapq.merge(*streams, key=lambda i: i[:2]):
                bag.write(topic, stamp, msg, qos)
                bar.update(1)
        counts = dict(bag.counts)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    LOG.info("wrote %s (%s, %s): %d frames, %d messages, %.1f MB in %.1f s", out, storage,
             distro, frames, sum(counts.values()), size / 1e6, seconds)
    return ConversionSummary(out=out, storage=storage, distro=distro, frames=frames,
                             seconds=seconds, message_counts=counts, size_bytes=size)
