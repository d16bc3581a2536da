"""Metric AbsRel with the camera-height scale against the oracle per-image median scale.

Self-supervised depth is known up to a factor. The oracle (the evaluation protocol's
median scaling) uses the ground truth of each image; the camera-height strategy
(oe_depth_ros.scale.CameraHeightScale) only knows how high the camera is mounted.
This runs both over the frames of a KITTI-layout dataset (the synthetic world by
default) with any depth predictor and reports AbsRel, d1 and the recovered scale.

Predictors: ``gt`` (dense ground truth divided by a known factor: isolates the scale
strategy), ``gt-noisy`` (the same with 10 % log-normal pixel noise and a smooth
per-image error ramp), or ``--model FILE [--backend NAME]`` (a trained network run
through DepthPipeline with scale 1).

Usage:
  .venv/bin/python bench/bench_scale.py [--data ROOT | --generate DIR] [--predictor gt]
      [--model FILE] [--json OUT]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from _common import write_json
from oe_depth_ros.kitti.raw import KittiDrive, read_depth_png
from oe_depth_ros.metrics import evaluate_depth_map
from oe_depth_ros.scale import CameraHeightScale, ScaleConfig

#: Height of the OXTS unit above the road on the KITTI platform (the synthetic rig's too).
KITTI_IMU_HEIGHT = 0.93
#: The known factor the GT predictors divide by (any value; the estimators must undo it).
GT_FACTOR = 7.3

#: predict(image RGB, K, GT) -> unscaled depth at the image size (NaN = none). The GT is
#: passed for the GT-derived predictors; real predictors ignore it.
Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def camera_height_from_calib(calib: object, cam: int = 2,
                             imu_height: float = KITTI_IMU_HEIGHT) -> float:
    """Height of rectified camera ``cam`` above a level road, from the KITTI calibration.

    The IMU frame has z up; the camera center in that frame is -R^T t of the IMU ->
    camera transform, so its height is imu_height + that z.
    """
    t = calib.T_imu_to_rect(cam)  # type: ignore[attr-defined]
    center = -t[:3, :3].T @ t[:3, 3]
    return float(imu_height + center[2])


def read_gt(drive_dir: Path, idx: int) -> np.ndarray:
    """Dense GT depth in meters (0 = none) of camera 2, frame ``idx``."""
    return read_depth_png(KittiDrive(drive_dir).groundtruth_depth_path(idx))


Sample = tuple[str, np.ndarray, np.ndarray, np.ndarray, float]


def frames(drive_dirs: Iterable[Path]) -> Iterator[Sample]:
    """(drive name, RGB, K, GT depth, camera height) per frame, drive by drive."""
    from oe_depth_ros.kitti.raw import KittiDrive

    for drive_dir in drive_dirs:
        drive = KittiDrive(drive_dir)
        height = camera_height_from_calib(drive.calib)
        k = drive.calib.K_cam2
        for idx in range(drive.num_frames):
            yield drive.name, drive.image(2, idx), k, read_gt(Path(drive_dir), idx), height


def gt_predictor(noise: bool, seed: int = 0) -> Predictor:
    """GT / GT_FACTOR (NaN where there is no GT), optionally with noise and a bias ramp."""
    rng = np.random.default_rng(seed)

    def predict(image: np.ndarray, k: np.ndarray, gt: np.ndarray) -> np.ndarray:
        depth = np.where(gt > 0, gt / GT_FACTOR, np.nan).astype(np.float32)
        if noise:
            h, w = depth.shape
            ramp = 1.0 + 0.05 * np.linspace(-1, 1, h)[:, None] * rng.uniform(-1, 1)
            depth *= (rng.lognormal(0.0, 0.1, (h, w)) * ramp).astype(np.float32)
        return depth

    return predict


def model_predictor(model: Path, backend_name: str) -> Predictor:
    """A trained network through DepthPipeline at camera resolution with scale 1."""
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, Outputs, PipelineConfig
    from oe_depth_ros.scale import FixedScale

    backend = create_backend(backend_name, model)
    config = PipelineConfig(min_range=0.0, max_range=1000.0)
    pipeline = DepthPipeline(backend, config, FixedScale(1.0))
    depth_only = Outputs(points=False, colored=False)
    return lambda image, k, gt: pipeline.process(image, k, outputs=depth_only).depth


def scale_report(samples: Iterable[Sample], predict: Predictor,
                 config: ScaleConfig | None = None) -> dict[str, Any]:
    """Per-frame and mean metrics: camera-height scale vs oracle median scale.

    ``samples`` yields (drive, image, K, gt, camera height); the estimator's temporal
    window restarts at every new drive. ``predict(image, K)`` returns unscaled depth at
    the image size (NaN = no prediction).
    """
    config = config or ScaleConfig(method="camera_height")
    rows: list[dict[str, Any]] = []
    estimator: CameraHeightScale | None = None
    current = None
    for drive, image, k, gt, cam_height in samples:
        if drive != current:
            estimator, current = CameraHeightScale(cam_height, config), drive
        assert estimator is not None
        depth = predict(image, k, gt)
        est = estimator.estimate(depth, k)
        filled = np.where(np.isfinite(depth), depth, np.nanmax(depth)).astype(np.float32)
        oracle, ratio = evaluate_depth_map(gt, filled, median_scaling=True)
        metric, _ = evaluate_depth_map(gt, filled, median_scaling=False, scale=est.scale)
        rows.append({"drive": drive, "camera_height": cam_height, "scale": est.scale,
                     "raw_scale": est.raw, "source": est.source, "confidence": est.confidence,
                     "oracle_scale": ratio, "abs_rel_camera_height": metric["abs_rel"],
                     "a1_camera_height": metric["a1"], "abs_rel_oracle": oracle["abs_rel"],
                     "a1_oracle": oracle["a1"]})
    if not rows:
        raise ValueError("no frames to evaluate")
    summary = {key: statistics.fmean(float(r[key]) for r in rows)
               for key in ("abs_rel_camera_height", "abs_rel_oracle", "a1_camera_height",
                           "a1_oracle")}
    summary["scale_error"] = statistics.fmean(
        abs(float(r["scale"]) / float(r["oracle_scale"]) - 1.0) for r in rows)
    summary["held_frames"] = sum(1 for r in rows if str(r["source"]).endswith(":held"))
    summary["initial_frames"] = sum(1 for r in rows if str(r["source"]).endswith(":initial"))
    return {"frames": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="root of a KITTI-layout dataset with dense GT")
    parser.add_argument("--generate", type=Path,
                        help="generate the synthetic world here (default: a temporary folder)")
    parser.add_argument("--drives", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--width", type=int, default=1242)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--predictor", choices=("gt", "gt-noisy"), default="gt")
    parser.add_argument("--model", type=Path, help="run this model instead of a GT predictor")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--window", type=int, default=5, help="temporal median window")
    parser.add_argument("--min-confidence", type=float, default=ScaleConfig.min_confidence,
                        help="least inlier ratio of an accepted ground fit")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            drive_dirs = sorted(p for p in args.data.glob("*/*_sync") if p.is_dir())
            source = str(args.data)
        else:
            from oe_depth_ros.synthetic.dataset import generate_dataset

            t0 = time.perf_counter()
            out = args.generate or Path(tmp) / "synth"
            ds = generate_dataset(out, drives=args.drives, frames=args.frames, seed=args.seed,
                                  width=args.width, height=args.height, progress=True)
            drive_dirs = list(ds.drive_dirs)
            source = f"synthetic world seed {args.seed}, {args.width}x{args.height} " \
                     f"(generated in {time.perf_counter() - t0:.0f} s)"
        if args.model:
            predict, name = model_predictor(args.model, args.backend), str(args.model)
        else:
            predict, name = gt_predictor(args.predictor == "gt-noisy"), args.predictor
        tables = {}
        for window in sorted({1, args.window}):
            cfg = ScaleConfig(method="camera_height", window=window,
                              min_confidence=args.min_confidence)
            tables[window] = scale_report(frames(drive_dirs), predict, cfg)

    first = tables[min(tables)]["frames"]
    print(f"Scale recovery on {source}; predictor {name}; {len(first)} frames; "
          f"min confidence {args.min_confidence}; scale before the first good fit "
          f"{ScaleConfig.factor}")
    print(f"camera heights from the calibration: "
          f"{sorted({round(float(r['camera_height']), 4) for r in first})} m")
    head = (f"{'scale':<34}{'AbsRel':>9}{'d1':>8}{'|s/s_oracle - 1|':>18}{'held':>6}"
            f"{'initial':>9}")
    print(head)
    print("-" * len(head))
    base = tables[min(tables)]["summary"]
    print(f"{'oracle median (per image GT)':<34}{base['abs_rel_oracle']:>9.4f}"
          f"{base['a1_oracle']:>8.3f}{0.0:>18.4f}{0:>6}{0:>9}")
    for window, rep in tables.items():
        s = rep["summary"]
        label = f"camera height, window {window}"
        print(f"{label:<34}{s['abs_rel_camera_height']:>9.4f}{s['a1_camera_height']:>8.3f}"
              f"{s['scale_error']:>18.4f}{s['held_frames']:>6}{s['initial_frames']:>9}")
    if args.json:
        payload = {"source": source, "predictor": name,
                   "windows": {str(w): rep for w, rep in tables.items()}}
        write_json(args.json, payload, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
