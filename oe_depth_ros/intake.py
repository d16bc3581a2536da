"""Frame intake shared by the node and ``process-bag``: messages in, checked frames out.

ROS-free (messages are any objects with the ROS field names). One place decides, live
and offline alike, what happens to each Image and CameraInfo:

* a CameraInfo is validated and interpreted as REP 104 defines it (``K``/``P`` describe
  the full-resolution sensor; ``roi`` offsets are subtracted in full-resolution pixels,
  then binning divides; the published image is ``roi`` size / binning, or full size /
  binning without a ROI); an invalid one is counted and ignored (the last valid one
  stays in use);
* an image (sensor_msgs/Image, or CompressedImage as image_transport's ``compressed``
  plugin writes it: jpeg or png, see :mod:`oe_depth_ros.compressed`) must have a camera
  encoding (color, mono or bayer; depth and other data encodings are refused), a
  consistent layout or a decodable payload, at most ``max_pixels`` pixels (checked from
  the header fields, or the jpeg/png header, before any pixel is converted or decoded)
  and a frame_id (the outputs carry it; TF cannot place an empty one);
* a CameraInfo with non-zero distortion ``D`` is reported once per calibration: the
  images are taken as rectified (``image_rect``) and their intrinsics come from ``P``,
  which is right for image_proc's output and wrong for a distorted ``image_raw``;
* its intrinsics come from the newest CameraInfo (``sync: latest``) or the one nearest
  its stamp within ``slop`` (``approximate``); a CameraInfo that describes another image
  size is not used for it; without any CameraInfo the normalized fallback intrinsics are
  used (when enabled), counted as ``no_camera_info``.

Every problem has a *kind* (:data:`ERROR_KINDS`); a frame with a problem is skipped and
counted, never fatal. :class:`FrameIntake` does the bookkeeping for its caller.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence, Union, cast

import numpy as np

from oe_depth_ros.compressed import decode_to_rgb, header_size, parse_format
from oe_depth_ros.geometry import check_intrinsics, normalized_to_pixels
from oe_depth_ros.messages import (
    CAMERA_ENCODINGS, ENCODINGS, CameraInfoMessage, CompressedImageMessage, ImageMessage,
    MessageError, camera_info_image_size, camera_info_to_intrinsics, data_bytes, image_size,
    image_to_rgb, stamp_to_ns,
)
from oe_depth_ros.node_params import (
    ParamValue, build_config, check_fields, field_default, spec,
)

__all__ = ["ERROR_KINDS", "InputError", "AnyImageMessage", "CameraInfoConfig", "CameraModel",
           "Frame", "FrameIntake", "IntrinsicsSource", "camera_model_from_msg",
           "image_rgb_from_msg", "compressed_rgb_from_msg", "any_image_rgb_from_msg",
           "fallback_intrinsics", "camera_info_config", "DEFAULT_MAX_PIXELS"]

LOG = logging.getLogger(__name__)

#: What the image subscription delivers: sensor_msgs Image or CompressedImage.
AnyImageMessage = Union[ImageMessage, CompressedImageMessage]

#: Every kind of bad input, with what it means. The node counts them as ``errors.<kind>``
#: in /diagnostics; ``process-bag`` reports them at the end of a run.
ERROR_KINDS: dict[str, str] = {
    "unsupported_encoding": "the image encoding is not a camera encoding (unknown, or a "
                            "depth/data encoding such as 16UC1 or 32FC1): frame skipped",
    "malformed_image": "the image's size, step or data length are inconsistent: frame skipped",
    "camera_info_invalid": "a CameraInfo with unusable intrinsics, binning or ROI: ignored, "
                           "the last valid one stays in use",
    "no_camera_info": "no CameraInfo yet: the fallback intrinsics are used when enabled, "
                      "else the frame is skipped",
    "camera_info_unsynced": "approximate sync found no CameraInfo within slop of the image's "
                            "stamp: frame skipped",
    "camera_info_size_mismatch": "the matched CameraInfo describes another image size: "
                                 "frame skipped",
    "undecodable_image": "a CompressedImage whose jpeg/png payload cannot be decoded "
                         "(truncated or corrupt): frame skipped",
    "image_too_large": "the image has more pixels than max_input_pixels: refused before it "
                       "is converted or decoded",
    "missing_frame_id": "the image's header.frame_id is empty (TF and RViz cannot place the "
                        "outputs): frame skipped",
    "camera_info_distorted": "a CameraInfo with non-zero distortion D (counted once per "
                             "calibration): images are taken as rectified, intrinsics from P",
}

#: Largest image accepted by default (pixels): the ``max_input_pixels`` parameter's default.
DEFAULT_MAX_PIXELS: int = int(spec("max_input_pixels").default)  # type: ignore[arg-type]


class InputError(ValueError):
    """A frame cannot be processed; ``kind`` (a key of :data:`ERROR_KINDS`) names the problem."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CameraInfoConfig:
    """How images are matched with CameraInfo (the node's ``camera_info.*`` parameters)."""

    #: latest: the newest valid CameraInfo; approximate: the nearest in time within slop.
    sync: Literal["latest", "approximate"] = field_default("camera_info.sync")
    #: Largest stamp difference (seconds) accepted by approximate sync.
    slop: float = field_default("camera_info.slop")
    #: Without any CameraInfo, use ``fallback_intrinsics`` instead of skipping frames.
    use_fallback: bool = field_default("camera_info.use_fallback")
    #: Normalized [fx/W, fy/H, cx/W, cy/H] (KITTI's, as in training).
    fallback_intrinsics: tuple[float, float, float, float] = field_default(
        "camera_info.fallback_intrinsics")

    def __post_init__(self) -> None:
        check_fields(self, "camera_info")  # types, limits, choices and positive fx, fy


def camera_info_config(values: Mapping[str, ParamValue]) -> CameraInfoConfig:
    """The :class:`CameraInfoConfig` of checked ``camera_info.*`` parameter values.

    The values are an entry point's, already checked (``node_params.validate``); other
    names are ignored and absent ones take their defaults.
    """
    return build_config(CameraInfoConfig, values, "camera_info")


@dataclass(frozen=True)
class CameraModel:
    """A validated CameraInfo: stamp (ns), K of the published image and that image's size.

    ``width``/``height`` are 0 when the CameraInfo gives no size (then any image matches).
    """

    stamp_ns: int
    k: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    """An image ready for the pipeline: uint8 RGB, its intrinsics and where they came from."""

    rgb: np.ndarray
    k: np.ndarray
    stamp_ns: int
    intrinsics: Literal["camera_info", "fallback"]


def camera_model_from_msg(msg: CameraInfoMessage) -> CameraModel:
    """Validate a CameraInfo (REP 104); InputError('camera_info_invalid') when unusable."""
    try:
        k = check_intrinsics(camera_info_to_intrinsics(msg))
        width, height = camera_info_image_size(msg)
        stamp = stamp_to_ns(msg.header.stamp)
    except (MessageError, ValueError, AttributeError) as exc:
        raise InputError("camera_info_invalid", f"CameraInfo rejected: {exc}") from None
    return CameraModel(stamp, k, width, height)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputError("image_too_large",
                         f"image of {width}x{height} = {width * height} pixels exceeds "
                         f"max_input_pixels = {max_pixels}: refused before conversion")


def image_rgb_from_msg(msg: ImageMessage, max_pixels: int | None = None) -> np.ndarray:
    """Image -> uint8 RGB; InputError unsupported_encoding / malformed_image / image_too_large.

    The size limit is checked from the header fields, before any pixel is converted.
    """
    name = getattr(msg, "encoding", None)
    enc = ENCODINGS.get(name) if isinstance(name, str) else None
    if enc is None or name not in CAMERA_ENCODINGS:
        what = "a depth/data encoding" if enc is not None else "not supported"
        raise InputError("unsupported_encoding",
                         f"image encoding {name!r} is {what}; the node takes camera images "
                         f"in one of {', '.join(CAMERA_ENCODINGS)}")
    try:
        _check_pixels(*image_size(msg), max_pixels)
        return image_to_rgb(msg)
    except MessageError as exc:
        raise InputError("malformed_image", f"image rejected: {exc}") from None


def compressed_rgb_from_msg(msg: CompressedImageMessage,
                            max_pixels: int | None = None) -> np.ndarray:
    """CompressedImage -> uint8 RGB; InputError (unsupported, undecodable or too large).

    The size limit is checked from the jpeg/png header, before anything is decoded.
    """
    try:
        fmt = parse_format(getattr(msg, "format", None))
    except MessageError as exc:
        raise InputError("unsupported_encoding", str(exc)) from None
    try:
        data = data_bytes(getattr(msg, "data", None), "CompressedImage")
        size = header_size(data, fmt.codec)
    except MessageError as exc:
        raise InputError("undecodable_image", f"compressed image rejected: {exc}") from None
    _check_pixels(*size, max_pixels)
    try:
        return decode_to_rgb(fmt, data, size)
    except MessageError as exc:
        raise InputError("undecodable_image", f"compressed image rejected: {exc}") from None


def any_image_rgb_from_msg(msg: AnyImageMessage, max_pixels: int | None = None) -> np.ndarray:
    """Image or CompressedImage (told apart by their fields) -> uint8 RGB; InputError."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_rgb_from_msg(cast(CompressedImageMessage, msg), max_pixels)
    return image_rgb_from_msg(cast(ImageMessage, msg), max_pixels)


def fallback_intrinsics(normalized: Sequence[float], width: int, height: int) -> np.ndarray:
    """3x3 intrinsics in pixels from normalized [fx/W, fy/H, cx/W, cy/H]."""
    fx, fy, cx, cy = (float(v) for v in normalized)
    k_norm = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return normalized_to_pixels(k_norm, width, height)


class IntrinsicsSource:
    """The last ``history`` valid CameraInfos, matched to images by stamp and size.

    Thread-safe: the node adds from its input callbacks and looks up from its worker.
    """

    def __init__(self, history: int = 30) -> None:
        self._lock = threading.Lock()
        self._models: deque[CameraModel] = deque(maxlen=history)

    def add(self, model: CameraModel) -> None:
        """Cache a validated CameraInfo."""
        with self._lock:
            self._models.append(model)

    @property
    def has_any(self) -> bool:
        """Whether a valid CameraInfo has been received."""
        with self._lock:
            return bool(self._models)

    def lookup(self, stamp_ns: int, width: int, height: int, sync: str,
               slop_s: float) -> np.ndarray:
        """K for an image of ``width`` x ``height`` stamped ``stamp_ns``; InputError if none."""
        with self._lock:
            models = list(self._models)
        if not models:
            raise InputError("no_camera_info", "no CameraInfo received")
        if sync == "approximate":
            best = min(reversed(models), key=lambda m: abs(m.stamp_ns - stamp_ns))
            gap = abs(best.stamp_ns - stamp_ns) * 1e-9
            if gap > slop_s:
                raise InputError("camera_info_unsynced",
                                 f"nearest CameraInfo is {gap:.3f} s from the image, more than "
                                 f"camera_info.slop = {slop_s} s")
        else:
            best = models[-1]
        if best.width and best.height and (best.width, best.height) != (width, height):
            raise InputError("camera_info_size_mismatch",
                             f"CameraInfo describes a {best.width}x{best.height} image (after "
                             f"binning and ROI) but the image is {width}x{height}")
        return best.k


class FrameIntake:
    """Images and CameraInfos in, :class:`Frame` out; every bad input reported and counted.

    ``report(kind, message)`` is called for each problem (the node counts it in its
    diagnostics and logs the first of each kind); without it the first of each kind is
    logged here. ``counts`` holds how often each kind occurred. ``camera_info_topic``
    only names the topic in messages. ``max_pixels`` bounds the image size (None: no
    bound).
    """

    def __init__(self, config: CameraInfoConfig | None = None,
                 report: Callable[[str, str], None] | None = None,
                 camera_info_topic: str = "camera_info", history: int = 30,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.config = config or CameraInfoConfig()
        self.max_pixels = max_pixels
        self._report = report
        self._topic = camera_info_topic
        self._source = IntrinsicsSource(history)
        self._lock = threading.Lock()
        self._distortion: tuple[str, tuple[float, ...]] | None = None
        self.counts: dict[str, int] = {}

    def _bad(self, kind: str, message: str) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            first = self.counts[kind] == 1
        if self._report is not None:
            self._report(kind, message)
        elif first:
            LOG.warning("%s: %s (logged once; every occurrence is counted)", kind, message)

    def add_camera_info(self, msg: CameraInfoMessage) -> bool:
        """Take a CameraInfo; False (reported) when it is invalid."""
        try:
            self._source.add(camera_model_from_msg(msg))
        except InputError as exc:
            self._bad(exc.kind, str(exc))
            return False
        self._check_distortion(msg)
        return True

    def _check_distortion(self, msg: CameraInfoMessage) -> None:
        """Report a non-zero D once per calibration (model and coefficients)."""
        try:
            d = tuple(float(v) for v in getattr(msg, "d", ()))
        except (TypeError, ValueError):
            d = (float("nan"),)
        if not any(v != 0.0 for v in d):
            return
        key = (str(getattr(msg, "distortion_model", "")), d)
        if key == self._distortion:
            return
        self._distortion = key
        self._bad("camera_info_distorted",
                  f"CameraInfo on {self._topic} has distortion {key[0] or '(no model)'} "
                  f"D = {list(d)}: the image must be rectified (image_proc's image_rect); "
                  "its intrinsics are taken from P and the outputs carry D = 0")

    def take_image(self, msg: AnyImageMessage) -> Frame | None:
        """The frame for an Image or CompressedImage, or None (reported) when it is skipped."""
        cfg = self.config
        try:
            rgb = any_image_rgb_from_msg(msg, self.max_pixels)
            stamp = stamp_to_ns(msg.header.stamp)
            if not msg.header.frame_id:
                raise InputError("missing_frame_id", "image header.frame_id is empty: the "
                                 "outputs would carry it and TF/RViz cannot place them; set "
                                 "the camera driver's frame_id")
        except MessageError as exc:
            self._bad("malformed_image", f"image rejected: {exc}")
            return None
        except InputError as exc:
            self._bad(exc.kind, str(exc))
            return None
        height, width = rgb.shape[:2]
        if not self._source.has_any and cfg.use_fallback:
            self._bad("no_camera_info", f"no CameraInfo received on {self._topic}: using "
                      f"camera_info.fallback_intrinsics {list(cfg.fallback_intrinsics)}")
            k = fallback_intrinsics(cfg.fallback_intrinsics, width, height)
            return Frame(rgb, k, stamp, "fallback")
        try:
            k = self._source.lookup(stamp, width, height, cfg.sync, cfg.slop)
        except InputError as exc:
            if exc.kind == "no_camera_info":
                exc = InputError(exc.kind, f"no CameraInfo received on {self._topic} and "
                                           "camera_info.use_fallback is false: frame skipped")
            self._bad(exc.kind, str(exc))
            return None
        return Frame(rgb, k, stamp, "camera_info")
