"""The whole system on one drive: data, model, bag, depth over the bag, report.

Stages (each timed and reported):

1. ``data``: a synthetic KITTI-format world (training drives + a held-out drive), or
   the user's KITTI raw drive (``--kitti``).
2. ``train``: without ``--model``, a short self-supervised training run on the
   synthetic training drives (``python -m training.train`` in a child process, so
   that this package does not import the training code), at reduced resolution.
3. ``export``: the checkpoint to ONNX (verified against PyTorch).
4. ``kitti2bag``: the held-out drive to a rosbag2.
5. ``process-bag``: the depth pipeline over the bag into an output bag.
6. ``report``: depth read back from the output bag against ground truth, next to the
   best constant depth; PNG panels per frame, a coloured PLY cloud, report.md/json.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.metrics import METRIC_NAMES, evaluate_depth_map

LOG = logging.getLogger(__name__)

IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
NAMESPACE = "/oe_depth"


@dataclass
class DemoSettings:
    """What the demo runs on and how long it trains."""

    out: Path
    model: Path | None = None
    kitti: Path | None = None
    #: synthetic world: drives (the last is held out), frames per drive, render size
    drives: int = 5
    frames: int = 30
    render_size: tuple[int, int] = (128, 416)
    seed: int = 0
    #: training without --model: config name, steps, network input size (H, W)
    train_config: str = "synth_small"
    train_steps: int = 300
    train_batch: int = 4
    net_size: tuple[int, int] = (64, 192)
    backend: str = "auto"
    #: metric scale of the published depth: camera_height (1.65 m mount), fixed or lidar
    scale_method: str = "camera_height"
    max_frames: int | None = None

    @classmethod
    def fast(cls, out: Path) -> "DemoSettings":
        """The quickest configuration that still runs every stage (used by the tests)."""
        return cls(out=out, drives=2, frames=8, render_size=(96, 320), train_steps=3,
                   train_batch=2, net_size=(64, 192))


@dataclass
class DemoResult:
    """Paths and figures the demo produced."""

    report: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Runs named stages, timing each one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        LOG.info("demo stage '%s' ...", name)
        start = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        LOG.info("demo stage '%s' done in %.1f s", name, self.seconds[name])
        return result


def _synthetic_world(settings: DemoSettings) -> tuple[Any, Path]:
    from oe_depth_ros.synthetic.dataset import generate_dataset

    h, w = settings.render_size
    world = generate_dataset(settings.out / "data", drives=settings.drives,
                             frames=settings.frames, seed=settings.seed, width=w, height=h,
                             progress=True)
    test_folder = world.split_files["test"].read_text().split()[0]
    return world, world.root / test_folder


def _train(settings: DemoSettings, world: Any) -> Path:
    """Short self-supervised training on the synthetic training drives; returns the checkpoint."""
    run_dir = settings.out / "training"
    h, w = settings.net_size
    cmd = [sys.executable, "-m", "training.train", "--config", settings.train_config,
           "--out", str(run_dir),
           f"data.data_path={world.root}",
           f"data.train_split={world.split_files['train']}",
           f"data.val_split={world.split_files['val']}",
           f"data.height={h}", f"data.width={w}",
           f"optim.batch_size={settings.train_batch}",
           f"max_steps={settings.train_steps}", f"seed={settings.seed}"]
    LOG.info("no --model given: training one on the synthetic drives (%d steps at %dx%d)",
             settings.train_steps, w, h)
    env = dict(os.environ)
    repo_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed with exit code {proc.returncode}: {' '.join(cmd)}")
    checkpoint = run_dir / "last.pt"
    if not checkpoint.is_file():
        raise RuntimeError(f"training finished but wrote no checkpoint at {checkpoint}")
    return checkpoint


def _export(settings: DemoSettings, checkpoint: Path, drive_dir: Path) -> Path:
    """Export the checkpoint, verified on a real frame of the drive."""
    from oe_depth_ros.inference.export import export_onnx
    from oe_depth_ros.kitti.raw import KittiDrive

    h, w = settings.net_size
    out = settings.out / "model.onnx"
    export_onnx(None, out, h, w, checkpoint=checkpoint,
                verify_image=KittiDrive(drive_dir).image(2, 0))
    return out


def _ground_truth(drive: Any, frame: int, size: tuple[int, int]) -> np.ndarray:
    """Dense synthetic GT when present, else the drive's LiDAR projected into camera 2."""
    from oe_depth_ros.kitti.raw import read_depth_png
    from oe_depth_ros.lidar_projection import project_to_depth

    dense = drive.groundtruth_depth_path(frame)
    if dense.is_file():
        return read_depth_png(dense)
    calib = drive.calib
    velo = drive.velodyne(frame)
    homog = np.concatenate([velo[:, :3], np.ones((len(velo), 1))], axis=1).T
    cam2 = (calib.T_velo_to_rect(2) @ homog)[:3].T
    return project_to_depth(cam2, calib.rect_intrinsics(2), size)


def _panel(rgb: np.ndarray, depth: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Input | ground truth | median-scaled depth | abs-rel error, stacked vertically."""
    from oe_depth_ros.colormap import colorize_depth

    valid = (gt > 1e-3) & np.isfinite(depth)
    err = np.zeros_like(gt)
    err[valid] = np.abs(depth[valid] - gt[valid]) / gt[valid]
    err_img = cv2.applyColorMap(np.clip(err / 0.3 * 255, 0, 255).astype(np.uint8),
                                cv2.COLORMAP_INFERNO)[..., ::-1]
    err_img[~valid] = 0
    gt_shown = np.where(gt > 1e-3, gt, np.nan).astype(np.float32)
    rows = [rgb, colorize_depth(gt_shown, 0.0, 80.0),
            colorize_depth(np.nan_to_num(depth, nan=0.0), 0.0, 80.0), err_img]
    labels = ["input", "ground truth 0-80 m", "prediction (median-scaled)", "abs rel error 0-30%"]
    out = []
    for row, label in zip(rows, labels):
        row = np.array(row[..., :3], dtype=np.uint8, copy=True)
        cv2.putText(row, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out.append(row)
    return np.vstack(out)


def _report(settings: DemoSettings, in_bag: Path, out_bag: Path, drive_dir: Path,
            model_desc: str) -> dict[str, Any]:
    from oe_depth_ros.bags.bagio import BagReader
    from oe_depth_ros.messages import image_to_numpy, image_to_rgb, pointcloud2_to_numpy
    from oe_depth_ros.ply import write_ply

    from oe_depth_ros.kitti.raw import KittiDrive

    drive = KittiDrive(drive_dir)
    panels_dir = settings.out / "panels"
    panels_dir.mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] = []
    with BagReader(in_bag) as src:
        for conn, stamp, data in src.messages([IMAGE_TOPIC]):
            images.append(image_to_rgb(src.deserialize(data, conn, stamp)))
    depths: list[np.ndarray] = []
    clouds: list[np.ndarray] = []
    with BagReader(out_bag) as dst:
        for conn, stamp, data in dst.messages([f"{NAMESPACE}/depth/image",
                                               f"{NAMESPACE}/points"]):
            msg = dst.deserialize(data, conn, stamp)
            if conn.topic.endswith("depth/image"):
                depths.append(image_to_numpy(msg).astype(np.float32))
            else:
                clouds.append(pointcloud2_to_numpy(msg))
    if not depths or len(depths) != len(images):
        raise RuntimeError(f"{out_bag}: {len(depths)} depth images for {len(images)} inputs")
    model_rows, metric_rows, const_rows, per_frame = [], [], [], []
    for idx, (rgb, depth) in enumerate(zip(images, depths)):
        gt = _ground_truth(drive, idx, depth.shape)
        pred = np.nan_to_num(depth, nan=80.0)
        errors, ratio = evaluate_depth_map(gt, pred)
        metric_rows.append(evaluate_depth_map(gt, pred, median_scaling=False)[0])
        constant, _ = evaluate_depth_map(gt, np.ones_like(gt))
        model_rows.append(errors)
        const_rows.append(constant)
        per_frame.append({"frame": idx, "abs_rel": errors["abs_rel"], "ratio": ratio})
        panel = _panel(rgb, depth * ratio, gt)
        cv2.imwrite(str(panels_dir / f"{idx:06d}.png"), panel[..., ::-1])
    mid = len(clouds) // 2
    cloud = clouds[mid]
    rgb_bits = cloud["rgb"].view(np.uint32)
    colours = np.stack([(rgb_bits >> 16) & 255, (rgb_bits >> 8) & 255, rgb_bits & 255],
                       axis=1).astype(np.uint8)
    write_ply(settings.out / "cloud.ply", np.stack([cloud["x"], cloud["y"], cloud["z"]], 1),
              colours)

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}

    return {"model": mean(model_rows), "constant_baseline": mean(const_rows),
            "model_metric_scale": mean(metric_rows),
            "frames": len(images), "model_source": model_desc,
            "ground_truth": "dense depth PNGs" if drive.groundtruth_depth_path(0).is_file()
            else "projected LiDAR", "scaling": "per-image median (mono protocol)",
            "per_frame": per_frame}


def _write_report(settings: DemoSettings, report: dict[str, Any]) -> None:
    write_text_atomic(settings.out / "report.json", json.dumps(report, indent=2) + "\n")
    names = list(METRIC_NAMES)
    lines = ["# oe-depth demo report", "",
             f"Model: {report['model_source']}. Frames: {report['frames']}. "
             f"Ground truth: {report['ground_truth']}; scaling: {report['scaling']}.", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rows = (("model", "model, median-scaled"), ("constant_baseline", "best constant depth"),
            ("model_metric_scale", f"model, metric ({report['scale_method']} scale)"))
    for key, label in rows:
        lines.append(f"| {label} | " + " | ".join(f"{report[key][n]:.3f}" for n in names) + " |")
    lines += ["", "Stage wall times (s): " + ", ".join(
        f"{k} {v:.1f}" for k, v in report["stage_seconds"].items()), "",
        "Files: output.bag (depth, camera_info, points, coloured depth), panels/*.png "
        "(input | depth | error), cloud.ply, report.json."]
    write_text_atomic(settings.out / "report.md", "\n".join(lines) + "\n")


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every stage; returns the report (also written to ``out/report.json``)."""
    from oe_depth_ros.bags.kitti2bag import convert
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig
    from oe_depth_ros.scale import ScaleConfig

    settings.out.mkdir(parents=True, exist_ok=True)
    stages = _Stages()
    world = None
    if settings.kitti is not None:
        drive_dir = Path(settings.kitti)
        if not drive_dir.is_dir():
            raise FileNotFoundError(f"KITTI drive folder not found: {drive_dir}")
    if settings.model is not None:
        model_path = Path(settings.model)
        if not model_path.exists():
            raise FileNotFoundError(f"model file not found: {model_path}")
        model_desc = f"user model {model_path}"
    if settings.kitti is None or settings.model is None:
        world, synth_drive = stages.run("data", lambda: _synthetic_world(settings))
        if settings.kitti is None:
            drive_dir = synth_drive
    if settings.model is None:
        if settings.kitti is not None:
            LOG.warning("no --model: training on the synthetic world and running it on the "
                        "KITTI drive; expect poor depth (pass a model trained on KITTI)")
        checkpoint = stages.run("train", lambda: _train(settings, world))
        model_path = stages.run("export", lambda: _export(settings, checkpoint, synth_drive))
        model_desc = (f"trained here: {settings.train_config}, {settings.train_steps} steps "
                      f"at {settings.net_size[1]}x{settings.net_size[0]}")
    in_bag = settings.out / "input.bag"
    out_bag = settings.out / "output.bag"
    stages.run("kitti2bag", lambda: convert(drive_dir, in_bag, storage="mcap", distro="jazzy",
                                            max_frames=settings.max_frames, overwrite=True))
    backend = create_backend(settings.backend, model_path)
    pipeline_config = PipelineConfig(scale=ScaleConfig(method=settings.scale_method))
    summary = stages.run("process-bag", lambda: process_bag(
        in_bag, out_bag, DepthPipeline(backend, pipeline_config),
        ProcessOptions(namespace=NAMESPACE, overwrite=True,
                       metrics_path=settings.out / "lidar_metrics.json")))
    report = stages.run("report", lambda: _report(settings, in_bag, out_bag, drive_dir,
                                                  model_desc))
    report["backend"] = backend.name
    report["scale_method"] = settings.scale_method
    report["lidar_evaluation"] = summary.evaluation
    report["stage_seconds"] = stages.seconds
    _write_report(settings, report)
    return DemoResult(report=report, stage_seconds=stages.seconds)
