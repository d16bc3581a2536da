"""The whole system on one drive: data, model, bag, depth over the bag, report.

Stages (each timed in wall and CPU seconds and reported):

1. ``data``: a synthetic KITTI-format world (training drives + a held-out drive),
   unless both ``--kitti`` and ``--model`` are given.
2. ``train``: without ``--model``, a short self-supervised training run on the
   synthetic training drives (:class:`training.trainer.Trainer`, in this process).
3. ``export``: the checkpoint of lowest validation error (:func:`select_checkpoint`) to
   ONNX, verified against float64 PyTorch on the pattern, the shipped photograph and a
   frame of the drive.
4. ``kitti2bag``: the held-out drive (or ``--kitti``) to a rosbag2.
5. ``process-bag``: the depth pipeline over the bag into an output bag.
6. ``report``: depth read back from the output bag against ground truth, next to the
   best constant depth (:func:`training.experiments.baselines.best_constant_depth`); PNG panels per
   frame, a colored PLY cloud, report.md/json.

The demo lives in ``training`` because it trains; ``oe_depth_ros`` never imports it
(``oe-depth demo`` is registered through the ``oe_depth_ros.commands`` entry point).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np

from oe_depth_ros.atomic import write_bytes_atomic, write_text_atomic
from oe_depth_ros.metrics import (EIGEN_MAX_DEPTH, EIGEN_MIN_DEPTH, HIGHER_IS_BETTER,
                                  METRIC_NAMES, evaluate_depth_map, valid_mask)
from oe_depth_ros.scale import CameraHeightScale, ScaleConfig, ScaleMethod
from ..edge_metrics import RegionReport
from .baselines import best_constant_depth

if TYPE_CHECKING:
    from oe_depth_ros.bags.process_bag import ProcessOptions
    from oe_depth_ros.inference.export import ExportReport
    from oe_depth_ros.kitti.raw import KittiDrive
    from oe_depth_ros.synthetic.dataset import SynthDataset

LOG = logging.getLogger(__name__)

#: The demo world's image size (H, W), which the network also trains at: downscaled to
#: 192x64, the world's drives move a point 20 m ahead and 3 m aside by under a pixel
#: (docs/results/2026-12-07-demo-budget.md).
DEMO_SIZE = (96, 288)


@dataclass(kw_only=True)
class DemoSettings:
    """What the demo runs on and how long it trains."""

    out: Path
    model: Path | None = None
    kitti: Path | None = None
    #: synthetic world: drives (the last is held out), frames per drive, render size (H, W)
    drives: int = 9
    frames: int = 24
    render_size: tuple[int, int] = DEMO_SIZE
    seed: int = 0
    #: training without --model: config name, steps, network input size (H, W)
    train_config: str = "synth_small_oxts"
    #: the most training steps; a recipe whose own epochs (its config) end sooner stops
    #: there, as the pose network's synth_small does
    train_steps: int = 1000
    train_batch: int = 4
    net_size: tuple[int, int] = DEMO_SIZE
    #: torch threads while training: None, every core this process may run on (the demo
    #: runs alone); 1 where several runs share the cores (the config's own setting)
    train_threads: int | None = None
    backend: str = "auto"
    #: metric scale of the published depth: auto (a metric model's own metres, the
    #: camera-height fit for a relative model), camera_height (1.65 m mount) or fixed
    scale_method: ScaleMethod = "auto"
    max_frames: int | None = None
    #: jpeg or png: the bag carries CompressedImage (image_transport's compressed plugin)
    compressed: str | None = None
    #: also write the representative panel (``panel.png``) here, e.g. the README's image
    panel: Path | None = None

    @property
    def threads(self) -> int:
        """Torch threads for training: ``train_threads``, else every usable core.

        Usable: the cores in this process's affinity, not the machine's count.
        """
        if self.train_threads is None:
            return len(os.sched_getaffinity(0))
        return self.train_threads

    @classmethod
    def fast(cls, out: Path) -> "DemoSettings":
        """The quickest configuration that still runs every stage (used by the tests)."""
        return cls(out=out, drives=2, frames=8, render_size=(64, 192), train_steps=3,
                   train_batch=2, net_size=(64, 192))

    def check_inputs(self) -> None:
        """Refuse bad inputs before anything is rendered or trained.

        A missing --model or --kitti path, fewer than one training thread, or too few
        frames per drive for one training batch. Raises FileNotFoundError for the paths
        and ValueError for the counts.
        """
        if self.train_threads is not None and self.train_threads < 1:
            raise ValueError(f"train_threads must be at least 1, got {self.train_threads}")
        if self.model is not None and not Path(self.model).exists():
            raise FileNotFoundError(f"model file not found: {self.model}")
        if self.kitti is not None and not Path(self.kitti).is_dir():
            raise FileNotFoundError(f"KITTI drive folder not found: {self.kitti}")
        if self.model is None:
            self._check_training_frames()

    def _check_training_frames(self) -> None:
        """Refuse --frames that leave the recipe fewer training frames than one batch."""
        from oe_depth_ros.synthetic.dataset import split_entries

        reach = recipe_reach(self.train_config)

        def usable(frames: int) -> int:
            return len(split_entries(self.drives, frames, reach=reach)["train"])

        have = usable(self.frames)
        if have >= self.train_batch:
            return
        need = next(f for f in itertools.count(self.frames + 1)
                    if usable(f) >= self.train_batch)
        raise ValueError(
            f"--frames {self.frames} leaves {have} training frame(s) for "
            f"{self.train_config}, whose source frames reach {reach} frame(s) either side, "
            f"fewer than one batch of {self.train_batch}: give --frames {need} or more")


@dataclass
class DemoResult:
    """The report the demo wrote and its stage times."""

    report: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Stages:
    """Runs named stages, timing each one in wall-clock and CPU seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        LOG.info("demo stage '%s' ...", name)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - wall, 2)
        self.cpu_seconds[name] = round(_cpu_seconds() - cpu, 2)
        LOG.info("demo stage '%s' done in %.1f s (%.1f s CPU)", name, self.seconds[name],
                 self.cpu_seconds[name])
        return result


def _synthetic_world(settings: DemoSettings) -> "SynthDataset":
    from oe_depth_ros.synthetic.dataset import generate_dataset

    h, w = settings.render_size
    return generate_dataset(settings.out / "data", drives=settings.drives,
                            frames=settings.frames, seed=settings.seed, width=w, height=h,
                            progress=True)


def _held_out_drive(world: "SynthDataset | None") -> Path:
    if world is None:
        raise ValueError("no synthetic world was rendered to take a drive from")
    return Path(world.root) / world.split_files["test"].read_text().split()[0]


@dataclass(frozen=True)
class TrainedModel:
    """The checkpoint the demo exports and why it was chosen."""

    checkpoint: Path
    #: the validation record of the chosen epoch (step, abs_rel, ...); None without validation
    validation: dict[str, Any] | None = None
    #: the record's key that chose it (the trainer's BEST_BY order)
    chosen_by: str | None = None
    #: steps trained (the run's, not the checkpoint's)
    steps: int | None = None

    def describe(self) -> str:
        if self.validation is None or self.chosen_by is None:
            return f"{self.checkpoint.name} (last step; no validation ran)"
        return (f"{self.checkpoint.name}: step {self.validation['step']}, the lowest validation "
                f"{self.chosen_by} ({self.validation[self.chosen_by]:.4g}) on the frames held "
                "back from the training drives")


def select_checkpoint(run_dir: Path, records: list[dict[str, Any]]) -> TrainedModel:
    """best.pt (the epoch of lowest validation error) when validation ran, else last.pt.

    ``records`` are this run's validation results (``Trainer.val_history``), not a file
    that an earlier run in the same folder may have left. Training from scratch swings
    widely at the demo's budget (docs/training.md), so the last step may fall on a poor
    moment. The validation frames are held back from the training drives (with ground
    truth in the synthetic world); the held-out drive the demo scores on takes no part.
    """
    from ..checkpointing import LAST_NAME
    from ..trainer import BEST_BY, BEST_NAME

    key = next((k for k in BEST_BY if records and all(k in r for r in records)), None)
    if key is not None and (run_dir / BEST_NAME).is_file():
        return TrainedModel(run_dir / BEST_NAME, min(records, key=lambda r: r[key]), key)
    if not (run_dir / LAST_NAME).is_file():
        raise RuntimeError(f"training finished but wrote no checkpoint in {run_dir}")
    return TrainedModel(run_dir / LAST_NAME)


def recipe_reach(train_config: str) -> int:
    """How many frames away the recipe's farthest source frame is (1 for -1 and +1)."""
    from ..train_config import load_train_config

    return max(abs(f) for f in load_train_config(train_config).data.frame_ids)


def recipe_splits(train_config: str, world: "SynthDataset", frames: int) -> dict[str, Path]:
    """The world's split files, or ones for the recipe's farther source frames.

    The world (of ``frames`` frames per drive) lists the frames with both neighbours; a
    recipe whose source frames reach further (synth_small_oxts: -2 and +2) gets split
    files of the frames that have them, written beside the world's (``splits/reach<N>/``).
    """
    from oe_depth_ros.synthetic.dataset import write_splits

    reach = recipe_reach(train_config)
    if reach <= 1:
        return world.split_files
    return write_splits(Path(world.root) / "splits" / f"reach{reach}", len(world.drive_dirs),
                        frames, reach)


def train_on_world(settings: DemoSettings, world: "SynthDataset | None") -> TrainedModel:
    """Short self-supervised training on the synthetic training drives; returns the model."""
    if world is None:
        raise ValueError("no synthetic world was rendered to train on")
    from ..train_config import load_train_config
    from ..trainer import Trainer

    h, w = settings.net_size
    splits = recipe_splits(settings.train_config, world, settings.frames)
    cfg = load_train_config(settings.train_config, [
        f"data.data_path={world.root}",
        f"data.train_split={splits['train']}",
        f"data.val_split={splits['val']}",
        f"data.height={h}", f"data.width={w}",
        f"optim.batch_size={settings.train_batch}",
        f"max_steps={settings.train_steps}", f"seed={settings.seed}",
        f"cpu_threads={settings.threads}"])
    LOG.info("no --model given: training one on the synthetic drives (at most %d steps at "
             "%dx%d, %d torch threads)", settings.train_steps, w, h, settings.threads)
    trainer = Trainer(cfg, out_dir=settings.out / "training")
    try:
        trainer.fit()
    finally:
        trainer.close()
    trained = replace(select_checkpoint(trainer.out_dir, trainer.val_history),
                      steps=trainer.step)
    LOG.info("exporting %s", trained.describe())
    return trained


def _export(settings: DemoSettings, checkpoint: Path, drive_dir: Path) -> "ExportReport":
    """Export the checkpoint, verified also on a real frame of the drive."""
    from oe_depth_ros.inference.export import export_onnx
    from oe_depth_ros.kitti.raw import KittiDrive

    h, w = settings.net_size
    return export_onnx(None, settings.out / "model.onnx", h, w, checkpoint=checkpoint,
                       verify_image=KittiDrive(drive_dir).image(2, 0))


def _export_summary(report: "ExportReport") -> dict[str, Any]:
    """The export's verification and conditioning figures for report.json."""
    return {"seconds": report.seconds,
            "float32_vs_float64": {name: vars(s) for name, s in report.conditioning.items()},
            "onnxruntime_vs_float64": {c.name: vars(c.runtime) for c in report.checks},
            "pinned_fraction": report.pinned}


def _ground_truth(drive: "KittiDrive", frame: int, size: tuple[int, int]) -> np.ndarray:
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


def drive_train_ids(drive_dir: Path, frame: int, size: tuple[int, int]) -> np.ndarray | None:
    """The frame's semantic trainIds at ``size``, where the drive has labels (FSRE layout).

    The synthetic world writes them (``<root>/segmentation/<date>/<drive>``); a KITTI copy
    has them where FSRE-Depth's pseudo-labels were added; otherwise (a drive not two
    folders below a root, too) None.
    """
    from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
    from oe_depth_ros.kitti.splits import SplitEntry
    from ..semantic_labels import load_train_ids

    drive_dir = drive_dir.resolve()
    if len(drive_dir.parents) < 2:
        return None
    entry = SplitEntry(folder=f"{drive_dir.parent.name}/{drive_dir.name}", frame=frame)
    return load_train_ids(drive_dir.parents[1] / SEGMENTATION_DIR, entry, size)


def _panel(rgb: np.ndarray, depth: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Input | ground truth | median-scaled depth | abs-rel error, stacked vertically."""
    from oe_depth_ros.colormap import colorize_depth

    valid = (gt > EIGEN_MIN_DEPTH) & np.isfinite(depth)
    err = np.zeros_like(gt)
    err[valid] = np.abs(depth[valid] - gt[valid]) / gt[valid]
    err_img = cv2.applyColorMap(np.clip(err / 0.3 * 255, 0, 255).astype(np.uint8),
                                cv2.COLORMAP_INFERNO)[..., ::-1]
    err_img[~valid] = 0
    gt_shown = np.where(gt > EIGEN_MIN_DEPTH, gt, np.nan).astype(np.float32)
    rows = [rgb, colorize_depth(gt_shown, 0.0, EIGEN_MAX_DEPTH),
            colorize_depth(np.nan_to_num(depth, nan=0.0), 0.0, EIGEN_MAX_DEPTH), err_img]
    labels = ["input", f"ground truth 0-{EIGEN_MAX_DEPTH:g} m", "prediction (median-scaled)",
              "abs rel error 0-30%"]
    out = []
    for row, label in zip(rows, labels):
        row = np.array(row[..., :3], dtype=np.uint8, copy=True)
        cv2.putText(row, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out.append(row)
    return np.vstack(out)


def _write_panel(settings: DemoSettings, panel: np.ndarray) -> None:
    """The representative panel (the middle held-out frame) to panel.png and settings.panel."""
    ok, png = cv2.imencode(".png", panel[..., ::-1])
    if not ok:
        raise RuntimeError("cannot encode the demo panel as PNG")
    for path in filter(None, (settings.out / "panel.png", settings.panel)):
        write_bytes_atomic(path, png.tobytes())


def _edge_summary(edges: RegionReport) -> dict[str, Any]:
    """Median-scaled errors pooled near depth discontinuities, away from them, per class.

    ``classes`` is empty where the drive has no semantic labels.
    """
    result = edges.result()
    return {"definition": result["definition"],
            **{name: result["regions"][name]
               for name in ("all", "near_depth_edges", "away_from_depth_edges")},
            "classes": result["classes"]}


def class_summary(classes: dict[str, dict[str, Any]], total_pixels: int) -> str:
    """One sentence: each class's pooled Abs Rel and share of the pixels.

    The class with the largest part of the pooled error (Abs Rel x pixels) comes first.
    """
    ranked = sorted(classes.items(), key=lambda kv: -kv[1]["abs_rel"] * kv[1]["n_pixels"])

    def share(n: int) -> str:
        return f"{n / total_pixels:.0%}" if n / total_pixels >= 0.005 else "<1%"

    parts = [f"{name} {res['abs_rel']:.3f} ({share(res['n_pixels'])})" for name, res in ranked]
    return ("By semantic class, median-scaled Abs Rel (share of the pixels), the largest "
            "part of the pooled error first: " + ", ".join(parts) + ".")


def _constant_errors(gt: np.ndarray) -> dict[str, float]:
    """Errors of the best constant depth (the Abs Rel minimizer) on the evaluated pixels."""
    c = best_constant_depth(gt, valid_mask(gt))
    return evaluate_depth_map(gt, np.full_like(gt, c), median_scaling=False)[0]


def versus_constant(model: dict[str, float], constant: dict[str, float],
                    trained_here: bool = True) -> dict[str, Any]:
    """How the model compares with the best constant depth, metric by metric.

    ``beats_constant`` is the headline: a lower Abs Rel. A briefly trained network from
    random weights can end up worse than the constant (docs/deployment.md), and the demo
    must say so rather than let a user read a depth-blind model as a working one.
    ``summary`` says it in a sentence (report.md and the log); ``trained_here`` (the demo
    trained the model, else it is the user's ``--model``) decides what it suggests when
    the model loses.
    """
    better = [name for name in METRIC_NAMES
              if (model[name] > constant[name] if name in HIGHER_IS_BETTER
                  else model[name] < constant[name])]
    beats, ratio = model["abs_rel"] < constant["abs_rel"], model["abs_rel"] / constant["abs_rel"]
    counted = f"{len(better)} of {len(METRIC_NAMES)} metrics"
    if beats:
        summary = (f"The model beats the best constant depth: Abs Rel {ratio:.2f}x the "
                   f"constant's, better on {counted}.")
    else:
        summary = (f"The model does NOT beat the best constant depth: Abs Rel {ratio:.2f}x the "
                   f"constant's (better on {counted}). "
                   + ("Training from random weights for a few minutes swings from seed to "
                      "seed; try another --seed or more --train-steps, or pass a trained "
                      "--model." if trained_here
                      else "Check that the model was trained on images like these."))
    return {"beats_constant": beats, "abs_rel_ratio": ratio, "better_metrics": better,
            "worse_metrics": [n for n in METRIC_NAMES if n not in better], "summary": summary}


def _report(settings: DemoSettings, options: "ProcessOptions", in_bag: Path, out_bag: Path,
            drive_dir: Path, scale: ScaleConfig) -> dict[str, Any]:
    """Errors of the published depth: median-scaled, as published, and camera-height scaled."""
    from oe_depth_ros.bags.bagio import BagReader
    from oe_depth_ros.kitti.raw import KittiDrive
    from oe_depth_ros.intake import any_image_rgb_from_msg
    from oe_depth_ros.messages import image_to_numpy, pointcloud2_to_numpy
    from oe_depth_ros.ply import write_ply
    from oe_depth_ros.pointcloud import unpack_rgb

    drive = KittiDrive(drive_dir)
    panels_dir = settings.out / "panels"
    panels_dir.mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] = []
    with BagReader(in_bag) as src:
        for conn, stamp, data in src.messages([options.image_topic]):
            images.append(any_image_rgb_from_msg(src.deserialize(data, conn, stamp)))
    depths: list[np.ndarray] = []
    clouds: list[np.ndarray] = []
    depth_topic, points_topic = f"{options.namespace}/depth/image", f"{options.namespace}/points"
    with BagReader(out_bag) as dst:
        for conn, stamp, data in dst.messages([depth_topic, points_topic]):
            msg = dst.deserialize(data, conn, stamp)
            if conn.topic == depth_topic:
                depths.append(image_to_numpy(msg).astype(np.float32))
            else:
                clouds.append(pointcloud2_to_numpy(msg))
    if not depths or len(depths) != len(images):
        raise RuntimeError(f"{out_bag}: {len(depths)} depth images for {len(images)} inputs")
    model_rows, metric_rows, height_rows, const_rows, per_frame = [], [], [], [], []
    edges = RegionReport()
    camera_height = CameraHeightScale(scale.camera_height, replace(scale, method="camera_height"))
    for idx, (rgb, depth) in enumerate(zip(images, depths)):
        gt = _ground_truth(drive, idx, depth.shape)
        pred = np.nan_to_num(depth, nan=EIGEN_MAX_DEPTH)
        errors, ratio = evaluate_depth_map(gt, pred)
        metric_rows.append(evaluate_depth_map(gt, pred, median_scaling=False)[0])
        # the camera-height fit on the published depth: its metres whatever the model's units
        fit = camera_height.estimate(depth, drive.calib.K_cam2).scale
        height_rows.append(evaluate_depth_map(gt, pred, median_scaling=False, scale=fit)[0])
        model_rows.append(errors)
        const_rows.append(_constant_errors(gt))
        per_frame.append({"frame": idx, "abs_rel": errors["abs_rel"], "ratio": ratio})
        mask = valid_mask(gt)
        edges.add(gt, np.clip(pred * ratio, EIGEN_MIN_DEPTH, EIGEN_MAX_DEPTH), mask,
                  drive_train_ids(drive_dir, idx, gt.shape))
        panel = _panel(rgb, depth * ratio, gt)
        cv2.imwrite(str(panels_dir / f"{idx:06d}.png"), panel[..., ::-1])
        if idx == len(images) // 2:
            _write_panel(settings, panel)
    cloud = clouds[len(clouds) // 2]
    write_ply(settings.out / "cloud.ply", np.stack([cloud["x"], cloud["y"], cloud["z"]], 1),
              unpack_rgb(cloud["rgb"]))

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}

    return {"model": mean(model_rows), "constant_baseline": mean(const_rows),
            "model_metric_scale": mean(metric_rows), "model_camera_height": mean(height_rows),
            "frames": len(images), "depth_edges": _edge_summary(edges),
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
    rows = (("model", "model, median-scaled"),
            ("constant_baseline", "best constant depth (Abs Rel minimizer, per frame)"),
            ("model_metric_scale", f"model, metric as published ({report['published_scale']})"),
            ("model_camera_height", "model, camera-height scale (1.65 m ground fit)"))
    for key, label in rows:
        lines.append(f"| {label} | " + " | ".join(f"{report[key][n]:.3f}" for n in names) + " |")
    stage_times = ", ".join(f"{k} {v:.1f} ({report['stage_cpu_seconds'][k]:.1f})"
                            for k, v in report["stage_seconds"].items())
    edge = report["depth_edges"]
    near, away = edge["near_depth_edges"], edge["away_from_depth_edges"]
    if near["n_pixels"] and away["n_pixels"]:
        lines += ["", f"Near depth discontinuities (within {edge['definition']['radius']:g} px "
                  f"of a ground-truth depth jump over {edge['definition']['depth_jump']:.0%}; "
                  f"{near['n_pixels'] / edge['all']['n_pixels']:.0%} of the pixels), "
                  f"median-scaled Abs Rel {near['abs_rel']:.3f}, d1 {near['a1']:.3f}; away "
                  f"from them {away['abs_rel']:.3f}, d1 {away['a1']:.3f} (pooled over pixels)."]
    if edge["classes"]:
        lines += ["", class_summary(edge["classes"], edge["all"]["n_pixels"])]
    lines += ["", report["versus_constant"]["summary"], "",
              f"Stage times, wall s (CPU s): {stage_times}; total "
              f"{report['total_seconds']:.1f} ({report['total_cpu_seconds']:.1f})", "",
              "Files: output.bag (depth, camera_info, points, colored depth), panels/*.png "
              "(input | ground truth | depth | error), panel.png (the middle frame's), "
              "cloud.ply, report.json."]
    write_text_atomic(settings.out / "report.md", "\n".join(lines) + "\n")


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every stage; returns the report (also written to ``out/report.json``)."""
    from oe_depth_ros.bags.kitti2bag import LEFT_COLOR_IMAGE_TOPIC, convert
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.compressed import transport_topic
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig

    settings.check_inputs()
    settings.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter(), _cpu_seconds()
    stages = _Stages()
    extra: dict[str, Any] = {}
    # A synthetic world is needed to train on, or to run on when no drive is given.
    world = (stages.run("data", lambda: _synthetic_world(settings))
             if settings.model is None or settings.kitti is None else None)
    drive_dir = Path(settings.kitti) if settings.kitti is not None else _held_out_drive(world)
    model_path = settings.model
    model_desc = f"user model {settings.model}"
    if model_path is None:
        if settings.kitti is not None:
            LOG.warning("no --model: training on the synthetic world and running it on the "
                        "KITTI drive; expect poor depth (pass a model trained on KITTI)")
        trained = stages.run("train", lambda: train_on_world(settings, world))
        exported = stages.run("export", lambda: _export(settings, trained.checkpoint,
                                                        _held_out_drive(world)))
        model_path, extra["export"] = exported.path, _export_summary(exported)
        extra["checkpoint"] = {"file": str(trained.checkpoint),
                               "validation": trained.validation}
        extra["train_threads"], extra["train_steps"] = settings.threads, trained.steps
        model_desc = (f"trained here: {settings.train_config}, {trained.steps} steps "
                      f"at {settings.net_size[1]}x{settings.net_size[0]} on "
                      f"{settings.threads} torch thread(s), {trained.describe()}")
    in_bag, out_bag = settings.out / "input.bag", settings.out / "output.bag"
    stages.run("kitti2bag", lambda: convert(drive_dir, in_bag, storage="mcap", distro="jazzy",
                                            max_frames=settings.max_frames, overwrite=True,
                                            compressed=settings.compressed))
    backend = create_backend(settings.backend, model_path)
    pipeline_config = PipelineConfig(scale=ScaleConfig(method=settings.scale_method,
                                                       relative_method="camera_height"))
    units = backend.units
    if settings.scale_method == "auto" and units.metric:
        published = f"the model's own {units.describe()}, no camera height, no ground truth"
    else:
        used = "camera_height" if settings.scale_method == "auto" else settings.scale_method
        published = f"{used} scale; the model is {units.describe()}"
    transport = "compressed" if settings.compressed else "raw"
    options = ProcessOptions(image_topic=transport_topic(LEFT_COLOR_IMAGE_TOPIC, transport),
                             overwrite=True, metrics_path=settings.out / "lidar_metrics.json")
    summary = stages.run("process-bag", lambda: process_bag(
        in_bag, out_bag, DepthPipeline(backend, pipeline_config), options))
    report = stages.run("report", lambda: _report(settings, options, in_bag, out_bag,
                                                  drive_dir, pipeline_config.scale))
    report["versus_constant"] = versus_constant(report["model"], report["constant_baseline"],
                                                trained_here=settings.model is None)
    report.update(extra, model_source=model_desc, backend=backend.name,
                  scale_method=settings.scale_method, published_scale=published,
                  depth_units=units.to_dict(), lidar_evaluation=summary.evaluation,
                  stage_seconds=stages.seconds, stage_cpu_seconds=stages.cpu_seconds,
                  total_seconds=round(time.perf_counter() - start[0], 2),
                  total_cpu_seconds=round(_cpu_seconds() - start[1], 2))
    _write_report(settings, report)
    return DemoResult(report=report, stage_seconds=stages.seconds)
