"""The KITTI raw reader: formats, errors that name file and line, devkit poses."""
from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from oe_depth_ros.kitti import raw
from oe_depth_ros.kitti.raw import (KittiDrive, KittiFormatError, OxtsPacket, format_oxts,
                                    format_timestamp, oxts_poses, parse_oxts, parse_timestamp,
                                    read_calib, read_timestamps)


def test_timestamp_is_exact_to_the_nanosecond() -> None:
    text = "2011-09-26 13:02:25.964389445"
    seconds = int(dt.datetime(2011, 9, 26, 13, 2, 25, tzinfo=dt.timezone.utc).timestamp())
    assert parse_timestamp(text) == seconds * 10**9 + 964389445
    # A float64 cannot hold this value: the parse must not go through floats.
    assert int(float(parse_timestamp(text))) != parse_timestamp(text)
    assert parse_timestamp("2011-09-26 13:02:25.5") == seconds * 10**9 + 500_000_000
    assert parse_timestamp("2011-09-26 13:02:25") == seconds * 10**9
    assert format_timestamp(parse_timestamp(text)) == text


def test_timestamp_is_utc_whatever_the_local_zone(monkeypatch) -> None:
    if not hasattr(time, "tzset"):
        pytest.skip("no time.tzset on this platform")
    expected = parse_timestamp("2011-09-26 13:02:25.964389445")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert parse_timestamp("2011-09-26 13:02:25.964389445") == expected
        assert expected // 10**9 == 1317042145   # 2011-09-26T13:02:25Z
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("bad", ["2011-09-26T13:02:25.1", "2011-13-26 13:02:25.1",
                                 "2011-02-30 00:00:00", "2011-09-26 13:02:25.1234567890", ""])
def test_bad_timestamps(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_timestamps_file_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "timestamps.txt"
    path.write_text("2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.0\ngarbage\n")
    with pytest.raises(KittiFormatError, match=r"timestamps\.txt:3: not a KITTI timestamp") as exc:
        read_timestamps(path)
    assert exc.value.line == 3 and exc.value.path == path
    path.write_text("2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.0\n")
    np.testing.assert_array_equal(np.diff(read_timestamps(path)), [35_610_555])
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_timestamps(tmp_path / "nothere" / "timestamps.txt")


def _copy_calib(synth_world, tmp_path: Path) -> Path:
    src = Path(synth_world.root) / "2020_06_01"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_calibration_matrices(synth_world, tmp_path: Path) -> None:
    calib = read_calib(_copy_calib(synth_world, tmp_path))
    # Values read straight from the text, independently of the reader.
    values = {}
    for line in (tmp_path / "calib_cam_to_cam.txt").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = rest.split()
    p2 = np.array(values["P_rect_02"], dtype=float).reshape(3, 4)
    r0 = np.array(values["R_rect_00"], dtype=float).reshape(3, 3)
    np.testing.assert_array_equal(calib.P_rect[2], p2)
    np.testing.assert_array_equal(calib.K_cam2, p2[:, :3])
    np.testing.assert_array_equal(calib.R_rect_00[:3, :3], r0)
    assert calib.S_rect[2].tolist() == [416, 128]
    # Projecting a Velodyne point 20 m ahead, 1 m left, at the cameras' height (0.08 m below).
    point = np.array([20.0, 1.0, -0.08, 1.0])
    cam = calib.T_velo_to_rect(2) @ point
    # Camera 2 sits 0.27 m ahead of and 0.06 m left of the Velodyne: x = -(1 - 0.06), z = 19.73.
    np.testing.assert_allclose(cam[:3], [-0.94, 0.0, 19.73], atol=1e-9)
    uvw = calib.P_velo_to_cam2_image @ point
    k = p2[:, :3]
    np.testing.assert_allclose(uvw[:2] / uvw[2], [k[0, 2] - k[0, 0] * 0.94 / 19.73, k[1, 2]],
                               atol=1e-9)
    # IMU -> Velodyne: the Velodyne sits 0.81 m ahead, 0.32 m right and 0.80 m above the IMU.
    np.testing.assert_allclose(calib.T_imu_to_velo @ [0.81, -0.32, 0.80, 1.0], [0, 0, 0, 1],
                               atol=1e-12)


def test_calibration_errors_name_file_line_and_key(synth_world, tmp_path: Path) -> None:
    date = _copy_calib(synth_world, tmp_path)
    c2c = date / "calib_cam_to_cam.txt"
    lines = c2c.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("P_rect_02:"))
    good = list(lines)
    lines[row] = "P_rect_02: 1 2 3 x 5 6 7 8 9 10 11 12"
    c2c.write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiFormatError, match=rf"calib_cam_to_cam\.txt:{row + 1}: .*P_rect_02"):
        read_calib(date)
    lines[row] = "P_rect_02: 1 2 3"
    c2c.write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiFormatError,
                       match=rf"calib_cam_to_cam\.txt:{row + 1}: 'P_rect_02' needs 12 values"):
        read_calib(date)
    del lines[row]
    c2c.write_text("\n".join(lines) + "\n")
    with pytest.raises(KittiFormatError, match=r"calib_cam_to_cam\.txt: missing key 'P_rect_02'"):
        read_calib(date)
    c2c.write_text("\n".join(good) + "\nnot a key value line\n")
    with pytest.raises(KittiFormatError, match=rf"calib_cam_to_cam\.txt:{len(good) + 1}:"):
        read_calib(date)
    c2c.write_text("\n".join(good) + "\n")
    (date / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 1\nT: 0 0 nan\n")
    with pytest.raises(KittiFormatError, match=r"calib_velo_to_cam\.txt:2: non-finite"):
        read_calib(date)
    (date / "calib_velo_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"calib_velo_to_cam\.txt"):
        read_calib(date)


def _packet(**kw: float) -> OxtsPacket:
    base = {name: 0.0 for name in raw.OXTS_FIELDS}
    base.update(navstat=4, numsats=10, posmode=4, velmode=4, orimode=0)
    base.update(kw)
    return OxtsPacket(**base)


def test_oxts_round_trip_and_errors(tmp_path: Path) -> None:
    p = _packet(lat=49.015003823272, lon=8.4342971002335, alt=116.43, roll=0.035, pitch=0.009,
                yaw=-2.6087069803847, vf=5.5, numsats=9)
    path = tmp_path / "0000000000.txt"
    path.write_text(format_oxts(p))
    assert parse_oxts(path) == p
    assert len(path.read_text().split()) == 30
    fields = path.read_text().split()
    path.write_text(" ".join(fields[:29]) + "\n")
    with pytest.raises(KittiFormatError, match=r"0000000000\.txt:1: expected 30 values, got 29"):
        parse_oxts(path)
    fields[8] = "fast"
    path.write_text("\n" + " ".join(fields) + "\n")
    with pytest.raises(KittiFormatError, match=r"0000000000\.txt:2: field 'vf' is not a number"):
        parse_oxts(path)


def test_oxts_poses_follow_the_devkit() -> None:
    lat0, lon0 = 49.0, 8.4
    d_lat, d_lon = 1e-5, 2e-5
    yaw, pitch, roll = 0.3, -0.02, 0.01
    p0 = _packet(lat=lat0, lon=lon0, alt=100.0)
    p1 = _packet(lat=lat0 + d_lat, lon=lon0 + d_lon, alt=101.5, roll=roll, pitch=pitch, yaw=yaw)
    poses = oxts_poses([p0, p1])
    np.testing.assert_array_equal(poses[0], np.eye(4))
    er = 6378137.0
    # Near the first latitude the Mercator meters are the local meters north and east.
    north = er * math.radians(d_lat)
    east = er * math.cos(math.radians(lat0)) * math.radians(d_lon)
    np.testing.assert_allclose(poses[1][:3, 3], [east, north, 1.5], rtol=1e-6)
    expected_r = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()
    np.testing.assert_allclose(poses[1][:3, :3], expected_r, atol=1e-12)
    # Relative to the first frame: rotating the first packet rotates the translation.
    q0 = _packet(lat=lat0, lon=lon0, alt=100.0, yaw=math.pi / 2)
    rel = oxts_poses([q0, p1])[1]
    np.testing.assert_allclose(rel[:3, 3], [north, -east, 1.5], rtol=1e-6)


def test_drive_reads_the_synthetic_data(synth_world) -> None:
    drive = KittiDrive(synth_world.drive_dirs[1])
    assert drive.name == "2020_06_01_drive_0002_sync" and drive.date == "2020_06_01"
    assert drive.num_frames == 8
    gray, color = drive.image(0, 2), drive.image(3, 2)
    assert gray.shape == (128, 416) and color.shape == (128, 416, 3)
    assert gray.dtype == color.dtype == np.uint8
    scan = drive.velodyne(2)
    assert scan.dtype == np.float32 and scan.shape[1] == 4 and len(scan) > 50_000
    raw_bytes = drive.velodyne_path(2).read_bytes()
    np.testing.assert_array_equal(scan.ravel(), np.frombuffer(raw_bytes, dtype="<f4"))
    for sensor in raw.SENSORS:
        stamps = drive.timestamps(sensor)
        assert stamps.dtype == np.int64 and len(stamps) == 8
        assert np.all(np.diff(stamps) > 90_000_000) and np.all(np.diff(stamps) < 110_000_000)
    assert drive.image_path(2, 5).name == "0000000005.png"
    assert drive.poses().shape == (8, 4, 4)


def test_drive_errors_name_the_path(synth_world, tmp_path: Path) -> None:
    src = synth_world.drive_dirs[0]
    date = tmp_path / "2020_06_01"
    shutil.copytree(src.parent, date, ignore=shutil.ignore_patterns("*drive_0002*"))
    drive = KittiDrive(date / src.name)
    missing = drive.image_path(2, 99)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        drive.image(2, 99)
    with pytest.raises(FileNotFoundError, match="0000000099.bin"):
        drive.velodyne(99)
    with pytest.raises(FileNotFoundError, match="0000000099.txt"):
        drive.oxts(99)
    drive.velodyne_path(1).write_bytes(b"\0" * 20)
    with pytest.raises(KittiFormatError, match=r"0000000001\.bin: size 20 bytes"):
        drive.velodyne(1)
    drive.image_path(2, 1).write_bytes(b"not a png")
    with pytest.raises(KittiFormatError, match=r"0000000001\.png: cannot decode"):
        drive.image(2, 1)
    with pytest.raises(ValueError, match="camera"):
        drive.image(4, 0)
    with pytest.raises(ValueError, match="sensor"):
        drive.timestamps("gps")
    with pytest.raises(FileNotFoundError, match="missing KITTI drive folder"):
        KittiDrive(tmp_path / "nope")
    os.remove(date / "calib_imu_to_velo.txt")
    with pytest.raises(FileNotFoundError, match="calib_imu_to_velo.txt"):
        _ = KittiDrive(date / src.name).calib
