"""The synthetic worlds of the experiments: their sizes, command-line options and rendering.

The learning proof and the ablation train on a rendered world and judge on held-out
drives rendered from another seed; both declare the same options here
(:func:`add_world_options`), read back as a :class:`WorldSpec`.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.image_size import format_size, parse_size

log = logging.getLogger("training.experiments.worlds")


@dataclass(frozen=True, kw_only=True)
class WorldSpec:
    """The rendered worlds: training drives and held-out drives (another seed)."""

    drives: int = 4
    frames: int = 40
    seed: int = 0
    heldout_drives: int = 2
    heldout_frames: int = 30
    heldout_seed: int = 1
    width: int = 416
    height: int = 128


@dataclass(frozen=True)
class RenderedWorld:
    """A world on disk: its root and split files (``train``, ``val``, ``test``)."""

    root: Path
    split_files: dict[str, Path]


def add_world_options(parser: argparse.ArgumentParser, defaults: WorldSpec) -> None:
    """Declare the world options (sizes, seeds, image size WxH) with ``defaults``."""
    d = defaults
    parser.add_argument("--drives", type=int, default=d.drives,
                        help=f"training drives (default {d.drives})")
    parser.add_argument("--frames", type=int, default=d.frames,
                        help=f"frames per drive (default {d.frames})")
    parser.add_argument("--world-seed", type=int, default=d.seed,
                        help=f"training world seed (default {d.seed})")
    parser.add_argument("--heldout-drives", type=int, default=d.heldout_drives,
                        help=f"held-out drives (default {d.heldout_drives})")
    parser.add_argument("--heldout-frames", type=int, default=d.heldout_frames,
                        help=f"frames per held-out drive (default {d.heldout_frames})")
    parser.add_argument("--heldout-seed", type=int, default=d.heldout_seed,
                        help=f"held-out world seed (default {d.heldout_seed})")
    size = format_size((d.height, d.width))
    parser.add_argument("--size", type=parse_size, default=size,
                        help=f"rendered image size WxH (default {size})")


def world_spec(args: argparse.Namespace) -> WorldSpec:
    """The :class:`WorldSpec` of options declared by :func:`add_world_options`."""
    height, width = args.size
    return WorldSpec(drives=args.drives, frames=args.frames, seed=args.world_seed,
                     heldout_drives=args.heldout_drives, heldout_frames=args.heldout_frames,
                     heldout_seed=args.heldout_seed, width=width, height=height)


def ensure_world(root: Path, drives: int, frames: int, seed: int, width: int,
                 height: int) -> RenderedWorld:
    """Render the synthetic world once; reuse it when its split files already exist."""
    from oe_depth_ros.synthetic.dataset import generate_dataset

    marker = root / "generated.json"
    spec = {"drives": drives, "frames": frames, "seed": seed, "width": width, "height": height}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        splits = {name: root / "splits" / f"{name}_files.txt" for name in ("train", "val", "test")}
        return RenderedWorld(root=root, split_files=splits)
    log.info("rendering %s", spec)
    ds = generate_dataset(root, drives=drives, frames=frames, seed=seed, width=width,
                          height=height, progress=True)
    write_text_atomic(marker, json.dumps(spec))
    return RenderedWorld(root=ds.root, split_files=ds.split_files)
