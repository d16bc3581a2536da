"""The node's own work on one 1242x375 frame outside inference, against the same work naively.

The fast path is what ``oe_depth_node`` runs per frame, with the same calls: frame
intake (Image -> RGB, CameraInfo lookup), the pipeline after the network (disparity
resize to the camera size, depth = scale / disparity, range mask), back-projection
with cached rays and rgb packing, and message building (depth Image, CameraInfo,
PointCloud2 with rclpy's classes). The network is replaced by a backend that returns
a fixed 640x192 disparity, so inference costs nothing; the backend's own preprocessing
(resizing the image to the network input) is reported on its own row, outside the
node's total (GPU backends do it on the GPU). ``depth/colored`` is a separate row too
(computed only while subscribed).

The baseline does the same per pixel / per point in plain Python (bilinear sampling
by hand, one tuple per point, struct.pack per point and pixel) in the same run, and
the outputs are checked to agree. The machine may be shared: every figure is the
median and the best of ``--reps`` runs, as wall time and as this process's CPU time.

Usage: .venv/bin/python bench/bench_postprocess.py [--reps 100] [--naive-reps 1] [--json OUT]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_name, write_json
from oe_depth_ros.colormap import colorize_depth
from oe_depth_ros.inference.backends import DepthBackend
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE
from oe_depth_ros.intake import FrameIntake
from oe_depth_ros.messages import (
    MessageTypes, make_camera_info, make_header, numpy_to_image,
)
from oe_depth_ros.node_params import defaults
from oe_depth_ros.pipeline import DepthPipeline, Outputs, PipelineConfig
from oe_depth_ros.scale import FixedScale

CAM_H, CAM_W = 375, 1242
NET_H, NET_W = DEFAULT_NETWORK_SIZE
K = np.array([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
SCALE = 1.65
#: The node's defaults: the published range and the colored output's range.
NODE_DEFAULTS = defaults()
MIN_RANGE, MAX_RANGE = NODE_DEFAULTS["min_range"], NODE_DEFAULTS["max_range"]
#: Rows of the table: the node's stages, then the rows outside its total.
NODE_STAGES = ("convert", "depth", "cloud", "messages")
EXTRA_STAGES = ("preprocess (backend)", "colored (if subscribed)")


class FixedDisparityBackend(DepthBackend):
    """A backend whose network is a fixed disparity map: inference costs nothing."""

    name = "fixed"

    def __init__(self, disparity: np.ndarray) -> None:
        self.input_size = (int(disparity.shape[0]), int(disparity.shape[1]))
        self.min_depth, self.max_depth = 0.1, 100.0
        self._out = disparity[None, None]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._out


def make_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A network disparity (ground plane + background + noise) and a camera image."""
    rng = np.random.default_rng(seed)
    v = (np.arange(NET_H) + 0.5) * CAM_H / NET_H - 0.5
    ray_y = (v - K[1, 2]) / K[1, 1]
    disp = np.maximum(ray_y, 1.0 / 120.0)[:, None] * np.ones((1, NET_W))
    disp *= rng.uniform(0.95, 1.05, disp.shape)
    image = rng.integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8)
    return disp.astype(np.float32), image


class NodeWork:
    """What the node holds between frames: the intake (with a CameraInfo) and the pipeline."""

    def __init__(self, disp: np.ndarray, image: np.ndarray) -> None:
        self.types = MessageTypes.rclpy()
        self.header = make_header(0, "camera", self.types)
        self.msg = numpy_to_image(image, "rgb8", self.header, self.types)
        self.intake = FrameIntake()
        self.intake.add_camera_info(make_camera_info(K, CAM_W, CAM_H, self.header, self.types))
        config = PipelineConfig(min_range=MIN_RANGE, max_range=MAX_RANGE)
        self.pipeline = DepthPipeline(FixedDisparityBackend(disp), config, FixedScale(SCALE))


def run_fast(work: NodeWork) -> tuple[dict[str, tuple[float, float]], Any, Any]:
    """One frame of the node's work: {stage: (wall ms, CPU ms)}, the result, the cloud."""
    marks = [(time.perf_counter(), time.process_time())]

    def lap() -> None:
        marks.append((time.perf_counter(), time.process_time()))

    frame = work.intake.take_image(work.msg)
    lap()
    result = work.pipeline.process(frame.rgb, frame.k, outputs=Outputs(colored=False))
    lap()
    numpy_to_image(result.depth, "32FC1", work.header, work.types)
    result.camera_info(work.header, work.types)
    cloud = result.pointcloud2(work.header, work.types)
    lap()
    colorize_depth(result.depth, NODE_DEFAULTS["colored.min_range"],
                   NODE_DEFAULTS["colored.max_range"])
    lap()
    ms = [((b[0] - a[0]) * 1e3, (b[1] - a[1]) * 1e3) for a, b in zip(marks, marks[1:])]
    (convert, pipe, messages, colored) = ms
    # Inside the pipeline the split is by wall time; its CPU time is shared out in the
    # same proportions (the stub inference and bookkeeping stay unattributed).
    t = result.timings
    ratio = pipe[1] / pipe[0] if pipe[0] > 0 else 1.0
    split = {"preprocess (backend)": t["preprocess"], "depth": t["postprocess"] + t["scale"],
             "cloud": t["cloud"]}
    stages = {"convert": convert, "messages": messages, "colored (if subscribed)": colored}
    stages.update({name: (v, v * ratio) for name, v in split.items()})
    return stages, result, cloud


# -------------------------------------------------------------- per-point baseline


def naive(msg: Any, disp: np.ndarray) -> tuple[dict[str, float], bytes, list[list[float]]]:
    """The node's stages in plain Python; returns ms per stage, cloud bytes and depth."""
    t = [time.perf_counter()]
    raw = bytes(msg.data)
    rgb = [[(raw[r * msg.step + 3 * u], raw[r * msg.step + 3 * u + 1],
             raw[r * msg.step + 3 * u + 2]) for u in range(msg.width)] for r in range(msg.height)]
    t.append(time.perf_counter())
    src = disp.tolist()
    sy, sx = NET_H / CAM_H, NET_W / CAM_W
    depth = []
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
            d = top * (1 - wy) + bottom * wy
            z = SCALE / d if d > 0 else math.nan
            row.append(z if MIN_RANGE <= z <= MAX_RANGE else math.nan)
        depth.append(row)
    t.append(time.perf_counter())
    fx_, fy_, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    points = []
    for v in range(CAM_H):
        for u in range(CAM_W):
            z = depth[v][u]
            if z == z and z <= MAX_RANGE:
                r, g, b = rgb[v][u]
                points.append(((u - cx) / fx_ * z, (v - cy) / fy_ * z, z, (r << 16) | (g << 8) | b))
    t.append(time.perf_counter())
    packer = struct.Struct("<fffI")
    cloud = b"".join(packer.pack(*p) for p in points)
    pixel = struct.Struct("<f")
    b"".join(pixel.pack(z) for row in depth for z in row)
    t.append(time.perf_counter())
    return ({n: (b - a) * 1e3 for n, a, b in zip(NODE_STAGES, t, t[1:])}, cloud, depth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100, help="repetitions of the fast path")
    parser.add_argument("--naive-reps", type=int, default=1, help="repetitions of the baseline")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    disp, image = make_inputs()
    work = NodeWork(disp, image)
    for _ in range(3):  # warm-up: ray cache, allocator
        run_fast(work)
    runs = []
    for _ in range(args.reps):
        stages, result, cloud = run_fast(work)
        own = [sum(stages[s][i] for s in NODE_STAGES) for i in (0, 1)]
        stages["node total"] = (own[0], own[1])
        runs.append(stages)
    slow_runs = [naive(work.msg, disp) for _ in range(args.naive_reps)]

    # The two implementations must agree before their times mean anything.
    naive_cloud, naive_depth = slow_runs[0][1], slow_runs[0][2]
    ref = np.frombuffer(naive_cloud, dtype=result.points.dtype)
    pts = result.points
    assert len(ref) == len(pts), (len(ref), len(pts))
    assert ref["rgb"].tobytes() == pts["rgb"].tobytes()
    max_err = max(float(np.max(np.abs(ref[a] - pts[a]) / np.maximum(1.0, np.abs(ref[a]))))
                  for a in "xyz")
    assert max_err < 1e-3, max_err
    depth_ref = np.array(naive_depth, dtype=np.float32)
    assert np.array_equal(np.isnan(depth_ref), np.isnan(result.depth))

    slow = {k: statistics.median(r[0][k] for r in slow_runs) for k in NODE_STAGES}
    slow["node total"] = sum(slow.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"Node's own work on one {CAM_W}x{CAM_H} rgb8 frame, network {NET_W}x{NET_H}, "
          f"{len(pts):,} points ({len(bytes(cloud.data)) / 1e6:.1f} MB cloud); ms, median "
          f"(best) of {args.reps}; load average {load:.1f} on {os.cpu_count()} CPUs")
    head = f"{'stage':<26}{'wall':>16}{'CPU':>16}{'per-pixel Python':>18}{'ratio':>8}"
    print(head)
    print("-" * len(head))
    table = []
    for stage in (*NODE_STAGES, "node total", *EXTRA_STAGES):
        wall = [r[stage][0] for r in runs]
        cpu = [r[stage][1] for r in runs]
        row = {"stage": stage, "wall_median_ms": statistics.median(wall),
               "wall_best_ms": min(wall), "cpu_median_ms": statistics.median(cpu),
               "cpu_best_ms": min(cpu)}
        naive_ms = slow.get(stage)
        text = (f"{stage:<26}{row['wall_median_ms']:>8.2f} ({row['wall_best_ms']:5.2f})"
                f"{row['cpu_median_ms']:>8.2f} ({row['cpu_best_ms']:5.2f})")
        if naive_ms is not None:
            row["python_ms"] = naive_ms
            row["ratio"] = naive_ms / row["wall_median_ms"]
            text += f"{naive_ms:>18.1f}{row['ratio']:>7.0f}x"
        print(text)
        table.append(row)
    total = next(r for r in table if r["stage"] == "node total")
    print(f"goal: node total within 5 ms; measured {total['wall_median_ms']:.2f} ms median, "
          f"{total['wall_best_ms']:.2f} ms best (wall)")
    if args.json:
        write_json(args.json, {"frame": [CAM_H, CAM_W], "network": [NET_H, NET_W],
                               "cpu": cpu_name(), "python": platform.python_version(),
                               "points": len(pts), "max_rel_diff": max_err, "stages": table,
                               "load_average": load, "reps": args.reps,
                               "naive_reps": args.naive_reps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
