"""Synthetic world render speed and KITTI raw reader throughput on this CPU.

    .venv/bin/python bench/bench_synth.py [--frames 4] [--repeats 3] [--json OUT]

Render rows time one camera (ray casting + texturing + lighting) and one whole time
step (four cameras + the 64-beam LiDAR) at 1242x375 and 640x192, plus the LiDAR
scan alone; ratios (of CPU time) are against the 1242x375 camera render. Reader rows time
``KittiDrive`` on a freshly written 1242x375 drive; ratios are against the plain
``cv2.imread`` / ``np.fromfile`` of the same files (the reader's overhead).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from _common import cpu_name, time_passes, write_json
from oe_depth_ros.kitti.raw import KittiDrive
from oe_depth_ros.synthetic.sensors import SensorRig
from oe_depth_ros.synthetic.dataset import (
    generate_dataset,
    plan_drive,
    write_calibration,
)


def seconds_per_call(fn: Callable[[int], Any], count: int, repeats: int) -> tuple[float, float]:
    """Median over ``repeats`` passes of the (wall, CPU) seconds per ``fn(i)``, i < count."""
    walls, cpus = time_passes(fn, count, repeats)
    return statistics.median(walls), statistics.median(cpus)


def _row(name: str, timing: tuple[float, float]) -> dict[str, Any]:
    return {"name": name, "seconds": timing[0], "cpu_seconds": timing[1]}


def render_rows(frames: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    """Timings of the renderer at the two sizes."""
    plan = plan_drive(0, 1, frames)
    rows = []
    for width, height in ((1242, 375), (640, 192)):
        calib = write_calibration(tmp / f"calib_{width}", width, height)
        rig = SensorRig(calib, width, height)
        poses = [plan.imu_pose(i) for i in range(frames)]
        cam = seconds_per_call(lambda i: rig.render_camera(plan.world, poses[i], 2), frames,
                               repeats)
        step = seconds_per_call(lambda i: rig.render(plan.world, poses[i]), frames, repeats)
        rows.append(_row(f"render camera 2 {width}x{height}", cam))
        rows.append(_row(f"render 4 cameras + LiDAR {width}x{height}", step))
        if width == 640:
            scan = seconds_per_call(
                lambda i: rig.lidar.scan(plan.world, poses[i] @ rig.velo_from_imu), frames,
                repeats)
            rows.append(_row(f"LiDAR scan ({rig.lidar.num_rays} rays)", scan))
    return rows


def reader_rows(frames: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    """Timings of the reader on a 1242x375 drive."""
    ds = generate_dataset(tmp / "world", drives=1, frames=frames, seed=0)
    drive = KittiDrive(ds.drive_dirs[0])
    rows = []
    for name, fn in (
        ("cv2.imread color PNG (baseline)",
         lambda i: cv2.imread(str(drive.image_path(2, i)), cv2.IMREAD_COLOR)),
        ("KittiDrive.image(2) RGB", lambda i: drive.image(2, i)),
        ("KittiDrive.image(0) gray", lambda i: drive.image(0, i)),
        ("np.fromfile velodyne (baseline)",
         lambda i: np.fromfile(drive.velodyne_path(i), dtype="<f4").reshape(-1, 4)),
        ("KittiDrive.velodyne", lambda i: drive.velodyne(i)),
        ("KittiDrive.oxts", lambda i: drive.oxts(i)),
    ):
        rows.append(_row(name, seconds_per_call(fn, frames, repeats)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames per timing pass")
    parser.add_argument("--repeats", type=int, default=3, help="timing passes (median)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        render = render_rows(args.frames, args.repeats, tmp)
        reader = reader_rows(args.frames, args.repeats, tmp)
    for group in (render, reader[:3], reader[3:]):   # ratios of CPU time to the group's first
        for row in group:
            row["ratio"] = row["cpu_seconds"] / group[0]["cpu_seconds"]
    width = max(len(r["name"]) for r in render + reader)
    print(f"synthetic world and reader, {cpu_name()}, "
          f"{os.cpu_count()} cores, {args.frames} frames x {args.repeats} passes")
    print(f"{'what'.ljust(width)} | {'ms/frame':>9} | {'frames/s':>9} | {'cpu ms':>9} | "
          f"{'cpu ratio':>9}")
    print(f"{'-' * width}-|-{'-' * 9}-|-{'-' * 9}-|-{'-' * 9}-|-{'-' * 9}")
    for row in render + reader:
        print(f"{row['name'].ljust(width)} | {row['seconds'] * 1e3:9.2f} | "
              f"{1.0 / row['seconds']:9.2f} | {row['cpu_seconds'] * 1e3:9.2f} | "
              f"{row['ratio']:9.2f}")
    if args.json:
        write_json(args.json, {
            "frames": args.frames, "repeats": args.repeats, "cpu_count": os.cpu_count(),
            "render": render, "reader": reader})
    return 0


if __name__ == "__main__":
    sys.exit(main())
