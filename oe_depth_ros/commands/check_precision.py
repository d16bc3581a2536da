"""Report how exactly a depth network computes in float32 and float16 (before an engine build)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oe_depth_ros.image_size import DEFAULT_NETWORK_SIZE

LOG = logging.getLogger("oe-depth.check-precision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's options."""
    parser.add_argument("checkpoint", type=Path,
                        help="training checkpoint or depth-network state_dict")
    parser.add_argument("--model-config", default=None, metavar="NAME_OR_YAML",
                        help="architecture; optional with a training checkpoint")
    parser.add_argument("--height", type=int, default=None,
                        help="input height (default: the size the checkpoint was trained at, "
                             f"else {DEFAULT_NETWORK_SIZE[0]})")
    parser.add_argument("--width", type=int, default=None,
                        help="input width (default: the checkpoint's, "
                             f"else {DEFAULT_NETWORK_SIZE[1]})")
    parser.add_argument("--image", type=Path, action="append", default=[],
                        help="a camera frame to check on as well (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Print float32 vs float64 PyTorch per input, the fp16 estimate and the largest BN gains."""
    from oe_depth_ros.inference.conditioning import (
        References, batchnorm_gains, conditioning_lines, log_pinned, read_rgb,
        verification_inputs,
    )
    from oe_depth_ros.inference.export import ScaledDisparityNet, check_input_size, load_network

    from oe_depth_ros.inference.torch_backend import checkpoint_input_size

    trained = checkpoint_input_size(args.checkpoint) or DEFAULT_NETWORK_SIZE
    height = trained[0] if args.height is None else args.height
    width = trained[1] if args.width is None else args.width
    check_input_size(height, width)
    net = load_network(args.model_config, args.checkpoint).eval()
    LOG.info("input %dx%d", width, height)
    inputs = verification_inputs(height, width,
                                 {str(path): read_rgb(path) for path in args.image})
    cfg = net.config
    refs = References.compute(ScaledDisparityNet(net, cfg.min_depth, cfg.max_depth), inputs)
    for line in conditioning_lines(refs.conditioning()):
        LOG.info("%s", line)
    log_pinned(refs, cfg.min_depth, cfg.max_depth)
    LOG.info("largest BatchNorm gains |gamma|/sqrt(running_var+eps): %s", ", ".join(
        f"{name} {gain:.1f}" for name, gain in batchnorm_gains(net)))
    return 0
