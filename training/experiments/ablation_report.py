"""Reporting of the Table 3 ablation: run records, mean and std per row, markdown tables.

A run's record (``<run dir>/points.json``) holds its held-out evaluations by training
step; :func:`summarize` collects the evaluations at one step over seeds,
:func:`curve_summary` follows one row over steps and finds where its learning curve
flattens below the seed-to-seed spread.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oe_depth_ros.metrics import METRIC_LABELS, METRIC_NAMES

#: Table 3 rows: name -> (training config, ODConv, triplet loss).
ROWS: dict[str, tuple[str, bool, bool]] = {
    "baseline": ("ablation_baseline", False, False),
    "odconv_only": ("ablation_odconv_only", True, False),
    "triplet_only": ("ablation_triplet_only", False, True),
    "oe_depth": ("ablation_oe_depth", True, True),
}
#: The paper's Table 3 (KITTI Eigen split, 640x192, monocular), in METRIC_NAMES order.
PAPER_TABLE3: dict[str, tuple[float, ...]] = {
    "baseline": (0.109, 0.838, 4.648, 0.186, 0.887, 0.963, 0.982),
    "odconv_only": (0.106, 0.789, 4.597, 0.185, 0.891, 0.963, 0.983),
    "triplet_only": (0.105, 0.740, 4.510, 0.182, 0.891, 0.964, 0.983),
    "oe_depth": (0.103, 0.706, 4.413, 0.179, 0.892, 0.965, 0.984),
}
#: Region errors (pooled Abs Rel) reported beside the 7 metrics.
REGION_COLUMNS = {"edge_abs_rel": ("near_depth_edges", "Abs Rel near depth edges"),
                  "semantic_abs_rel": ("near_semantic_boundaries",
                                       "Abs Rel near semantic boundaries")}
COLUMNS = (*METRIC_NAMES, *REGION_COLUMNS)
COLUMN_LABELS = dict(zip(COLUMNS, (*METRIC_LABELS,
                                   *(label for _, label in REGION_COLUMNS.values()))))
POINTS_NAME = "points.json"


def read_points(run_dir: Path) -> dict[str, Any]:
    """The run's record: evaluations by step (str keys), training time, state."""
    path = run_dir / POINTS_NAME
    if path.is_file():
        return json.loads(path.read_text())
    return {"points": {}, "train_seconds": 0.0}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None below two values) of ``values``."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()) if arr.size else None,
            "std": float(arr.std(ddof=1)) if arr.size > 1 else None, "n": int(arr.size)}


def summarize(work: Path, rows: Sequence[str], seeds: Sequence[int],
              step: int) -> dict[str, Any]:
    """Per row: the evaluation at ``step`` of every finished seed, mean and std per column."""
    out: dict[str, Any] = {}
    for row in rows:
        finished, diverged = {}, []
        for seed in seeds:
            record = read_points(work / "runs" / row / f"seed_{seed}")
            if "diverged" in record:
                diverged.append(seed)
            elif str(step) in record["points"]:
                finished[seed] = record["points"][str(step)]
        stats = {c: mean_std([r[c] for r in finished.values() if r.get(c) is not None])
                 for c in COLUMNS}
        const = [r["best_constant_abs_rel"] for r in finished.values()
                 if "best_constant_abs_rel" in r]
        out[row] = {"seeds": sorted(finished), "diverged_seeds": diverged, "stats": stats,
                    "best_constant_abs_rel": const[0] if const else None,
                    "per_seed": {str(s): {c: r.get(c) for c in COLUMNS}
                                 for s, r in finished.items()},
                    "commits": sorted({read_points(work / "runs" / row / f"seed_{s}")
                                       .get("commit") or "?" for s in finished})}
    return out


def learning_summary(work: Path, rows: Sequence[str], seeds: Sequence[int],
                     step: int) -> dict[str, Any]:
    """Per row: held-out Abs Rel untrained (step 0) and at ``step`` against the best constant.

    Per seed and as mean and std over the seeds evaluated at both steps, with the ratios
    trained / best constant and trained / untrained, and how many of ``seeds`` end below
    each (a seed that diverged or lacks an evaluation counts as not below).
    """
    out: dict[str, Any] = {}
    for row in rows:
        per_seed = {}
        for seed in seeds:
            points = read_points(work / "runs" / row / f"seed_{seed}")["points"]
            if "0" in points and str(step) in points:
                trained = points[str(step)]
                per_seed[str(seed)] = {"untrained": points["0"]["abs_rel"],
                                       "trained": trained["abs_rel"],
                                       "best_constant": trained["best_constant_abs_rel"]}
        runs = list(per_seed.values())
        out[row] = {
            "step": step, "seeds": len(seeds), "per_seed": per_seed,
            **{key: mean_std([r[key] for r in runs])
               for key in ("untrained", "trained", "best_constant")},
            "trained_over_constant": mean_std([r["trained"] / r["best_constant"] for r in runs]),
            "trained_over_untrained": mean_std([r["trained"] / r["untrained"] for r in runs]),
            "below_constant": sum(r["trained"] < r["best_constant"] for r in runs),
            "below_untrained": sum(r["trained"] < r["untrained"] for r in runs)}
    return out


def learning_markdown(learning: dict[str, Any]) -> str:
    """The learning summary as a markdown table (mean ± std over seeds)."""
    head = ["row", "seeds", "untrained (step 0)", "trained", "best constant",
            "trained / constant", "trained / untrained", "below the constant",
            "below untrained"]
    steps = sorted({res["step"] for res in learning.values()})
    lines = [f"Learning: held-out Abs Rel before training and at step "
             f"{', '.join(map(str, steps))} (mean ± std over seeds):", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row, res in learning.items():
        n = res["seeds"]
        lines.append("| " + " | ".join([
            row, str(res["trained"]["n"]), _cell(res["untrained"]), _cell(res["trained"]),
            _cell(res["best_constant"]), _cell(res["trained_over_constant"]),
            _cell(res["trained_over_untrained"]), f"{res['below_constant']} of {n}",
            f"{res['below_untrained']} of {n}"]) + " |")
    return "\n".join(lines) + "\n"


def difference(a: dict[str, Any], b: dict[str, Any]) -> Optional[tuple[float, float]]:
    """Mean difference a - b and its standard error, None without two seeds on each side."""
    if a["mean"] is None or b["mean"] is None or a["std"] is None or b["std"] is None:
        return None
    return a["mean"] - b["mean"], math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def _cell(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat["std"] is not None else "")


def best_constant(summary: dict[str, Any]) -> Optional[float]:
    """The best constant depth's Abs Rel on the held-out drives (the same for every row)."""
    const = [r["best_constant_abs_rel"] for r in summary.values()
             if r["best_constant_abs_rel"] is not None]
    return const[0] if const else None


def table_markdown(summary: dict[str, Any], step: int) -> str:
    """Our rows (mean ± std over seeds), changes against the baseline, the paper's table."""
    def mark(flag: bool) -> str:
        return "✓" if flag else "-"

    head = ["row", "ODConv", "triplet", "seeds", *(COLUMN_LABELS[c] for c in COLUMNS)]
    lines = [f"Synthetic world, {step} steps, held-out drives (mean ± std over seeds):", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row, res in summary.items():
        _, odconv, triplet = ROWS[row]
        cells = [row, mark(odconv), mark(triplet), str(len(res["seeds"])),
                 *(_cell(res["stats"][c]) for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    const = best_constant(summary)
    if const is not None:
        lines += ["", f"Best constant depth per image (an oracle no depth-blind predictor "
                  f"beats): Abs Rel {const:.4f}."]
    if "baseline" in summary:
        base = summary["baseline"]["stats"]
        cols = ("abs_rel", "edge_abs_rel", "semantic_abs_rel")
        head = ["row", *(f"Δ {COLUMN_LABELS[c]}" for c in cols), "paper Δ Abs Rel"]
        lines += ["", "Change against the baseline (difference of means ± its standard error; "
                  "negative is better):", "", "| " + " | ".join(head) + " |",
                  "|" + " --- |" * len(head)]
        for row, res in summary.items():
            if row == "baseline":
                continue
            cells = [row]
            for c in cols:
                diff = difference(res["stats"][c], base[c])
                cells.append("-" if diff is None else f"{diff[0]:+.4f} ± {diff[1]:.4f}")
            paper = PAPER_TABLE3[row][0] - PAPER_TABLE3["baseline"][0]
            cells.append(f"{paper:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    head = ["paper Table 3 (KITTI, 640x192)", "ODConv", "triplet", *METRIC_LABELS]
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row, values in PAPER_TABLE3.items():
        _, odconv, triplet = ROWS[row]
        lines.append("| " + " | ".join([row, mark(odconv), mark(triplet),
                                        *(f"{v:.3f}" for v in values)]) + " |")
    return "\n".join(lines) + "\n"


def curve_summary(work: Path, row: str, seeds: Sequence[int],
                  steps: Sequence[int]) -> dict[str, Any]:
    """Held-out Abs Rel by step (seeds' mean and std) and the plateau step."""
    points = []
    for step in steps:
        values = [read_points(work / "runs" / row / f"seed_{s}")["points"].get(str(step))
                  for s in seeds]
        values = [v["abs_rel"] for v in values if v is not None]
        if values:
            points.append({"step": step, "per_seed": values, **mean_std(values)})
    complete = [p for p in points if p["n"] == len(seeds)]
    return {"row": row, "seeds": list(seeds), "points": points,
            "plateau_step": plateau_step([p["step"] for p in complete],
                                         [p["mean"] for p in complete],
                                         [p["std"] for p in complete])}


def plateau_step(steps: Sequence[int], means: Sequence[float],
                 stds: Sequence[Optional[float]]) -> Optional[int]:
    """First step k such that every later mean lies within its own seed std of k's mean.

    None when no step but the last qualifies.
    """
    for k in range(len(steps) - 1):
        later = range(k + 1, len(steps))
        spreads = [stds[j] for j in later]
        if all(sd is not None and abs(means[j] - means[k]) < sd for j, sd in zip(later, spreads)):
            return steps[k]
    return None


def curve_markdown(curve: dict[str, Any]) -> str:
    """The learning curve as a markdown table with the plateau statement."""
    lines = [f"Held-out Abs Rel of `{curve['row']}` by training step "
             f"(seeds {curve['seeds']}):", "",
             "| step | seeds | mean | std | per seed |", "| --- | --- | --- | --- | --- |"]
    for p in curve["points"]:
        std = "-" if p["std"] is None else f"{p['std']:.4f}"
        lines.append(f"| {p['step']} | {p['n']} | {p['mean']:.4f} | {std} | "
                     + ", ".join(f"{v:.4f}" for v in p["per_seed"]) + " |")
    step = curve["plateau_step"]
    complete = [p for p in curve["points"] if p["n"] == len(curve["seeds"])]
    if step is not None:
        last = complete[-1]
        verdict = (f"after step {step} the mean moves by less than the seed-to-seed std "
                   f"(which is {last['std']:.4f} at step {last['step']}: differences between "
                   "rows smaller than that are not resolved).")
    elif len(curve["seeds"]) < 2 or len(complete) < 2:
        verdict = "needs at least two seeds evaluated at two steps or more."
    else:
        verdict = "not reached (the mean still moves by more than the seed-to-seed std)."
    lines += ["", "Plateau: " + verdict]
    return "\n".join(lines) + "\n"


def plot_curves(curves: Sequence[dict[str, Any]], out: Path,
                constant: Optional[float] = None) -> None:
    """Held-out Abs Rel against step, one line per row (seeds' mean, band of +-1 std).

    ``constant``: the best constant depth's Abs Rel, drawn as a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oe_depth_ros.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for curve in curves:
        pts = curve["points"]
        steps = np.array([p["step"] for p in pts])
        mean = np.array([p["mean"] for p in pts])
        std = np.array([p["std"] or 0.0 for p in pts])
        ax.plot(steps, mean, marker="o", label=f"{curve['row']} ({len(curve['seeds'])} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
    if constant is not None:
        ax.axhline(constant, color="gray", linestyle="--", label="best constant depth")
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out Abs Rel (median-scaled)")
    ax.set_title("Learning curves: mean over seeds, band = seed-to-seed std")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def label_check_text(labels: dict[str, Any]) -> str:
    """One sentence on the label check."""
    def frac(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    t1, t2 = labels["tolerance_1px"], labels["tolerance_2px"]
    return (f"Label check (training drives, depth jump > {labels['depth_jump']:.0%}): of "
            f"{t1['discontinuities']} depth-discontinuity pixels, "
            f"{frac(t1['discontinuity_fraction'])} lie within 1 px of a label boundary "
            f"({frac(t2['discontinuity_fraction'])} within 2 px); of "
            f"{t1['label_boundaries']} label-boundary pixels, {frac(t1['label_fraction'])} lie "
            f"within 1 px of a depth discontinuity ({frac(t2['label_fraction'])} within 2 px).\n")
