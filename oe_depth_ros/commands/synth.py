"""Render a synthetic driving world in the KITTI raw layout."""
from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``oe-depth synth``."""
    parser.add_argument("out", help="output root (KITTI raw layout is created inside)")
    parser.add_argument("--drives", type=int, default=2, help="number of drives (default 2)")
    parser.add_argument("--frames", type=int, default=20, help="frames per drive (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--width", type=int, default=1242, help="image width (default 1242)")
    parser.add_argument("--height", type=int, default=375, help="image height (default 375)")
    parser.add_argument("--reach", type=int, default=1,
                        help="farthest source frame the training recipe uses (default 1: "
                             "frames -1 and +1; synth_small_oxts: 2); the splits list the "
                             "frames that have them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and log where it went."""
    from oe_depth_ros.synthetic.dataset import generate_dataset

    ds = generate_dataset(args.out, drives=args.drives, frames=args.frames, seed=args.seed,
                          width=args.width, height=args.height, progress=not args.no_progress,
                          reach=args.reach)
    logger.info("wrote %d drives under %s", len(ds.drive_dirs), ds.root)
    for name, path in ds.split_files.items():
        logger.info("split %s: %s", name, path)
    return 0
