"""Whether the synthetic world teaches the paper's recipe: direction of travel and depth, per seed.

    .venv/bin/python bench/bench_world.py [--seeds 0 1 2] [--steps STEPS] [--threads N]
        [--recipes synth_small synth_small_oxts] [--landscape-only] [--out DIR] [--json OUT]

First, without training, the photometric loss of the held-out drive against the
direction of travel (:mod:`training.photometric_landscape`: the OXTS translation turned
by -90..90 degrees, ground-truth and blurred depth), and whether it rises from the
forward direction on both sides. Then (unless ``--landscape-only``) for every seed and
recipe this runs the demo in this process (``run_demo`` with seed N, the recipe as its
training config and at most STEPS steps, fewer where the recipe's epochs end sooner:
it renders its world, trains, exports and scores the held-out drive) and prints, per
seed: the pose network's agreement with the drive's OXTS direction of travel (mean
cosine over the held-out drive's consecutive pairs, :mod:`training.pose_agreement`;
recipes with a pose network only), the demo's held-out Abs Rel (median-scaled) of each
recipe beside the best constant depth, and each run's wall and CPU seconds. ``--out``
keeps the runs (default: a temporary folder). Training uses the demo's threads (every
usable core); give ``--threads 1`` to each of several bench processes that share the
cores.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_name, write_json

POSE_NET = "synth_small"
OXTS = "synth_small_oxts"
ANGLES = tuple(range(-90, 91, 15))


def held_out_drive(data_root: Path) -> str:
    """The demo world's held-out drive ("date/name"), the test split's first entry."""
    from oe_depth_ros.kitti.splits import read_split_file

    return read_split_file(data_root / "splits" / "test_files.txt")[0].folder


def landscape(seed: int, data_root: Path) -> dict[str, Any]:
    """The held-out drive's direction landscapes (the demo world of ``seed`` at ``data_root``)."""
    from oe_depth_ros.synthetic.dataset import generate_dataset
    from training.experiments.demo import DemoSettings
    from training.photometric_landscape import direction_landscapes

    settings = DemoSettings(out=data_root.parent, seed=seed)
    if not (data_root / "splits" / "test_files.txt").is_file():
        h, w = settings.render_size
        generate_dataset(data_root, drives=settings.drives, frames=settings.frames, seed=seed,
                         width=w, height=h)
    wall = time.perf_counter()
    frames = range(1, settings.frames - 1, 2)
    found = direction_landscapes(data_root, held_out_drive(data_root), frames,
                                 *settings.net_size, ANGLES)
    return {"seed": seed, "seconds": time.perf_counter() - wall,
            "landscapes": {name: {"angles": ls.angles, "loss": ls.loss, "identity": ls.identity,
                                  "rises_from_forward": ls.rises_from_forward()}
                           for name, ls in found.items()}}


def print_landscape(row: dict[str, Any]) -> None:
    print(f"seed {row['seed']}: photometric loss against the direction of travel "
          f"({row['seconds']:.1f} s)")
    first = next(iter(row["landscapes"].values()))
    print(f"  {'degrees':12s}" + "".join(f"{a:>7.0f}" for a in first["angles"]))
    for name, ls in row["landscapes"].items():
        print(f"  {name:12s}" + "".join(f"{v:7.4f}" for v in ls["loss"])
              + f"  rises from forward: {'yes' if ls['rises_from_forward'] else 'no'}")
    print(f"  zero motion {first['identity']:.4f}")


def run_recipe(seed: int, recipe: str, steps: int, out: Path,
               threads: int | None = None) -> dict[str, Any]:
    """One demo run; its held-out errors, the direction agreement and the times."""
    from training.experiments.demo import DemoSettings, run_demo
    from training.pose_agreement import direction_agreement

    wall, cpu = time.perf_counter(), time.process_time()
    settings = DemoSettings(out=out, seed=seed, train_config=recipe, train_steps=steps,
                            train_threads=threads)
    report = run_demo(settings).report
    row: dict[str, Any] = {
        "seed": seed, "recipe": recipe, "steps": report["train_steps"],
        "threads": report["train_threads"],
        "abs_rel": report["model"]["abs_rel"],
        "constant_abs_rel": report["constant_baseline"]["abs_rel"],
        "checkpoint": report["checkpoint"]["file"],
        "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    held_out = out / "data" / held_out_drive(out / "data")
    try:
        cosines = direction_agreement(row["checkpoint"], held_out)
    except ValueError:  # the recipe has no pose network
        return row
    row["direction_cosine"] = float(cosines.mean())
    row["direction_cosine_min"] = float(cosines.min())
    return row


def print_table(rows: list[dict[str, Any]], recipes: list[str]) -> None:
    head = f"{'seed':>4s}  {'cosine':>7s}  {'constant':>8s}"
    for recipe in recipes:
        head += f"  {recipe + ' Abs Rel':>26s}  {'wall s':>7s}  {'CPU s':>7s}"
    print(head)
    for seed in sorted({r["seed"] for r in rows}):
        mine = {r["recipe"]: r for r in rows if r["seed"] == seed}
        cos = next((r["direction_cosine"] for r in mine.values() if "direction_cosine" in r),
                   None)
        const = next(iter(mine.values()))["constant_abs_rel"]
        line = f"{seed:4d}  {'-' if cos is None else f'{cos:.3f}':>7s}  {const:8.3f}"
        for recipe in recipes:
            r = mine[recipe]
            line += f"  {r['abs_rel']:26.3f}  {r['seconds']:7.1f}  {r['cpu_seconds']:7.1f}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    from training.experiments.demo import DemoSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=DemoSettings.train_steps,
                        help="the most training steps per run; a recipe's epochs may end "
                             "it sooner (default: the demo's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: the demo's, every usable core; "
                             "1 when runs share the cores)")
    parser.add_argument("--recipes", nargs="+", default=[POSE_NET, OXTS],
                        help="training configs to compare")
    parser.add_argument("--landscape-only", action="store_true",
                        help="render the worlds and print their landscapes; no training")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    logging.basicConfig(level=logging.WARNING)
    rows, landscapes = [], []
    print(cpu_name())
    with tempfile.TemporaryDirectory(prefix="bench_world_") as tmp:
        root = args.out or Path(tmp)
        for seed in args.seeds:
            landscapes.append(landscape(seed, root / f"seed{seed}" / "world" / "data"))
            print_landscape(landscapes[-1])
        if not args.landscape_only:
            for seed in args.seeds:
                for recipe in args.recipes:
                    rows.append(run_recipe(seed, recipe, args.steps,
                                           root / f"seed{seed}" / recipe, args.threads))
            print("training steps: " + ", ".join(f"seed {r['seed']} {r['recipe']} {r['steps']}"
                                                 for r in rows))
            print_table(rows, args.recipes)
    if args.json is not None:
        write_json(args.json, {"cpu": cpu_name(), "max_steps": args.steps,
                               "landscapes": landscapes,
                               "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
