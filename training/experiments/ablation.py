"""Table 3 in the synthetic world: the effect of each module, measured over several seeds.

Trains the paper's four ablation rows (``config/training/ablation_<row>.yaml``:
baseline, odconv_only, triplet_only, oe_depth; the small networks and the short
schedule of ``ablation_small.yaml``) on the same rendered drives, once per seed, and
evaluates every run untrained (step 0) and trained on held-out drives rendered from
another world seed: the 7 KITTI metrics (median-scaled, per-image means), the best
constant depth and the pooled Abs Rel near depth edges and near semantic boundaries
(:mod:`training.edge_metrics`). Writes ``table.md`` and ``table.json`` (per row the
held-out Abs Rel before and after training against the best constant, mean and
standard deviation per metric, the paper's Table 3 beside them, and the label check of
:mod:`training.experiments.label_edges` on the training drives) and, with
``--eval-every``, ``table.png`` (the learning curves). :mod:`training.experiments.prove_learning`
is this tool with the ``oe_depth`` row.

Each run trains the config's whole schedule (``optim.epochs``) unless ``--steps`` cuts
it. Runs live in ``<work>/runs/<row>/seed_<n>``. A run whose evaluation at ``--steps``
exists is not redone; an interrupted run continues from its last checkpoint (the
trainer resumes exactly). The expected time is printed first, from a short measured
warm-up of every row that still has work.

``--curve`` evaluates at every ``--eval-every`` steps as well (by default of the
baseline only) and reports the first step after which the seeds' mean held-out Abs Rel
moves by less than their standard deviation: the budget for the ablation. Both modes
share run folders, so the curve's baseline runs serve the ablation at any evaluated step.

    python -m training.experiments.ablation --work runs/ablation --curve --eval-every 35
    python -m training.experiments.ablation --work runs/ablation --seeds 0 1 2 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from oe_depth_ros.atomic import write_text_atomic
from oe_depth_ros.metrics import METRIC_NAMES, evaluate_depth_map, valid_mask
from oe_depth_ros.progress import bar_disabled
from .ablation_report import (PAPER_TABLE3, POINTS_NAME, REGION_COLUMNS,
                              ROWS, best_constant, curve_markdown,
                              curve_summary, label_check_text, learning_markdown,
                              learning_summary, plot_curves, read_points, summarize,
                              table_markdown)
from .baselines import best_constant_abs_rel
from .worlds import WorldSpec, add_world_options, ensure_world, world_spec

if TYPE_CHECKING:
    from ..datasets import KittiRawMonoDataset
    from ..trainer import Trainer

log = logging.getLogger("training.experiments.ablation")


@dataclass(frozen=True, kw_only=True)
class Worlds:
    """Paths of the prepared worlds."""

    train_root: Path
    train_split: Path
    val_split: Path
    heldout_root: Path
    heldout_split: Path


@dataclass(frozen=True, kw_only=True)
class RunJob:
    """One training run: a row, a seed, the steps to evaluate at, the shared settings."""

    work: Path
    row: str
    seed: int
    eval_steps: tuple[int, ...]
    worlds: Worlds
    threads: int = 1
    overrides: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.work / "runs" / self.row / f"seed_{self.seed}"


@dataclass(kw_only=True)
class Settings:
    """What the command line chose (saved in table.json)."""

    rows: list[str]
    seeds: list[int]
    steps: int
    eval_steps: list[int]
    world: WorldSpec
    threads: int
    jobs: int
    overrides: list[str] = field(default_factory=list)


def git_state() -> dict[str, Any]:
    """Commit of the code that trains, and whether its sources differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "oe_depth_ros", "training",
                                "config"], cwd=root, capture_output=True, text=True,
                               check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": porcelain_paths(dirty)}


def porcelain_paths(status: str) -> list[str]:
    """The paths of ``git status --porcelain`` output (two status letters, a space, path).

    The status column may start with a space (" M file"), so lines are not stripped.
    """
    return sorted(line[3:] for line in status.splitlines() if len(line) > 3)


# ---- worlds --------------------------------------------------------------------------------
def prepare_worlds(work: Path, spec: WorldSpec) -> Worlds:
    """Render (once) the training world and the held-out world; list every held-out frame."""
    from oe_depth_ros.kitti.splits import read_split_file, write_split_file

    # +1 drive: the synthetic splits train on every drive but the last one
    train = ensure_world(work / "train_world", spec.drives + 1, spec.frames, spec.seed,
                         spec.width, spec.height)
    heldout = ensure_world(work / "heldout_world", spec.heldout_drives, spec.heldout_frames,
                           spec.heldout_seed, spec.width, spec.height)
    entries = {e.line: e for name in ("train", "val", "test")
               if Path(heldout.split_files[name]).read_text().strip()
               for e in read_split_file(heldout.split_files[name])}
    split = write_split_file(work / "heldout_world" / "heldout_files.txt",
                             [entries[k] for k in sorted(entries)])
    return Worlds(train_root=Path(train.root), train_split=Path(train.split_files["train"]),
                  val_split=Path(train.split_files["val"]), heldout_root=Path(heldout.root),
                  heldout_split=split)


def build_trainer(job: RunJob, out_dir: Path) -> "Trainer":
    """A trainer of ``job``'s row and seed on the training world (no per-epoch validation)."""
    from ..train_config import load_train_config
    from ..trainer import Trainer

    w = job.worlds
    cfg = load_train_config(ROWS[job.row][0], [
        f"data.data_path={w.train_root}", f"data.train_split={w.train_split}",
        f"data.val_split={w.val_split}", f"seed={job.seed}", f"cpu_threads={job.threads}",
        "validate=false", "progress=false", "checkpoint_every=50", "data.num_workers=0",
        *job.overrides])
    return Trainer(cfg, out_dir=out_dir)


def heldout_dataset(trainer: "Trainer", worlds: Worlds) -> "KittiRawMonoDataset":
    """Every held-out frame at the trainer's input size, with ground truth."""
    from ..datasets import KittiRawMonoDataset

    d = trainer.cfg.data
    data = KittiRawMonoDataset(worlds.heldout_root, worlds.heldout_split, d.height, d.width,
                               frame_ids=(0,), num_scales=1, load_gt=True,
                               intrinsics=d.intrinsics)
    if not data.has_gt:
        raise FileNotFoundError(f"held-out drives under {worlds.heldout_root} lack ground truth")
    return data


def evaluate(trainer: "Trainer", heldout: "KittiRawMonoDataset") -> dict[str, Any]:
    """Held-out errors of the trainer's depth net: the table columns plus the full regions.

    Median-scaled errors (the 7 metrics, means over images), the best constant depth's
    Abs Rel (mean over images) and the Abs Rel pooled near depth edges and semantic
    boundaries.
    """
    import cv2

    from oe_depth_ros.kitti.labels import labels_to_train_ids
    from ..edge_metrics import RegionReport

    d = trainer.cfg.data
    sums: dict[str, float] = {}
    const = []
    report = RegionReport()
    for i in range(len(heldout)):
        sample = heldout[i]
        gt = sample["depth_gt"][0].numpy()
        pred = trainer.predict_depth(sample[("color", 0, 0)][None], gt.shape)[0]
        errors, ratio = evaluate_depth_map(gt, pred, crop=d.val_crop, max_depth=d.val_max_depth)
        for name, value in errors.items():
            sums[name] = sums.get(name, 0.0) + value
        mask = valid_mask(gt, d.val_crop, 1e-3, d.val_max_depth)
        const.append(best_constant_abs_rel(gt, mask))
        label_path = heldout.label_path(heldout.entries[i])
        raw = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise FileNotFoundError(f"no label image {label_path}")
        scaled = np.clip(pred * ratio, 1e-3, d.val_max_depth)
        report.add(gt, scaled, mask, labels_to_train_ids(raw))
    result: dict[str, Any] = {name: value / len(heldout) for name, value in sums.items()}
    result["best_constant_abs_rel"] = float(np.mean(const))
    result["regions"] = report.result()
    regions = result["regions"]["regions"]
    for column, (region, _) in REGION_COLUMNS.items():
        result[column] = regions.get(region, {}).get("abs_rel")
    return result


# ---- one run ---------------------------------------------------------------------------------
def pending(job: RunJob) -> list[int]:
    """Evaluation steps of ``job`` not done yet (none once the run diverged)."""
    record = read_points(job.run_dir)
    if "diverged" in record:
        return []
    return [s for s in job.eval_steps if str(s) not in record["points"]]


def train_run(job: RunJob, log_level: int = logging.INFO) -> dict[str, Any]:
    """Train ``job`` up to its last evaluation step, evaluating on the way; resumable."""
    from ..checkpointing import LAST_NAME
    from ..trainer import TrainingDivergedError

    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    todo = pending(job)
    record = read_points(job.run_dir)
    if not todo:
        return record
    trainer = build_trainer(job, job.run_dir)
    try:
        if (job.run_dir / LAST_NAME).is_file():
            trainer.resume(job.run_dir / LAST_NAME)
        if todo[-1] > trainer.total_steps:
            raise ValueError(f"{job.row}: {todo[-1]} steps exceed the configured schedule of "
                             f"{trainer.total_steps} steps (optim.epochs)")
        if todo[0] < trainer.step:
            raise ValueError(f"{job.run_dir} is at step {trainer.step}, past the unevaluated "
                             f"step {todo[0]}; use another --work folder")
        heldout = heldout_dataset(trainer, job.worlds)
        record.update({"row": job.row, "seed": job.seed, **git_state()})
        for step in todo:
            trainer.cfg.max_steps = step
            tic = time.perf_counter()
            try:
                trainer.fit()
            except TrainingDivergedError as exc:
                log.error("%s seed %d: %s", job.row, job.seed, exc)
                record["diverged"] = str(exc)
                write_text_atomic(job.run_dir / POINTS_NAME, json.dumps(record, indent=1))
                return record
            record["train_seconds"] += time.perf_counter() - tic
            tic = time.perf_counter()
            record["points"][str(step)] = evaluate(trainer, heldout)
            record["eval_seconds"] = time.perf_counter() - tic
            write_text_atomic(job.run_dir / POINTS_NAME, json.dumps(record, indent=1))
            log.info("%s seed %d step %d: held-out Abs Rel %.4f", job.row, job.seed, step,
                     record["points"][str(step)]["abs_rel"])
    finally:
        trainer.close()
    return record


# ---- time estimate ---------------------------------------------------------------------------
def _endless(trainer: "Trainer") -> Iterator[dict[Any, Any]]:
    """The trainer's batches, epoch after epoch."""
    epoch = 0
    while True:
        trainer.train_set.set_epoch(epoch)
        trainer.sampler.set_epoch(epoch)
        yield from trainer.loader
        epoch += 1


def measure_row(job: RunJob, steps: int, with_eval: bool) -> tuple[float, float]:
    """Measured seconds per training step of ``job``'s row and of one held-out evaluation.

    The first step is not timed; the evaluation only runs with ``with_eval`` (else 0).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(job, Path(tmp))
        batches = _endless(trainer)
        trainer.train_step(next(batches))
        tic = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        per_step = (time.perf_counter() - tic) / steps
        tic = time.perf_counter()
        if with_eval:
            evaluate(trainer, heldout_dataset(trainer, job.worlds))
        return per_step, time.perf_counter() - tic if with_eval else 0.0


def estimate_seconds(jobs: list[RunJob], warmup_steps: int) -> tuple[float, dict[str, float]]:
    """Expected seconds of work still to do (one process) and the measured s/step by row.

    The warm-up times a few steps of every row with work left and one evaluation.
    """
    per_step: dict[str, float] = {}
    eval_seconds: float | None = None
    total = 0.0
    for job in jobs:
        todo = pending(job)
        if not todo:
            continue
        if job.row not in per_step:
            per_step[job.row], measured = measure_row(job, warmup_steps, eval_seconds is None)
            eval_seconds = measured if eval_seconds is None else eval_seconds
        record = read_points(job.run_dir)
        done = max((int(s) for s in record["points"]), default=0)
        each_eval = float(record.get("eval_seconds") or eval_seconds or 0.0)
        total += per_step[job.row] * (todo[-1] - done) + each_eval * len(todo)
    return total, per_step


# ---- command line ----------------------------------------------------------------------------
def build_parser(prog: str = "python -m training.experiments.ablation",
                 description: str = __doc__.splitlines()[0],
                 rows: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``rows`` are the default rows (None: all four, baseline with --curve)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--work", type=Path, required=True, help="folder for worlds, runs, tables")
    default_rows = " ".join(rows) if rows else "all four; baseline with --curve"
    parser.add_argument("--rows", nargs="+", choices=list(ROWS),
                        default=list(rows) if rows else None,
                        help=f"rows to train (default {default_rows})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="training seeds (default 0 1 2)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: the config's whole schedule, "
                             "optim.epochs)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="also evaluate every N steps (default: --steps/8 with --curve)")
    parser.add_argument("--curve", action="store_true",
                        help="learning-curve mode: evaluate on the way, report the plateau")
    add_world_options(parser, WorldSpec())
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes)")
    parser.add_argument("--warmup-steps", type=int, default=2,
                        help="timed steps per row for the estimate (0: no estimate)")
    parser.add_argument("--estimate-only", action="store_true",
                        help="print the expected time and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tables from the evaluations already there")
    parser.add_argument("--table-step", type=int, default=None,
                        help="the step the table reports (default --steps; an evaluated step)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="training config overrides for every row")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse counts below one and repeated seeds."""
    for name in ("steps", "jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be at least 1, got {value}")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"--seeds must be distinct, got {args.seeds}")


def schedule_steps(worlds: Worlds, rows: Sequence[str], overrides: Sequence[str]) -> int:
    """Steps of the rows' whole schedule on the training world (``optim.epochs`` epochs).

    The rows must agree, so that every row of a table trains for as long.
    """
    import tempfile

    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            job = RunJob(work=Path(tmp), row=row, seed=0, eval_steps=(), worlds=worlds,
                         overrides=tuple(overrides))
            trainer = build_trainer(job, Path(tmp))
            totals[row] = trainer.total_steps
            trainer.close()
    if len(set(totals.values())) != 1:
        raise SystemExit(f"the rows' schedules differ ({totals} steps); give --steps")
    return next(iter(totals.values()))


def settings_from_args(args: argparse.Namespace, rows: list[str], steps: int) -> Settings:
    """Settings of the checked command line; step 0 (the untrained network) is always evaluated."""
    every = args.eval_every or (max(1, steps // 8) if args.curve else None)
    evals = sorted({0, *range(every, steps, every), steps} if every else {0, steps})
    return Settings(rows=rows, seeds=list(args.seeds), steps=steps, eval_steps=evals,
                    world=world_spec(args), threads=args.threads, jobs=args.jobs,
                    overrides=list(args.overrides))


def run_all(jobs: list[RunJob], parallel: int) -> None:
    """Train every job (``parallel`` processes at once), with an overall progress bar."""
    todo = [j for j in jobs if pending(j)]
    level = logging.getLogger().getEffectiveLevel()
    with tqdm(total=len(todo), unit="run", desc="ablation",
              disable=bar_disabled(True)) as bar:
        if parallel == 1:
            for job in todo:
                train_run(job, level)
                bar.update(1)
            return
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train_run, job, level) for job in todo]
            for future in as_completed(futures):
                future.result()
                bar.update(1)


def label_check(worlds: Worlds, work: Path) -> dict[str, Any]:
    """Agreement of depth discontinuities and label boundaries on the training drives."""
    from .label_edges import world_agreement

    path = work / "label_check.json"
    if path.is_file():
        return json.loads(path.read_text())
    out: dict[str, Any] = {"depth_jump": 0.15, "split": str(worlds.train_split)}
    for tol in (1, 2):
        agree = world_agreement(worlds.train_root, worlds.train_split, 0.15, float(tol))
        out[f"tolerance_{tol}px"] = {**asdict(agree),
                                     "discontinuity_fraction": agree.discontinuity_fraction,
                                     "label_fraction": agree.label_fraction}
    write_text_atomic(path, json.dumps(out, indent=1))
    return out


def run(args: argparse.Namespace, name: str) -> int:
    """Train, evaluate and report what ``args`` ask; write ``<name>.md`` and ``<name>.json``."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_args(args)
    worlds = prepare_worlds(args.work, world_spec(args))
    rows = args.rows or (["baseline"] if args.curve else list(ROWS))
    settings = settings_from_args(args, rows, args.steps or schedule_steps(worlds, rows,
                                                                           args.overrides))
    table_step = settings.steps if args.table_step is None else args.table_step
    if table_step not in settings.eval_steps:
        raise SystemExit(f"--table-step {table_step} is not an evaluated step "
                         f"{settings.eval_steps}")
    # seed-major: with fewer --jobs than runs, every row's first seeds finish first
    jobs = [RunJob(work=args.work, row=row, seed=seed, eval_steps=tuple(settings.eval_steps),
                   worlds=worlds, threads=settings.threads, overrides=tuple(settings.overrides))
            for seed in settings.seeds for row in settings.rows]
    if args.warmup_steps > 0 and not args.report_only:
        seconds, per_step = estimate_seconds(jobs, args.warmup_steps)
        rates = ", ".join(f"{row} {s:.2f} s/step" for row, s in per_step.items())
        print(f"expected: {sum(bool(pending(j)) for j in jobs)} of {len(jobs)} runs to do, "
              f"{seconds / 60:.1f} min in one process ({rates})"
              + (f"; at best {seconds / 60 / settings.jobs:.1f} min with {settings.jobs} jobs"
                 if settings.jobs > 1 else ""), flush=True)
    if args.estimate_only:
        return 0
    tic = time.perf_counter()
    if not args.report_only:
        run_all(jobs, settings.jobs)
    labels = label_check(worlds, args.work)
    result: dict[str, Any] = {"settings": asdict(settings), **git_state(),
                              "wall_seconds_this_call": time.perf_counter() - tic,
                              "label_check": labels,
                              "table_step": table_step,
                              "rows": summarize(args.work, settings.rows, settings.seeds,
                                                table_step),
                              "learning": learning_summary(args.work, settings.rows,
                                                           settings.seeds, table_step),
                              "paper_table3": {r: dict(zip(METRIC_NAMES, v))
                                               for r, v in PAPER_TABLE3.items()}}
    text = learning_markdown(result["learning"]) + "\n" + table_markdown(result["rows"], table_step)
    if len(settings.eval_steps) > 2:
        result["curves"] = [curve_summary(args.work, row, settings.seeds, settings.eval_steps)
                            for row in settings.rows]
        text += "\n" + "\n".join(curve_markdown(c) for c in result["curves"])
        plot_curves(result["curves"], args.work / f"{name}.png", best_constant(result["rows"]))
    text += "\n" + label_check_text(labels)
    write_text_atomic(args.work / f"{name}.json", json.dumps(result, indent=1))
    write_text_atomic(args.work / f"{name}.md", text)
    print(text)
    print(f"written: {args.work / (name + '.md')}, {args.work / (name + '.json')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args, "curve" if args.curve else "table")


if __name__ == "__main__":
    sys.exit(main())
