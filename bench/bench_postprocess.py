"""Post-processing cost of one 1242x375 frame: vectorised pipeline vs per-point Python.

Stages (what DepthPipeline does after the network): resize the 640x192 disparity to the
camera size, depth = scale / disparity with the validity mask, back-projection with
cached rays + rgb packing into a structured array, and PointCloud2 packing. The
baseline does the same per pixel / per point in plain Python (bilinear sampling by
hand, one tuple per point, struct.pack per point) in the same run; outputs are checked
to agree. A second table measures ways of filling rclpy's typed ``uint8[]`` field.

Usage: .venv/bin/python bench/bench_postprocess.py [--reps 20] [--naive-reps 1] [--json OUT]
"""
from __future__ import annotations

import argparse
import array
import math
import os
import platform
import statistics
import struct
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _common import cpu_name, write_json
from oe_depth_ros.imageops import resize_depth
from oe_depth_ros.messages import MessageTypes, make_header, make_pointcloud2
from oe_depth_ros.pointcloud import RayCache, depth_to_cloud

CAM_H, CAM_W = 375, 1242
NET_H, NET_W = 192, 640
K = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
SCALE, MIN_RANGE, MAX_RANGE = 1.65, 0.1, 80.0


def make_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A network disparity (ground plane + background + noise) and a camera image."""
    rng = np.random.default_rng(seed)
    v = (np.arange(NET_H) + 0.5) * CAM_H / NET_H - 0.5
    ray_y = (v - K[1, 2]) / K[1, 1]
    disp = np.maximum(ray_y, 1.0 / 120.0)[:, None] * np.ones((1, NET_W))
    disp *= rng.uniform(0.95, 1.05, disp.shape)
    image = rng.integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8)
    return disp.astype(np.float32), image


# ----------------------------------------------------------------- vectorised path


def vectorised(disp: np.ndarray, image: np.ndarray, rays: RayCache, types: MessageTypes,
               header: Any) -> tuple[dict[str, float], np.ndarray, Any]:
    t = [time.perf_counter()]
    d = resize_depth(disp, (CAM_H, CAM_W))
    t.append(time.perf_counter())
    with np.errstate(divide="ignore"):
        depth = np.where(d > 0, np.float32(SCALE) / d, np.float32(np.nan))
    valid = (depth >= MIN_RANGE) & (depth <= MAX_RANGE)
    depth[~valid] = np.nan
    t.append(time.perf_counter())
    pts = depth_to_cloud(depth, rays.get(K, CAM_H, CAM_W), image, max_range=MAX_RANGE)
    t.append(time.perf_counter())
    msg = make_pointcloud2(pts, header, types)
    t.append(time.perf_counter())
    names = ("resize", "depth+mask", "backproject+rgb", "pointcloud2")
    ms = {n: (b - a) * 1e3 for n, a, b in zip(names, t, t[1:])}
    return ms, pts, msg


# -------------------------------------------------------------- per-point baseline


def naive(disp: np.ndarray, image: np.ndarray) -> tuple[dict[str, float], bytes]:
    t = [time.perf_counter()]
    src = disp.tolist()
    sy, sx = NET_H / CAM_H, NET_W / CAM_W
    resized = []
    for v in range(CAM_H):
        fy = min(max((v + 0.5) * sy - 0.5, 0.0), NET_H - 1.0)
        y0 = int(fy)
        y1 = min(y0 + 1, NET_H - 1)
        wy = fy - y0
        row = []
        for u in range(CAM_W):
            fx = min(max((u + 0.5) * sx - 0.5, 0.0), NET_W - 1.0)
            x0 = int(fx)
            x1 = min(x0 + 1, NET_W - 1)
            wx = fx - x0
            top = src[y0][x0] * (1 - wx) + src[y0][x1] * wx
            bottom = src[y1][x0] * (1 - wx) + src[y1][x1] * wx
            row.append(top * (1 - wy) + bottom * wy)
        resized.append(row)
    t.append(time.perf_counter())
    depth = []
    for row in resized:
        out = []
        for d in row:
            z = SCALE / d if d > 0 else math.nan
            out.append(z if MIN_RANGE <= z <= MAX_RANGE else math.nan)
        depth.append(out)
    t.append(time.perf_counter())
    fx_, fy_, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    rgb = image.tolist()
    points = []
    for v in range(CAM_H):
        for u in range(CAM_W):
            z = depth[v][u]
            if z == z and z <= MAX_RANGE:
                r, g, b = rgb[v][u]
                points.append(((u - cx) / fx_ * z, (v - cy) / fy_ * z, z, (r << 16) | (g << 8) | b))
    t.append(time.perf_counter())
    packer = struct.Struct("<fffI")
    data = b"".join(packer.pack(*p) for p in points)
    t.append(time.perf_counter())
    names = ("resize", "depth+mask", "backproject+rgb", "pointcloud2")
    return {n: (b - a) * 1e3 for n, a, b in zip(names, t, t[1:])}, data


# ------------------------------------------------------------ rclpy data assignment


def rclpy_assignment(buf_array: np.ndarray, reps: int) -> list[dict[str, Any]]:
    """Ways of filling PointCloud2.data; field checks on and off (ROS_PYTHON_CHECK_FIELDS)."""
    from sensor_msgs.msg import PointCloud2

    flat = buf_array.reshape(-1).view(np.uint8)

    def frombytes() -> array.array:
        out = array.array("B")
        out.frombytes(flat.data)
        return out

    # Every way starts from the C-contiguous ndarray, as make_pointcloud2 does.
    ways: dict[str, Callable[[], object]] = {
        "array('B').frombytes(memoryview)": frombytes,
        "array('B', ndarray.tobytes())": lambda: array.array("B", flat.tobytes()),
        "ndarray.tobytes()": lambda: flat.tobytes(),
    }
    rows: list[dict[str, Any]] = []
    for checks in (False, True):
        for name, make in ways.items():
            msg = PointCloud2()
            msg._check_fields = checks  # what ROS_PYTHON_CHECK_FIELDS=1 sets at construction
            n = 1 if (checks and name == "ndarray.tobytes()") else reps
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                msg.data = make()
                times.append((time.perf_counter() - t0) * 1e3)
            rows.append({"method": name, "field_checks": checks, "ms": statistics.median(times),
                         "reps": n})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="repetitions of the fast path")
    parser.add_argument("--naive-reps", type=int, default=1, help="repetitions of the baseline")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from rosbags.typesys import Stores, get_typestore

    disp, image = make_inputs()
    flavours = {"rclpy": MessageTypes.rclpy(),
                "rosbags": MessageTypes.rosbags(get_typestore(Stores.ROS2_JAZZY))}
    results: dict[str, Any] = {"frame": [CAM_H, CAM_W], "network": [NET_H, NET_W],
                               "cpu": cpu_name(),
                               "python": platform.python_version()}
    fast: dict[str, dict[str, float]] = {}
    best: dict[str, float] = {}
    for flavour, types in flavours.items():
        rays = RayCache()
        header = make_header(0, "camera", types)
        vectorised(disp, image, rays, types, header)  # warm-up: builds the ray cache
        runs = [vectorised(disp, image, rays, types, header)[0] for _ in range(args.reps)]
        fast[flavour] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        if flavour == "rclpy":
            best = {k: min(r[k] for r in runs) for k in runs[0]}
            best["total"] = min(sum(r.values()) for r in runs)
    _, pts, msg = vectorised(disp, image, RayCache(), flavours["rclpy"],
                             make_header(0, "camera", flavours["rclpy"]))
    slow_runs = []
    for _ in range(args.naive_reps):
        ms, data = naive(disp, image)
        slow_runs.append(ms)
    slow = {k: statistics.median(r[k] for r in slow_runs) for k in slow_runs[0]}

    # The two implementations must agree before their times mean anything.
    ref = np.frombuffer(data, dtype=pts.dtype)
    assert len(ref) == len(pts), (len(ref), len(pts))
    assert ref["rgb"].tobytes() == pts["rgb"].tobytes()
    max_err = max(float(np.max(np.abs(ref[a] - pts[a]) / np.maximum(1.0, np.abs(ref[a]))))
                  for a in "xyz")
    assert max_err < 1e-3, max_err

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"Post-processing of one {CAM_W}x{CAM_H} frame ({len(pts):,} points, "
          f"{len(bytes(msg.data)) / 1e6:.1f} MB cloud), ms (median of {args.reps}; best; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs)")
    header_row = f"{'stage':<18}{'rclpy msgs':>12}{'(best)':>8}{'rosbags msgs':>14}" \
                 f"{'per-point Python':>18}{'speed-up':>10}"
    print(header_row)
    print("-" * len(header_row))
    stages = list(slow) + ["total"]
    for flavour in fast:
        fast[flavour]["total"] = sum(fast[flavour].values())
    slow["total"] = sum(slow.values())
    table = []
    for stage in stages:
        a, b, c = fast["rclpy"][stage], fast["rosbags"][stage], slow[stage]
        print(f"{stage:<18}{a:>12.2f}{best[stage]:>8.2f}{b:>14.2f}{c:>18.1f}{c / a:>9.0f}x")
        table.append({"stage": stage, "rclpy_ms": a, "rclpy_best_ms": best[stage],
                      "rosbags_ms": b, "python_ms": c, "speedup": c / a})
    results.update(points=len(pts), max_rel_diff=max_err, stages=table, load_average=load,
                   reps=args.reps, naive_reps=args.naive_reps)

    rows = rclpy_assignment(pts, args.reps)
    base = next(r["ms"] for r in rows if r["method"].startswith("array('B').frombytes")
                and not r["field_checks"])
    print(f"\nFilling rclpy PointCloud2.data with {len(bytes(msg.data)) / 1e6:.1f} MB, median ms")
    print(f"{'method':<36}{'field checks':>14}{'ms':>10}{'vs frombytes':>14}")
    for r in rows:
        r["ratio"] = r["ms"] / base
        print(f"{r['method']:<36}{str(r['field_checks']):>14}{r['ms']:>10.2f}{r['ratio']:>13.1f}x")
    results["rclpy_data_assignment"] = rows
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
