"""The learning proof: trained over several seeds, the net beats the untrained net and constants."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.experiments.baselines import best_constant_abs_rel
from training.experiments.prove_learning import main


def test_best_constant_is_the_abs_rel_minimizer() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 60, size=(20, 30))
    mask = rng.random(gt.shape) < 0.7
    best = best_constant_abs_rel(gt, mask)
    g = gt[mask]
    grid = np.linspace(g.min(), g.max(), 4001)
    brute = min(np.mean(np.abs(g - c) / g) for c in grid)
    assert best <= brute + 1e-9
    assert best == pytest.approx(brute, abs=1e-3)


def test_tiny_proof_trains_the_whole_schedule_and_reports_each_seed(tmp_path: Path) -> None:
    """Without --steps every run trains optim.epochs epochs; the summary matches the records."""
    assert main(["--work", str(tmp_path), "--seeds", "0", "1", "--drives", "1", "--frames", "5",
                 "--heldout-drives", "1", "--heldout-frames", "2", "--size", "128x64",
                 "--warmup-steps", "0", "data.height=32", "data.width=64",
                 "optim.batch_size=1", "optim.epochs=2"]) == 0
    # one epoch: one step per training sample (batch 1)
    samples = len((tmp_path / "train_world" / "splits" / "train_files.txt")
                  .read_text().splitlines())
    proof = json.loads((tmp_path / "proof.json").read_text())
    assert proof["settings"]["rows"] == ["oe_depth"]
    assert proof["settings"]["steps"] == 2 * samples
    learning = proof["learning"]["oe_depth"]
    records = [json.loads((tmp_path / "runs" / "oe_depth" / f"seed_{s}" / "points.json")
                          .read_text())["points"] for s in (0, 1)]
    assert all(sorted(r, key=int) == ["0", str(2 * samples)] for r in records)
    trained = [r[str(2 * samples)]["abs_rel"] for r in records]
    untrained = [r["0"]["abs_rel"] for r in records]
    const = records[0]["0"]["best_constant_abs_rel"]
    for seed in (0, 1):  # each run trains with its own seed
        config = (tmp_path / "runs" / "oe_depth" / f"seed_{seed}" / "config.yaml").read_text()
        assert f"\nseed: {seed}\n" in config
    assert learning["trained"]["mean"] == pytest.approx(np.mean(trained))
    assert learning["trained"]["std"] == pytest.approx(np.std(trained, ddof=1))
    assert learning["untrained"]["mean"] == pytest.approx(np.mean(untrained))
    assert learning["trained_over_constant"]["mean"] == pytest.approx(np.mean(trained) / const)
    assert learning["below_constant"] == sum(t < const for t in trained)
    assert learning["below_untrained"] == sum(t < u for t, u in zip(trained, untrained))
    assert "| oe_depth | 2 |" in (tmp_path / "proof.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a hang guard above setup.cfg's 600 s: 3 runs of 350 steps
def test_training_learns_over_seeds(tmp_path: Path) -> None:
    """The documented proof (docs/training.md, record 2026-12-07-table3-box-mean3.md)."""
    # Margins: the 2026-12-07 ablation's oe_depth row (these runs: 3 seeds, 350 steps)
    # ended at 0.61 +- 0.03 of the best constant and 0.51 +- 0.03 of the untrained
    # network's 0.473 (seed-independent: an untrained net predicts one depth), every seed
    # below both; on the 2.5-7.5 m/s world it was 0.63 +- 0.08 and 0.54 +- 0.07.
    assert main(["--work", str(tmp_path), "--jobs", "3"]) == 0
    learning = json.loads((tmp_path / "proof.json").read_text())["learning"]["oe_depth"]
    assert learning["trained"]["n"] == 3
    assert learning["below_untrained"] == 3
    assert learning["trained_over_constant"]["mean"] < 0.95
    assert learning["trained_over_untrained"]["mean"] < 0.85
