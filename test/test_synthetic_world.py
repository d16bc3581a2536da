"""The synthetic world: geometry, ground truth and calibration must agree exactly."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from oe_depth_ros.cli import main as cli_main
from oe_depth_ros.kitti.raw import KittiDrive
from oe_depth_ros.synthetic.render import pinhole_grid
from oe_depth_ros.synthetic.rig import IMU_HEIGHT, SPEED_RANGE
from oe_depth_ros.synthetic.dataset import DATE, generate_dataset, plan_drive, split_entries
from oe_depth_ros.synthetic.world import LABEL_ROAD, LABEL_SKY

SEED, FRAMES = 7, 8   # the synth_world fixture's parameters


@pytest.fixture(scope="module")
def drive(synth_world) -> KittiDrive:
    return KittiDrive(synth_world.drive_dirs[0])


def _gt_depth(drive: KittiDrive, idx: int) -> np.ndarray:
    path = drive.drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{idx:010d}.png"
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    return png.astype(np.float64) / 256.0


def _labels(root: Path, drive: KittiDrive, idx: int) -> np.ndarray:
    path = root / "segmentation" / drive.date / drive.name / "image_02" / f"{idx:010d}.png"
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint8 and lab.ndim == 2
    return lab


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_splits(synth_world) -> None:
    root = Path(synth_world.root)
    assert [d.name for d in synth_world.drive_dirs] == [f"{DATE}_drive_0001_sync",
                                                        f"{DATE}_drive_0002_sync"]
    for d in synth_world.drive_dirs:
        for sub in ("image_00", "image_01", "image_02", "image_03"):
            assert len(list((d / sub / "data").glob("*.png"))) == FRAMES
        assert len(list((d / "velodyne_points" / "data").glob("*.bin"))) == FRAMES
        assert len(list((d / "oxts" / "data").glob("*.txt"))) == FRAMES
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        assert (root / DATE / name).is_file()
    lines = {k: Path(v).read_text().splitlines() for k, v in synth_world.split_files.items()}
    assert set(lines) == {"train", "val", "test"}
    assert lines["val"] and lines["train"] and lines["test"]
    for split in ("train", "val"):
        for line in lines[split]:
            folder, frame, side = line.split()
            assert side == "l" and folder == f"{DATE}/{DATE}_drive_0001_sync"
            assert 1 <= int(frame) <= FRAMES - 2          # both neighbors exist
    assert not set(lines["train"]) & set(lines["val"])
    assert all(line.startswith(f"{DATE}/{DATE}_drive_0002_sync ") for line in lines["test"])


def test_reader_round_trip_matches_an_independent_render(synth_world, drive) -> None:
    """Re-rendering a frame from the plan gives the same pixels and points the reader returns."""
    from oe_depth_ros.synthetic.sensors import SensorRig

    plan = plan_drive(SEED, 1, FRAMES)
    rig = SensorRig(drive.calib, 416, 128)
    frame = rig.render(plan.world, plan.imu_pose(3))
    for cam in range(4):
        img = drive.image(cam, 3)
        assert img.dtype == np.uint8
        assert img.shape == ((128, 416, 3) if cam >= 2 else (128, 416))
        np.testing.assert_array_equal(img, frame.images[cam])
    np.testing.assert_array_equal(drive.velodyne(3), frame.points)
    np.testing.assert_array_equal(drive.timestamps("image_02"), plan.stamps)
    np.testing.assert_array_equal(drive.timestamps("oxts"), plan.stamps)
    assert drive.num_frames == FRAMES


def test_oxts_poses_recover_the_trajectory(drive) -> None:
    plan = plan_drive(SEED, 1, FRAMES)
    poses = drive.poses()
    first = np.linalg.inv(plan.imu_pose(0))
    for k in range(FRAMES):
        expected = first @ plan.imu_pose(k)
        np.testing.assert_allclose(poses[k][:3, :3], expected[:3, :3], atol=1e-9)
        np.testing.assert_allclose(poses[k][:3, 3], expected[:3, 3], atol=1e-6)
    speeds = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) / np.diff(plan.times())
    low, high = SPEED_RANGE
    assert np.all((speeds > low - 0.1) & (speeds < high + 0.1))
    packet = drive.oxts(2)
    assert abs(np.hypot(packet.vf, packet.vl) - speeds[2]) < 0.3


def test_rig_geometry(drive) -> None:
    calib = drive.calib
    assert calib.baseline(0, 1) == pytest.approx(0.54, abs=1e-9)
    assert calib.baseline(2, 3) == pytest.approx(0.54, abs=1e-9)
    assert calib.baseline(0, 2) == pytest.approx(0.06, abs=1e-9)
    assert calib.K_cam2[0, 0] == pytest.approx(721.5377 * 416 / 1242)
    # Camera 2's center in the IMU frame: 1.65 m above the road, 1.08 m ahead of the IMU.
    cam_in_imu = np.linalg.inv(calib.T_imu_to_rect(2))[:3, 3]
    assert cam_in_imu[2] + IMU_HEIGHT == pytest.approx(1.65, abs=1e-6)
    assert cam_in_imu[0] == pytest.approx(1.08, abs=1e-6)
    # The rectified optical axis points along the vehicle's x axis.
    axis_in_imu = np.linalg.inv(calib.T_imu_to_rect(2))[:3, :3] @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(axis_in_imu, [1.0, 0.0, 0.0], atol=1e-9)


def test_lidar_agrees_with_dense_depth_through_the_written_calibration(drive) -> None:
    """Pixel centers are at integer coordinates: nearest pixel = round(u), no -1."""
    h, w = 128, 416
    nearest, interpolated = [], []
    for idx in (0, 4, 7):
        pts = drive.velodyne(idx).astype(np.float64)
        assert pts.shape[1] == 4 and np.all((pts[:, 3] >= 0) & (pts[:, 3] < 1))
        proj = (drive.calib.P_velo_to_cam2_image @ np.c_[pts[:, :3], np.ones(len(pts))].T).T
        proj = proj[proj[:, 2] > 0.5]
        uf, vf, z = proj[:, 0] / proj[:, 2], proj[:, 1] / proj[:, 2], proj[:, 2]
        keep = (uf >= 0) & (uf < w - 1) & (vf >= 0) & (vf < h - 1)
        uf, vf, z = uf[keep], vf[keep], z[keep]
        depth = _gt_depth(drive, idx)
        gt = depth[np.round(vf).astype(int), np.round(uf).astype(int)]
        ok = gt > 0
        assert ok.sum() > 500
        nearest.append(np.abs(gt[ok] - z[ok]) / gt[ok])
        # Bilinear GT at the exact projection, where all four neighbors have depth.
        u0, v0 = np.floor(uf).astype(int), np.floor(vf).astype(int)
        a, b = uf - u0, vf - v0
        q = [depth[v0, u0], depth[v0, u0 + 1], depth[v0 + 1, u0], depth[v0 + 1, u0 + 1]]
        both = np.all([c > 0 for c in q], axis=0)
        gt_bi = (1 - a) * (1 - b) * q[0] + a * (1 - b) * q[1] + (1 - a) * b * q[2] + a * b * q[3]
        interpolated.append((np.abs(gt_bi - z) / gt_bi)[both])
    near, inter = np.concatenate(nearest), np.concatenate(interpolated)
    assert np.median(near) < 0.01
    # Exact data: a 2 cm offset or a missing R_rect_00 gives medians above 1% here.
    assert np.median(inter) < 0.001
    assert np.mean(inter < 0.01) > 0.9


def _naive_depth(world, origin: np.ndarray, direction: np.ndarray, far: float) -> float:
    """Nearest hit along one ray by testing every primitive in a plain loop."""
    best = np.inf
    if direction[2] < 0:
        best = -origin[2] / direction[2]
    for i in range(world.size):
        if world.is_sphere[i]:
            oc = origin - world.center[i]
            a, b = direction @ direction, direction @ oc
            disc = b * b - a * (oc @ oc - world.radius[i] ** 2)
            if disc >= 0:
                t = (-b - np.sqrt(disc)) / a
                if 0.05 < t < best:
                    best = t
            continue
        t_enter, t_exit = -np.inf, np.inf
        for k in range(3):
            if direction[k] == 0:
                if not world.lo[i, k] <= origin[k] <= world.hi[i, k]:
                    t_enter = np.inf
                continue
            ta = (world.lo[i, k] - origin[k]) / direction[k]
            tb = (world.hi[i, k] - origin[k]) / direction[k]
            t_enter, t_exit = max(t_enter, min(ta, tb)), min(t_exit, max(ta, tb))
        if t_enter <= t_exit and 0.05 < t_enter < best:
            best = t_enter
    return best if best * np.linalg.norm(direction) < far else 0.0


def test_dense_depth_matches_a_naive_ray_caster(drive) -> None:
    plan = plan_drive(SEED, 1, FRAMES)
    calib = drive.calib
    idx = 5
    pose = plan.imu_pose(idx) @ np.linalg.inv(calib.T_imu_to_rect(2))
    grid = pinhole_grid(calib.K_cam2, 128, 416)
    gt = _gt_depth(drive, idx)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 128, 150), rng.integers(0, 416, 150)
    for r, c in zip(rows, cols):
        expected = _naive_depth(plan.world, pose[:3, 3], pose[:3, :3] @ grid.dirs[r, c], 250.0)
        assert gt[r, c] == pytest.approx(min(expected, 65535 / 256), abs=1 / 512 + 1e-9), (r, c)


def test_labels_and_sky(synth_world, drive) -> None:
    for idx in (0, 7):
        lab = _labels(Path(synth_world.root), drive, idx)
        depth = _gt_depth(drive, idx)
        np.testing.assert_array_equal(lab == LABEL_SKY, depth == 0)
        assert np.mean(lab[-5:, 180:236] == LABEL_ROAD) > 0.95      # road ahead, bottom center
        assert np.all(lab[0, 190:226] != LABEL_ROAD)
        present = set(np.unique(lab).tolist())
        assert {7, 8, 11, 23}.issubset(present)
        assert present.issubset({7, 8, 11, 12, 17, 20, 21, 22, 23, 26})
        # Textured: no large flat areas outside the sky.
        img = drive.image(2, idx).astype(np.float32).mean(axis=2)
        grad = np.abs(np.diff(img, axis=1))
        textured = cv2.blur((grad > 0.5).astype(np.float32), (15, 15)) > 0.05
        assert np.mean(textured[lab[:, :-1] != LABEL_SKY]) > 0.9


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = (u - u0)[:, None], (v - v0)[:, None]
    return ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u0 + 1]
            + (1 - a) * b * img[v0 + 1, u0] + a * b * img[v0 + 1, u0 + 1])


@pytest.mark.parametrize("src, tgt", [(1, 4), (7, 4)])
def test_warping_with_gt_depth_and_pose_reproduces_the_neighbor(drive, src, tgt) -> None:
    """Self-supervision check: GT depth and pose carry target pixels to their color.

    Target pixels, back-projected with GT depth and moved by the GT pose (from OXTS +
    calibration), find their color in the source frame. Three frames apart (0.75-2.25 m),
    so that the frames differ clearly without motion.
    """
    calib = drive.calib
    poses = drive.poses()
    imu_to_cam = calib.T_imu_to_rect(2)
    # target camera -> source camera
    t_src_tgt = imu_to_cam @ np.linalg.inv(poses[src]) @ poses[tgt] @ np.linalg.inv(imu_to_cam)
    k = calib.K_cam2
    depth_t, depth_s = _gt_depth(drive, tgt), _gt_depth(drive, src)
    img_t = drive.image(2, tgt).astype(np.float64)
    img_s = drive.image(2, src).astype(np.float64)
    h, w = depth_t.shape
    vv, uu = np.nonzero(depth_t > 0)
    z = depth_t[vv, uu]
    pts = np.stack([(uu - k[0, 2]) / k[0, 0] * z, (vv - k[1, 2]) / k[1, 1] * z, z], axis=1)
    moved = pts @ t_src_tgt[:3, :3].T + t_src_tgt[:3, 3]
    us = k[0, 0] * moved[:, 0] / moved[:, 2] + k[0, 2]
    vs = k[1, 1] * moved[:, 1] / moved[:, 2] + k[1, 2]
    inside = (moved[:, 2] > 0.5) & (us >= 0) & (us < w - 1) & (vs >= 0) & (vs < h - 1)
    us, vs, moved, vv, uu = us[inside], vs[inside], moved[inside], vv[inside], uu[inside]
    seen = np.abs(depth_s[np.round(vs).astype(int), np.round(us).astype(int)] - moved[:, 2]) \
        < 0.02 * moved[:, 2]
    assert seen.mean() > 0.7
    warped = _bilinear(img_s, us[seen], vs[seen])
    target = img_t[vv[seen], uu[seen]]
    err = np.abs(warped - target).mean()
    identity = np.abs(img_s[vv[seen], uu[seen]] - target).mean()
    assert err < 4.0, err
    assert err < 0.25 * identity, (err, identity)


def test_splits_for_farther_source_frames(synth_world, oxts_splits) -> None:
    """synth_small_oxts's sources -2 and +2: its splits hold the frames that have them.

    8 frames: 2..5 (worked by hand), one of the four for val; the test split is the world's.
    """
    drive = f"{DATE}/{DATE}_drive_0001_sync"
    lines = {k: Path(v).read_text().splitlines() for k, v in oxts_splits.items()}
    assert sorted(lines["train"] + lines["val"], key=lambda line: int(line.split()[1])) == [
        f"{drive} {f} l" for f in (2, 3, 4, 5)]
    assert len(lines["val"]) == 1 and not set(lines["train"]) & set(lines["val"])
    assert lines["test"] == Path(synth_world.split_files["test"]).read_text().splitlines()
    assert oxts_splits["train"].parent == Path(synth_world.root) / "splits" / "reach2"
    # the world's own split files are left as they were (both neighbours)
    world_train = Path(synth_world.split_files["train"]).read_text().splitlines()
    assert int(world_train[0].split()[1]) == 1


def test_split_entries_reach() -> None:
    frames = [[e.frame for e in split_entries(2, 9, reach=r)[s]] for r in (1, 3)
              for s in ("train", "val")]
    assert sorted(frames[0] + frames[1]) == list(range(1, 8))
    assert sorted(frames[2] + frames[3]) == [3, 4, 5]
    assert split_entries(1, 6, reach=3)["train"] == []   # no frame has both sources
    with pytest.raises(ValueError, match="reach must be an integer >= 1, got 0"):
        split_entries(2, 9, reach=0)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", drives=1, frames=2, seed=3, width=96, height=32)
    b = generate_dataset(tmp_path / "b", drives=1, frames=2, seed=3, width=96, height=32)
    c = generate_dataset(tmp_path / "c", drives=1, frames=2, seed=4, width=96, height=32)
    fa, fb, fc = _files(a.root), _files(b.root), _files(c.root)
    assert fa == fb
    assert len(fa) > 20
    img = f"{DATE}/{DATE}_drive_0001_sync/image_02/data/0000000000.png"
    assert fa[img] != fc[img]


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames"):
        generate_dataset(tmp_path, frames=0)
    with pytest.raises(ValueError, match="width"):
        generate_dataset(tmp_path, width=8)
    with pytest.raises(ValueError, match="reach"):
        generate_dataset(tmp_path / "r", reach=0)
    assert not (tmp_path / "r").exists()    # refused before anything was rendered


def test_synth_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    rc = cli_main(["synth", str(out), "--drives", "1", "--frames", "2", "--seed", "1",
                   "--width", "64", "--height", "32", "--no-progress"])
    assert rc == 0
    d = KittiDrive(out / DATE / f"{DATE}_drive_0001_sync")
    assert d.num_frames == 2 and d.image(2, 1).shape == (32, 64, 3)
    assert (out / "splits" / "test_files.txt").read_text().splitlines() == [
        f"{DATE}/{DATE}_drive_0001_sync 0 l", f"{DATE}/{DATE}_drive_0001_sync 1 l"]
    reach = tmp_path / "reach"
    assert cli_main(["synth", str(reach), "--drives", "1", "--frames", "6", "--width", "64",
                     "--height", "32", "--no-progress", "--reach", "2"]) == 0
    listed = [(reach / "splits" / f"{s}_files.txt").read_text().split() for s in ("train", "val")]
    assert sorted(int(f) for words in listed for f in words[1::3]) == [2, 3]
