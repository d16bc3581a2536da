"""A procedural driving world rendered into the exact KITTI raw layout.

``generate_dataset`` writes ``<root>/<date>/<date>_drive_<nnnn>_sync`` folders with the
four cameras, Velodyne scans, OXTS packets and timestamps, the date folder's
calibration, dense ground-truth depth for camera 2
(``<drive>/proj_depth/groundtruth/image_02``), Cityscapes labelIds
(``<root>/segmentation/<date>/<drive>/image_02``) and Eigen-format split files.
Everything is a deterministic function of the seed; each drive is rendered into a
temporary folder and renamed into place when complete.
"""
from __future__ import annotations

import calendar
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from oe_depth_ros.atomic import atomic_path, write_text_atomic
from oe_depth_ros.progress import bar_disabled
from oe_depth_ros.synthetic import writer
from oe_depth_ros.synthetic.lidar import MAX_RANGE, Lidar
from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
from oe_depth_ros.kitti.raw import KittiCalib, read_calib
from oe_depth_ros.synthetic.rig import GeoReference, Trajectory, calibration_texts, oxts_packet
from oe_depth_ros.synthetic.sensors import CAMERA_FAR, SensorRig, depth_to_png16
from oe_depth_ros.kitti.splits import SplitEntry, write_split_file
from oe_depth_ros.synthetic.world import LANE_WIDTH, World, build_world

logger = logging.getLogger(__name__)

DATE = "2020_06_01"
FRAME_PERIOD_NS = 100_000_000
#: Camera trigger jitter (+- nanoseconds) around the 10 Hz period.
STAMP_JITTER_NS = 2_000_000
_DAY_START_S = calendar.timegm((2020, 6, 1, 10, 0, 0, 0, 0, 0))


@dataclass(frozen=True)
class SynthDataset:
    """What ``generate_dataset`` wrote: the root, the drive folders and the split files."""

    root: Path
    drive_dirs: list[Path]
    split_files: dict[str, Path]


@dataclass(frozen=True, kw_only=True)
class DrivePlan:
    """Everything that defines one drive: its name, time stamps, motion, place and scene."""

    index: int
    name: str
    stamps: np.ndarray          # int64 UTC nanoseconds, one per frame
    trajectory: Trajectory
    geo: GeoReference
    world: World

    def times(self) -> np.ndarray:
        """Seconds since the first frame."""
        return (self.stamps - self.stamps[0]).astype(np.float64) * 1e-9

    def imu_pose(self, frame: int) -> np.ndarray:
        """4x4 IMU -> road frame pose at ``frame``."""
        return self.trajectory.pose(float(self.times()[frame]))


def drive_name(index: int, date: str = DATE) -> str:
    """KITTI's drive folder name for drive number ``index``."""
    return f"{date}_drive_{index:04d}_sync"


def plan_drive(seed: int, index: int, frames: int) -> DrivePlan:
    """The deterministic plan of drive ``index`` (1-based) of the dataset for ``seed``."""
    rng = np.random.default_rng([int(seed), int(index)])
    start = (_DAY_START_S + 3600 * index) * 1_000_000_000
    jitter = rng.integers(-STAMP_JITTER_NS, STAMP_JITTER_NS + 1, size=frames)
    stamps = start + np.arange(frames, dtype=np.int64) * FRAME_PERIOD_NS + jitter
    lanes = int(rng.integers(1, 3))
    lane_y = -LANE_WIDTH * (0.5 + int(rng.integers(0, lanes)))
    duration = float(stamps[-1] - stamps[0]) * 1e-9
    traj = Trajectory.random(rng, duration, lane_y)
    geo = GeoReference.random(rng)
    x_end = traj.x_at(duration)
    world = build_world(rng, -MAX_RANGE - 10.0, x_end + CAMERA_FAR + 20.0, lanes,
                        traj.lateral_range())
    return DrivePlan(index=index, name=drive_name(index), stamps=stamps, trajectory=traj, geo=geo,
                     world=world)


def write_calibration(date_dir: Path, width: int, height: int) -> KittiCalib:
    """Write the date folder's three calibration files and return them as parsed back."""
    for name, text in calibration_texts(width, height).items():
        write_text_atomic(date_dir / name, text)
    return read_calib(date_dir)


def _write_drive(plan: DrivePlan, rig: SensorRig, drive_dir: Path, seg_dir: Path,
                 bar: tqdm) -> None:
    times = plan.times()
    for k in range(len(plan.stamps)):
        imu_pose = plan.trajectory.pose(float(times[k]))
        frame = rig.render(plan.world, imu_pose)
        name = f"{k:010d}"
        for cam, img in frame.images.items():
            writer.write_png(drive_dir / f"image_{cam:02d}" / "data" / f"{name}.png", img)
        writer.write_png(drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{name}.png",
                         depth_to_png16(frame.depth))
        writer.write_png(seg_dir / "image_02" / f"{name}.png", frame.labels)
        writer.write_velodyne(drive_dir / "velodyne_points" / "data" / f"{name}.bin", frame.points)
        writer.write_oxts(drive_dir / "oxts" / "data" / f"{name}.txt",
                          oxts_packet(plan.trajectory, plan.geo, float(times[k])))
        bar.update(1)
    for cam in range(4):
        writer.write_timestamps(drive_dir / f"image_{cam:02d}" / "timestamps.txt", plan.stamps)
    velo = drive_dir / "velodyne_points"
    writer.write_timestamps(velo / "timestamps.txt", plan.stamps)
    writer.write_timestamps(velo / "timestamps_start.txt", plan.stamps - FRAME_PERIOD_NS // 2)
    writer.write_timestamps(velo / "timestamps_end.txt", plan.stamps + FRAME_PERIOD_NS // 2)
    writer.write_timestamps(drive_dir / "oxts" / "timestamps.txt", plan.stamps)
    (drive_dir / "oxts" / "dataformat.txt").write_text(writer.oxts_dataformat(), encoding="ascii")


def split_entries(drives: int, frames: int, date: str = DATE,
                  reach: int = 1) -> dict[str, list[SplitEntry]]:
    """The entries of the train, val and test split files.

    train/val: the frames whose source frames up to ``reach`` away on either side exist
    (``reach`` .. frames-1-``reach``; 1 for the sources -1 and +1) of every drive but the
    last (every drive when there is only one), about one in ten for val; test: every
    frame of the last drive (with a single drive it overlaps train).
    """
    if int(reach) != reach or reach < 1:
        raise ValueError(f"reach must be an integer >= 1, got {reach!r}")
    train: list[SplitEntry] = []
    val: list[SplitEntry] = []
    pool = range(1, drives) if drives > 1 else range(1, 2)
    for index in pool:
        eligible = list(range(reach, frames - reach))
        n_val = max(1, len(eligible) // 10) if len(eligible) >= 2 else 0
        spots = np.linspace(0, len(eligible) - 1, n_val + 2)[1:-1]
        picks = {eligible[int(round(i))] for i in spots}
        for f in eligible:
            (val if f in picks else train).append(SplitEntry(f"{date}/{drive_name(index)}", f))
    test = [SplitEntry(f"{date}/{drive_name(drives)}", f) for f in range(frames)]
    return {"train": train, "val": val, "test": test}


def generate_dataset(out_dir: str | os.PathLike[str], drives: int = 2, frames: int = 20,
                     seed: int = 0, width: int = 1242, height: int = 375,
                     progress: bool = False, reach: int = 1) -> SynthDataset:
    """Render ``drives`` drives of ``frames`` frames at ``width`` x ``height`` into ``out_dir``.

    Deterministic for a seed (same bytes). Existing drives of the same names are replaced.
    The split files list the frames whose source frames up to ``reach`` away exist.
    """
    for name, value, low in (("drives", drives, 1), ("frames", frames, 1), ("width", width, 16),
                             ("height", height, 16), ("reach", reach, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    root = Path(out_dir)
    date_dir = root / DATE
    date_dir.mkdir(parents=True, exist_ok=True)
    calib = write_calibration(date_dir, width, height)
    rig = SensorRig(calib, width, height, Lidar())
    drive_dirs = []
    with tqdm(total=drives * frames, unit="frame", desc="synth",
              disable=bar_disabled(progress)) as bar:
        for index in range(1, drives + 1):
            plan = plan_drive(seed, index, frames)
            logger.info("rendering %s: %d frames at %dx%d", plan.name, frames, width, height)
            drive_dir = date_dir / plan.name
            with atomic_path(root / SEGMENTATION_DIR / DATE / plan.name) as seg_tmp, \
                    atomic_path(drive_dir) as drive_tmp:
                _write_drive(plan, rig, drive_tmp, seg_tmp, bar)
            drive_dirs.append(drive_dir)
    return SynthDataset(root, drive_dirs, write_splits(root / "splits", drives, frames, reach))


def write_splits(folder: Path, drives: int, frames: int, reach: int = 1) -> dict[str, Path]:
    """Write the train/val/test split files of :func:`split_entries` into ``folder``."""
    return {split: write_split_file(folder / f"{split}_files.txt", entries)
            for split, entries in split_entries(drives, frames, reach=reach).items()}
