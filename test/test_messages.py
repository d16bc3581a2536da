"""numpy <-> ROS message conversion with rclpy's and rosbags' real message classes.

Expected byte layouts are built independently here (struct.pack per point/pixel, byte
strings assembled row by row), never with the converters under test.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from oe_depth_ros.messages import (
    CAMERA_ENCODINGS,
    ENCODINGS,
    MessageError,
    MessageTypes,
    camera_info_image_size,
    camera_info_to_intrinsics,
    image_to_numpy,
    image_to_rgb,
    make_camera_info,
    make_header,
    make_pointcloud2,
    numpy_to_image,
    pointcloud2_to_numpy,
    stamp_to_ns,
)


@pytest.fixture(scope="module")
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@pytest.fixture(scope="module", params=["rclpy", "rosbags"])
def types(request, typestore) -> MessageTypes:
    return MessageTypes.rclpy() if request.param == "rclpy" else MessageTypes.rosbags(typestore)


def serialize_roundtrip(msg, types: MessageTypes, typestore):
    """Serialize to CDR and back with the flavour's own machinery (proves field types)."""
    if types.name == "rclpy":
        from rclpy.serialization import deserialize_message, serialize_message

        return deserialize_message(serialize_message(msg), type(msg))
    raw = typestore.serialize_cdr(msg, msg.__msgtype__)
    return typestore.deserialize_cdr(raw, msg.__msgtype__)


def random_pixels(rng: np.random.Generator, encoding: str, h: int, w: int) -> np.ndarray:
    enc = ENCODINGS[encoding]
    shape = (h, w) if enc.channels == 1 else (h, w, enc.channels)
    if enc.dtype.kind == "f":
        return rng.normal(0, 100, shape).astype(enc.dtype)
    info = np.iinfo(enc.dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(enc.dtype)


class FakeImage:
    """A plain object with Image's field names (the converters need nothing more)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


# ------------------------------------------------------------------------ headers


def test_header_stamp_roundtrip(types):
    for ns in (0, 1, 999_999_999, 1_317_000_000_123_456_789 // 1000, -1, -1_500_000_000):
        header = make_header(ns, "camera_optical", types)
        assert header.frame_id == "camera_optical"
        assert 0 <= header.stamp.nanosec < 1_000_000_000
        assert stamp_to_ns(header.stamp) == ns
    header = make_header(1_234_567_890_987_654_321, "f", types)
    assert (header.stamp.sec, header.stamp.nanosec) == (1_234_567_890, 987_654_321)
    header = make_header(-1, "f", types)
    assert (header.stamp.sec, header.stamp.nanosec) == (-1, 999_999_999)
    with pytest.raises(MessageError, match="int32"):
        make_header(2**31 * 10**9, "f", types)
    bad = types.Time(sec=1, nanosec=0)
    bad.nanosec = 1_000_000_000  # rclpy allows any uint32
    with pytest.raises(MessageError, match="nanosec"):
        stamp_to_ns(bad)


# ------------------------------------------------------------------------- images


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_image_roundtrip_every_encoding(encoding, types, typestore):
    rng = np.random.default_rng(zlib.crc32(encoding.encode()))
    pixels = random_pixels(rng, encoding, 5, 7)
    header = make_header(42, "cam", types)
    msg = numpy_to_image(pixels, encoding, header, types)
    enc = ENCODINGS[encoding]
    assert msg.step == 7 * enc.channels * enc.dtype.itemsize
    assert msg.is_bigendian == int(sys.byteorder == "big")
    assert bytes(msg.data) == pixels.astype(pixels.dtype.newbyteorder("=")).tobytes()
    back = serialize_roundtrip(msg, types, typestore)
    assert back.encoding == encoding and stamp_to_ns(back.header.stamp) == 42
    out = image_to_numpy(back)
    assert out.dtype == enc.dtype and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "32FC1", "bgra8", "16UC1", "64FC1"])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("pad", [0, 1, 3, 8])
def test_image_step_padding_and_byte_order(encoding, big, pad):
    """Rows padded with junk and either byte order, assembled by hand with struct."""
    rng = np.random.default_rng(pad + 10 * big)
    pixels = random_pixels(rng, encoding, 4, 5)
    enc = ENCODINGS[encoding]
    fmt = {"B": "B", "H": "H", "f": "f", "d": "d"}[enc.dtype.char]
    order = ">" if big else "<"
    rows = []
    for row in pixels.reshape(4, -1):
        packed = b"".join(struct.pack(order + fmt, v.item()) for v in row)
        rows.append(packed + bytes(rng.integers(0, 256, pad, dtype=np.uint8)))
    msg = FakeImage(height=4, width=5, encoding=encoding, is_bigendian=int(big),
                    step=len(rows[0]), data=b"".join(rows))
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_image_to_rgb_color_orders_and_mono(types):
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    header = make_header(0, "c", types)
    bgr = rgb[..., ::-1].copy()
    bgra = np.concatenate([bgr, np.full((3, 4, 1), 7, np.uint8)], axis=2)
    rgba = np.concatenate([rgb, np.full((3, 4, 1), 9, np.uint8)], axis=2)
    for arr, enc in ((rgb, "rgb8"), (bgr, "bgr8"), (bgra, "bgra8"), (rgba, "rgba8")):
        out = image_to_rgb(numpy_to_image(arr, enc, header, types))
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, rgb)
    mono = rgb[..., 0].copy()
    out = image_to_rgb(numpy_to_image(mono, "mono8", header, types))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], mono)
    mono16 = np.array([[0, 65535, 257 * 100, 128]], dtype=np.uint16)
    out = image_to_rgb(numpy_to_image(mono16, "mono16", header, types))
    np.testing.assert_array_equal(out[0, :, 1], [0, 255, 100, 0])  # 128*255/65535 = 0.498
    with pytest.raises(MessageError, match="not a color"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1", header, types))


SUPPORTED = {"rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "mono8", "mono16",
             *(f"bayer_{p}{b}" for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16))}
REFUSED = {"8UC1", "8UC3", "16UC1", "16SC1", "32SC1", "32FC1", "64FC1"}


def test_every_encoding_is_either_a_camera_encoding_or_refused():
    assert SUPPORTED | REFUSED == set(ENCODINGS) and not SUPPORTED & REFUSED
    assert set(CAMERA_ENCODINGS) == SUPPORTED


@pytest.mark.parametrize("encoding", sorted(REFUSED))
def test_depth_and_data_encodings_are_refused_as_camera_images(encoding, types):
    pixels = random_pixels(np.random.default_rng(1), encoding, 3, 4)
    msg = numpy_to_image(pixels, encoding, make_header(0, "c", types), types)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)  # still readable as data
    with pytest.raises(MessageError, match="not a color or mono encoding"):
        image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16"])
def test_16_bit_color_maps_to_8_bits(encoding, types):
    rgb16 = np.array([[[0, 65535, 257 * 100], [128, 129, 65535 - 128]]], dtype=np.uint16)
    arr = rgb16 if encoding == "rgb16" else rgb16[..., ::-1].copy()
    out = image_to_rgb(numpy_to_image(arr, encoding, make_header(0, "c", types), types))
    # round(v * 255 / 65535) by hand: 128 -> 0.498 -> 0, 129 -> 0.502 -> 1.
    np.testing.assert_array_equal(out, [[[0, 255, 100], [0, 1, 255]]])


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_demosaic_pattern(pattern, bits, types):
    """A flat-color scene mosaiced by hand by the ROS pattern name comes back as that color."""
    color = {"r": 200, "g": 100, "b": 30}
    h, w = 8, 10
    mosaic = np.zeros((h, w), dtype=np.uint8 if bits == 8 else np.uint16)
    mult = 1 if bits == 8 else 257
    for v in range(h):
        for u in range(w):
            mosaic[v, u] = color[pattern[2 * (v % 2) + (u % 2)]] * mult
    msg = numpy_to_image(mosaic, f"bayer_{pattern}{bits}", make_header(0, "c", types), types)
    rgb = image_to_rgb(msg)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[2:-2, 2:-2].reshape(-1, 3)[0], [200, 100, 30])
    assert np.all(rgb[2:-2, 2:-2] == np.array([200, 100, 30], np.uint8))


def test_numpy_to_image_rejects_mismatches(types):
    header = make_header(0, "c", types)
    with pytest.raises(MessageError, match="dtype"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8", header, types)
    with pytest.raises(MessageError, match="shape"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8", header, types)
    with pytest.raises(MessageError, match="unsupported image encoding"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "yuv422", header, types)
    with pytest.raises(MessageError, match="zero size"):
        numpy_to_image(np.zeros((0, 2), np.uint8), "mono8", header, types)
    # A big-endian array is accepted and stored in native order.
    arr = np.arange(6, dtype=">u2").reshape(2, 3)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(arr, "16UC1", header, types)), arr)


@pytest.mark.parametrize("fields, match", [
    (dict(data=b"\0" * 11), "expected step"),
    (dict(step=5), "less than width"),
    (dict(encoding="yuv422"), "unsupported image encoding"),
    (dict(height=0, data=b""), "zero size"),
    (dict(width=0), "zero size"),
    (dict(step=-1), "out of range"),
    (dict(data=[1, 2, 300] * 4), "0..255"),
    (dict(data=None), "unsupported type"),
])
def test_image_errors_are_clear(fields, match):
    msg = dict(height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=b"\0" * 12)
    msg.update(fields)
    with pytest.raises(MessageError, match=match):
        image_to_numpy(FakeImage(**msg))


# -------------------------------------------------------------------- camera info


def test_camera_info_roundtrip_and_layout(types, typestore):
    k = np.array([[721.5, 0.0, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]])
    msg = make_camera_info(k, 1242, 375, make_header(5, "cam", types), types)
    back = serialize_roundtrip(msg, types, typestore)
    assert (back.width, back.height, back.distortion_model) == (1242, 375, "plumb_bob")
    np.testing.assert_array_equal(np.asarray(back.k).reshape(3, 3), k)
    np.testing.assert_array_equal(np.asarray(back.p).reshape(3, 4), np.hstack([k, [[0], [0], [0]]]))
    np.testing.assert_array_equal(np.asarray(back.r), np.eye(3).ravel())
    np.testing.assert_array_equal(np.asarray(back.d), np.zeros(5))
    np.testing.assert_array_equal(camera_info_to_intrinsics(back), k)


def test_camera_info_prefers_p_then_k_and_applies_binning_roi(types):
    msg = make_camera_info(np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]]), 640, 480,
                           make_header(0, "c", types), types)
    # A rectified P that differs from K wins.
    msg.p = np.array([400.0, 0, 300, -40.0, 0, 400, 200, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(camera_info_to_intrinsics(msg),
                                  [[400, 0, 300], [0, 400, 200], [0, 0, 1]])
    msg.p = np.zeros(12)
    np.testing.assert_array_equal(camera_info_to_intrinsics(msg),
                                  [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    # Binning 2x2 and an ROI 320x240 at (100, 50): hand-worked (cx - 100) / 2, (cy - 50) / 2.
    msg.binning_x, msg.binning_y = 2, 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 50, 320, 240
    np.testing.assert_allclose(camera_info_to_intrinsics(msg),
                               [[250, 0, 110], [0, 255, 95], [0, 0, 1]])
    assert camera_info_image_size(msg) == (160, 120)


def _info(types, binning=(0, 0), roi=(0, 0, 0, 0), size=(640, 480)):
    k = np.array([[500.0, 0, 319.5], [0, 510, 239.5], [0, 0, 1]])
    msg = make_camera_info(k, size[0], size[1], make_header(0, "c", types), types)
    msg.binning_x, msg.binning_y = binning
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    return msg


# REP 104 by hand: K is for the 640x480 sensor; cx' = (cx - x_offset) / bx, fx' = fx / bx.
@pytest.mark.parametrize("binning, roi, size, k_out", [
    ((0, 0), (0, 0, 0, 0), (640, 480), [[500, 0, 319.5], [0, 510, 239.5]]),
    ((1, 1), (0, 0, 0, 0), (640, 480), [[500, 0, 319.5], [0, 510, 239.5]]),
    ((2, 2), (0, 0, 0, 0), (320, 240), [[250, 0, 159.75], [0, 255, 119.75]]),
    ((4, 4), (0, 0, 0, 0), (160, 120), [[125, 0, 79.875], [0, 127.5, 59.875]]),
    ((2, 1), (0, 0, 0, 0), (320, 480), [[250, 0, 159.75], [0, 510, 239.5]]),
    ((0, 0), (100, 50, 320, 240), (320, 240), [[500, 0, 219.5], [0, 510, 189.5]]),
    ((2, 2), (100, 50, 320, 240), (160, 120), [[250, 0, 109.75], [0, 255, 94.75]]),
    ((4, 4), (64, 32, 512, 384), (128, 96), [[125, 0, 63.875], [0, 127.5, 51.875]]),
])
def test_camera_info_rep104_binning_and_roi(types, binning, roi, size, k_out):
    msg = _info(types, binning, roi)
    assert camera_info_image_size(msg) == size
    np.testing.assert_allclose(camera_info_to_intrinsics(msg), k_out + [[0, 0, 1]], rtol=1e-12)


@pytest.mark.parametrize("binning, roi, size, match", [
    ((0, 0), (600, 0, 100, 480), (640, 480), "beyond"),
    ((0, 0), (0, 400, 640, 100), (640, 480), "beyond"),
    ((0, 0), (10, 10, 0, 0), (640, 480), "zero size"),
    ((1024, 1), (0, 0, 0, 0), (640, 480), "binning"),
])
def test_camera_info_rejects_bad_binning_and_roi(types, binning, roi, size, match):
    with pytest.raises(MessageError, match=match):
        msg = _info(types, binning, roi, size)
        camera_info_image_size(msg)
        camera_info_to_intrinsics(msg)


def test_camera_info_without_size_describes_any_image(types):
    msg = _info(types)
    msg.width = msg.height = 0
    assert camera_info_image_size(msg) == (0, 0)


@pytest.mark.parametrize("k, match", [
    (np.zeros(9), "non-positive focal"),
    (np.array([np.nan, 0, 1, 0, 1, 1, 0, 0, 1]), "NaN"),
    (np.array([1.0, 0, 1, 0, 1, 1, 0, 0, 2]), "pinhole"),
])
def test_camera_info_rejects_bad_intrinsics(k, match):
    msg = FakeImage(k=k, p=np.zeros(12), binning_x=0, binning_y=0, roi=None)
    with pytest.raises(MessageError, match=match):
        camera_info_to_intrinsics(msg)
    with pytest.raises(MessageError, match="12 values"):
        camera_info_to_intrinsics(FakeImage(k=k, p=np.zeros(5)))


# -------------------------------------------------------------------- point clouds


def cloud_dtype(with_intensity: bool, rgb_type: str) -> np.dtype:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", rgb_type)]
    if with_intensity:
        fields.append(("intensity", "<f4"))
    return np.dtype(fields)


@pytest.mark.parametrize("rgb_type, with_intensity", [("<f4", False), ("<u4", False),
                                                      ("<f4", True)])
@pytest.mark.parametrize("organized", [False, True])
def test_pointcloud2_bytes_equal_struct_construction(rgb_type, with_intensity, organized, types,
                                                     typestore):
    rng = np.random.default_rng(3)
    shape = (3, 4) if organized else (12,)
    pts = np.zeros(shape, dtype=cloud_dtype(with_intensity, rgb_type))
    for axis in "xyz":
        pts[axis] = rng.normal(0, 10, shape)
    packed = rng.integers(0, 2**24, shape).astype(np.uint32)
    pts["rgb"] = packed.view(np.float32) if rgb_type == "<f4" else packed
    if with_intensity:
        pts["intensity"] = rng.random(shape)
    pts["z"].flat[5] = np.nan
    msg = make_pointcloud2(pts, make_header(7, "cam", types), types)

    # Independent construction: what create_cloud writes for these fields.
    expected = bytearray()
    for p in pts.reshape(-1):
        rgb_bits = int(np.asarray(p["rgb"]).view(np.uint32))
        expected += struct.pack("<fffI", float(p["x"]), float(p["y"]), float(p["z"]), rgb_bits)
        if with_intensity:
            expected += struct.pack("<f", float(p["intensity"]))
    assert bytes(msg.data) == bytes(expected)
    point_step = 20 if with_intensity else 16
    assert (msg.point_step, msg.row_step) == (point_step, point_step * shape[-1])
    assert (msg.height, msg.width) == ((3, 4) if organized else (1, 12))
    assert msg.is_bigendian is False and msg.is_dense is False
    want_fields = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1),
                   ("rgb", 12, 7 if rgb_type == "<f4" else 6, 1)]
    if with_intensity:
        want_fields.append(("intensity", 16, 7, 1))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == want_fields

    back = pointcloud2_to_numpy(serialize_roundtrip(msg, types, typestore))
    assert back.shape == shape
    assert back.tobytes() == pts.tobytes()


def test_pointcloud2_padded_dtype_and_dense_flag(types):
    dtype = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 3 + ["<u4"],
                      "offsets": [0, 4, 8, 16], "itemsize": 32})
    pts = np.zeros(2, dtype=dtype)
    pts["x"] = [1, 2]
    pts["rgb"] = [0x00FF0000, 0x0000FF00]
    msg = make_pointcloud2(pts, make_header(0, "c", types), types)
    expected = b"".join(struct.pack("<fff4xI12x", x, 0.0, 0.0, c)
                        for x, c in ((1.0, 0x00FF0000), (2.0, 0x0000FF00)))
    assert bytes(msg.data) == expected and msg.point_step == 32 and msg.is_dense is True
    assert [f.offset for f in msg.fields] == [0, 4, 8, 16]


def test_pointcloud2_to_numpy_big_endian_and_row_padding():
    """A big-endian organized cloud with 5 junk bytes at the end of each row, packed by hand."""
    fields = [FakeImage(name="x", offset=0, datatype=7, count=1),
              FakeImage(name="intensity", offset=4, datatype=4, count=1),
              FakeImage(name="t", offset=8, datatype=8, count=1)]
    rows, want = [], []
    for r in range(2):
        row = b""
        for c in range(3):
            x, i, t = r * 10.0 + c, r * 100 + c, r + c / 8
            want.append((x, i, t))
            row += struct.pack(">fH2xd", x, i, t)
        rows.append(row + b"\xab" * 5)
    msg = FakeImage(height=2, width=3, fields=fields, is_bigendian=True, point_step=16,
                    row_step=16 * 3 + 5, data=b"".join(rows), is_dense=True)
    out = pointcloud2_to_numpy(msg)
    assert out.shape == (2, 3) and out.dtype["intensity"] == np.dtype("=u2")
    np.testing.assert_array_equal(out["x"].ravel(), [w[0] for w in want])
    np.testing.assert_array_equal(out["intensity"].ravel(), [w[1] for w in want])
    np.testing.assert_array_equal(out["t"].ravel(), [w[2] for w in want])


@pytest.mark.parametrize("change, match", [
    (dict(point_step=0), "point_step is 0"),
    (dict(row_step=10), "row_step"),
    (dict(data=b"\0" * 31), "expected row_step"),
    (dict(fields=[]), "no fields"),
])
def test_pointcloud2_errors(change, match):
    fields = [FakeImage(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
    msg = dict(height=1, width=2, fields=fields, is_bigendian=False, point_step=16, row_step=32,
               data=b"\0" * 32, is_dense=True)
    msg.update(change)
    with pytest.raises(MessageError, match=match):
        pointcloud2_to_numpy(FakeImage(**msg))


def test_pointcloud2_field_layout_errors():
    def cloud(fields):
        return FakeImage(height=1, width=1, fields=fields, is_bigendian=False, point_step=8,
                         row_step=8, data=b"\0" * 8, is_dense=True)

    f = FakeImage
    with pytest.raises(MessageError, match="overlap"):
        pointcloud2_to_numpy(cloud([f(name="x", offset=0, datatype=7, count=1),
                                    f(name="y", offset=2, datatype=7, count=1)]))
    with pytest.raises(MessageError, match="exceeds point_step"):
        pointcloud2_to_numpy(cloud([f(name="x", offset=6, datatype=7, count=1)]))
    with pytest.raises(MessageError, match="unknown datatype"):
        pointcloud2_to_numpy(cloud([f(name="x", offset=0, datatype=9, count=1)]))
    with pytest.raises(MessageError, match="duplicate"):
        pointcloud2_to_numpy(cloud([f(name="x", offset=0, datatype=7, count=1),
                                    f(name="x", offset=4, datatype=7, count=1)]))
    with pytest.raises(MessageError, match="float32 field 'z'"):
        make_pointcloud2(np.zeros(2, dtype=[("x", "f4"), ("y", "f4")]), None,
                         MessageTypes.rclpy())
    with pytest.raises(MessageError, match="structured"):
        make_pointcloud2(np.zeros((2, 3), np.float32), None, MessageTypes.rclpy())


# --------------------------------------------------------------------------- fuzz


def _random_value(rng: np.random.Generator):
    choice = rng.integers(0, 8)
    if choice < 4:
        return int(rng.integers(0, 40))
    return [-3, 2**33, 1.5, "7", None, True][int(rng.integers(0, 6))]


def test_fuzz_image_converters_raise_only_message_error():
    """Thousands of malformed Image messages: only MessageError escapes, successes are sane.

    Each case starts from a consistent message and then corrupts 0-3 fields at random
    (sizes, step, encoding, data length/type, byte-order flag).
    """
    rng = np.random.default_rng(1234)
    names = sorted(ENCODINGS)
    bad_encodings = ["yuv422", "", "RGB8", None, 5]
    ok = 0
    for _ in range(4000):
        enc = names[int(rng.integers(0, len(names)))]
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        step = w * ENCODINGS[enc].pixel_bytes + int(rng.integers(0, 4))
        fields = dict(height=h, width=w, step=step, encoding=enc,
                      is_bigendian=int(rng.random() < 0.5),
                      data=rng.integers(0, 256, step * h, dtype=np.uint8).tobytes())
        for _ in range(int(rng.integers(0, 4))):
            key = str(rng.choice(list(fields)))
            if key == "encoding":
                fields[key] = bad_encodings[int(rng.integers(0, len(bad_encodings)))]
            elif key == "data":
                raw = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8)
                fields[key] = [raw.tobytes(), raw, raw.tolist(), raw.astype(np.int16) * 3,
                               memoryview(raw.tobytes()), "abc"][int(rng.integers(0, 6))]
            else:
                fields[key] = _random_value(rng)
        msg = FakeImage(**fields)
        for fn in (image_to_numpy, image_to_rgb):
            try:
                out = fn(msg)
            except MessageError:
                continue
            ok += 1
            assert out.shape[:2] == (fields["height"], fields["width"])
    assert ok > 1000  # the generator also produces valid messages


def test_fuzz_pointcloud2_raises_only_message_error():
    """Consistent clouds with 0-3 corrupted fields (sizes, steps, field table, data)."""
    rng = np.random.default_rng(99)
    ok = 0
    for _ in range(3000):
        nfields = int(rng.integers(1, 5))
        fields = [FakeImage(name="xyzi"[i], offset=4 * i, datatype=int(rng.choice([7, 6, 5])),
                            count=1) for i in range(nfields)]
        height, width = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        step = 4 * nfields + int(rng.integers(0, 5))
        row_step = step * width + int(rng.integers(0, 3))
        msg = dict(height=height, width=width, point_step=step, row_step=row_step,
                   fields=fields, is_bigendian=bool(rng.random() < 0.5), is_dense=True,
                   data=rng.integers(0, 256, row_step * height, dtype=np.uint8).tobytes())
        for _ in range(int(rng.integers(0, 4))):
            key = str(rng.choice(["height", "width", "point_step", "row_step", "fields", "data",
                                  "is_bigendian"]))
            if key == "fields":
                f = fields[int(rng.integers(0, nfields))]
                setattr(f, str(rng.choice(["name", "offset", "datatype", "count"])),
                        _random_value(rng))
            elif key == "data":
                msg[key] = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8)
            else:
                msg[key] = _random_value(rng)
        try:
            out = pointcloud2_to_numpy(FakeImage(**msg))
        except MessageError:
            continue
        ok += 1
        assert out.size == msg["height"] * msg["width"]
    assert ok > 500


def test_fuzz_camera_info_raises_only_message_error():
    rng = np.random.default_rng(5)
    ok = 0
    values = np.array([0.0, 1.0, -1.0, np.nan, np.inf, 500.0])
    for _ in range(3000):
        k = np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1])
        p = np.zeros(12) if rng.random() < 0.5 else np.array([400.0, 0, 300, 0, 0, 400, 200,
                                                              0, 0, 0, 1, 0])
        for _ in range(int(rng.integers(0, 3))):
            arr = k if rng.random() < 0.5 else p
            arr[int(rng.integers(0, arr.size))] = rng.choice(values)
        fields = dict(k=k, p=p, binning_x=0, binning_y=0, width=640, height=480,
                      roi=FakeImage(x_offset=0, y_offset=0, width=0, height=0))
        if rng.random() < 0.3:
            key = str(rng.choice(["k", "p", "binning_x", "binning_y"]))
            junk = [_random_value(rng), np.zeros(3), "abc", [1, "x"]]
            fields[key] = junk[int(rng.integers(0, 4))]
        try:
            out = camera_info_to_intrinsics(FakeImage(**fields))
        except MessageError:
            continue
        ok += 1
        assert np.all(np.isfinite(out)) and out[0, 0] > 0 and out[1, 1] > 0
    assert ok > 500


def test_rclpy_messages_pass_strict_field_checks(tmp_path):
    """With ROS_PYTHON_CHECK_FIELDS=1 rclpy validates every field type on assignment."""
    script = tmp_path / "strict.py"
    script.write_text(
        "import numpy as np\n"
        "from rclpy.serialization import serialize_message\n"
        "from oe_depth_ros.messages import *\n"
        "t = MessageTypes.rclpy()\n"
        "h = make_header(5, 'cam', t)\n"
        "assert h._check_fields\n"
        "msgs = [numpy_to_image(np.zeros((4, 5, 3), np.uint8), 'rgb8', h, t),\n"
        "        numpy_to_image(np.zeros((4, 5), np.float32), '32FC1', h, t),\n"
        "        make_camera_info(np.eye(3), 5, 4, h, t),\n"
        "        make_pointcloud2(np.zeros(3, [('x', 'f4'), ('y', 'f4'), ('z', 'f4'),\n"
        "                                      ('rgb', 'u4')]), h, t)]\n"
        "print(sum(len(serialize_message(m)) for m in msgs))\n")
    env = {**os.environ, "ROS_PYTHON_CHECK_FIELDS": "1"}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0


def test_message_data_is_a_copy_made_once(types):
    """The message owns its bytes: changing the source array afterwards changes nothing."""
    pts = np.zeros(4, [("x", "f4"), ("y", "f4"), ("z", "f4")])
    pts["z"] = [1, 2, np.nan, 4]
    header = make_header(0, "c", types)
    msg = make_pointcloud2(pts, header, types)
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    img_msg = numpy_to_image(image, "32FC1", header, types)
    before, before_img = bytes(msg.data), bytes(img_msg.data)
    pts["z"] = 0
    image[:] = -1
    assert bytes(msg.data) == before and bytes(img_msg.data) == before_img
    assert not msg.is_dense
    assert make_pointcloud2(pts, header, types).is_dense
    assert not make_pointcloud2(pts, header, types, is_dense=False).is_dense
