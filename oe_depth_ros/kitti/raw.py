"""Reader for KITTI raw drives (the ``<date>/<date>_drive_<nnnn>_sync`` layout).

Reads the calibration of the drive's date folder, the four cameras' images, the
Velodyne scans, the OXTS packets and the per-sensor timestamps. Every malformed
file raises :class:`KittiFormatError` naming the file (and line where there is one);
a missing file raises ``FileNotFoundError`` naming its path.
"""
from __future__ import annotations

import calendar
import math
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

#: Earth radius used by the KITTI devkit's Mercator projection (meters).
EARTH_RADIUS = 6378137.0

#: The sensor folders of a drive.
CAMERAS = (0, 1, 2, 3)
SENSORS = ("image_00", "image_01", "image_02", "image_03", "velodyne_points", "oxts")
#: Camera image formats: KITTI's PNGs, or JPGs as Monodepth2's setup converts them.
IMAGE_EXTENSIONS = (".png", ".jpg")

_TIMESTAMP_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


class KittiFormatError(ValueError):
    """A KITTI file whose content does not follow the format (names file and line)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing KITTI file: {path}")
    try:
        return path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise KittiFormatError(path, f"not an ASCII text file ({exc})") from None


def read_calib_file(path: str | Path) -> dict[str, tuple[np.ndarray, int]]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file into {key: (values, line number)}.

    Non-numeric entries (``calib_time``) are skipped; blank lines are allowed.
    """
    path = Path(path)
    out: dict[str, tuple[np.ndarray, int]] = {}
    for lineno, raw in enumerate(_read_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise KittiFormatError(path, f"expected 'key: values', got {raw!r}", lineno)
        key = key.strip()
        if key == "calib_time":
            continue
        try:
            arr = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            raise KittiFormatError(path, f"non-numeric value for {key!r}: {value.strip()!r}",
                                   lineno) from None
        if not np.all(np.isfinite(arr)):
            raise KittiFormatError(path, f"non-finite value for {key!r}", lineno)
        out[key] = (arr, lineno)
    return out


def _take(entries: dict[str, tuple[np.ndarray, int]], path: Path, key: str,
          shape: tuple[int, ...]) -> np.ndarray:
    if key not in entries:
        raise KittiFormatError(path, f"missing key {key!r}")
    arr, lineno = entries[key]
    size = int(np.prod(shape))
    if arr.size != size:
        raise KittiFormatError(path, f"{key!r} needs {size} values, got {arr.size}", lineno)
    return arr.reshape(shape)


def _rigid(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = trans
    return out


@dataclass(frozen=True, kw_only=True)
class KittiCalib:
    """The calibration of one KITTI date folder, as matrices.

    Per camera ``i`` in 0..3: ``K[i]``, ``D[i]``, ``R[i]``, ``T[i]``, ``S[i]`` (unrectified),
    ``S_rect[i]`` (width, height), ``R_rect[i]`` (3x3) and ``P_rect[i]`` (3x4).
    ``T_velo_to_cam`` maps Velodyne points into the unrectified camera 0 frame and
    ``T_imu_to_velo`` IMU points into the Velodyne frame (both 4x4).
    """

    K: dict[int, np.ndarray]
    D: dict[int, np.ndarray]
    R: dict[int, np.ndarray]
    T: dict[int, np.ndarray]
    S: dict[int, np.ndarray]
    S_rect: dict[int, np.ndarray]
    R_rect: dict[int, np.ndarray]
    P_rect: dict[int, np.ndarray]
    T_velo_to_cam: np.ndarray
    T_imu_to_velo: np.ndarray

    @property
    def R_rect_00(self) -> np.ndarray:
        """Camera 0's rectifying rotation as a 4x4 matrix (the devkit's ``R_rect_00``)."""
        out = np.eye(4)
        out[:3, :3] = self.R_rect[0]
        return out

    @property
    def K_cam2(self) -> np.ndarray:
        """The rectified 3x3 intrinsics of camera 2 (left color camera)."""
        return self.rect_intrinsics(2)

    @property
    def P_velo_to_cam2_image(self) -> np.ndarray:
        """3x4 Velodyne -> camera 2 pixel projection: P_rect_02 @ R_rect_00 @ T_velo_to_cam."""
        return self.P_rect[2] @ self.R_rect_00 @ self.T_velo_to_cam

    def rect_intrinsics(self, cam: int) -> np.ndarray:
        """The rectified 3x3 intrinsics of camera ``cam`` (left 3x3 block of P_rect)."""
        return self.P_rect[cam][:, :3].copy()

    def T_rect0_to_rect(self, cam: int) -> np.ndarray:
        """4x4 translation from the rectified camera 0 frame to rectified camera ``cam``."""
        p = self.P_rect[cam]
        return _rigid(np.eye(3), np.linalg.solve(p[:, :3], p[:, 3]))

    def T_velo_to_rect(self, cam: int) -> np.ndarray:
        """4x4 transform from the Velodyne frame to rectified camera ``cam`` (metric)."""
        return self.T_rect0_to_rect(cam) @ self.R_rect_00 @ self.T_velo_to_cam

    def T_imu_to_rect(self, cam: int) -> np.ndarray:
        """4x4 transform from the IMU (OXTS) frame to rectified camera ``cam`` (metric)."""
        return self.T_velo_to_rect(cam) @ self.T_imu_to_velo

    def baseline(self, left: int = 2, right: int = 3) -> float:
        """Stereo baseline in meters between two rectified cameras."""
        return float(np.linalg.norm(self.T_rect0_to_rect(left)[:3, 3]
                                    - self.T_rect0_to_rect(right)[:3, 3]))


def read_depth_png(path: str | Path) -> np.ndarray:
    """Read a KITTI depth PNG (uint16, meters x 256, 0 = invalid) as float32 meters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth depth PNG not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot decode ground-truth depth PNG: {path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel uint16 PNG, got {raw.dtype} "
                         f"with shape {raw.shape}")
    return raw.astype(np.float32) / 256.0


def read_calib(date_dir: str | Path) -> KittiCalib:
    """Read ``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt`` and ``calib_imu_to_velo.txt``."""
    date_dir = Path(date_dir)
    c2c_path = date_dir / "calib_cam_to_cam.txt"
    c2c = read_calib_file(c2c_path)
    per_cam: dict[str, dict[int, np.ndarray]] = {k: {} for k in
                                                 ("K", "D", "R", "T", "S", "S_rect", "R_rect",
                                                  "P_rect")}
    shapes = {"K": (3, 3), "D": (5,), "R": (3, 3), "T": (3,), "S": (2,), "S_rect": (2,),
              "R_rect": (3, 3), "P_rect": (3, 4)}
    for cam in CAMERAS:
        for name, shape in shapes.items():
            per_cam[name][cam] = _take(c2c, c2c_path, f"{name}_{cam:02d}", shape)
    v2c_path = date_dir / "calib_velo_to_cam.txt"
    v2c = read_calib_file(v2c_path)
    i2v_path = date_dir / "calib_imu_to_velo.txt"
    i2v = read_calib_file(i2v_path)
    return KittiCalib(
        **per_cam,
        T_velo_to_cam=_rigid(_take(v2c, v2c_path, "R", (3, 3)), _take(v2c, v2c_path, "T", (3,))),
        T_imu_to_velo=_rigid(_take(i2v, i2v_path, "R", (3, 3)), _take(i2v, i2v_path, "T", (3,))),
    )


def parse_timestamp(text: str) -> int:
    """Parse a KITTI timestamp ``YYYY-MM-DD hh:mm:ss.fffffffff`` as UTC -> int64 nanoseconds.

    Exact to the nanosecond (no float rounding); raises ``ValueError`` on other formats.
    """
    m = _TIMESTAMP_RE.match(text.strip())
    if m is None:
        raise ValueError(f"not a KITTI timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"invalid date or time in timestamp {text!r}")
    secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    frac = (m.group(7) or "").ljust(9, "0")
    return secs * 1_000_000_000 + int(frac or 0)


def format_timestamp(stamp_ns: int) -> str:
    """Inverse of :func:`parse_timestamp`: int nanoseconds (UTC) -> KITTI's string."""
    secs, frac = divmod(int(stamp_ns), 1_000_000_000)
    t = time.gmtime(secs)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}")


def read_timestamps(path: str | Path) -> np.ndarray:
    """Read a ``timestamps.txt`` into an int64 array of UTC nanoseconds."""
    path = Path(path)
    stamps = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            stamps.append(parse_timestamp(line))
        except ValueError as exc:
            raise KittiFormatError(path, str(exc), lineno) from None
    return np.array(stamps, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class OxtsPacket:
    """One OXTS RT3003 packet (the 30 fields of ``oxts/data/*.txt``, in file order)."""

    lat: float
    lon: float
    alt: float
    roll: float
    pitch: float
    yaw: float
    vn: float
    ve: float
    vf: float
    vl: float
    vu: float
    ax: float
    ay: float
    az: float
    af: float
    al: float
    au: float
    wx: float
    wy: float
    wz: float
    wf: float
    wl: float
    wu: float
    pos_accuracy: float
    vel_accuracy: float
    navstat: int
    numsats: int
    posmode: int
    velmode: int
    orimode: int


OXTS_FIELDS = tuple(f.name for f in fields(OxtsPacket))
_OXTS_INT_FIELDS = frozenset(OXTS_FIELDS[25:])


def parse_oxts(path: str | Path) -> OxtsPacket:
    """Read one OXTS packet file (one line of 30 space-separated numbers)."""
    path = Path(path)
    lines = [(i, ln) for i, ln in enumerate(_read_lines(path), start=1) if ln.strip()]
    if len(lines) != 1:
        raise KittiFormatError(path, f"expected one line of {len(OXTS_FIELDS)} values, "
                                     f"got {len(lines)} non-empty lines")
    lineno, line = lines[0]
    parts = line.split()
    if len(parts) != len(OXTS_FIELDS):
        raise KittiFormatError(path, f"expected {len(OXTS_FIELDS)} values, got {len(parts)}",
                               lineno)
    values: dict[str, float | int] = {}
    for name, text in zip(OXTS_FIELDS, parts):
        try:
            num = float(text)
        except ValueError:
            raise KittiFormatError(path, f"field {name!r} is not a number: {text!r}",
                                   lineno) from None
        if not math.isfinite(num):
            raise KittiFormatError(path, f"field {name!r} is not finite: {text!r}", lineno)
        values[name] = int(num) if name in _OXTS_INT_FIELDS else num
    return OxtsPacket(**values)  # type: ignore[arg-type]


def format_oxts(packet: OxtsPacket) -> str:
    """One packet as the line KITTI writes (floats round-trip exactly)."""
    return " ".join(str(int(getattr(packet, n))) if n in _OXTS_INT_FIELDS
                    else repr(float(getattr(packet, n))) for n in OXTS_FIELDS) + "\n"


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), the devkit's OXTS orientation."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def mercator(lat: float, lon: float, scale: float) -> tuple[float, float]:
    """The devkit's Mercator (x, y) in meters for a latitude/longitude in degrees."""
    x = scale * lon * math.pi * EARTH_RADIUS / 180.0
    y = scale * EARTH_RADIUS * math.log(math.tan((90.0 + lat) * math.pi / 360.0))
    return x, y


def oxts_poses(packets: list[OxtsPacket]) -> np.ndarray:
    """IMU poses [N, 4, 4] as the KITTI devkit computes them, relative to the first packet.

    Mercator scale from the first latitude, translation (x, y, alt), rotation
    Rz(yaw) Ry(pitch) Rx(roll); pose_i = inv(pose_0) @ pose_i.
    """
    if not packets:
        return np.zeros((0, 4, 4))
    scale = math.cos(packets[0].lat * math.pi / 180.0)
    poses = np.empty((len(packets), 4, 4))
    for i, p in enumerate(packets):
        x, y = mercator(p.lat, p.lon, scale)
        poses[i] = _rigid(rotation_rpy(p.roll, p.pitch, p.yaw), np.array([x, y, p.alt]))
    return np.linalg.inv(poses[0]) @ poses


class KittiDrive:
    """One KITTI raw drive folder; its calibration is read from the parent date folder."""

    def __init__(self, drive_dir: str | Path) -> None:
        self.drive_dir = Path(drive_dir)
        if not self.drive_dir.is_dir():
            raise FileNotFoundError(f"missing KITTI drive folder: {self.drive_dir}")
        self.name = self.drive_dir.name
        self.date = self.drive_dir.parent.name
        self._calib: KittiCalib | None = None
        self._timestamps: dict[str, np.ndarray] = {}
        self._num_frames: int | None = None

    def __repr__(self) -> str:
        return f"KittiDrive({str(self.drive_dir)!r})"

    @property
    def calib(self) -> KittiCalib:
        """The date folder's calibration (read once)."""
        if self._calib is None:
            self._calib = read_calib(self.drive_dir.parent)
        return self._calib

    @property
    def num_frames(self) -> int:
        """Frames in the drive: the files of the first present camera (or Velodyne) folder."""
        if self._num_frames is None:
            for folder, exts in (("image_02", IMAGE_EXTENSIONS), ("image_00", IMAGE_EXTENSIONS),
                                 ("image_03", IMAGE_EXTENSIONS), ("image_01", IMAGE_EXTENSIONS),
                                 ("velodyne_points", (".bin",))):
                data = self.drive_dir / folder / "data"
                if data.is_dir():
                    self._num_frames = sum(1 for p in data.iterdir() if p.suffix in exts)
                    break
            else:
                raise FileNotFoundError(f"no image_0X/data or velodyne_points/data folder "
                                        f"in {self.drive_dir}")
        return self._num_frames

    def image_path(self, cam: int, idx: int, ext: str | None = None) -> Path:
        """Path of camera ``cam``'s frame ``idx`` as ``ext`` (.png or .jpg).

        Without ``ext``, the PNG if it exists, else the JPG if that exists, else the PNG path.
        """
        if cam not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {cam}")
        if ext is not None and ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"image extension must be one of {IMAGE_EXTENSIONS}, got {ext!r}")
        folder = self.drive_dir / f"image_{cam:02d}" / "data"
        if ext is None:
            ext = next((e for e in IMAGE_EXTENSIONS if (folder / f"{idx:010d}{e}").is_file()),
                       IMAGE_EXTENSIONS[0])
        return folder / f"{idx:010d}{ext}"

    def image(self, cam: int, idx: int) -> np.ndarray:
        """Frame ``idx`` of camera ``cam``: RGB uint8 [H, W, 3] (2, 3), gray [H, W] (0, 1)."""
        path = self.image_path(cam, idx)
        if not path.is_file():
            raise FileNotFoundError(f"missing KITTI image: {path}")
        flag = cv2.IMREAD_COLOR if cam >= 2 else cv2.IMREAD_GRAYSCALE
        img = cv2.imread(str(path), flag)
        if img is None:
            raise KittiFormatError(path, "cannot decode image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if cam >= 2 else img

    def groundtruth_depth_path(self, idx: int, cam: int = 2) -> Path:
        """Path of the depth-benchmark ground truth of frame ``idx`` (may not exist)."""
        return (self.drive_dir / "proj_depth" / "groundtruth" / f"image_{cam:02d}"
                / f"{idx:010d}.png")

    def velodyne_path(self, idx: int) -> Path:
        """Path of Velodyne scan ``idx``."""
        return self.drive_dir / "velodyne_points" / "data" / f"{idx:010d}.bin"

    def velodyne(self, idx: int) -> np.ndarray:
        """Velodyne scan ``idx`` as float32 [N, 4] (x, y, z, reflectance) in the Velodyne frame."""
        path = self.velodyne_path(idx)
        if not path.is_file():
            raise FileNotFoundError(f"missing KITTI Velodyne scan: {path}")
        data = np.fromfile(path, dtype="<f4")
        if data.size % 4:
            raise KittiFormatError(path, f"size {data.size * 4} bytes is not a multiple of "
                                         f"16 (N x 4 float32)")
        return data.reshape(-1, 4).astype(np.float32, copy=False)

    def oxts_path(self, idx: int) -> Path:
        """Path of OXTS packet ``idx``."""
        return self.drive_dir / "oxts" / "data" / f"{idx:010d}.txt"

    def oxts(self, idx: int) -> OxtsPacket:
        """OXTS packet ``idx``."""
        return parse_oxts(self.oxts_path(idx))

    def poses(self) -> np.ndarray:
        """IMU poses [N, 4, 4] of every frame, relative to frame 0 (KITTI devkit convention)."""
        return oxts_poses([self.oxts(i) for i in range(self.num_frames)])

    def timestamps(self, sensor: str) -> np.ndarray:
        """int64 UTC nanoseconds of ``sensor`` (``image_0X``, ``velodyne_points``, ``oxts``)."""
        if sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {SENSORS}, got {sensor!r}")
        if sensor not in self._timestamps:
            path = self.drive_dir / sensor / "timestamps.txt"
            self._timestamps[sensor] = read_timestamps(path)
        return self._timestamps[sensor]
