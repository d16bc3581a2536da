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
"""CompressedImage input, size limits, frame_id and distortion checks of the frame intake.

Messages are built as image_transport's ``compressed`` plugin builds them (its format
strings, BGR data through OpenCV's encoder, its default quality and level). The last
test runs the node in its own process with ``image_transport:=compressed`` over real
DDS and ``process-bag`` over a real rosbag2 file with the same CDR bytes; both must
answer alike, and their depth must equal the raw path's (png) or stay within the
tolerance that jpeg's pixel error implies.
"""
from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from oe_depth_ros.compressed import (
    CompressedFormat, encode_like_plugin, header_size, parse_format, transport_topic,
)
from oe_depth_ros.intake import ERROR_KINDS, FrameIntake, any_image_rgb_from_msg

cv2 = pytest.importorskip("cv2")


def smooth_rgb(height: int, width: int) -> np.ndarray:
    """A smooth color image (jpeg's favourable case, like most camera content), in 64..191."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 63 * np.sin(x / width * 2 * np.pi)
    g = 128 + 63 * np.cos(y / height * 2 * np.pi)
    b = 128 + 63 * np.sin((x + y) / (width + height) * 4 * np.pi)
    return np.rint(np.stack([r, g, b], axis=2)).astype(np.uint8)


def stamp(ns: int) -> SimpleNamespace:
    return SimpleNamespace(sec=ns // 10**9, nanosec=ns % 10**9)


def compressed(pixels: np.ndarray, encoding: str, codec: str, frame_id: str = "cam",
               **kw: Any) -> SimpleNamespace:
    fmt, data = encode_like_plugin(pixels, encoding, codec, **kw)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(10**9), frame_id=frame_id),
                           format=fmt, data=data)


def raw(pixels: np.ndarray, encoding: str, frame_id: str = "cam") -> SimpleNamespace:
    h, w = pixels.shape[:2]
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(10**9), frame_id=frame_id),
                           height=h, width=w, encoding=encoding, is_bigendian=0,
                           step=pixels.nbytes // h, data=pixels.tobytes())


# compressed_publisher.cpp (rolling and humble): "<encoding>; <codec> compressed <target>",
# target bgr8 for color jpeg/png, mono8 for other jpeg, empty for other png.
@pytest.mark.parametrize("encoding, codec, expected", [
    ("rgb8", "jpeg", "rgb8; jpeg compressed bgr8"),
    ("bgr8", "jpeg", "bgr8; jpeg compressed bgr8"),
    ("mono8", "jpeg", "mono8; jpeg compressed mono8"),
    ("rgb8", "png", "rgb8; png compressed bgr8"),
    ("mono8", "png", "mono8; png compressed "),
])
def test_formats_are_the_plugins_and_decode_to_the_raw_pixels(encoding, codec, expected):
    rgb = smooth_rgb(45, 70)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 1]}[encoding]
    msg = compressed(pixels, encoding, codec)
    assert msg.format == expected
    assert header_size(np.frombuffer(msg.data, np.uint8), codec) == (70, 45)
    got = any_image_rgb_from_msg(msg)
    want = any_image_rgb_from_msg(raw(np.ascontiguousarray(pixels), encoding))
    assert got.shape == want.shape == (45, 70, 3)
    if codec == "png":
        np.testing.assert_array_equal(got, want)
    else:
        # Quality-95 jpeg with 4:2:0 chroma subsampling of a smooth image: about one level
        # on average, a few more where color changes fastest; a channel swap would cost
        # tens of levels on average here.
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 12 and diff.mean() < 1.5, (diff.max(), diff.mean())


def test_format_parsing_follows_the_plugins_subscriber():
    assert parse_format("rgb8; jpeg compressed bgr8") == CompressedFormat("rgb8", "jpeg", True)
    assert parse_format("mono16; png compressed ") == CompressedFormat("mono16", "png", False)
    # A publisher that compressed RGB data says so; the decoded array is then RGB already.
    assert parse_format("rgb8; png compressed rgb8").bgr is False
    assert parse_format("jpeg") == CompressedFormat(None, "jpeg", True)  # older publishers
    for bad in ("16UC1; compressedDepth png", "32FC1; png compressed ", "rgb8; tiff compressed "
                "bgr8", "theora", "", "rgb8; jpeg"):
        with pytest.raises(ValueError):
            parse_format(bad)
    assert transport_topic("/cam/image_rect", "compressed") == "/cam/image_rect/compressed"


def test_rgb_order_is_honoured_when_the_data_was_compressed_as_rgb():
    rgb = smooth_rgb(20, 30)
    ok, buf = cv2.imencode(".png", rgb)  # RGB bytes handed to OpenCV as they are
    msg = SimpleNamespace(header=SimpleNamespace(stamp=stamp(0), frame_id="c"),
                          format="rgb8; png compressed rgb8", data=buf.tobytes())
    np.testing.assert_array_equal(any_image_rgb_from_msg(msg), rgb)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk for a huge image, without any pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_bad_input_is_refused_and_counted_by_kind():
    seen: list[str] = []
    intake = FrameIntake(report=lambda kind, message: seen.append(kind), max_pixels=640 * 480)
    good = compressed(smooth_rgb(48, 64), "rgb8", "jpeg")
    truncated = compressed(smooth_rgb(48, 64), "rgb8", "jpeg")
    truncated.data = truncated.data[:len(truncated.data) // 2]
    garbage = compressed(smooth_rgb(48, 64), "rgb8", "png")
    garbage.data = b"\x00" * 100
    huge_png = SimpleNamespace(header=good.header, format="rgb8; png compressed bgr8",
                               data=png_header_only(60000, 60000))
    big_raw = raw(smooth_rgb(481, 640), "rgb8")  # one row over the limit
    cases = [
        (truncated, "undecodable_image"), (garbage, "undecodable_image"),
        (huge_png, "image_too_large"),  # from the header: nothing is decoded
        (big_raw, "image_too_large"),
        (compressed(smooth_rgb(48, 64), "rgb8", "png", frame_id=""), "missing_frame_id"),
        (raw(smooth_rgb(48, 64), "rgb8", frame_id=""), "missing_frame_id"),
        (SimpleNamespace(header=good.header, format="16UC1; compressedDepth png",
                         data=good.data), "unsupported_encoding"),
    ]
    for msg, kind in cases:
        assert intake.take_image(msg) is None
        assert seen[-1] == kind
    assert set(seen) <= set(ERROR_KINDS)
    assert intake.take_image(good) is not None  # and the next good frame is taken
    assert intake.take_image(raw(smooth_rgb(480, 640), "rgb8")) is not None  # at the limit


def test_jpeg_size_is_read_past_other_segments():
    msg = compressed(smooth_rgb(33, 47), "rgb8", "jpeg")
    data = bytes(msg.data)
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 5000) + b"x" * 5000  # COM before the frame
    spliced = np.frombuffer(data[:2] + comment + data[2:], np.uint8)
    assert header_size(spliced, "jpeg") == (47, 33)
    assert cv2.imdecode(spliced, cv2.IMREAD_UNCHANGED).shape == (33, 47, 3)


def test_distortion_is_reported_once_per_calibration():
    seen: list[str] = []
    intake = FrameIntake(report=lambda kind, message: seen.append(kind))

    def info(d: list[float]) -> SimpleNamespace:
        k = [400.0, 0, 100, 0, 400, 50, 0, 0, 1]
        return SimpleNamespace(header=SimpleNamespace(stamp=stamp(0), frame_id="c"), width=200,
                               height=100, k=k, p=k[:3] + [0] + k[3:6] + [0] + k[6:] + [0],
                               d=d, distortion_model="plumb_bob", binning_x=0, binning_y=0,
                               roi=None)

    for d in ([0.0] * 5, [-0.1, 0.01, 0, 0, 0], [-0.1, 0.01, 0, 0, 0], [-0.2, 0, 0, 0, 0]):
        assert intake.add_camera_info(info(d))
    assert seen == ["camera_info_distorted", "camera_info_distorted"]
