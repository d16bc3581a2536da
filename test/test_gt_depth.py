"""Ground-truth projection, the improved-GT reader and the pickle-free cache."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from oe_depth_ros.kitti.splits import SplitEntry, read_split_file
from oe_depth_ros.lidar_projection import project_velodyne
from oe_depth_ros.kitti.raw import read_depth_png
from training.gt_depth import (
    CACHE_FORMAT,
    CachedGroundTruth,
    ImprovedGroundTruth,
    VelodyneGroundTruth,
    export_gt_cache,
    improved_gt_path,
    main as gt_depth_main,
    velodyne_to_image_matrix,
)

REPO = Path(__file__).resolve().parents[1]

# Camera looking along velodyne +x: camera x = -velo y, camera y = -velo z, camera z = velo x.
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
P_RECT = np.array([[100.0, 0.0, 50.3, 0.0], [0.0, 100.0, 20.6, 0.0], [0.0, 0.0, 1.0, 0.0]])


def test_projection_hand_worked():
    points = np.array([
        [10.0, 0.0, 0.0, 0.5],    # u = 50.3, v = 20.6 -> pixel (col 49, row 20)
        [10.0, 1.0, 0.0, 0.5],    # u = 50.3 - 10 = 40.3 -> col 39, row 20, depth 10
        [20.0, 2.0, 0.0, 0.5],    # u = 50.3 - 10 = 40.3 -> same pixel, farther: dropped
        [-5.0, 0.0, 0.0, 0.5],    # behind (velodyne x < 0): dropped
        [10.0, -10.0, 0.0, 0.5],  # u = 150.3 -> col 149, outside a 100-wide image
        [4.0, 0.0, 0.2, 0.5],     # v = 20.6 - 100 * 0.2 / 4 = 15.6 -> row 15, col 49
    ], dtype=np.float32)
    matrix = velodyne_to_image_matrix(P_RECT, np.eye(3), VELO_TO_CAM)
    depth = project_velodyne(points, matrix, (40, 100))
    expected = np.zeros((40, 100), dtype=np.float32)
    expected[20, 49] = 10.0
    expected[20, 39] = 10.0
    expected[15, 49] = 4.0
    np.testing.assert_array_equal(depth, expected)


def test_projection_uses_rectification_rotation():
    # A 90-degree rotation about the optical axis in R_rect swaps image axes.
    r_rect = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    point = np.array([[10.0, -1.0, 0.0, 0.0]], dtype=np.float32)  # camera (1, 0, 10)
    # rectified (0, 1, 10): u = 50.3 -> col 49, v = 20.6 + 10 = 30.6 -> row 30
    depth = project_velodyne(point, velodyne_to_image_matrix(P_RECT, r_rect, VELO_TO_CAM),
                             (40, 100))
    assert depth[30, 49] == 10.0 and np.count_nonzero(depth) == 1


def naive_projection(points, calib, camera, height, width):
    """Per-point loop, composing the matrices element by element in plain Python."""
    p = calib.P_rect[camera].tolist()
    r = calib.R_rect[0].tolist()
    t = calib.T_velo_to_cam.tolist()
    best: dict[tuple[int, int], float] = {}
    for x, y, z, _ in points.tolist():
        if x < 0:
            continue
        cam = [t[i][0] * x + t[i][1] * y + t[i][2] * z + t[i][3] for i in range(3)]
        rect = [sum(r[i][j] * cam[j] for j in range(3)) for i in range(3)] + [1.0]
        u, v, w = (sum(p[i][j] * rect[j] for j in range(4)) for i in range(3))
        if w == 0:
            continue
        col, row = round(u / w) - 1, round(v / w) - 1
        if 0 <= col < width and 0 <= row < height:
            if (row, col) not in best or x < best[(row, col)]:
                best[(row, col)] = x
    out = np.zeros((height, width), dtype=np.float32)
    for (row, col), d in best.items():
        out[row, col] = d
    return out


def test_projection_matches_naive_loop_on_synthetic_scans(synth_world):
    from oe_depth_ros.kitti.raw import KittiDrive

    drive = KittiDrive(synth_world.drive_dirs[0])
    source = VelodyneGroundTruth(synth_world.root)
    width, height = (int(v) for v in drive.calib.S_rect[2])
    assert drive.image(2, 0).shape[:2] == (height, width)
    for frame in (0, 3):
        folder = f"{drive.date}/{drive.name}"
        fast = source.get(frame, SplitEntry(folder, frame, "l"))
        slow = naive_projection(drive.velodyne(frame), drive.calib, 2, height, width)
        assert fast.shape == (height, width)
        assert np.count_nonzero(slow) > 100
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)


def test_synthetic_lidar_agrees_with_dense_gt(synth_world):
    """Both GT sources of the synthetic world describe the same scene."""
    entries = read_split_file(synth_world.split_files["test"])
    velo = VelodyneGroundTruth(synth_world.root).get(0, entries[0])
    dense = ImprovedGroundTruth(synth_world.root).get(0, entries[0])
    both = (velo > 1) & (velo < 80) & (dense > 0)
    assert both.sum() > 50
    rel = np.abs(velo[both] - dense[both]) / dense[both]
    assert np.median(rel) < 0.05


def test_read_depth_png(tmp_path):
    raw = np.array([[0, 256, 512], [2560, 65535, 1]], dtype=np.uint16)
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), raw)
    depth = read_depth_png(path)
    np.testing.assert_array_equal(depth, [[0.0, 1.0, 2.0], [10.0, 65535 / 256, 1 / 256]])
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint16"):
        read_depth_png(tmp_path / "rgb.png")
    with pytest.raises(FileNotFoundError):
        read_depth_png(tmp_path / "none.png")
    entry = SplitEntry("d/dr", 7, "r")
    assert improved_gt_path("/k", entry) == Path(
        "/k/d/dr/proj_depth/groundtruth/image_03/0000000007.png")


class _ListSource:
    """A ground-truth source over in-memory maps (exercises the real cache code)."""

    description = "list"

    def __init__(self, maps):
        self.maps = maps

    def get(self, index, entry):
        return self.maps[index]


def test_cache_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    maps = [rng.uniform(0, 80, (5, 7)).astype(np.float32), np.zeros((3, 4), np.float32)]
    maps[1][1, 2] = 12.5
    entries = [SplitEntry("d/a", 1, "l"), SplitEntry("d/b", 22, "r")]
    out = export_gt_cache(_ListSource(maps), entries, tmp_path / "gt.npz", progress=False)
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["format.npy", "gt_00000.npy", "gt_00001.npy",
                                        "lines.npy", "sizes.npy", "source.npy"]
    with np.load(out, allow_pickle=False) as raw:
        assert str(raw["format"]) == CACHE_FORMAT
        np.testing.assert_array_equal(raw["sizes"], [[5, 7], [3, 4]])
    cache = CachedGroundTruth(out, entries)
    assert len(cache) == 2 and cache.lines == ["d/a 0000000001 l", "d/b 0000000022 r"]
    for i, (entry, m) in enumerate(zip(entries, maps)):
        np.testing.assert_array_equal(cache.get(i, entry), m)
    with pytest.raises(ValueError, match="holds 2 images but the split has 1"):
        CachedGroundTruth(out, entries[:1])
    with pytest.raises(ValueError, match="entry 1 is"):
        CachedGroundTruth(out, [entries[0], SplitEntry("d/b", 23, "r")])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_cache_rejects_other_npz(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a ground-truth cache"):
        CachedGroundTruth(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        export_gt_cache(_ListSource([]), [], tmp_path / "gt.bin")


def test_export_command_on_synthetic_world(synth_world, tmp_path):
    out = tmp_path / "test_gt.npz"
    split = synth_world.split_files["test"]
    proc = subprocess.run(
        [sys.executable, "-m", "training.gt_depth", "--data-path", str(synth_world.root),
         "--split-file", str(split), "--out", str(out), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    entries = read_split_file(split)
    cache = CachedGroundTruth(out, entries)
    direct = VelodyneGroundTruth(synth_world.root)
    for i, entry in enumerate(entries):
        np.testing.assert_array_equal(cache.get(i, entry), direct.get(i, entry))


def test_pixel_offset_shifts_the_velodyne_map(synth_world, tmp_path):
    """Offset 0 puts every point one row and column further than the KITTI protocol's -1."""
    entries = read_split_file(synth_world.split_files["test"])[:2]
    kitti = VelodyneGroundTruth(synth_world.root)
    zero = VelodyneGroundTruth(synth_world.root, pixel_offset=0)
    for i, entry in enumerate(entries):
        a, b = kitti.get(i, entry), zero.get(i, entry)
        assert np.count_nonzero(a) > 100
        np.testing.assert_array_equal(b[1:, 1:], a[:-1, :-1])
    with pytest.raises(ValueError, match="pixel offset"):
        VelodyneGroundTruth(synth_world.root, pixel_offset=1)
    out = tmp_path / "zero.npz"
    split = tmp_path / "two.txt"
    split.write_text("".join(e.line + "\n" for e in entries))
    assert gt_depth_main(["--data-path", str(synth_world.root), "--split-file", str(split),
                          "--out", str(out), "--velodyne-pixel-offset", "0",
                          "--no-progress"]) == 0
    cache = CachedGroundTruth(out, entries)
    assert cache.source == "velodyne (pixel offset 0)"
    for i, entry in enumerate(entries):
        np.testing.assert_array_equal(cache.get(i, entry), zero.get(i, entry))


def test_export_command_reports_bad_split(tmp_path):
    split = tmp_path / "bad.txt"
    split.write_text("nonsense\n")
    proc = subprocess.run(
        [sys.executable, "-m", "training.gt_depth", "--data-path", str(tmp_path),
         "--split-file", str(split), "--out", str(tmp_path / "x.npz")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "bad.txt:1" in proc.stderr
    assert not (tmp_path / "x.npz").exists()
