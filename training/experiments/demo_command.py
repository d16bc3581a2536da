"""The whole system on a synthetic drive: train, export, bag, depth, report."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from oe_depth_ros.inference.backends import BACKEND_NAMES

if TYPE_CHECKING:
    from .demo import DemoSettings

LOG = logging.getLogger("oe-depth.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's options."""
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"),
                        help="output folder (default: outputs/demo)")
    parser.add_argument("--model", type=Path, default=None,
                        help="your trained model: checkpoint, ONNX or TensorRT engine "
                             "(default: train one on the synthetic drives)")
    parser.add_argument("--kitti", type=Path, default=None,
                        help="a KITTI raw drive folder (<date>/<date>_drive_<n>_sync) instead "
                             "of the synthetic world (give --model: a synthetically trained "
                             "model does not transfer)")
    parser.add_argument("--backend", default="auto",
                        choices=BACKEND_NAMES)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps when no --model is given")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads while training (default: every usable core; "
                             "give 1 when other work shares the cores)")
    parser.add_argument("--frames", type=int, default=None,
                        help="synthetic frames per drive")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="process at most this many frames of the drive")
    parser.add_argument("--compressed", nargs="?", const="jpeg", default=None,
                        choices=("jpeg", "png"),
                        help="write the drive's images as CompressedImage (image_transport's "
                             "compressed plugin; default codec jpeg) and process those")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panel", type=Path, default=None,
                        help="also write the middle frame's panel here (the README's image: "
                             "docs/images/demo_panel.png)")
    parser.add_argument("--fast", action="store_true",
                        help="smallest configuration that runs every stage (about a minute; "
                             "the model barely trains)")


def settings_from_args(args: argparse.Namespace) -> "DemoSettings":
    """DemoSettings: the default or ``--fast`` preset with the given options over it."""
    from .demo import DemoSettings

    base = DemoSettings.fast(args.out) if args.fast else DemoSettings(out=args.out)
    chosen = {"model": args.model, "kitti": args.kitti, "backend": args.backend,
              "seed": args.seed, "max_frames": args.max_frames, "compressed": args.compressed,
              "panel": args.panel}
    optional = {"train_steps": args.train_steps, "frames": args.frames,
                "train_threads": args.threads}  # None: the preset's
    chosen.update({k: v for k, v in optional.items() if v is not None})
    return dataclasses.replace(base, **chosen)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where its results are."""
    from .demo import run_demo

    result = run_demo(settings_from_args(args))
    model, const = result.report["model"], result.report["constant_baseline"]
    LOG.info("AbsRel: model %.3f vs best constant depth %.3f (d1 %.3f vs %.3f) over %d frames",
             model["abs_rel"], const["abs_rel"], model["a1"], const["a1"],
             result.report["frames"])
    comparison = result.report["versus_constant"]
    LOG.log(logging.INFO if comparison["beats_constant"] else logging.WARNING, "%s",
            comparison["summary"])
    LOG.info("total %.0f s wall, %.0f s CPU; results in %s: report.md, report.json, "
             "output.bag, panels/, cloud.ply", result.report["total_seconds"],
             result.report["total_cpu_seconds"], args.out)
    return 0
