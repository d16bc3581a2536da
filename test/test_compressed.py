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
from test_intake import tiny_model  # noqa: F401 - a fixture

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
    assert parse_format("rgb8; jpeg compressed bgr8") == CompressedFormat("rgb8", "jpeg", True,
                                                                          "bgr8")
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


def test_bayer_is_demosaiced_only_when_compressed_as_the_mosaic():
    """png keeps a bayer image as it is; the plugin's jpeg gets cv_bridge's mono8 of it."""
    mosaic = smooth_rgb(40, 60)[..., 1].copy()
    mosaic[::2, ::2] = 30  # a pattern that demosaicing visibly colors
    raw_rgb = any_image_rgb_from_msg(raw(mosaic, "bayer_rggb8"))
    ok, png = cv2.imencode(".png", mosaic)
    as_png = SimpleNamespace(header=SimpleNamespace(stamp=stamp(0), frame_id="c"),
                             format="bayer_rggb8; png compressed ", data=png.tobytes())
    np.testing.assert_array_equal(any_image_rgb_from_msg(as_png), raw_rgb)
    gray = cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2GRAY)  # what cv_bridge hands to the jpeg
    ok, mono_png = cv2.imencode(".png", gray)  # png with a mono8 target: exact to compare
    as_mono = SimpleNamespace(header=as_png.header, format="bayer_rggb8; png compressed mono8",
                              data=mono_png.tobytes())
    want = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(any_image_rgb_from_msg(as_mono), want)


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


# ------------------------------------------------------------- node and process-bag


def _live_sequence() -> list[tuple[str, Any, str | None]]:
    """(topic, rclpy message, outcome) sent to the node; outcome 'frame' or an error kind."""
    from sensor_msgs.msg import CameraInfo, CompressedImage

    t = iter(range(10**9, 10**9 + 50 * 10**8, 10**8))
    rgb = smooth_rgb(96, 320)

    def comp(codec: str, frame_id: str = "cam", data: bytes | None = None,
             fmt: str | None = None) -> CompressedImage:
        made = compressed(rgb, "rgb8", codec, frame_id=frame_id)
        msg = CompressedImage(format=fmt or made.format, data=data if data is not None
                              else made.data)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(next(t), 10**9)
        msg.header.frame_id = frame_id
        return msg

    info = CameraInfo(width=320, height=96, distortion_model="plumb_bob")
    k = [210.0, 0.0, 159.5, 0.0, 205.0, 47.5, 0.0, 0.0, 1.0]
    info.k, info.p = k, k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0]
    info.d = [-0.1, 0.01, 0.0, 0.0, 0.0]
    info.header.stamp.sec = 1
    info.header.frame_id = "cam"
    return [
        ("camera_info", info, "camera_info_distorted"),
        ("image", comp("png"), "frame"),
        ("image", comp("jpeg"), "frame"),
        ("image", comp("jpeg", data=bytes(compressed(rgb, "rgb8", "jpeg").data)[:500]),
         "undecodable_image"),
        ("image", comp("png", frame_id=""), "missing_frame_id"),
        ("image", comp("png", fmt="rgb8; tiff compressed bgr8"), "unsupported_encoding"),
        ("image", comp("png", data=png_header_only(1000, 1000)), "image_too_large"),
        ("camera_info", info, None),  # the same calibration: reported once
        ("image", comp("png"), "frame"),
    ]


def _bag_depths(tiny_model, tmp, topic: str, messages: list[tuple[str, Any]],  # noqa: F811
                msgtype: str) -> tuple[Any, dict[int, np.ndarray]]:
    """process-bag over ``messages`` written to a real rosbag2: (summary, stamp -> depth)."""
    from rclpy.serialization import serialize_message

    from oe_depth_ros.bags.bagio import BagReader, BagWriter
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.build import pipeline_config
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.messages import image_to_numpy
    from oe_depth_ros.pipeline import DepthPipeline

    types = {topic: msgtype, "/cam/camera_info": "sensor_msgs/msg/CameraInfo"}
    with BagWriter(tmp / "in", "mcap", "jazzy") as bag:
        conns = {name: bag.add_topic(name, t) for name, t in types.items()}
        for name, msg in messages:
            when = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            bag.write_raw(conns[name], when, serialize_message(msg))
    pipeline = DepthPipeline(create_backend("onnxruntime", tiny_model, threads=1),
                             pipeline_config({"scale.relative_method": "fixed"}))
    summary = process_bag(tmp / "in", tmp / "out", pipeline, ProcessOptions(
        image_topic=topic, lidar_topic=None, progress=False, max_pixels=100_000))
    depths = {}
    with BagReader(tmp / "out") as reader:
        for conn, when, data in reader.messages(["/oe_depth/depth/image"]):
            depths[when] = image_to_numpy(reader.deserialize(data, conn, when))
    return summary, depths


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_node_and_process_bag_read_compressed_images_like_raw_ones(
        tiny_model, tmp_path):  # noqa: F811
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CompressedImage, Image

    from test_intake import NodeUnderTest, stamp_of

    sequence = _live_sequence()
    expected = {kind: 1 for _, _, kind in sequence if kind not in (None, "frame")}
    frames = [stamp_of(m) for _, m, outcome in sequence if outcome == "frame"]

    # process-bag on the compressed topic, and on the same pixels as raw Images.
    base = "/cam/image_rect"
    summary, offline = _bag_depths(
        tiny_model, tmp_path / "compressed", f"{base}/compressed",
        [(f"{base}/compressed" if topic == "image" else "/cam/camera_info", msg)
         for topic, msg, _ in sequence], "sensor_msgs/msg/CompressedImage")
    assert summary.skipped == expected and sorted(offline) == frames
    rgb = smooth_rgb(96, 320)
    raw_frames = []
    for s in frames:
        msg = Image(height=96, width=320, encoding="rgb8", step=960, data=rgb.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(s, 10**9)
        msg.header.frame_id = "cam"
        raw_frames.append((base, msg))
    info = next(m for topic, m, _ in sequence if topic == "camera_info")
    _, raw_depths = _bag_depths(tiny_model, tmp_path / "raw", base,
                                [("/cam/camera_info", info), *raw_frames],
                                "sensor_msgs/msg/Image")
    png, jpeg = frames[0], frames[1]
    np.testing.assert_array_equal(offline[png], raw_depths[png])
    # jpeg: pixels within 12 levels, about 1 on average (test above); the tiny model's
    # disparity is linear in the mean color and the network input averages neighbouring
    # pixels, so the depth moves by a few percent at most.
    np.testing.assert_allclose(offline[jpeg], raw_depths[jpeg], rtol=0.03)
    assert not np.array_equal(offline[jpeg], raw_depths[jpeg])  # it was really a jpeg

    # The node, with the base topic remapped as a launch file does.
    live = NodeUnderTest(tiny_model, tmp_path / "node.log", extra=(
        "-p", "image_transport:=compressed", "-p", "max_input_pixels:=100000",
        "-r", f"image:={base}"))
    try:
        pub = live.node.create_publisher(CompressedImage, f"{base}/compressed",
                                         live.pubs["image"].qos_profile)
        live.pubs["image"] = pub
        ready = live.spin_until(lambda: pub.get_subscription_count() > 0 and
                                live.node.count_publishers("/cam/depth/image") > 0, 60)
        assert ready, "the node did not subscribe to the compressed topic"
        live.spin_until(lambda: False, 1.0)
        for topic, msg, outcome in sequence:
            live.pubs[topic].publish(msg)
            if outcome == "frame":
                assert live.spin_until(lambda: stamp_of(msg) in live.got["depth/image"], 20)
            else:
                live.spin_until(lambda: False, 0.4)
        live.spin_until(lambda: live.errors() == expected, 5)
        assert live.errors() == expected
    finally:
        log = live.close()
    from oe_depth_ros.messages import image_to_numpy

    assert sorted(live.got["depth/image"]) == frames, log
    for when in frames:
        depth = image_to_numpy(live.got["depth/image"][when])
        np.testing.assert_allclose(depth, offline[when], rtol=1e-6)
        assert live.got["depth/image"][when].header.frame_id == "cam"


# -------------------------------------------------------------------------- memory

_MEMORY_PROBE = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import cv2
import numpy as np

from oe_depth_ros.build import pipeline_config
from oe_depth_ros.inference.backends import create_backend
from oe_depth_ros.intake import FrameIntake
from oe_depth_ros.pipeline import DepthPipeline, Outputs


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB


def header():
    return SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="cam")


def raw(h, w):
    return SimpleNamespace(header=header(), height=h, width=w, encoding="rgb8",
                           is_bigendian=0, step=w * 3, data=np.full(h * w * 3, 90, np.uint8))


pipeline = DepthPipeline(create_backend("onnxruntime", sys.argv[1], threads=1),
                         pipeline_config({"scale.relative_method": "fixed"}))
intake = FrameIntake()  # the default limit, 16 Mpx
worker = ThreadPoolExecutor(2)  # frames are processed off the main thread, as in the node


def answer(msg):
    frame = intake.take_image(msg)
    if frame is None:
        return None
    result = pipeline.process(frame.rgb, frame.k, outputs=Outputs(points=True, colored=True))
    return result.depth.shape


def run(msg):
    return worker.submit(answer, msg).result()


for _ in range(5):
    run(raw(375, 1242))
out = {"before": status("VmRSS")}
big = np.full((8000, 8000, 3), 90, np.uint8)
jpeg = cv2.imencode(".jpg", big)[1].tobytes()
del big
huge_jpeg = SimpleNamespace(header=header(), format="rgb8; jpeg compressed bgr8", data=jpeg)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
out["refused_jpeg"] = run(huge_jpeg)
out["refused_jpeg_peak"] = status("VmHWM")
out["refused_raw"] = run(raw(8000, 8000))
out["after_refused"] = status("VmRSS")
intake.max_pixels = 6000 * 5000  # a node configured for larger frames
out["processed"] = run(raw(5000, 6000))
for _ in range(3):
    run(raw(375, 1242))
out["after_processed"] = status("VmRSS")
out["counts"] = intake.counts
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_huge_frames_are_refused_before_decoding_and_memory_returns(tiny_model,  # noqa: F811
                                                                    tmp_path):
    import json
    import subprocess
    import sys

    from test_intake import REPO

    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tiny_model)], cwd=REPO,
                          capture_output=True, text=True, timeout=280,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout.strip().splitlines()[-1])
    assert m["refused_jpeg"] is None and m["refused_raw"] is None
    assert m["counts"]["image_too_large"] == 2
    # Decoding the 8000x8000 jpeg would need 183 MiB for its pixels alone.
    assert m["refused_jpeg_peak"] - m["before"] < 50, m
    assert m["after_refused"] - m["before"] < 200, m
    # Answered; its 229 MiB of cached rays would be resident, had the cache kept them.
    assert m["processed"] == [5000, 6000]
    assert m["after_processed"] - m["before"] < 200, m


def test_ray_cache_keeps_no_rays_of_huge_frames():
    from oe_depth_ros.pointcloud import RayCache

    k = np.array([[500.0, 0, 2000], [0, 500, 2000], [0, 0, 1]])
    cache = RayCache()
    small = cache.get(k, 375, 1242)
    assert cache.get(k, 375, 1242) is small  # cached
    huge = cache.get(k, 4000, 4000)
    assert huge.shape == (2, 4000, 4000) and cache.nbytes == small.nbytes
    np.testing.assert_allclose(huge[:, 10, 20], [(20 - 2000) / 500, (10 - 2000) / 500])
