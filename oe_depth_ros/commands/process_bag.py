"""Run depth over a bag's images offline; write depth, clouds and LiDAR metrics.

Settings use the node's parameter names and files: ``--params-file config/oe_depth.yaml``
(the ROS format the node reads) and ``--set points.decimation=4`` both name node
parameters, so the bag is processed as the node configured by that file would.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from oe_depth_ros.metrics import EIGEN_MAX_DEPTH
from oe_depth_ros.node_names import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from oe_depth_ros.node_params import ParamValue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``oe-depth process-bag``."""
    from oe_depth_ros.bags.bagio import DISTROS, STORAGES
    from oe_depth_ros.bags.kitti2bag import LEFT_COLOR_IMAGE_TOPIC, VELO_TOPIC
    from oe_depth_ros.bags.process_bag import OUTPUT_TOPICS
    from oe_depth_ros.inference.backends import BACKEND_NAMES

    parser.add_argument("in_bag", metavar="IN", help="input rosbag2 directory")
    parser.add_argument("out_bag", metavar="OUT", help="output rosbag2 directory to create")
    parser.add_argument("--model", default=None, metavar="FILE",
                        help="depth model: .onnx, .engine/.plan or a .pt checkpoint (default: "
                             "model_path of --params-file)")
    parser.add_argument("--backend", default=None, choices=BACKEND_NAMES,
                        help="inference backend (default: the parameter file's, else auto)")
    parser.add_argument("--device", default=None,
                        help="auto, cpu, cuda or cuda:N (default: the parameter file's, else auto)")
    parser.add_argument("--params-file", default=None, metavar="YAML",
                        help="the node's ROS parameter file (e.g. config/oe_depth.yaml): "
                             "pipeline, scale and camera_info settings")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a node parameter, e.g. --set scale.method=camera_height")
    parser.add_argument("--namespace", default="/" + DEFAULT_NAMESPACE,
                        help=f"namespace of the output topics (default: /{DEFAULT_NAMESPACE})")
    parser.add_argument("--outputs", nargs="+", default=list(OUTPUT_TOPICS),
                        choices=OUTPUT_TOPICS, help="outputs to write (default: all)")
    parser.add_argument("--image-topic", default=LEFT_COLOR_IMAGE_TOPIC,
                        help="a sensor_msgs/Image topic, or a CompressedImage one (jpeg or png "
                             "as image_transport's compressed plugin writes it, e.g. "
                             f"{LEFT_COLOR_IMAGE_TOPIC}/compressed)")
    parser.add_argument("--camera-info-topic", default=None,
                        help="default: the image topic's sibling camera_info (the base "
                             "topic's for .../compressed)")
    parser.add_argument("--copy-input", action="store_true",
                        help="copy every input topic into OUT as well")
    parser.add_argument("--lidar-topic", default=VELO_TOPIC,
                        help="PointCloud2 topic to evaluate against (placed in the camera "
                             "frame with /tf_static); 'none' disables the evaluation")
    parser.add_argument("--max-dt", type=float, default=0.05, metavar="SECONDS",
                        help="largest image-to-scan time gap for evaluation (default 0.05)")
    parser.add_argument("--eval-crop", choices=("garg", "eigen", "none"), default="garg")
    parser.add_argument("--eval-max-depth", type=float, default=EIGEN_MAX_DEPTH)
    parser.add_argument("--metrics", default=None, metavar="JSON",
                        help="evaluation report (default: OUT_metrics.json)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default=None,
                        help="output storage (default: the input's)")
    parser.add_argument("--distro", choices=sorted(DISTROS), default=None,
                        help="output metadata flavour (default: the input's)")
    parser.add_argument("--compress", action="store_true",
                        help="zstd: compressed MCAP chunks, or per-message for sqlite3")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def node_parameters(params_file: str | None, overrides: list[str],
                    options: Mapping[str, str | None] | None = None) -> dict[str, "ParamValue"]:
    """The node's parameter values: defaults, then the file, then ``NAME=VALUE`` overrides.

    ``options`` are the command's own flags for parameters (``--backend`` is
    ``backend``); None leaves a value as it is. Each given value is validated once, with
    process-bag's choices (``scale.method: lidar``), and the result as a whole once.
    """
    import yaml

    from oe_depth_ros.node_params import ParamError, check_combination, defaults, \
        read_params_file, validate

    values = defaults()
    if params_file:
        values.update(read_params_file(params_file, offline=True))
    given: dict[str, object] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ParamError(f"--set {item!r} is not of the form NAME=VALUE")
        try:
            given[name.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamError(f"--set {item!r}: value is not valid YAML: {exc}") from None
    given.update({name: value for name, value in (options or {}).items() if value is not None})
    values.update({name: validate(name, value, offline=True) for name, value in given.items()})
    check_combination(values)
    return values


def run(args: argparse.Namespace) -> int:
    """Load the model, build the pipeline and process the bag."""
    from oe_depth_ros.bags.lidar_eval import EvalSettings
    from oe_depth_ros.bags.process_bag import ProcessOptions, process_bag
    from oe_depth_ros.build import build_pipeline
    from oe_depth_ros.intake import camera_info_config
    from oe_depth_ros.node_params import value_of

    values = node_parameters(args.params_file, args.set,
                             {"model_path": args.model, "backend": args.backend,
                              "device": args.device})
    if not value_of(values, "model_path", str):
        raise ValueError("no model: pass --model FILE or set model_path in --params-file")
    if args.max_frames is not None and args.max_frames <= 0:
        raise ValueError(f"--max-frames must be positive, got {args.max_frames}")
    lidar = None if args.lidar_topic.lower() == "none" else args.lidar_topic
    options = ProcessOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        camera_info=camera_info_config(values), namespace=args.namespace,
        outputs=tuple(args.outputs), copy_input=args.copy_input, lidar_topic=lidar,
        storage=args.storage, distro=args.distro, compress=args.compress,
        max_frames=args.max_frames, max_pixels=value_of(values, "max_input_pixels", int),
        evaluation=EvalSettings(max_dt_s=args.max_dt,
                                crop=None if args.eval_crop == "none" else args.eval_crop,
                                max_depth=args.eval_max_depth),
        metrics_path=Path(args.metrics) if args.metrics else None,
        overwrite=args.overwrite, progress=not args.no_progress)
    backend, pipeline = build_pipeline(values)
    try:
        process_bag(args.in_bag, args.out_bag, pipeline, options)
    finally:
        backend.close()
    return 0
