"""Run depth over a bag's images offline; write depth, clouds and LiDAR metrics."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``oe-depth process-bag``."""
    parser.add_argument("in_bag", metavar="IN", help="input rosbag2 directory")
    parser.add_argument("out_bag", metavar="OUT", help="output rosbag2 directory to create")
    parser.add_argument("--model", required=True, metavar="FILE",
                        help="depth model: .onnx, .engine/.plan or a .pt checkpoint")
    parser.add_argument("--backend", default="auto",
                        choices=("auto", "onnxruntime", "torch", "tensorrt"),
                        help="inference backend (default: auto, from the model file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="pipeline settings (oe_depth_ros.pipeline.PipelineConfig keys)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline setting, e.g. --set scale.method=lidar")
    parser.add_argument("--namespace", default="/oe_depth",
                        help="namespace of the output topics (default: /oe_depth)")
    parser.add_argument("--image-topic", default="/kitti/camera_color_left/image_raw")
    parser.add_argument("--camera-info-topic", default=None,
                        help="default: the image topic's sibling camera_info")
    parser.add_argument("--copy-input", action="store_true",
                        help="copy every input topic into OUT as well")
    parser.add_argument("--lidar-topic", default="/kitti/velo/pointcloud",
                        help="PointCloud2 topic to evaluate against (placed in the camera "
                             "frame with /tf_static); 'none' disables the evaluation")
    parser.add_argument("--max-dt", type=float, default=0.05, metavar="SECONDS",
                        help="largest image-to-scan time gap for evaluation (default 0.05)")
    parser.add_argument("--eval-crop", choices=("garg", "eigen", "none"), default="garg")
    parser.add_argument("--eval-max-depth", type=float, default=80.0)
    parser.add_argument("--metrics", default=None, metavar="JSON",
                        help="evaluation report (default: OUT_metrics.json)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                        help="output storage (default: the input's)")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default=None,
                        help="output metadata flavour (default: the input's)")
    parser.add_argument("--compress", action="store_true",
                        help="zstd: compressed MCAP chunks, or per-message for sqlite3")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the model, build the pipeline and process the bag."""
    from oe_depth_ros.bags.lidar_eval import EvalSettings
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.config import apply_overrides, from_dict, load_yaml
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig

    data = load_yaml(args.config) if args.config else {}
    config = from_dict(PipelineConfig, apply_overrides(data, args.set),
                       source=args.config or "pipeline settings")
    if args.max_frames is not None and args.max_frames <= 0:
        raise ValueError(f"--max-frames must be positive, got {args.max_frames}")
    lidar = None if args.lidar_topic.lower() == "none" else args.lidar_topic
    options = ProcessOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        namespace=args.namespace, copy_input=args.copy_input, lidar_topic=lidar,
        storage=args.storage, distro=args.distro, compress=args.compress,
        max_frames=args.max_frames,
        evaluation=EvalSettings(max_dt_s=args.max_dt,
                                crop=None if args.eval_crop == "none" else args.eval_crop,
                                max_depth=args.eval_max_depth),
        metrics_path=Path(args.metrics) if args.metrics else None,
        overwrite=args.overwrite, progress=not args.no_progress)
    backend = create_backend(args.backend, args.model, device=args.device)
    try:
        process_bag(args.in_bag, args.out_bag, DepthPipeline(backend, config), options)
    finally:
        backend.close()
    return 0
