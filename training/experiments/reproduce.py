"""Reproduce the paper's Table 3 on KITTI with one command.

    python -m training.experiments.reproduce --kitti ROOT --splits DIR --weights DIR \
        --out runs/paper [--rows baseline,odconv_only,triplet_only,oe_depth] [--set KEY=VALUE ...]

``--splits`` holds Monodepth2's split folders (``eigen_zhou/train_files.txt``,
``eigen_zhou/val_files.txt``, ``eigen/test_files.txt``); ``--weights`` holds the ImageNet
weights (:data:`DEPTH_WEIGHT_NAMES`, :data:`POSE_WEIGHT_NAMES`), or is ``none`` to
train from random weights on purpose. The command exports the Eigen ground truth once
(``OUT/gt_eigen.npz``), prints a wall-time estimate measured with a few warm-up steps
of every row still to train, trains each row in ``OUT/<row>/`` (rerunning continues
where a run stopped: an unfinished row resumes from its ``last.pt``, a finished one is
skipped), evaluates each final checkpoint (``last.pt``, the final epoch as the
reference codes report) with median scaling, and writes ``OUT/table3.md`` and
``OUT/table3.json`` with the paper's numbers, the measured ones and their difference.

The metric row ``oe_depth_velocity`` (``--rows ...,oe_depth_velocity``: OE-Depth with
PackNet-SfM's velocity supervision) is evaluated without any scaling, beside its anchor
(:data:`METRIC_ANCHORS`: PackNet-SfM M+v), with the median-scaled errors and the
per-image median GT / prediction ratio of the same run under it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.config import ConfigError
from oe_depth_ros.metrics import METRIC_LABELS, METRIC_NAMES
from .ablation_report import PAPER_TABLE3
from ..train_config import FROM_SCRATCH, TrainConfig, load_train_config

LOG = logging.getLogger(__name__)

#: Metric rows (config names): the published figures they are compared with, measured
#: without GT scaling (REFERENCE.md section 8: PackNet-SfM M+v, KITTI 640x192).
METRIC_ANCHORS: dict[str, tuple[str, dict[str, float]]] = {
    "oe_depth_velocity": ("PackNet-SfM M+v (velocity supervision), no GT scaling",
                          {"abs_rel": 0.111, "a1": 0.864}),
}
#: Table 3's rows (baseline, odconv_only, triplet_only, oe_depth), trained by default.
TABLE3_ROWS = tuple(PAPER_TABLE3)
ROWS = TABLE3_ROWS + tuple(METRIC_ANCHORS)
SPLIT_FILES = {"train": "eigen_zhou/train_files.txt", "val": "eigen_zhou/val_files.txt",
               "test": "eigen/test_files.txt"}
DEPTH_WEIGHT_NAMES = ("hrnet_w18.ms_in1k.safetensors", "model.safetensors",
                      "hrnetv2_w18_imagenet_pretrained.pth", "hrnet_w18.pth")
POSE_WEIGHT_NAMES = ("resnet18-f37072fd.pth", "resnet18.pth")
#: The reduced networks that ``--small`` trains instead (a quick check of the pipeline).
SMALL_MODELS = {"diffnet": "diffnet_small", "oe_depth": "oe_depth_small"}
GT_NAME = "gt_eigen.npz"
DONE_NAME = "done.json"


@dataclass(kw_only=True)
class Paths:
    """Inputs and outputs of one reproduction."""

    kitti: Path
    splits: dict[str, Path]
    depth_weights: str
    pose_weights: str
    out: Path


def resolve_splits(folder: Path) -> dict[str, Path]:
    """The three split files under ``folder`` (Monodepth2's layout), checked."""
    files = {name: folder / rel for name, rel in SPLIT_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"split files missing under {folder}: {missing} (expected "
                                f"Monodepth2's splits/{SPLIT_FILES['train']} layout)")
    return files


def resolve_weights(folder: str) -> tuple[str, str]:
    """(depth, pose) ImageNet weight files in ``folder``, or ``none`` twice."""
    if folder.lower() == FROM_SCRATCH:
        return FROM_SCRATCH, FROM_SCRATCH
    found = []
    for names in (DEPTH_WEIGHT_NAMES, POSE_WEIGHT_NAMES):
        path = next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"none of {list(names)} in {folder} (see docs/training.md "
                                    "for where the ImageNet weights come from)")
        found.append(str(path))
    return found[0], found[1]


def row_config(row: str, paths: Paths, small: bool, overrides: Sequence[str]) -> TrainConfig:
    """The training config of Table 3 row ``row`` on the given data and weights."""
    values = [f"data.data_path={paths.kitti}", f"data.train_split={paths.splits['train']}",
              f"data.val_split={paths.splits['val']}", f"out_dir={paths.out / row}",
              f"model.depth_pretrained={paths.depth_weights}",
              f"model.pose_pretrained={paths.pose_weights}"]
    if small:
        base = load_train_config(row)
        values += [f"model.depth={SMALL_MODELS[base.model.depth]}",
                   f"model.depth_pretrained={FROM_SCRATCH}"]
    return load_train_config(row, [*values, *overrides])


def export_ground_truth(paths: Paths, progress: bool) -> Path:
    """``OUT/gt_eigen.npz`` from the Velodyne scans (written once, reused afterwards)."""
    from oe_depth_ros.kitti.splits import read_split_file
    from ..gt_depth import export_gt_cache, open_ground_truth

    out = paths.out / GT_NAME
    if out.is_file():
        LOG.info("ground truth: reusing %s", out)
        return out
    entries = read_split_file(paths.splits["test"])
    return export_gt_cache(open_ground_truth("velodyne", paths.kitti, entries), entries, out,
                           progress=progress)


def _is_done(cfg: TrainConfig) -> bool:
    return (Path(cfg.out_dir) / DONE_NAME).is_file()


def _seconds_per_step(cfg: TrainConfig, steps: int) -> tuple[float, int]:
    """(median seconds of the warm-up steps after the first, steps left to train)."""
    import statistics

    from ..checkpointing import load_checkpoint
    from ..trainer import Trainer

    trainer = Trainer(cfg)
    last = Path(cfg.out_dir) / "last.pt"
    done = int(load_checkpoint(last)["step"]) if last.is_file() else 0
    stop = min(trainer.total_steps, cfg.max_steps or trainer.total_steps)
    times = []
    batches = iter(trainer.loader)
    for _ in range(max(steps, 2)):
        tic = time.perf_counter()
        trainer.train_step(next(batches))
        times.append(time.perf_counter() - tic)
    trainer.close()
    return statistics.median(times[1:]), max(stop - done, 0)


def estimate(configs: dict[str, TrainConfig], steps: int) -> dict[str, float]:
    """Measured warm-up seconds per step times the steps left, per row still to train."""
    out = {}
    for row, cfg in configs.items():
        if _is_done(cfg):
            continue
        per_step, left = _seconds_per_step(cfg, steps)
        out[row] = per_step * left
        LOG.info("%s: %.3f s/step measured, %d steps to go: %.1f h", row, per_step, left,
                 per_step * left / 3600)
    return out


def train_row(cfg: TrainConfig) -> None:
    """Train one row to the end, resuming from its ``last.pt``; mark it done."""
    from ..trainer import Trainer

    out = Path(cfg.out_dir)
    if _is_done(cfg):
        LOG.info("%s: finished earlier", out)
        return
    trainer = Trainer(cfg)
    try:
        if (out / "last.pt").is_file():
            trainer.resume(out / "last.pt")
        trainer.fit()
    finally:
        trainer.close()
    write_text_atomic(out / DONE_NAME, json.dumps({"step": trainer.step}))


def evaluate_row(cfg: TrainConfig, paths: Paths, gt: Path, progress: bool) -> dict[str, Any]:
    """Evaluation of the row's final checkpoint (cached in ``<row>/eval/metrics.json``).

    A metric model is scored without scaling and median-scaled in the same run.
    """
    from ..evaluate import EvalOptions, evaluate

    out = Path(cfg.out_dir) / "eval"
    ckpt = Path(cfg.out_dir) / "last.pt"
    metrics = out / "metrics.json"
    if metrics.is_file() and metrics.stat().st_mtime >= ckpt.stat().st_mtime:
        return dict(json.loads(metrics.read_text()))
    options = EvalOptions(model=str(ckpt), data_path=str(paths.kitti),
                          split_file=str(paths.splits["test"]), gt=str(gt), out=str(out),
                          device=cfg.device, save_panels=0, progress=progress)
    return evaluate(options)


def _cells(values: dict[str, float | None], fmt: str) -> str:
    return " | ".join("-" if values.get(k) is None else fmt.format(values[k])
                      for k in METRIC_NAMES)


def table(measured: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON of the published figures beside the measured rows.

    ``measured`` maps a row to its evaluation results (``errors``, and for a metric row
    ``median_scaled``). Table 3's rows face the paper; a metric row faces its anchor
    (only the metrics the anchor publishes are compared), with the median-scaled errors
    and ratio of the same run below.
    """
    rows: dict[str, Any] = {}
    lines = ["| row | | " + " | ".join(METRIC_LABELS) + " |",
             "| --- | --- |" + " --- |" * len(METRIC_LABELS)]
    for row, results in measured.items():
        errors = {k: float(results["errors"][k]) for k in METRIC_NAMES}
        if row in METRIC_ANCHORS:
            source, published = METRIC_ANCHORS[row]
            reference: dict[str, float | None] = {k: published.get(k) for k in METRIC_NAMES}
            label = "anchor"
        else:
            source, label = "OE-Depth paper, Table 3", "paper"
            reference = dict(zip(METRIC_NAMES, PAPER_TABLE3[row]))
        diff = {k: None if v is None else errors[k] - v for k, v in reference.items()}
        rows[row] = {label: reference, "source": source, "measured": errors,
                     "difference": diff}
        measured_cells: dict[str, float | None] = dict(errors)
        table_rows: list[tuple[str, dict[str, float | None], str]] = [
            (label, reference, "{:.3f}"), ("measured", measured_cells, "{:.3f}"),
            ("difference", diff, "{:+.3f}")]
        both = results.get("median_scaled")
        if row in METRIC_ANCHORS and both:
            ratio = both["ratio"]
            rows[row]["median_scaled"] = both
            table_rows.append((f"measured, median-scaled (median GT/pred {ratio['median']:.3f}"
                               f" +- {ratio['std']:.3f})", both["errors"], "{:.3f}"))
        for i, (name, values, fmt) in enumerate(table_rows):
            lines.append(f"| {row if i == 0 else ''} | {name} | {_cells(values, fmt)} |")
    return "\n".join(lines) + "\n", {"rows": rows, "metrics": list(METRIC_NAMES)}


def reproduce(paths: Paths, rows: Sequence[str], small: bool = False,
              overrides: Sequence[str] = (), warmup_steps: int = 5,
              progress: bool = True) -> dict[str, Any]:
    """Ground truth, estimate, training, evaluation and the table; returns the table JSON."""
    paths.out.mkdir(parents=True, exist_ok=True)
    configs = {row: row_config(row, paths, small, overrides) for row in rows}
    gt = export_ground_truth(paths, progress)
    seconds = estimate(configs, warmup_steps)
    if seconds:
        total = sum(seconds.values())
        LOG.info("estimated training time on this machine: %.1f h (%s), plus evaluation",
                 total / 3600, ", ".join(f"{r} {s / 3600:.1f} h" for r, s in seconds.items()))
    for row, cfg in configs.items():
        LOG.info("training %s", row)
        train_row(cfg)
    measured = {row: evaluate_row(cfg, paths, gt, progress) for row, cfg in configs.items()}
    markdown, data = table(measured)
    data["settings"] = {"small": small, "overrides": list(overrides),
                        "weights": [paths.depth_weights, paths.pose_weights],
                        "checkpoint": "last.pt (final epoch)", "gt": str(gt)}
    write_text_atomic(paths.out / "table3.md", markdown)
    write_text_atomic(paths.out / "table3.json", json.dumps(data, indent=1))
    LOG.info("Table 3 (%s):\n%s", paths.out / "table3.md", markdown)
    return data


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m training.experiments.reproduce``."""
    p = argparse.ArgumentParser(prog="python -m training.experiments.reproduce",
                                description=__doc__.splitlines()[0])
    p.add_argument("--kitti", type=Path, required=True, help="KITTI raw root")
    p.add_argument("--splits", type=Path, required=True,
                   help="folder with eigen_zhou/ and eigen/ split files")
    p.add_argument("--weights", required=True,
                   help="folder with the ImageNet weights, or 'none' (random weights)")
    p.add_argument("--out", type=Path, default=Path("runs/paper"), help="output folder")
    p.add_argument("--rows", default=",".join(TABLE3_ROWS),
                   help=f"comma-separated rows: Table 3's (default {','.join(TABLE3_ROWS)}) "
                        f"and the metric {','.join(METRIC_ANCHORS)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every row (repeatable)")
    p.add_argument("--small", action="store_true",
                   help="train the reduced networks instead (a quick check, not the paper)")
    p.add_argument("--warmup-steps", type=int, default=5,
                   help="training steps measured per row for the time estimate")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        LOG.error("unknown rows %s; choose from %s", unknown, list(ROWS))
        return 2
    try:
        depth, pose = resolve_weights(args.weights)
        paths = Paths(kitti=args.kitti, splits=resolve_splits(args.splits), depth_weights=depth,
                      pose_weights=pose, out=args.out)
        reproduce(paths, rows, args.small, args.overrides, args.warmup_steps,
                  not args.no_progress)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        LOG.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
