"""numpy <-> ROS 2 sensor messages (Image, CameraInfo, PointCloud2, Header).

The converters work on any object with the ROS field names, so the message classes
generated for rclpy and the dataclasses of ``rosbags`` both work; which classes are
*built* is chosen by a :class:`MessageTypes` (``MessageTypes.rclpy()`` or
``MessageTypes.rosbags(typestore)``). Nothing here imports rclpy at module level.

Conventions:

* ``image_to_numpy`` returns the raw layout of the encoding ([H, W] for one channel,
  [H, W, C] otherwise) in native byte order. When the rows are unpadded and the byte
  order is native the result is a view of the message's buffer (read-only for
  ``bytes`` data): copy it before writing into it.
* ``camera_info_to_intrinsics`` expects rectified images: it returns the left 3x3 of
  the projection matrix P when P is set (non-zero), else K, mapped from the
  full-resolution sensor onto the published image as REP 104 defines (ROI offset
  subtracted in full-resolution pixels, then divided by the binning);
  ``camera_info_image_size`` gives that image's size.
* ``make_pointcloud2`` writes the same bytes as ``sensor_msgs_py.point_cloud2.create_cloud``
  for the same fields: one PointField per (non-padding) field of the structured dtype,
  ``point_step`` = itemsize, ``row_step`` = point_step * width, data = the bytes of the
  C-contiguous array in this machine's byte order.

Every inconsistency raises :class:`MessageError` (a ``ValueError``) naming the field.
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, TypeVar, cast

import numpy as np

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = [
    "MessageError",
    "MessageTypes",
    "Header",
    "Stamped",
    "RosMessage",
    "ImageMessage",
    "CompressedImageMessage",
    "CameraInfoMessage",
    "PointCloud2Message",
    "ENCODINGS",
    "CAMERA_ENCODINGS",
    "image_to_numpy",
    "data_bytes",
    "image_size",
    "image_to_rgb",
    "array_to_rgb",
    "numpy_to_image",
    "camera_info_to_intrinsics",
    "camera_info_image_size",
    "make_camera_info",
    "make_pointcloud2",
    "pointcloud2_to_numpy",
    "make_header",
    "stamp_to_ns",
]

_NATIVE_BIG = sys.byteorder == "big"
_NS = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_UINT32_MAX = 2 ** 32 - 1


class MessageError(ValueError):
    """A message is inconsistent or cannot be converted (the text names the field)."""


# ----------------------------------------------------------------------------- types


def _rclpy_uint8_sequence(buf: memoryview) -> array.array:
    # Measured (bench/bench_postprocess.py): array('B').frombytes(memoryview) is one
    # memcpy; assigning ``bytes`` to an rclpy field costs a per-element check when
    # ROS_PYTHON_CHECK_FIELDS=1, and array('B', ndarray) iterates element by element.
    out = array.array("B")
    out.frombytes(buf)
    return out


def _rosbags_uint8_sequence(buf: memoryview) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8).copy()


def _with_data(cls: Callable[..., _WithData], types: "MessageTypes", buf: memoryview,
               **fields: object) -> _WithData:
    """A message of ``cls`` whose ``uint8[]`` data holds ``buf``, copied once.

    rclpy's generated constructor copies ``data`` (``array('B', data)``) and so does its
    setter unless the message checks its fields, in which case an ``array('B')`` is
    taken as it is (measured in bench/bench_postprocess.py: one 3.7 MB copy instead of
    three). Messages generated without ``check_fields`` (Humble) always check.
    """
    data = types.uint8_sequence(buf)
    if types.name != "rclpy":
        return cls(data=data, **fields)
    checks = "_check_fields" in getattr(cls, "__slots__", ())
    msg = cls(check_fields=True, **fields) if checks else cls(**fields)
    msg.data = data
    return msg


class _Data(Protocol):
    data: object


_WithData = TypeVar("_WithData", bound=_Data)


class Stamp(Protocol):
    """builtin_interfaces/Time as rclpy and rosbags both build it."""

    @property
    def sec(self) -> int:
        """Seconds."""

    @property
    def nanosec(self) -> int:
        """Nanoseconds within the second."""


class Header(Protocol):
    """std_msgs/Header as rclpy and rosbags both build it."""

    @property
    def stamp(self) -> Stamp:
        """Time of the data."""

    @property
    def frame_id(self) -> str:
        """Coordinate frame of the data."""


class Stamped(Protocol):
    """A message with a std_msgs/Header (Image, CompressedImage, CameraInfo, PointCloud2)."""

    @property
    def header(self) -> Header:
        """Stamp and frame of the message."""


#: A message built here: an instance of an rclpy class or of a rosbags typestore's
#: dataclass (the two share field names, not a base class).
RosMessage = object


# The fields the readers below take from a message, as rclpy and rosbags both name them.
# The readers check every field they read (type, range, size), so an object that only
# looks like one of these is refused with the field named.


class ImageMessage(Stamped, Protocol):
    """sensor_msgs/Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: object  # uint8[]: array('B') in rclpy, a uint8 ndarray in rosbags


class CompressedImageMessage(Stamped, Protocol):
    """sensor_msgs/CompressedImage."""

    format: str
    data: object


class CameraInfoMessage(Stamped, Protocol):
    """sensor_msgs/CameraInfo."""

    height: int
    width: int
    distortion_model: str
    d: object  # float64[]
    k: object  # float64[9]
    p: object  # float64[12]
    binning_x: int
    binning_y: int
    roi: object  # sensor_msgs/RegionOfInterest


class PointCloud2Message(Stamped, Protocol):
    """sensor_msgs/PointCloud2."""

    height: int
    width: int
    fields: object  # sensor_msgs/PointField[]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: object
    is_dense: bool


@dataclass(frozen=True, kw_only=True)
class MessageTypes:
    """The message classes to build and how their ``uint8[]`` fields are filled.

    ``uint8_sequence`` turns a contiguous byte buffer into the value the class's
    ``data`` field expects (``array.array('B')`` for rclpy, a uint8 ndarray for rosbags).
    Use :meth:`rclpy` or :meth:`rosbags` rather than building one by hand.
    """

    Image: Callable[..., ImageMessage]
    CameraInfo: Callable[..., CameraInfoMessage]
    PointCloud2: Callable[..., PointCloud2Message]
    PointField: Callable[..., object]
    Header: Callable[..., Header]
    Time: Callable[..., Stamp]
    RegionOfInterest: Callable[..., object]
    uint8_sequence: Callable[[memoryview], object]
    name: str

    @classmethod
    def rclpy(cls) -> "MessageTypes":
        """The classes generated for rclpy (imports sensor_msgs/std_msgs lazily)."""
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
        from std_msgs.msg import Header

        return cls(Image=Image, CameraInfo=CameraInfo, PointCloud2=PointCloud2,
                   PointField=PointField, Header=Header, Time=Time,
                   RegionOfInterest=RegionOfInterest, uint8_sequence=_rclpy_uint8_sequence,
                   name="rclpy")

    @classmethod
    def rosbags(cls, typestore: "Typestore") -> "MessageTypes":
        """The dataclasses of a ``rosbags`` typestore (``get_typestore(Stores.ROS2_JAZZY)``)."""
        t = typestore.types
        try:
            # The typestore's classes are typed as generic messages; these are the ones
            # the protocols describe.
            return cls(Image=cast("Callable[..., ImageMessage]", t["sensor_msgs/msg/Image"]),
                       CameraInfo=cast("Callable[..., CameraInfoMessage]",
                                       t["sensor_msgs/msg/CameraInfo"]),
                       PointCloud2=cast("Callable[..., PointCloud2Message]",
                                        t["sensor_msgs/msg/PointCloud2"]),
                       PointField=t["sensor_msgs/msg/PointField"],
                       Header=cast("Callable[..., Header]", t["std_msgs/msg/Header"]),
                       Time=cast("Callable[..., Stamp]", t["builtin_interfaces/msg/Time"]),
                       RegionOfInterest=t["sensor_msgs/msg/RegionOfInterest"],
                       uint8_sequence=_rosbags_uint8_sequence, name="rosbags")
        except KeyError as exc:
            raise MessageError(f"typestore lacks message type {exc.args[0]}") from exc


# --------------------------------------------------------------------------- headers


def make_header(stamp_ns: int, frame_id: str, types: MessageTypes) -> Header:
    """A std_msgs/Header for an integer time in nanoseconds (may be negative)."""
    stamp_ns = int(stamp_ns)
    sec, nanosec = divmod(stamp_ns, _NS)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise MessageError(f"stamp {stamp_ns} ns does not fit builtin_interfaces/Time (int32 sec)")
    if not isinstance(frame_id, str):
        raise MessageError(f"frame_id must be a string, got {type(frame_id).__name__}")
    return types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_to_ns(stamp: Stamp) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> integer nanoseconds."""
    try:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as exc:
        raise MessageError(f"not a builtin_interfaces/Time: {stamp!r}") from exc
    if not 0 <= nanosec < _NS:
        raise MessageError(f"Time.nanosec must be in [0, 1e9), got {nanosec}")
    return sec * _NS + nanosec


# ---------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Encoding:
    """Pixel layout of an Image encoding: element type, channels, color order."""

    dtype: np.dtype
    channels: int
    kind: str  # "rgb", "bgr", "rgba", "bgra", "mono", "bayer_xxxx", "data"

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels


def _enc(dtype: type[np.generic], channels: int, kind: str) -> Encoding:
    return Encoding(np.dtype(dtype), channels, kind)


#: Image encodings this module converts (names as in sensor_msgs/image_encodings.hpp).
#: ``kind`` "data" marks the generic and depth encodings (8UC1, 16UC1 and 32FC1 are
#: what depth cameras publish, REP 118): they convert with ``image_to_numpy`` and
#: ``numpy_to_image`` but are not camera images, so ``image_to_rgb`` refuses them.
ENCODINGS: dict[str, Encoding] = {
    "rgb8": _enc(np.uint8, 3, "rgb"),
    "bgr8": _enc(np.uint8, 3, "bgr"),
    "rgba8": _enc(np.uint8, 4, "rgba"),
    "bgra8": _enc(np.uint8, 4, "bgra"),
    "rgb16": _enc(np.uint16, 3, "rgb"),
    "bgr16": _enc(np.uint16, 3, "bgr"),
    "mono8": _enc(np.uint8, 1, "mono"),
    "mono16": _enc(np.uint16, 1, "mono"),
    "8UC1": _enc(np.uint8, 1, "data"),
    "8UC3": _enc(np.uint8, 3, "data"),
    "16UC1": _enc(np.uint16, 1, "data"),
    "16SC1": _enc(np.int16, 1, "data"),
    "32SC1": _enc(np.int32, 1, "data"),
    "32FC1": _enc(np.float32, 1, "data"),
    "64FC1": _enc(np.float64, 1, "data"),
    **{f"bayer_{p}8": _enc(np.uint8, 1, f"bayer_{p}") for p in ("rggb", "bggr", "gbrg", "grbg")},
    **{f"bayer_{p}16": _enc(np.uint16, 1, f"bayer_{p}") for p in ("rggb", "bggr", "gbrg", "grbg")},
}

#: The camera encodings (color, mono, bayer) that ``image_to_rgb`` accepts.
CAMERA_ENCODINGS: tuple[str, ...] = tuple(n for n, e in ENCODINGS.items() if e.kind != "data")

# ROS names the 2x2 pattern from the top-left pixel; OpenCV's Bayer codes name it from
# the second row/column, hence the apparent swap (rggb <-> BayerBG).
_BAYER_TO_CV = {"rggb": "COLOR_BayerBG2RGB", "bggr": "COLOR_BayerRG2RGB",
                "gbrg": "COLOR_BayerGR2RGB", "grbg": "COLOR_BayerGB2RGB"}


# OpenCV conversions to RGB by encoding kind (rgb needs none).
_TO_RGB_CV = {"mono": "COLOR_GRAY2RGB", "bgr": "COLOR_BGR2RGB", "bgra": "COLOR_BGRA2RGB",
              "rgba": "COLOR_RGBA2RGB"}


def _encoding(name: object) -> Encoding:
    enc = ENCODINGS.get(name) if isinstance(name, str) else None
    if enc is None:
        raise MessageError(
            f"unsupported image encoding {name!r}; supported: {', '.join(sorted(ENCODINGS))}")
    return enc


def data_bytes(data: object, what: str) -> np.ndarray:
    """The message's ``data`` field as a flat uint8 array (a view where possible)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise MessageError(f"{what}.data must hold uint8, got dtype {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, array.array):
        if data.itemsize != 1:
            raise MessageError(f"{what}.data array has typecode {data.typecode!r}, expected 'B'")
        return np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(0, np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(0, np.uint8)
    if isinstance(data, (list, tuple)):
        arr = np.asarray(data)
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255):
            raise MessageError(f"{what}.data must be a sequence of bytes (0..255)")
        return arr.astype(np.uint8).reshape(-1)
    raise MessageError(f"{what}.data has unsupported type {type(data).__name__}")


def _uint(msg: object, field: str, what: str, maximum: int = _UINT32_MAX) -> int:
    try:
        value = getattr(msg, field)
    except AttributeError as exc:
        raise MessageError(f"{what} has no field '{field}'") from exc
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise MessageError(f"{what}.{field} must be an integer, got {value!r}")
    if not 0 <= int(value) <= maximum:
        raise MessageError(f"{what}.{field} = {value} is out of range [0, {maximum}]")
    return int(value)


def _flag(msg: object, field: str, what: str) -> bool:
    value = getattr(msg, field, None)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return bool(_uint(msg, field, what, maximum=255))


def _image_layout(msg: ImageMessage) -> tuple[Encoding, int, int, int, bool, np.ndarray]:
    enc = _encoding(getattr(msg, "encoding", None))
    height = _uint(msg, "height", "Image")
    width = _uint(msg, "width", "Image")
    step = _uint(msg, "step", "Image")
    big = _flag(msg, "is_bigendian", "Image")
    if height == 0 or width == 0:
        raise MessageError(f"Image has zero size ({width}x{height})")
    row = width * enc.pixel_bytes
    if step < row:
        raise MessageError(f"Image.step = {step} is less than width * pixel size = "
                           f"{width} * {enc.pixel_bytes} = {row} for {msg.encoding}")
    data = data_bytes(getattr(msg, "data", None), "Image")
    if data.size != step * height:
        raise MessageError(f"Image.data has {data.size} bytes, expected step * height = "
                           f"{step} * {height} = {step * height}")
    return enc, height, width, step, big, data


def image_to_numpy(msg: ImageMessage) -> np.ndarray:
    """Image -> ndarray in the encoding's raw layout and native byte order.

    Honors row padding (``step`` > width * pixel size) and ``is_bigendian``. Returns
    [H, W] for one-channel encodings, else [H, W, C]; may share memory with ``msg``.
    """
    enc, height, width, step, big, data = _image_layout(msg)
    row = width * enc.pixel_bytes
    rows = data.reshape(height, step)[:, :row]
    dtype = enc.dtype.newbyteorder(">" if big else "<") if enc.dtype.itemsize > 1 else enc.dtype
    if step % enc.dtype.itemsize:
        rows = np.ascontiguousarray(rows)  # odd step: realign rows before the typed view
    arr = rows.view(dtype)
    if dtype != enc.dtype:
        arr = arr.astype(enc.dtype)
    shape = (height, width) if enc.channels == 1 else (height, width, enc.channels)
    return arr.reshape(shape)


def image_size(msg: ImageMessage) -> tuple[int, int]:
    """(width, height) of an Image after checking its layout, without converting its pixels."""
    _, height, width, _, _, _ = _image_layout(msg)
    return width, height


def image_to_rgb(msg: ImageMessage) -> np.ndarray:
    """Image of any color, mono or bayer encoding -> uint8 RGB [H, W, 3] (a new array).

    Bayer is demosaiced with OpenCV (bilinear); mono is replicated to three channels;
    16-bit values map to 8 bits as round(v * 255 / 65535). Depth/data encodings
    (16UC1, 32FC1, 8UC1, ...; see ENCODINGS) raise :class:`MessageError`.
    """
    enc = _encoding(getattr(msg, "encoding", None))
    if enc.kind == "data":
        raise MessageError(f"Image encoding {msg.encoding!r} is not a color or mono encoding")
    return array_to_rgb(image_to_numpy(msg), enc.kind)


def array_to_rgb(arr: np.ndarray, kind: str) -> np.ndarray:
    """Pixels of an encoding ``kind`` (``Encoding.kind``, not data) -> uint8 RGB [H, W, 3].

    The conversions of :func:`image_to_rgb`, shared with decoded compressed images.
    Channel reordering runs in OpenCV: numpy's copy of a reversed channel axis
    (``arr[..., ::-1]``) is two orders of magnitude slower for a camera frame.
    """
    import cv2

    if kind.startswith("bayer_"):
        code = getattr(cv2, _BAYER_TO_CV[kind[len("bayer_"):]])
        arr = cv2.cvtColor(np.ascontiguousarray(arr), code)
    elif kind in _TO_RGB_CV:
        arr = cv2.cvtColor(arr, getattr(cv2, _TO_RGB_CV[kind]))
    else:  # rgb
        arr = arr[..., :3]
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def numpy_to_image(array_: np.ndarray, encoding: str, header: Header,
                   types: MessageTypes) -> ImageMessage:
    """ndarray ([H, W] or [H, W, C]) -> Image with ``encoding``, unpadded rows, native order.

    The dtype and channel count must match the encoding exactly (no silent casts).
    """
    enc = _encoding(encoding)
    arr = np.asarray(array_)
    if arr.ndim == 3 and enc.channels == 1 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if enc.channels == 1 else 3
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != enc.channels):
        want = "[H, W]" if enc.channels == 1 else f"[H, W, {enc.channels}]"
        raise MessageError(f"encoding {encoding} needs an array {want}, got shape {arr.shape}")
    if arr.dtype.newbyteorder("=") != enc.dtype:
        raise MessageError(f"encoding {encoding} needs dtype {enc.dtype}, got {arr.dtype}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise MessageError(f"cannot make an Image of zero size ({width}x{height})")
    arr = np.ascontiguousarray(arr, dtype=enc.dtype)  # native order, C layout
    return _with_data(types.Image, types, arr.data.cast("B"), header=header, height=height,
                      width=width, encoding=encoding, is_bigendian=int(_NATIVE_BIG),
                      step=width * enc.pixel_bytes)


# ----------------------------------------------------------------------- camera info


def _float_array(msg: object, field: str, size: int) -> np.ndarray:
    try:
        arr = np.asarray(getattr(msg, field), dtype=np.float64).reshape(-1)
    except AttributeError as exc:
        raise MessageError(f"CameraInfo has no field '{field}'") from exc
    except (TypeError, ValueError) as exc:
        raise MessageError(f"CameraInfo.{field} is not numeric: {exc}") from exc
    if arr.size != size:
        raise MessageError(f"CameraInfo.{field} must have {size} values, got {arr.size}")
    return arr


def _binning(msg: object) -> tuple[int, int]:
    """(binning_x, binning_y); 0 means 1 (no binning), as REP 104 says."""
    return (_uint(msg, "binning_x", "CameraInfo") or 1,
            _uint(msg, "binning_y", "CameraInfo") or 1)


def _roi(msg: object) -> tuple[int, int, int, int] | None:
    """(x_offset, y_offset, width, height) of the ROI in full-resolution pixels; None if unset."""
    roi = getattr(msg, "roi", None)
    if roi is None:
        return None
    fields = ("x_offset", "y_offset", "width", "height")
    values = tuple(_uint(roi, f, "CameraInfo.roi") for f in fields)
    if not any(values):
        return None  # all zeros: the full resolution
    x, y, w, h = values
    if w == 0 or h == 0:
        raise MessageError(f"CameraInfo.roi has zero size ({w}x{h}) at offset ({x}, {y})")
    full_w, full_h = _uint(msg, "width", "CameraInfo"), _uint(msg, "height", "CameraInfo")
    if full_w and full_h and (x + w > full_w or y + h > full_h):
        raise MessageError(f"CameraInfo.roi ({x}, {y}, {w}x{h}) extends beyond the "
                           f"{full_w}x{full_h} sensor")
    return x, y, w, h


def camera_info_image_size(msg: CameraInfoMessage) -> tuple[int, int]:
    """(width, height) of the image a CameraInfo describes, after ROI and binning (REP 104).

    ``width``/``height`` are the full-resolution (calibration) size; the published image
    is the ROI's size (the full size without one) divided by the binning, rounded down.
    (0, 0) when the CameraInfo gives no size.
    """
    bx, by = _binning(msg)
    roi = _roi(msg)
    if roi is not None:
        w, h = roi[2], roi[3]
    else:
        w, h = _uint(msg, "width", "CameraInfo"), _uint(msg, "height", "CameraInfo")
        if w == 0 or h == 0:
            return 0, 0
    if w // bx == 0 or h // by == 0:
        raise MessageError(f"CameraInfo binning {bx}x{by} exceeds the image size {w}x{h}")
    return w // bx, h // by


def camera_info_to_intrinsics(msg: CameraInfoMessage) -> np.ndarray:
    """CameraInfo -> 3x3 float64 intrinsics of the (rectified) image it describes.

    Uses the left 3x3 of P when P is non-zero (the rectified camera), else K. Both are
    for the full-resolution sensor (REP 104): a region of interest shifts the principal
    point by its offset (full-resolution pixels), then binning divides the focal
    lengths and principal point. Raises :class:`MessageError` for zero, non-finite or
    malformed intrinsics, binning or ROI.
    """
    p = _float_array(msg, "p", 12).reshape(3, 4)
    if np.any(p != 0):
        k, source = p[:, :3].copy(), "P"
    else:
        k, source = _float_array(msg, "k", 9).reshape(3, 3), "K"
    if not np.all(np.isfinite(k)):
        raise MessageError(f"CameraInfo.{source.lower()} contains NaN or inf")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise MessageError(f"CameraInfo.{source.lower()} has non-positive focal lengths "
                           f"fx={k[0, 0]}, fy={k[1, 1]} (uncalibrated camera?)")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0:
        raise MessageError(f"CameraInfo.{source.lower()} is not a pinhole matrix: rows "
                           f"{k.tolist()}")
    binning_x, binning_y = _binning(msg)
    roi = _roi(msg)
    if roi is not None:
        k[0, 2] -= roi[0]
        k[1, 2] -= roi[1]
    k[0, :] /= binning_x
    k[1, :] /= binning_y
    return k


def make_camera_info(k: np.ndarray, width: int, height: int, header: Header,
                     types: MessageTypes) -> CameraInfoMessage:
    """CameraInfo of a rectified pinhole camera: K, P = [K|0], R = I, D = 0 (plumb_bob).

    Callers may set further fields (e.g. ``p``) of either library's class.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    if k_arr.shape != (3, 3):
        raise MessageError(f"intrinsics must be 3x3, got shape {k_arr.shape}")
    if not np.all(np.isfinite(k_arr)) or k_arr[0, 0] <= 0 or k_arr[1, 1] <= 0:
        raise MessageError(f"invalid intrinsics {k_arr.tolist()}")
    if int(width) <= 0 or int(height) <= 0:
        raise MessageError(f"CameraInfo size must be positive, got {width}x{height}")
    p = np.zeros((3, 4), dtype=np.float64)
    p[:, :3] = k_arr
    roi = types.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types.CameraInfo(
        header=header, height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5, dtype=np.float64), k=k_arr.reshape(-1).copy(),
        r=np.eye(3, dtype=np.float64).reshape(-1), p=p.reshape(-1),
        binning_x=0, binning_y=0, roi=roi,
    )


# ----------------------------------------------------------------------- point clouds

# sensor_msgs/PointField datatype constants.
_POINTFIELD_TO_DTYPE = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32,
                        6: np.uint32, 7: np.float32, 8: np.float64}
_DTYPE_TO_POINTFIELD = {np.dtype(v): k for k, v in _POINTFIELD_TO_DTYPE.items()}


def _point_fields(dtype: np.dtype) -> list[tuple[str, int, int, int]]:
    """(name, offset, datatype, count) for each field of a structured dtype."""
    if dtype.names is None or dtype.fields is None:
        raise MessageError(f"points must be a structured array, got dtype {dtype}")
    out = []
    for name in dtype.names:
        fdt, offset = dtype.fields[name][:2]
        base, shape = (fdt.subdtype if fdt.subdtype is not None else (fdt, ()))
        count = int(np.prod(shape)) if shape else 1
        datatype = _DTYPE_TO_POINTFIELD.get(base.newbyteorder("="))
        if datatype is None:
            raise MessageError(f"point field '{name}' has dtype {base}, which PointField "
                               f"cannot represent")
        out.append((name, int(offset), datatype, count))
    return out


def make_pointcloud2(points: np.ndarray, header: Header, types: MessageTypes,
                     is_dense: bool | None = None) -> PointCloud2Message:
    """Structured array [N] (unorganized) or [H, W] (organized) -> PointCloud2.

    Fields must include x, y and z (float32). ``is_dense``: None = True when every
    x, y, z is finite (checked here); a caller that knows it may pass it. The bytes
    equal ``create_cloud``'s for the same fields and points.
    """
    pts = np.asarray(points)
    fields = _point_fields(pts.dtype)
    types_by_name = {name: np.dtype(_POINTFIELD_TO_DTYPE[d]) for name, _, d, c in fields
                     if c == 1}
    for axis in ("x", "y", "z"):
        if types_by_name.get(axis) != np.float32:
            raise MessageError(f"points need a float32 field '{axis}'; fields: {pts.dtype}")
    if pts.ndim == 1:
        height, width = 1, pts.shape[0]
    elif pts.ndim == 2:
        height, width = pts.shape
    else:
        raise MessageError(f"points must be [N] or [H, W], got shape {pts.shape}")
    native = pts.dtype.newbyteorder("=")
    pts = np.ascontiguousarray(pts.astype(native, copy=False))
    if is_dense is None:
        is_dense = bool(all(np.isfinite(pts[a]).all() for a in ("x", "y", "z")))
    point_fields = [types.PointField(name=n, offset=o, datatype=d, count=c)
                    for n, o, d, c in fields]
    return _with_data(types.PointCloud2, types, pts.reshape(-1).view(np.uint8).data,
                      header=header, height=height, width=width, fields=point_fields,
                      is_bigendian=_NATIVE_BIG, point_step=pts.dtype.itemsize,
                      row_step=pts.dtype.itemsize * width, is_dense=is_dense)


def _cloud_dtype(msg: PointCloud2Message, point_step: int, big: bool) -> np.dtype:
    names, formats, offsets = [], [], []
    spans: list[tuple[int, int, str]] = []
    for i, f in enumerate(getattr(msg, "fields", None) or []):
        name = getattr(f, "name", None)
        if not isinstance(name, str) or not name:
            raise MessageError(f"PointCloud2.fields[{i}] has no name")
        if name in names:
            raise MessageError(f"PointCloud2 has duplicate field '{name}'")
        datatype = _uint(f, "datatype", f"PointCloud2 field '{name}'", maximum=255)
        if datatype not in _POINTFIELD_TO_DTYPE:
            raise MessageError(f"PointCloud2 field '{name}' has unknown datatype {datatype}")
        offset = _uint(f, "offset", f"PointCloud2 field '{name}'")
        count = _uint(f, "count", f"PointCloud2 field '{name}'")
        if count == 0:
            raise MessageError(f"PointCloud2 field '{name}' has count 0")
        base = np.dtype(_POINTFIELD_TO_DTYPE[datatype]).newbyteorder(">" if big else "<")
        end = offset + base.itemsize * count
        if end > point_step:
            raise MessageError(f"PointCloud2 field '{name}' (bytes {offset}..{end}) exceeds "
                               f"point_step {point_step}")
        for s, e, other in spans:
            if offset < e and s < end:
                raise MessageError(f"PointCloud2 fields '{other}' and '{name}' overlap")
        spans.append((offset, end, name))
        names.append(name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(offset)
    if not names:
        raise MessageError("PointCloud2 has no fields")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})


def pointcloud2_to_numpy(msg: PointCloud2Message) -> np.ndarray:
    """PointCloud2 -> structured array in native byte order: [W] if height is 1, else [H, W].

    Honors row padding (``row_step`` > point_step * width) and ``is_bigendian``.
    """
    height = _uint(msg, "height", "PointCloud2")
    width = _uint(msg, "width", "PointCloud2")
    point_step = _uint(msg, "point_step", "PointCloud2")
    row_step = _uint(msg, "row_step", "PointCloud2")
    big = _flag(msg, "is_bigendian", "PointCloud2")
    if point_step == 0:
        raise MessageError("PointCloud2.point_step is 0")
    dtype = _cloud_dtype(msg, point_step, big)
    if row_step < point_step * width:
        raise MessageError(f"PointCloud2.row_step = {row_step} is less than point_step * width "
                           f"= {point_step} * {width}")
    data = data_bytes(getattr(msg, "data", None), "PointCloud2")
    if data.size != row_step * height:
        raise MessageError(f"PointCloud2.data has {data.size} bytes, expected row_step * height "
                           f"= {row_step} * {height} = {row_step * height}")
    rows = np.ascontiguousarray(data.reshape(height, row_step)[:, :point_step * width])
    cloud = rows.view(dtype).reshape(height, width)
    native = dtype.newbyteorder("=")
    if native != dtype:
        cloud = cloud.astype(native)
    return cloud[0] if height == 1 else cloud
