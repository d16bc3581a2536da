"""Convert a KITTI raw drive into a rosbag2 (MCAP or sqlite3) for ``ros2 bag play``."""
from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``oe-depth kitti2bag``."""
    parser.add_argument("drive_dir", metavar="DRIVE_DIR",
                        help="a KITTI raw drive folder (<date>/<date>_drive_<nnnn>_sync)")
    parser.add_argument("out", metavar="OUT", help="bag directory to create")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="rosbag2 storage plugin (default: mcap)")
    parser.add_argument("--distro", choices=("humble", "jazzy"), default="jazzy",
                        help="target ROS 2 distro: humble writes metadata version 8, "
                             "jazzy version 9 (default: jazzy)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[2], choices=(0, 1, 2, 3),
                        metavar="N", help="KITTI cameras to include (default: 2, the left "
                                          "color camera)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="convert only the first N frames")
    parser.add_argument("--compress", action="store_true",
                        help="zstd: compressed MCAP chunks, or per-message for sqlite3")
    parser.add_argument("--compressed", nargs="?", const="jpeg", default=None,
                        choices=("jpeg", "png"),
                        help="write the images as sensor_msgs/CompressedImage on "
                             "<image topic>/compressed, as image_transport's compressed plugin "
                             "does (default codec: jpeg)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert and log a one-line summary."""
    from oe_depth_ros.bags.kitti2bag import convert

    summary = convert(args.drive_dir, args.out, storage=args.storage, distro=args.distro,
                      cameras=args.cameras, max_frames=args.max_frames,
                      overwrite=args.overwrite, compress=args.compress,
                      progress=not args.no_progress, compressed=args.compressed)
    logging.getLogger("oe-depth").info(
        "%d frames at %.1f frames/s; topics: %s", summary.frames, summary.frames_per_second,
        ", ".join(f"{t} ({n})" for t, n in sorted(summary.message_counts.items())))
    return 0
