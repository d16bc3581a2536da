"""Export a depth network to ONNX (batch 1, static shape), verified with ONNX Runtime."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oe_depth_ros.calibration import DEFAULT_FRAMES
from oe_depth_ros.inference.metadata import ONNX_PRECISIONS

LOG = logging.getLogger("oe-depth.export-onnx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's options."""
    parser.add_argument("--model-config", default=None, metavar="NAME_OR_YAML",
                        help="architecture: a config/model name (diffnet, oe_depth, ...) or a "
                             "YAML file; optional with a training checkpoint, which records it")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="training checkpoint or depth-network state_dict; without it the "
                             "export has random weights (for testing)")
    parser.add_argument("--height", type=int, required=True, help="input height (multiple of 32)")
    parser.add_argument("--width", type=int, required=True, help="input width (multiple of 32)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18, default 18)")
    parser.add_argument("--precision", choices=ONNX_PRECISIONS, default="fp32",
                        help="fp16 runs the network in float16 inside the graph (float32 input "
                             "and output): needed for fp16 engines on TensorRT 11; int8 is a "
                             "static QDQ model for the CPU backends (needs --calibration)")
    parser.add_argument("--calibration", default=None, metavar="SOURCE",
                        help="int8 calibration images: a folder of images, bag:BAG:/TOPIC (a "
                             "rosbag2's sensor_msgs/Image topic) or synthetic (the synthetic "
                             "world); use images like the camera's")
    parser.add_argument("--calibration-frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                        help=f"at most N calibration images, spread over the source "
                             f"(default {DEFAULT_FRAMES})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument("--verify-image", type=Path, default=None,
                        help="an image file (e.g. a camera frame) to verify the export on "
                             "(default: a synthetic pattern)")


def run(args: argparse.Namespace) -> int:
    """Export; the export logs its verification and the network's float32 conditioning."""
    from oe_depth_ros.inference.conditioning import read_rgb
    from oe_depth_ros.inference.export import export_onnx

    if args.model_config is None and args.checkpoint is None:
        raise ValueError("give --model-config NAME_OR_YAML (and --checkpoint for trained weights)")
    if (args.calibration is None) != (args.precision != "int8"):
        raise ValueError("--precision int8 needs --calibration SOURCE, and --calibration is "
                         "for --precision int8 only")
    verify_image = None if args.verify_image is None else read_rgb(args.verify_image)
    calibration = None
    if args.calibration is not None:
        from oe_depth_ros.calibration import load_calibration
        from oe_depth_ros.inference.export import check_input_size

        check_input_size(args.height, args.width)
        calibration = load_calibration(args.calibration, args.height, args.width,
                                       args.calibration_frames)
    report = export_onnx(args.model_config, args.out, args.height, args.width,
                         checkpoint=args.checkpoint, opset=args.opset,
                         precision=args.precision, verify=not args.no_verify,
                         verify_image=verify_image, calibration=calibration)
    LOG.info("wrote %s: input '%s' [1,3,%d,%d] RGB in [0,1] -> output 'disparity' "
             "[1,1,%d,%d] scaled disparity (depth = 1/disparity, range %g..%g m)%s",
             report.path, "image", *report.info.input_size, *report.info.input_size,
             report.info.min_depth, report.info.max_depth,
             " [RANDOM WEIGHTS]" if report.random_weights else "")
    return 0
