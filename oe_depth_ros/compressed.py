# Copyright 2025 oe_depth_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""sensor_msgs/CompressedImage as image_transport's ``compressed`` plugin writes it.

ROS-free, like :mod:`oe_depth_ros.messages`. The plugin publishes on
``<base topic>/compressed`` and writes ``format`` as ``"<encoding>; <codec> compressed
<target>"`` (compressed_image_transport, compressed_publisher.cpp):

* jpeg: color images are converted to ``bgr8`` (``"rgb8; jpeg compressed bgr8"``),
  everything else to ``mono8`` (``"mono8; jpeg compressed mono8"``);
* png: color images to ``bgr8`` or ``bgr16`` by bit depth (``"rgb8; png compressed
  bgr8"``); other images stay in their encoding and the target is empty
  (``"mono8; png compressed "``).

OpenCV encodes a 3-channel array as BGR, so a decoded color image is in BGR order when
the format says ``compressed bgr`` (or, as older publishers write a bare ``"jpeg"``,
gives no encoding at all), else in RGB order: the rule of the plugin's subscriber.

The image size is read from the jpeg/png header first (:func:`header_size`), so a frame
too large to decode is refused before any pixel memory is allocated.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from oe_depth_ros.messages import (
    CAMERA_ENCODINGS, ENCODINGS, MessageError, array_to_rgb,
)

__all__ = ["TRANSPORTS", "CODECS", "CompressedFormat", "parse_format", "header_size",
           "decode_to_rgb", "encode_like_plugin", "transport_topic"]

#: The image transports the node and ``process-bag`` read (image_transport's names).
TRANSPORTS: tuple[str, ...] = ("raw", "compressed")
#: The codecs of the ``compressed`` transport that are decoded here.
CODECS: tuple[str, ...] = ("jpeg", "png")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): C0-CF
# except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def transport_topic(base: str, transport: str) -> str:
    """The topic a transport uses for the (resolved) base topic: ``base`` or ``base/compressed``."""
    if transport not in TRANSPORTS:
        raise ValueError(f"image transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    return base if transport == "raw" else f"{base.rstrip('/')}/{transport}"


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``format``: original encoding (None if not given), codec, BGR order, target.

    ``target`` is the encoding the plugin converted to before compressing; empty when
    the image was compressed in its own encoding (png of a mono or bayer image).
    """

    encoding: str | None
    codec: str
    bgr: bool
    target: str = ""


def parse_format(text: object) -> CompressedFormat:
    """Parse a CompressedImage ``format``; MessageError for other codecs or non-camera data."""
    if not isinstance(text, str):
        raise MessageError(f"CompressedImage.format must be a string, got {text!r}")
    if ";" not in text:  # older publishers: the codec alone
        codec = text.strip().lower()
        if codec not in CODECS:
            raise MessageError(f"CompressedImage format {text!r}: codec is not one of "
                               f"{', '.join(CODECS)}")
        return CompressedFormat(None, codec, True, "")
    encoding, rest = (part.strip() for part in text.split(";", 1))
    words = rest.split()
    codec = words[0].lower() if words else ""
    if codec not in CODECS or words[1:2] != ["compressed"]:
        raise MessageError(f"CompressedImage format {text!r} is not '<encoding>; jpeg|png "
                           f"compressed [target]' (compressedDepth and other transports are "
                           f"not camera images)")
    if encoding not in CAMERA_ENCODINGS:
        what = "a depth/data encoding" if encoding in ENCODINGS else "not supported"
        raise MessageError(f"CompressedImage format {text!r}: encoding {encoding!r} is {what}")
    return CompressedFormat(encoding, codec, "compressed bgr" in rest,
                            words[2] if len(words) > 2 else "")


def _be16(buf: memoryview, at: int) -> int:
    return int(buf[at]) << 8 | int(buf[at + 1])


def _jpeg_size(buf: memoryview) -> tuple[int, int]:
    at, end = 2, len(buf)
    while at + 1 < end:
        if buf[at] != 0xFF:
            raise MessageError(f"jpeg data: no marker at byte {at}")
        while at < end and buf[at] == 0xFF:  # fill bytes
            at += 1
        if at >= end:
            break
        marker = buf[at]
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or at + 2 > end:  # EOI or scan data before any frame
            break
        length = _be16(buf, at)
        if marker in _JPEG_SOF:
            if length < 8 or at + 7 > end:
                break
            height, width = _be16(buf, at + 3), _be16(buf, at + 5)
            if not (width and height):
                raise MessageError(f"jpeg frame header gives size {width}x{height}")
            return width, height
        if length < 2:
            raise MessageError(f"jpeg segment 0x{marker:02X} at byte {at - 2} has length "
                               f"{length}")
        at += length
    raise MessageError("jpeg data has no frame header (truncated or not a jpeg image)")


def header_size(data: np.ndarray, codec: str) -> tuple[int, int]:
    """(width, height) from a jpeg/png header without decoding; MessageError if invalid."""
    buf = memoryview(np.ascontiguousarray(data, dtype=np.uint8).data)
    if codec == "png":
        if len(buf) < 24 or bytes(buf[:8]) != _PNG_SIGNATURE or bytes(buf[12:16]) != b"IHDR":
            raise MessageError("png data does not start with a PNG signature and IHDR chunk")
        width, height = struct.unpack(">II", buf[16:24])
        if not (width and height):
            raise MessageError(f"png header gives size {width}x{height}")
        return width, height
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise MessageError("jpeg data does not start with a start-of-image marker")
    return _jpeg_size(buf)


def decode_to_rgb(fmt: CompressedFormat, data: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decode a payload whose header gave ``size`` -> uint8 RGB [H, W, 3].

    Conversions as for raw images (:func:`oe_depth_ros.messages.image_to_rgb`): 16-bit
    png maps to 8 bits, mono is replicated, a bayer image kept as such is demosaiced.
    """
    import cv2

    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise MessageError(f"{fmt.codec} data cannot be decoded (truncated or corrupt)")
    if (arr.shape[1], arr.shape[0]) != size:
        raise MessageError(f"{fmt.codec} decoded to {arr.shape[1]}x{arr.shape[0]}, its header "
                           f"says {size[0]}x{size[1]}")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if channels == 1:
        # A bayer image compressed as it is (png, empty target) is still the mosaic; the
        # plugin's jpeg got it converted to mono8 first.
        original = ENCODINGS[fmt.encoding].kind if fmt.encoding else "mono"
        kind = original if original.startswith("bayer_") and not fmt.target else "mono"
        return array_to_rgb(arr.reshape(arr.shape[:2]), kind)
    if channels not in (3, 4):
        raise MessageError(f"{fmt.codec} data has {channels} channels")
    order = "bgr" if fmt.bgr else "rgb"
    return array_to_rgb(arr, order if channels == 3 else order + "a")


def encode_like_plugin(pixels: np.ndarray, encoding: str, codec: str,
                       quality: int = 95, png_level: int = 3) -> tuple[str, bytes]:
    """(format, data) as the ``compressed`` plugin writes them for a raw image.

    ``pixels`` are in ``encoding``'s layout (rgb8, bgr8 or mono8). Defaults are the
    plugin's (jpeg_quality 95, png_level 3).
    """
    import cv2

    if encoding not in ("rgb8", "bgr8", "mono8") or codec not in CODECS:
        raise ValueError(f"cannot encode {encoding} as {codec}")
    color = encoding != "mono8"
    target = "bgr8" if color else ("mono8" if codec == "jpeg" else "")
    bgr = pixels[..., ::-1] if encoding == "rgb8" else pixels
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr),
                               [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {codec}")
    return f"{encoding}; {codec} compressed {target}", buf.tobytes()
