"""Show that training learns: a short CPU run on synthetic data, judged on a held-out drive.

Renders a training world and a held-out drive from another seed (``oe-depth synth``),
trains with ``config/training/synth_small.yaml`` for a fixed number of steps and
reports three figures on the held-out drive (median-scaled Abs Rel, KITTI protocol):
the untrained network, the trained network and the best constant depth (per image,
the constant that minimizes Abs Rel: an oracle no depth-blind predictor can beat),
plus the photometric loss on fixed training samples before and after training.
``--compare-triplet`` also trains without the triplet term and reports errors near
semantic boundaries for both runs.

    python -m training.experiments.prove_learning --work /tmp/oe_proof
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.metrics import evaluate_depth_map, valid_mask
from .baselines import best_constant_abs_rel
from .worlds import RenderedWorld, WorldSpec, add_world_options, ensure_world, world_spec

if TYPE_CHECKING:
    from oe_depth_ros.metrics import CropName
    from ..datasets import KittiRawMonoDataset
    from ..trainer import Trainer

log = logging.getLogger("training.experiments.prove_learning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.experiments.prove_learning",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for data, runs, summary")
    parser.add_argument("--config", default="synth_small",
                        help="training config (default synth_small)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    add_world_options(parser, WorldSpec(heldout_drives=1))
    parser.add_argument("--compare-triplet", action="store_true",
                        help="also train without the triplet term; compare near semantic edges")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="training config overrides")
    return parser


@torch.no_grad()
def photometric_loss(trainer: "Trainer", dataset: "KittiRawMonoDataset",
                     batch_size: int = 4) -> float:
    """Mean photometric term over ``dataset`` (networks in eval mode, no augmentation)."""
    from torch.utils.data import DataLoader

    from ..datasets import collate

    for net in trainer.networks():
        net.eval()
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        inputs = trainer._to_device(batch)
        outputs, transforms = trainer.forward(inputs)
        _, terms, _ = trainer.compute_losses(inputs, outputs, transforms)
        n = batch[("color", 0, 0)].shape[0]
        total += float(terms["photometric"]) * n
        count += n
    return total / count


def evaluate_heldout(trainer: "Trainer", dataset: "KittiRawMonoDataset", crop: "CropName | None",
                     max_depth: float, with_regions: bool = False) -> dict[str, Any]:
    """Median-scaled errors of the trainer's depth net and of the best constant, per image mean."""
    from oe_depth_ros.kitti.labels import labels_to_train_ids
    from ..edge_metrics import RegionReport

    sums: dict[str, float] = {}
    const = []
    report = RegionReport() if with_regions else None
    for i in range(len(dataset)):
        sample = dataset[i]
        gt = sample["depth_gt"][0].numpy()
        pred = trainer.predict_depth(sample[("color", 0, 0)][None], gt.shape)[0]
        errors, ratio = evaluate_depth_map(gt, pred, crop=crop, max_depth=max_depth)
        for name, value in errors.items():
            sums[name] = sums.get(name, 0.0) + value
        mask = valid_mask(gt, crop, 1e-3, max_depth)
        const.append(best_constant_abs_rel(gt, mask))
        if report is not None:
            import cv2

            raw = cv2.imread(str(dataset.label_path(dataset.entries[i])), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise FileNotFoundError(f"no label image {dataset.label_path(dataset.entries[i])}")
            scaled = np.clip(pred * ratio, 1e-3, max_depth)
            report.add(gt, scaled, mask, labels_to_train_ids(raw))
    out: dict[str, Any] = {name: value / len(dataset) for name, value in sums.items()}
    out["best_constant_abs_rel"] = float(np.mean(const))
    if report is not None:
        out["regions"] = report.result()
    return out


def train_and_measure(args: argparse.Namespace, train_world: RenderedWorld,
                      heldout_world: RenderedWorld,
                      overrides: list[str], run_dir: Path, with_regions: bool) -> dict[str, Any]:
    """One training run with its before/after figures."""
    from ..datasets import KittiRawMonoDataset
    from ..train_config import load_train_config
    from ..trainer import Trainer

    cfg = load_train_config(args.config, [
        f"data.data_path={train_world.root}",
        f"data.train_split={train_world.split_files['train']}",
        f"data.val_split={train_world.split_files['val']}",
        f"max_steps={args.steps}", *overrides])
    trainer = Trainer(cfg, out_dir=run_dir)
    d = cfg.data
    fixed = KittiRawMonoDataset(train_world.root, train_world.split_files["val"], d.height, d.width,
                                frame_ids=d.frame_ids, num_scales=d.num_scales,
                                use_semantics=cfg.loss.use_triplet, intrinsics=d.intrinsics)
    heldout = KittiRawMonoDataset(heldout_world.root, heldout_world.split_files["test"], d.height,
                                  d.width, frame_ids=(0,), num_scales=1, load_gt=True,
                                  intrinsics=d.intrinsics)
    if not heldout.has_gt:
        raise FileNotFoundError(f"held-out drive under {heldout_world.root} has no ground truth")
    before = {"photometric": photometric_loss(trainer, fixed),
              **evaluate_heldout(trainer, heldout, d.val_crop, d.val_max_depth)}
    tic = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - tic
    after = {"photometric": photometric_loss(trainer, fixed),
             **evaluate_heldout(trainer, heldout, d.val_crop, d.val_max_depth, with_regions)}
    trainer.close()
    return {"config": args.config, "overrides": overrides, "steps": trainer.step,
            "train_seconds": seconds, "train_samples": len(trainer.train_set),
            "heldout_images": len(heldout), "before": before, "after": after}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = world_spec(args)
    # +1 drive: synthetic splits train on all drives but the last one
    train_world = ensure_world(args.work / "train_world", w.drives + 1, w.frames, w.seed,
                               w.width, w.height)
    heldout_world = ensure_world(args.work / "heldout_world", w.heldout_drives, w.heldout_frames,
                                 w.heldout_seed, w.width, w.height)
    runs = {"main": train_and_measure(args, train_world, heldout_world, list(args.overrides),
                                      args.work / "run", args.compare_triplet)}
    if args.compare_triplet:
        runs["no_triplet"] = train_and_measure(args, train_world, heldout_world,
                                               [*args.overrides, "loss.triplet_weight=0"],
                                               args.work / "run_no_triplet", True)
    write_text_atomic(args.work / "summary.json", json.dumps(runs, indent=1))
    main_run = runs["main"]
    b, a = main_run["before"], main_run["after"]
    lines = [
        f"held-out drive: {main_run['heldout_images']} images; trained {main_run['steps']} steps "
        f"on {main_run['train_samples']} samples in {main_run['train_seconds'] / 60:.1f} min",
        f"{'':34s}{'Abs Rel':>9s}{'d1':>8s}",
        f"{'untrained network':34s}{b['abs_rel']:9.3f}{b['a1']:8.3f}",
        f"{'trained network':34s}{a['abs_rel']:9.3f}{a['a1']:8.3f}",
        f"{'best constant depth (oracle)':34s}{a['best_constant_abs_rel']:9.3f}",
        f"photometric loss (fixed samples): {b['photometric']:.4f} -> {a['photometric']:.4f}",
    ]
    if args.compare_triplet:
        for name, run in runs.items():
            regions = run["after"]["regions"]["regions"]
            near_sem = regions.get("near_semantic_boundaries", {}).get("abs_rel")
            lines.append(f"{name:12s} abs_rel all {run['after']['abs_rel']:.4f}, near semantic "
                         f"boundaries (pooled) {near_sem}")
    print("\n".join(lines))
    print(f"summary: {args.work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
