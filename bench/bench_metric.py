"""Metric depth from the vehicle's motion: velocity- vs OXTS-supervised small models.

For each seed, one synthetic world (the demo's: 5 drives x 24 frames at 96x288; the
last drive held out) and one short training run per recipe (``synth_small_velocity``:
the pose network with velocity supervision; ``synth_small_oxts``: the drives' motion
replaces the pose network). Each model is then scored on the held-out drive with its
own metres (no scaling), with the evaluation's per-image median scaling (the median
and spread of the per-image median GT/pred ratios), and with the camera-height ground
fit (oe_depth_ros.scale.CameraHeightScale) applied to its depth, side by side.

Targets (issue 25): median ratio within 1 +- 0.1 and metric Abs Rel at most 1.2x the
median-scaled Abs Rel. Results are written after every run, so a partial job keeps
what it finished. For a recipe with a pose network the median angle between its
translation and the drive's OXTS translation on the training pairs is reported too
(velocity supervision fixes the norm only). ``--reuse`` scores the checkpoints an
earlier run left in OUT instead of training again.

Usage:
  .venv/bin/python bench/bench_metric.py --out runs/bench_metric [--seeds 0 1 2]
      [--steps STEPS] [--recipes synth_small_velocity synth_small_oxts] [--json OUT]
      [--reuse]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_json
from bench_scale import Sample, frames, scale_report
from oe_depth_ros.metrics import evaluate_depth_map
from oe_depth_ros.scale import ScaleConfig

RECIPES = ("synth_small_velocity", "synth_small_oxts")
#: Issue 25's targets: |median ratio - 1| and metric / median-scaled Abs Rel.
MAX_RATIO_ERROR = 0.1
MAX_ABS_REL_RATIO = 1.2


def evaluate_model(checkpoint: Path, drive_dir: Path) -> dict[str, Any]:
    """Unscaled, median-scaled and camera-height errors of a checkpoint on one drive."""
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, Outputs, PipelineConfig
    from oe_depth_ros.scale import FixedScale
    from training.eval_report import ratio_statistics

    backend = create_backend("torch", checkpoint, device="cpu")
    units = backend.units
    if not units.metric:
        raise ValueError(f"{checkpoint}: not a metric model ({units.describe()})")
    pipeline = DepthPipeline(backend, PipelineConfig(min_range=0.0, max_range=1000.0),
                             FixedScale(units.metres_per_unit))
    depth_only = Outputs(points=False, colored=False)
    samples: list[Sample] = list(frames([drive_dir]))
    own: list[dict[str, float]] = []
    ratios: list[float] = []
    predictions: dict[int, np.ndarray] = {}
    for i, (_, image, k, gt, _) in enumerate(samples):
        depth = pipeline.process(image, k, outputs=depth_only).depth
        filled = np.where(np.isfinite(depth), depth, np.nanmax(depth)).astype(np.float32)
        predictions[i] = filled
        own.append(evaluate_depth_map(gt, filled, median_scaling=False)[0])
        ratios.append(evaluate_depth_map(gt, filled, median_scaling=True)[1])
    order = iter(range(len(samples)))
    report = scale_report(samples, lambda image, k, gt: predictions[next(order)],
                          ScaleConfig(method="camera_height"))
    rows = report["frames"]
    return {
        "units": units.describe(),
        "frames": len(samples),
        "abs_rel_metric": statistics.fmean(r["abs_rel"] for r in own),
        "a1_metric": statistics.fmean(r["a1"] for r in own),
        "abs_rel_median_scaled": report["summary"]["abs_rel_oracle"],
        "a1_median_scaled": report["summary"]["a1_oracle"],
        "abs_rel_camera_height": report["summary"]["abs_rel_camera_height"],
        "ratio": ratio_statistics(ratios),
        # camera-height scale / the model's own (1 = the two agree)
        "camera_height_over_model": float(np.median([r["scale"] for r in rows])),
    }


def pose_direction(checkpoint: Path, recipe: str, world: Any) -> float | None:
    """Median angle (degrees) between the pose network's and the OXTS translation.

    Over every training pair (no augmentation); None for a recipe without a pose network.
    """
    import torch

    from training.checkpointing import load_checkpoint
    from training.train_config import load_train_config
    from training.trainer import Trainer

    state = load_checkpoint(checkpoint)
    if state["pose"] is None:
        return None
    cfg = load_train_config(recipe, [
        f"data.data_path={world.root}", f"data.train_split={world.split_files['train']}",
        "validate=false", "data.num_workers=0", "data.flip_prob=0", "data.color_aug_prob=0",
        "progress=false"])
    trainer = Trainer(cfg, out_dir=checkpoint.parent / "direction")
    trainer.depth_net.load_state_dict(state["depth"])
    assert trainer.pose_net is not None
    trainer.pose_net.load_state_dict(state["pose"])
    nets = (trainer.depth_net.eval(), trainer.pose_net.eval())
    cosines: list[float] = []
    with torch.no_grad():
        for batch in trainer.loader:
            _, transforms = trainer.forward(trainer._to_device(batch), nets)
            for f in (-1, 1):
                cosines += torch.nn.functional.cosine_similarity(
                    transforms[f][:, :3, 3], batch[("T", f)][:, :3, 3]).tolist()
    trainer.close()
    return float(np.degrees(np.arccos(np.clip(np.median(cosines), -1.0, 1.0))))


#: Depth scale factors at which :func:`loss_by_scale` reads the training loss.
LOSS_SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


def loss_by_scale(checkpoint: Path, recipe: str, world: Any,
                  pairs: int = 32) -> dict[str, Any] | None:
    """The training loss of the ground truth and of the model's depth, both times s.

    The photometric term the recipe trains with (SSIM + L1, minimum reprojection over
    the context frames, auto-mask) under the drives' OXTS motion, on the first ``pairs``
    training samples (no augmentation), for every s in :data:`LOSS_SCALES`. Where the
    ground truth's minimum sits at s = 1 the loss and the data agree on the metres; the
    model's minimum says which way the loss pulls the model's scale. None for a recipe
    whose batches do not carry the drives' motion.
    """
    import torch
    import torch.nn.functional as F

    from training.checkpointing import load_checkpoint
    from training.datasets import Augmentation, KittiRawMonoDataset
    from training.losses import min_reprojection_loss, photometric_error
    from training.train_config import load_train_config
    from training.trainer import Trainer

    cfg = load_train_config(recipe, [
        f"data.data_path={world.root}", f"data.train_split={world.split_files['train']}",
        "validate=false", "data.num_workers=0", "progress=false"])
    if not cfg.uses_oxts:
        return None
    d, lc = cfg.data, cfg.loss
    trainer = Trainer(cfg, out_dir=checkpoint.parent / "loss_by_scale")
    trainer.depth_net.load_state_dict(load_checkpoint(checkpoint)["depth"])
    samples = KittiRawMonoDataset(d.data_path, d.train_split, d.height, d.width,
                                  frame_ids=d.all_frame_ids, num_scales=1, load_gt=True,
                                  intrinsics=d.intrinsics, oxts_motion=True,
                                  augment=Augmentation(flip_prob=0.0, color_aug_prob=0.0))
    ssim = trainer.ssim if lc.ssim_weight > 0 else None
    totals = {"ground_truth": np.zeros(len(LOSS_SCALES)), "model": np.zeros(len(LOSS_SCALES))}
    step = max(1, len(samples) // pairs)
    with torch.no_grad():
        for index in range(0, step * pairs, step):
            sample = samples[index]
            target = sample[("color", 0, 0)][None]
            k, inv_k = sample[("K", 0)][None], sample[("inv_K", 0)][None]
            gt = F.interpolate(sample["depth_gt"][None], size=target.shape[-2:], mode="nearest")
            depths = {"ground_truth": gt.clamp(trainer.min_depth, trainer.max_depth)
                      .masked_fill(gt <= 0, trainer.max_depth),  # sky: the far bound
                      "model": torch.from_numpy(trainer.predict_depth(
                          target, tuple(target.shape[-2:])))[:, None]}
            identity = [photometric_error(sample[("color", f, 0)][None], target, ssim,
                                          lc.ssim_weight) for f in trainer.source_ids
                        ] if lc.automask else None
            for name, depth in depths.items():
                for i, factor in enumerate(LOSS_SCALES):
                    errors = [photometric_error(trainer.warper(
                        sample[("color", f, 0)][None], depth * factor, k, inv_k,
                        sample[("T", f)][None])[0], target, ssim, lc.ssim_weight)
                        for f in trainer.source_ids]
                    totals[name][i] += float(min_reprojection_loss(errors, identity).loss)
    trainer.close()
    result: dict[str, Any] = {"scales": list(LOSS_SCALES)}
    for name, total in totals.items():
        result[name] = (total / pairs).tolist()
        result[f"{name}_best_scale"] = LOSS_SCALES[int(np.argmin(total))]
    return result


def _trained(settings: Any, world: Any, reuse: bool) -> Any:
    """Train, or with ``reuse`` pick the checkpoint an earlier run left (as training would)."""
    import json

    from dataclasses import replace

    from training.checkpointing import load_checkpoint
    from training.experiments.demo import select_checkpoint, train_on_world

    run_dir = settings.out / "training"
    if reuse and (run_dir / "last.pt").is_file():
        validation = run_dir / "validation.json"
        records = json.loads(validation.read_text()) if validation.is_file() else []
        return replace(select_checkpoint(run_dir, records),
                       steps=int(load_checkpoint(run_dir / "last.pt")["step"]))
    return train_on_world(settings, world)


def passes(result: dict[str, Any]) -> bool:
    """Whether a run meets both of issue 25's targets."""
    return (abs(result["ratio"]["median"] - 1.0) <= MAX_RATIO_ERROR
            and result["abs_rel_metric"] <= MAX_ABS_REL_RATIO * result["abs_rel_median_scaled"])


def run(out: Path, seeds: list[int], steps: int, recipes: list[str],
        json_path: Path, reuse: bool = False) -> list[dict[str, Any]]:
    """Train and score every (seed, recipe); rewrite ``json_path`` after each run."""
    from oe_depth_ros.synthetic.dataset import SynthDataset, generate_dataset
    from training.experiments.demo import DemoSettings, _held_out_drive

    results: list[dict[str, Any]] = []
    for seed in seeds:
        base = DemoSettings(out=out / f"seed{seed}", seed=seed, train_steps=steps)
        h, w = base.render_size
        root = base.out / "data"
        splits = {name: root / "splits" / f"{name}_files.txt"
                  for name in ("train", "val", "test")}
        if reuse and all(path.is_file() for path in splits.values()):
            world = SynthDataset(root, sorted(root.glob("*/*_sync")), splits)
        else:
            world = generate_dataset(root, drives=base.drives, frames=base.frames, seed=seed,
                                     width=w, height=h, progress=False)
        held_out = _held_out_drive(world)
        for recipe in recipes:
            settings = DemoSettings(out=base.out / recipe, seed=seed, train_steps=steps,
                                    train_config=recipe)
            tic = time.perf_counter()
            trained = _trained(settings, world, reuse)
            seconds = time.perf_counter() - tic
            result = {"seed": seed, "recipe": recipe, "steps": trained.steps,
                      "checkpoint": str(trained.checkpoint), "chosen": trained.describe(),
                      "train_seconds": round(seconds, 1),
                      **evaluate_model(trained.checkpoint, held_out),
                      "pose_direction_deg": pose_direction(trained.checkpoint, recipe, world),
                      "loss_by_scale": loss_by_scale(trained.checkpoint, recipe, world)}
            result["passes"] = passes(result)
            results.append(result)
            write_json(json_path, {"results": results}, default=float)
            logging.warning("seed %d %s: %s", seed, recipe, _row(result))
    return results


def _row(r: dict[str, Any]) -> str:
    return (f"{r['seed']:>4} {r['recipe']:<22}{r['abs_rel_metric']:>9.4f}"
            f"{r['abs_rel_median_scaled']:>9.4f}{r['ratio']['median']:>8.3f}"
            f"{r['ratio']['std']:>8.3f}{r['abs_rel_camera_height']:>9.4f}"
            f"{r['camera_height_over_model']:>9.3f}{'yes' if r['passes'] else 'NO':>6}"
            f"{_angle(r.get('pose_direction_deg')):>7}")


def _angle(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    from training.experiments.demo import DemoSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_metric"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=DemoSettings.train_steps,
                        help="the most training steps per run; a recipe's epochs may end "
                             "it sooner (default: the demo's)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--json", type=Path, help="results JSON (default OUT/results.json)")
    parser.add_argument("--reuse", action="store_true",
                        help="score the checkpoints already in OUT instead of training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    json_path = args.json or args.out / "results.json"
    results = run(args.out, args.seeds, args.steps, args.recipes, json_path, args.reuse)
    print(f"Held-out synthetic drive per seed; at most {args.steps} training steps; targets: "
          f"median ratio 1 +- {MAX_RATIO_ERROR}, metric Abs Rel <= {MAX_ABS_REL_RATIO}x "
          "median-scaled")
    head = (f"{'seed':>4} {'recipe':<22}{'metric':>9}{'median':>9}{'ratio':>8}{'spread':>8}"
            f"{'cam-h':>9}{'cam/own':>9}{'pass':>6}{'angle':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(_row(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
