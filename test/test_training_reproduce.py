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
    paths = Paths(synth_world.root, resolve_splits(splits), "none", "none", out)
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
