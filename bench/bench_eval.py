"""Evaluation throughput on this CPU: prediction (ONNX Runtime) and metrics, separately.

    .venv/bin/python bench/bench_eval.py [--model-config diffnet] [--input 640x192] \
        [--image 1242x375] [--frames 12] [--threads 2] [--onnx MODEL.onnx] [--json OUT]

Renders a synthetic KITTI drive at the image size, exports the network to ONNX with
random weights (throughput does not depend on the weights) unless --onnx is given,
and times each stage of the evaluation per image: prediction with and without flip
post-processing (resize + inference + resize back + inversion), the velodyne
ground-truth projection, the standard metrics, the edge/boundary/bin regions, and the
whole ``training.evaluate`` loop. Ratios are against plain prediction.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _common import cpu_name, time_passes, write_json
from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE, parse_size
from oe_depth_ros.kitti.splits import SplitEntry, write_split_file
from oe_depth_ros.metrics import align_prediction, compute_errors, valid_mask
from training.edge_metrics import RegionReport
from oe_depth_ros.pipeline import disparity_to_depth
from training.evaluate import (
    EvalOptions,
    evaluate,
    load_train_ids,
    predict_disparity,
)
from training.gt_depth import VelodyneGroundTruth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", default="diffnet")
    parser.add_argument("--input", type=parse_size, default=DEFAULT_NETWORK_SIZE,
                        help="network WxH (default 640x192)")
    parser.add_argument("--image", type=parse_size, default="1242x375", help="image WxH")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", default=None, help="use this ONNX file instead of exporting")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.kitti.labels import SEGMENTATION_DIR
    from oe_depth_ros.synthetic.dataset import generate_dataset

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        t0 = time.perf_counter()
        world = generate_dataset(Path(tmp) / "world", drives=1, frames=args.frames, seed=3,
                                 width=args.image[1], height=args.image[0])
        synth_s = time.perf_counter() - t0
        onnx_path = args.onnx
        if onnx_path is None:
            from oe_depth_ros.inference.export import export_onnx

            onnx_path = str(Path(tmp) / "model.onnx")
            export_onnx(args.model_config, onnx_path, args.input[0], args.input[1])
        backend = create_backend("onnxruntime", onnx_path, device="cpu", threads=args.threads)

        drive_dir = Path(world.drive_dirs[0])
        folder = f"{drive_dir.parent.name}/{drive_dir.name}"
        entries = [SplitEntry(folder, i, "l") for i in range(args.frames)]
        gt_source = VelodyneGroundTruth(world.root)
        from oe_depth_ros.kitti.raw import KittiDrive

        drive = KittiDrive(drive_dir)
        images = [drive.image(2, i) for i in range(args.frames)]
        gts = [gt_source.get(i, e) for i, e in enumerate(entries)]
        seg_root = Path(world.root) / SEGMENTATION_DIR
        labels = [load_train_ids(seg_root, e, g.shape) for e, g in zip(entries, gts)]
        preds = [disparity_to_depth(predict_disparity(backend, im, False), g.shape)
                 for im, g in zip(images, gts)]
        n, r = args.frames, args.repeats

        def wall(fn: Callable[[int], Any], count: int = n) -> list[float]:
            return time_passes(fn, count, r)[0]  # wall seconds per image, one per pass

        def predict(i: int) -> None:
            disparity_to_depth(predict_disparity(backend, images[i], False), gts[i].shape)

        def predict_flip(i: int) -> None:
            disparity_to_depth(predict_disparity(backend, images[i], True), gts[i].shape)

        def project(i: int) -> None:
            gt_source.get(i, entries[i])

        def standard(i: int) -> None:
            mask = valid_mask(gts[i])
            aligned, _ = align_prediction(gts[i], preds[i], mask)
            compute_errors(gts[i][mask], aligned[mask])

        report = RegionReport()

        def regions(i: int) -> None:
            mask = valid_mask(gts[i])
            aligned, _ = align_prediction(gts[i], preds[i], mask)
            report.add(gts[i], aligned, mask, labels[i])

        stages = {
            "predict (ORT, resize, 1/disp)": wall(predict),
            "predict + flip post-process": wall(predict_flip),
            "velodyne GT projection": wall(project),
            "standard metrics": wall(standard),
            "metrics + edge/boundary/bins": wall(regions),
        }
        split = Path(tmp) / "split.txt"
        write_split_file(split, entries)
        opts = EvalOptions(model=onnx_path, data_path=str(world.root), split_file=str(split),
                           progress=False, save_panels=0)

        def whole(_: int) -> None:
            evaluate(opts, backend)

        stages["whole evaluate loop"] = [t / n for t in wall(whole, 1)]

    base = statistics.median(stages["predict (ORT, resize, 1/disp)"])
    rows: list[dict[str, Any]] = []
    for name, times in stages.items():
        med = statistics.median(times)
        rows.append({"stage": name, "ms_per_image": med * 1e3, "images_per_s": 1.0 / med,
                     "ratio_vs_predict": med / base, "runs_ms": [t * 1e3 for t in times]})
    width = max(len(r["stage"]) for r in rows)
    print(f"evaluation throughput, {args.model_config} ONNX {args.input[0]}x{args.input[1]}, "
          f"images {args.image[0]}x{args.image[1]}, {n} frames x {r} passes, "
          f"{args.threads} threads, {cpu_name()}")
    print(f"{'stage'.ljust(width)} | {'ms/img':>8} | {'img/s':>8} | {'x predict':>9}")
    for row in rows:
        print(f"{row['stage'].ljust(width)} | {row['ms_per_image']:8.2f} | "
              f"{row['images_per_s']:8.2f} | {row['ratio_vs_predict']:9.3f}")
    if args.json:
        write_json(args.json, {
            "model_config": args.model_config, "input_size": list(args.input),
            "image_size": list(args.image), "frames": n, "repeats": r,
            "threads": args.threads, "cpu_count": os.cpu_count(),
            "synthetic_world_s": synth_s, "stages": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
