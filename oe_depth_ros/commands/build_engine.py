"""Compile an ONNX file into a TensorRT engine, reusing a cached engine that still matches."""
from __future__ import annotations

import argparse
import logging

from oe_depth_ros.inference.metadata import PRECISIONS

LOG = logging.getLogger("oe-depth.build-engine")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's options."""
    parser.add_argument("--onnx", required=True, metavar="FILE",
                        help="ONNX file from `oe-depth export-onnx`")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="engine precision (TensorRT 11: fp16 needs an ONNX exported with "
                             "--precision fp16)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="engine file (.engine or .plan); its sidecar is FILE.json")
    parser.add_argument("--workspace-mb", type=int, default=2048,
                        help="builder workspace limit in MiB (default 2048)")
    parser.add_argument("--timing-cache", default=None, metavar="PATH",
                        help="TensorRT timing cache file, read and updated (faster rebuilds)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the cached engine matches")


def run(args: argparse.Namespace) -> int:
    """Build or reuse the engine and print what it is valid for."""
    from oe_depth_ros.inference.backends import tensorrt_usable

    usable, reason = tensorrt_usable()
    if not usable:
        raise RuntimeError(f"cannot build a TensorRT engine here: {reason}; install TensorRT "
                           "(pip install tensorrt, or JetPack on Jetson) on a machine with an "
                           "NVIDIA GPU")
    if args.workspace_mb <= 0:
        raise ValueError(f"--workspace-mb must be positive, got {args.workspace_mb}")
    from oe_depth_ros.inference.tensorrt_build import build_engine

    sidecar = build_engine(args.onnx, args.out, precision=args.precision,
                           workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
                           force=args.force)
    key = sidecar.key
    LOG.info("%s: %s %s engine for %s (sm %s), TensorRT %s, ONNX sha256 %s...", args.out,
             sidecar.model.model_name, key.precision, key.gpu_name, key.compute_capability,
             key.tensorrt_version, (key.onnx_sha256 or "")[:12])
    return 0
