"""kitti2bag on the synthetic KITTI drive, read back independently of rosbags.

MCAP bags are read with the ``mcap`` library and ``mcap_ros2``'s decoder, sqlite3 bags
with plain ``sqlite3`` and the same decoder fed the bag's stored message definitions;
every expected value comes from the drive's files (PNG pixels via PIL, calibration
and oxts text parsed here, timestamps parsed as UTC with ``datetime``).
"""
from __future__ import annotations

import math
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zstandard
from mcap.reader import make_reader
from mcap.records import Schema
from mcap_ros2.decoder import DecoderFactory
from PIL import Image
from scipy.spatial.transform import Rotation

from bag_helpers import calib_text
from oe_depth_ros.bags.bagio import BagError, BagReader
from oe_depth_ros.bags.kitti2bag import convert
from oe_depth_ros.cli import main as cli_main

FRAMES = 8
CAMERA_NAMES = {0: "camera_gray_left", 1: "camera_gray_right", 2: "camera_color_left",
                3: "camera_color_right"}


# ------------------------------------------------------------- independent readers


def _utc_ns(line: str) -> int:
    whole, frac = line.strip().split(".")
    base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0"))


def _stamps(drive: Path, sensor: str) -> list[int]:
    return [_utc_ns(x) for x in (drive / sensor / "timestamps.txt").read_text().splitlines()
            if x.strip()]


def _rigid(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = r.reshape(3, 3), t
    return out


def raw_records(bag: Path) -> tuple[list[tuple[str, str, int, bytes]], dict, dict]:
    """[(topic, type, log time, CDR bytes)] in storage order, type -> definition, topic -> QoS.

    MCAP through the ``mcap`` library (which undoes chunk compression), sqlite3 through
    ``sqlite3`` plus ``zstandard`` for message-compressed bags.
    """
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    (name,) = meta["relative_file_paths"]
    path = bag / name
    records, defs, qos = [], {}, {}
    if meta["storage_identifier"] == "mcap":
        with path.open("rb") as f:
            for schema, channel, message in make_reader(f).iter_messages(log_time_order=False):
                records.append((channel.topic, schema.name, message.log_time, message.data))
                defs[schema.name] = schema.data.decode()
                qos[channel.topic] = channel.metadata["offered_qos_profiles"]
        return records, defs, qos
    unpack = (zstandard.ZstdDecompressor().decompress
              if meta["compression_mode"] == "message" else bytes)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        defs = dict(con.execute("SELECT topic_type, encoded_message_definition "
                                "FROM message_definitions WHERE encoding = 'ros2msg'"))
        topics = {i: (n, t, q) for i, n, t, q in con.execute(
            "SELECT id, name, type, offered_qos_profiles FROM topics")}
        for topic_id, stamp, data in con.execute(
                "SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            topic, msgtype, q = topics[topic_id]
            records.append((topic, msgtype, stamp, unpack(data)))
            qos[topic] = q
    finally:
        con.close()
    return records, defs, qos


def read_independently(bag: Path) -> tuple[list[tuple[str, str, int, Any]], dict[str, str]]:
    """[(topic, type, log time, decoded message)] in storage order, and topic -> QoS text."""
    records, defs, qos = raw_records(bag)
    decoders = {}
    for i, (msgtype, definition) in enumerate(sorted(defs.items()), start=1):
        schema = Schema(id=i, name=msgtype, encoding="ros2msg", data=definition.encode())
        decoders[msgtype] = DecoderFactory().decoder_for("cdr", schema)
    return [(t, ty, stamp, decoders[ty](data)) for t, ty, stamp, data in records], qos


def _header_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def drive(synth_world) -> Path:
    return synth_world.drive_dirs[0]


@pytest.fixture(scope="module")
def bags(drive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("kitti2bag")
    convert(drive, out / "jazzy_mcap", "mcap", "jazzy", cameras=[0, 1, 2, 3], progress=False)
    convert(drive, out / "humble_sqlite", "sqlite3", "humble", cameras=[2], progress=False)
    return {"mcap": out / "jazzy_mcap", "sqlite3": out / "humble_sqlite"}


CASES = [("mcap", 9, [0, 1, 2, 3]), ("sqlite3", 8, [2])]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("storage,version,cameras", CASES)
def test_metadata_topics_counts_and_order(bags, drive, storage, version, cameras) -> None:
    bag = bags[storage]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == version
    assert meta["storage_identifier"] == storage
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert meta["relative_file_paths"] == [bag.name + suffix]
    expected = {"/tf_static": ("tf2_msgs/msg/TFMessage", 1),
                "/tf": ("tf2_msgs/msg/TFMessage", FRAMES),
                "/kitti/velo/pointcloud": ("sensor_msgs/msg/PointCloud2", FRAMES),
                "/kitti/oxts/imu": ("sensor_msgs/msg/Imu", FRAMES),
                "/kitti/oxts/gps/fix": ("sensor_msgs/msg/NavSatFix", FRAMES)}
    for cam in cameras:
        expected[f"/kitti/{CAMERA_NAMES[cam]}/image_raw"] = ("sensor_msgs/msg/Image", FRAMES)
        info_type = "sensor_msgs/msg/CameraInfo"
        expected[f"/kitti/{CAMERA_NAMES[cam]}/camera_info"] = (info_type, FRAMES)
    messages, _ = read_independently(bag)
    got: dict[str, list] = {}
    for topic, msgtype, _, _ in messages:
        got.setdefault(topic, []).append(msgtype)
    assert {t: (ts[0], len(ts)) for t, ts in got.items()} == expected
    assert meta["message_count"] == sum(n for _, n in expected.values()) == len(messages)
    stamps = [m[2] for m in messages]
    assert stamps == sorted(stamps), "messages are not written in time order"
    # rosbags reads the same bag back with the same counts.
    with BagReader(bag) as reader:
        assert reader.topics() == {t: ty for t, (ty, _) in expected.items()}
        assert {t: reader.message_count(t) for t in expected} == {
            t: n for t, (_, n) in expected.items()}


@pytest.mark.parametrize("storage,version,cameras", CASES)
def test_sensor_messages_match_the_drive_files(bags, drive, storage, version, cameras) -> None:
    messages, _ = read_independently(bags[storage])
    by_topic: dict[str, list] = {}
    for topic, _, log_time, msg in messages:
        by_topic.setdefault(topic, []).append((log_time, msg))
    calib = calib_text(drive.parent / "calib_cam_to_cam.txt")
    for cam in cameras:
        name = CAMERA_NAMES[cam]
        stamps = _stamps(drive, f"image_{cam:02d}")
        images = by_topic[f"/kitti/{name}/image_raw"]
        infos = by_topic[f"/kitti/{name}/camera_info"]
        p_rect = calib[f"P_rect_{cam:02d}"].reshape(3, 4)
        for idx, ((t_img, img), (t_info, info)) in enumerate(zip(images, infos)):
            assert t_img == t_info == _header_ns(img) == _header_ns(info) == stamps[idx]
            assert img.header.frame_id == info.header.frame_id == name
            png = Image.open(drive / f"image_{cam:02d}" / "data" / f"{idx:010d}.png")
            pixels = np.asarray(png.convert("RGB" if cam >= 2 else "L"))
            assert img.encoding == ("rgb8" if cam >= 2 else "mono8")
            assert (img.height, img.width) == pixels.shape[:2]
            assert img.step == pixels.shape[1] * (3 if cam >= 2 else 1)
            assert bytes(img.data) == pixels.tobytes()
            assert (info.height, info.width) == pixels.shape[:2]
            np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), p_rect[:, :3])
            np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], p_rect[:, :3])
            assert list(info.d) == [0.0] * 5 and info.distortion_model == "plumb_bob"
            np.testing.assert_array_equal(np.reshape(info.r, (3, 3)), np.eye(3))
        if cam in (1, 3):  # right camera: ROS stereo term Tx = -fx * baseline
            fx = p_rect[0, 0]
            left = calib[f"P_rect_{cam - 1:02d}"].reshape(3, 4)
            baseline = left[0, 3] / left[0, 0] - p_rect[0, 3] / fx
            assert baseline > 0.3
            assert np.reshape(infos[0][1].p, (3, 4))[0, 3] == pytest.approx(-fx * baseline)
        else:
            assert np.reshape(infos[0][1].p, (3, 4))[:, 3].tolist() == [0.0, 0.0, 0.0]

    velo_stamps = _stamps(drive, "velodyne_points")
    for idx, (t, cloud) in enumerate(by_topic["/kitti/velo/pointcloud"]):
        assert t == _header_ns(cloud) == velo_stamps[idx]
        assert cloud.header.frame_id == "velo_link"
        assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
            ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
        raw = (drive / "velodyne_points" / "data" / f"{idx:010d}.bin").read_bytes()
        assert (cloud.height, cloud.width, cloud.point_step) == (1, len(raw) // 16, 16)
        assert cloud.row_step == len(raw) and not cloud.is_bigendian
        assert bytes(cloud.data) == raw

    oxts_stamps = _stamps(drive, "oxts")
    packets = [np.array([float(v) for v in (drive / "oxts" / "data" / f"{i:010d}.txt")
                         .read_text().split()]) for i in range(FRAMES)]
    oxts_msgs = zip(by_topic["/kitti/oxts/imu"], by_topic["/kitti/oxts/gps/fix"])
    for idx, ((t_imu, imu), (t_fix, fix)) in enumerate(oxts_msgs):
        pk = packets[idx]
        assert t_imu == t_fix == _header_ns(imu) == _header_ns(fix) == oxts_stamps[idx]
        assert imu.header.frame_id == fix.header.frame_id == "imu_link"
        acc, gyro = imu.linear_acceleration, imu.angular_velocity
        assert (acc.x, acc.y, acc.z) == tuple(pk[14:17])        # af, al, au
        assert (gyro.x, gyro.y, gyro.z) == tuple(pk[20:23])     # wf, wl, wu
        q = np.array([imu.orientation.x, imu.orientation.y, imu.orientation.z,
                      imu.orientation.w])
        expected_q = Rotation.from_euler("ZYX", [pk[5], pk[4], pk[3]]).as_quat()
        assert min(np.abs(q - expected_q).max(), np.abs(q + expected_q).max()) < 1e-12
        assert (fix.latitude, fix.longitude, fix.altitude) == tuple(pk[0:3])


def _devkit_poses(packets: list[np.ndarray]) -> list[np.ndarray]:
    """The KITTI devkit's oxts poses, written out independently."""
    earth = 6378137.0
    scale = math.cos(packets[0][0] * math.pi / 180.0)
    poses = []
    for pk in packets:
        lat, lon, alt, roll, pitch, yaw = pk[:6]
        t = [scale * lon * math.pi * earth / 180.0,
             scale * earth * math.log(math.tan((90.0 + lat) * math.pi / 360.0)), alt]
        poses.append(_rigid(Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix(),
                            np.array(t)))
    return [np.linalg.inv(poses[0]) @ p for p in poses]


def _transform(msg: Any) -> np.ndarray:
    tr, rot = msg.transform.translation, msg.transform.rotation
    return _rigid(Rotation.from_quat([rot.x, rot.y, rot.z, rot.w]).as_matrix(),
                  np.array([tr.x, tr.y, tr.z]))


@pytest.mark.parametrize("storage,version,cameras", CASES)
def test_transforms_equal_the_calibration_and_oxts_poses(bags, drive, storage, version,
                                                         cameras) -> None:
    messages, qos = read_independently(bags[storage])
    # /tf_static: one message, first in the bag, offered transient local.
    (static,) = [m for m in messages if m[0] == "/tf_static"]
    assert static[2] == messages[0][2] == min(
        _stamps(drive, s)[0] for s in ["velodyne_points", "oxts"] +
        [f"image_{c:02d}" for c in cameras])
    profiles = yaml.safe_load(qos["/tf_static"])
    assert len(profiles) == 1
    # Jazzy (v9) spells the policy, Humble (v8) stores rmw's enum value (1 = transient local).
    assert profiles[0]["durability"] == ("transient_local" if version == 9 else 1)
    meta = yaml.safe_load((bags[storage] / "metadata.yaml").read_text())
    (entry,) = [t["topic_metadata"] for t in meta["rosbag2_bagfile_information"]
                ["topics_with_message_count"] if t["topic_metadata"]["name"] == "/tf_static"]
    meta_qos = entry["offered_qos_profiles"]
    meta_qos = yaml.safe_load(meta_qos) if isinstance(meta_qos, str) else meta_qos
    assert meta_qos[0]["durability"] == profiles[0]["durability"]
    assert yaml.safe_load(qos["/kitti/velo/pointcloud"])[0]["durability"] in ("volatile", 2)

    edges = {(t.header.frame_id, t.child_frame_id): _transform(t)
             for t in static[3].transforms}
    assert set(edges) == ({("base_link", "imu_link"), ("imu_link", "velo_link")}
                          | {("velo_link", CAMERA_NAMES[c]) for c in cameras})
    cam_calib = calib_text(drive.parent / "calib_cam_to_cam.txt")
    velo = calib_text(drive.parent / "calib_velo_to_cam.txt")
    imu = calib_text(drive.parent / "calib_imu_to_velo.txt")
    t_cam0_velo = _rigid(velo["R"], velo["T"])
    r_rect = _rigid(cam_calib["R_rect_00"], np.zeros(3))
    np.testing.assert_allclose(edges[("base_link", "imu_link")], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(edges[("imu_link", "velo_link")]),
                               _rigid(imu["R"], imu["T"]), atol=1e-9)
    for cam in cameras:
        p = cam_calib[f"P_rect_{cam:02d}"].reshape(3, 4)
        # Devkit: rectified camera X = translation (P[:, 3] / f) after R_rect_00 [R|T].
        offset = _rigid(np.eye(3), np.linalg.solve(p[:, :3], p[:, 3]))
        expected = offset @ r_rect @ t_cam0_velo
        np.testing.assert_allclose(np.linalg.inv(edges[("velo_link", CAMERA_NAMES[cam])]),
                                   expected, atol=1e-9)

    packets = [np.array([float(v) for v in (drive / "oxts" / "data" / f"{i:010d}.txt")
                         .read_text().split()]) for i in range(FRAMES)]
    poses = _devkit_poses(packets)
    tf_msgs = [m for m in messages if m[0] == "/tf"]
    oxts_stamps = _stamps(drive, "oxts")
    for idx, (_, _, log_time, msg) in enumerate(tf_msgs):
        (t,) = msg.transforms
        assert (t.header.frame_id, t.child_frame_id) == ("world", "base_link")
        assert log_time == _header_ns(t) == oxts_stamps[idx]
        np.testing.assert_allclose(_transform(t), poses[idx], atol=1e-6)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_compressed_bag_holds_the_same_messages(drive, tmp_path, storage) -> None:
    plain = convert(drive, tmp_path / "plain", storage, max_frames=2, progress=False)
    packed = convert(drive, tmp_path / "packed", storage, max_frames=2, compress=True,
                     progress=False)
    assert packed.size_bytes < 0.9 * plain.size_bytes
    meta = yaml.safe_load((tmp_path / "packed" / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    if storage == "mcap":  # compressed chunks inside the MCAP file, as ros2 bag writes them
        assert (info["compression_mode"], info["compression_format"]) == ("", "")
        with (tmp_path / "packed" / "packed.mcap").open("rb") as f:
            chunks = make_reader(f).get_summary().chunk_indexes
        assert chunks and {c.compression for c in chunks} == {"zstd"}
    else:
        assert (info["compression_mode"], info["compression_format"]) == ("message", "zstd")
    assert raw_records(tmp_path / "packed")[0] == raw_records(tmp_path / "plain")[0]
    with BagReader(tmp_path / "packed") as reader:
        assert sum(1 for _ in reader.messages()) == info["message_count"]


# ------------------------------------------------------------------ failure modes


@pytest.fixture
def drive_copy(drive: Path, tmp_path: Path) -> Path:
    """A private copy of the drive and its calibration, safe to damage."""
    date = tmp_path / "data" / drive.parent.name
    date.mkdir(parents=True)
    for calib in drive.parent.glob("calib_*.txt"):
        shutil.copy(calib, date)
    shutil.copytree(drive, date / drive.name)
    return date / drive.name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_failure_mid_way_leaves_nothing(drive_copy: Path, tmp_path: Path) -> None:
    (drive_copy / "image_02" / "data" / "0000000003.png").write_bytes(b"not a png at all")
    out_dir = tmp_path / "bags"
    out_dir.mkdir()
    with pytest.raises(ValueError, match="0000000003.png"):
        convert(drive_copy, out_dir / "bag", progress=False)
    assert _leftovers(out_dir) == []


def test_existing_output_is_refused_unless_overwrite(drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    convert(drive, out, "sqlite3", "humble", max_frames=3, progress=False)
    with pytest.raises(BagError, match="exists already; pass --overwrite"):
        convert(drive, out, progress=False)
    summary = convert(drive, out, "mcap", "jazzy", max_frames=2, overwrite=True, progress=False)
    assert summary.message_counts["/kitti/camera_color_left/image_raw"] == 2
    assert _leftovers(tmp_path) == ["bag"]
    assert sorted(p.name for p in out.iterdir()) == ["bag.mcap", "metadata.yaml"]


def test_image_count_must_match_timestamps(drive_copy: Path, tmp_path: Path) -> None:
    (drive_copy / "image_02" / "data" / f"{FRAMES - 1:010d}.png").unlink()
    with pytest.raises(BagError, match=rf"image_02: {FRAMES - 1} .png files in data/ but "
                                       rf"{FRAMES} timestamps"):
        convert(drive_copy, tmp_path / "bag", progress=False)
    assert not (tmp_path / "bag").exists()


def test_sensor_frame_counts_must_agree(drive_copy: Path, tmp_path: Path) -> None:
    oxts = drive_copy / "oxts"
    (oxts / "data" / f"{FRAMES - 1:010d}.txt").unlink()
    lines = (oxts / "timestamps.txt").read_text().splitlines()[:-1]
    (oxts / "timestamps.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BagError, match="different frame counts"):
        convert(drive_copy, tmp_path / "bag", progress=False)


def test_missing_calibration_is_named(drive_copy: Path, tmp_path: Path) -> None:
    (drive_copy.parent / "calib_velo_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match="calib_velo_to_cam.txt"):
        convert(drive_copy, tmp_path / "bag", progress=False)


def test_bad_timestamp_line_is_named(drive_copy: Path, tmp_path: Path) -> None:
    stamps = drive_copy / "velodyne_points" / "timestamps.txt"
    lines = stamps.read_text().splitlines()
    lines[2] = "yesterday at noon"
    stamps.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"velodyne_points/timestamps.txt:3"):
        convert(drive_copy, tmp_path / "bag", progress=False)


def test_command_line(drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_bag"
    args = ["kitti2bag", str(drive), str(out), "--storage", "sqlite3", "--distro", "humble",
            "--cameras", "2", "3", "--max-frames", "3", "--no-progress"]
    assert cli_main(args) == 0
    with BagReader(out) as reader:
        assert reader.info.version == 8 and reader.info.storage == "sqlite3"
        assert reader.message_count("/kitti/camera_color_right/image_raw") == 3
    assert cli_main(args) == 1  # exists: refused with a logged error
