"""python -m training.experiments.reproduce end to end on the synthetic world (tiny settings).

The two runs take about a minute on two loaded cores, so they are marked slow.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from training.experiments.ablation_report import PAPER_TABLE3
from training.checkpointing import load_checkpoint
from training.train_config import load_train_config
from training.experiments.reproduce import (Paths, main, resolve_splits, resolve_weights,
                                            row_config, train_row)

torch.set_num_threads(1)

TINY = ["optim.epochs=1", "data.height=64", "data.width=192", "data.num_workers=0",
        "optim.batch_size=2", "data.intrinsics=calibration", "cpu_threads=1", "progress=false",
        "validate=false", "checkpoint_every=1", "keep_epoch_checkpoints=false"]


def splits_folder(world, root: Path) -> Path:
    """Monodepth2's split layout holding the synthetic world's splits."""
    for name, rel in (("train", "eigen_zhou/train_files.txt"),
                      ("val", "eigen_zhou/val_files.txt"), ("test", "eigen/test_files.txt")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(world.split_files[name], root / rel)
    return root


@pytest.mark.slow
def test_reproduce_end_to_end_and_resumable(synth_world, tmp_path: Path, caplog) -> None:
    splits = splits_folder(synth_world, tmp_path / "splits")
    out = tmp_path / "paper"
    args = ["--kitti", str(synth_world.root), "--splits", str(splits), "--weights", "none",
            "--out", str(out), "--rows", "baseline", "--small", "--warmup-steps", "2",
            "--no-progress", *[f"--set={o}" for o in TINY]]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert any("estimated training time" in r.getMessage() for r in caplog.records)
    table = json.loads((out / "table3.json").read_text())
    row = table["rows"]["baseline"]
    assert row["paper"]["abs_rel"] == PAPER_TABLE3["baseline"][0]
    for k, v in row["measured"].items():
        assert row["difference"][k] == pytest.approx(v - row["paper"][k])
    metrics = json.loads((out / "baseline" / "eval" / "metrics.json").read_text())
    assert metrics["errors"]["abs_rel"] == row["measured"]["abs_rel"]
    assert "| baseline | paper | 0.109 | 0.838 |" in (out / "table3.md").read_text()
    assert (out / "gt_eigen.npz").is_file() and (out / "baseline" / "done.json").is_file()
    # rerunning skips every finished stage: no estimate, no training, same checkpoint
    stamp = (out / "baseline" / "last.pt").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert not any("estimated training time" in r.getMessage() for r in caplog.records)
    assert (out / "baseline" / "last.pt").stat().st_mtime_ns == stamp
    assert any("reusing" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_an_interrupted_row_resumes(synth_world, tmp_path: Path) -> None:
    splits = splits_folder(synth_world, tmp_path / "splits")
    out = tmp_path / "paper"
    base = ["--kitti", str(synth_world.root), "--splits", str(splits), "--weights", "none",
            "--out", str(out), "--rows", "triplet_only", "--small", "--warmup-steps", "2",
            "--no-progress", *[f"--set={o}" for o in TINY]]
    paths = Paths(kitti=synth_world.root, splits=resolve_splits(splits), depth_weights="none",
                  pose_weights="none", out=out)
    # one step, then the marker removed: a run interrupted after its first checkpoint
    train_row(row_config("triplet_only", paths, True, [*TINY, "max_steps=1"]))
    (out / "triplet_only" / "done.json").unlink()
    assert main(base) == 0
    assert load_checkpoint(out / "triplet_only" / "last.pt")["step"] > 1


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="hrnet_w18.ms_in1k.safetensors"):
        resolve_weights(str(tmp_path))
    assert main(["--kitti", str(tmp_path), "--splits", str(tmp_path), "--weights", "none",
                 "--out", str(tmp_path / "o")]) == 1
    assert main(["--kitti", str(tmp_path), "--splits", str(tmp_path), "--weights", "none",
                 "--rows", "nope"]) == 2


def test_metric_row_faces_its_anchor_with_both_protocols() -> None:
    """oe_depth_velocity: no-scaling errors against PackNet-SfM M+v (Abs Rel, d1 only)."""
    from training.experiments.reproduce import METRIC_ANCHORS, ROWS, table

    assert "oe_depth_velocity" in ROWS
    assert load_train_config("oe_depth_velocity").depth_units.metric
    errors = {"abs_rel": 0.121, "sq_rel": 0.9, "rmse": 4.9, "rmse_log": 0.2, "a1": 0.85,
              "a2": 0.95, "a3": 0.98}
    median = dict(errors, abs_rel=0.115)
    measured = {"oe_depth_velocity": {"errors": errors, "median_scaled": {
        "errors": median, "ratio": {"median": 0.97, "std": 0.04, "mean": 0.97, "min": 0.9,
                                    "max": 1.05}}}}
    markdown, data = table(measured)
    row = data["rows"]["oe_depth_velocity"]
    assert row["anchor"]["abs_rel"] == 0.111 and row["anchor"]["a1"] == 0.864
    assert row["anchor"]["rmse"] is None and row["difference"]["rmse"] is None
    assert row["difference"]["abs_rel"] == pytest.approx(0.010)
    assert row["difference"]["a1"] == pytest.approx(-0.014)
    assert row["source"] == METRIC_ANCHORS["oe_depth_velocity"][0]
    assert "| oe_depth_velocity | anchor | 0.111 | - | - | - | 0.864 | - | - |" in markdown
    assert "|  | difference | +0.010 | - | - | - | -0.014 | - | - |" in markdown
    assert "|  | measured, median-scaled (median GT/pred 0.970 +- 0.040) | 0.115 |" in markdown
