"""The demo end to end in its fastest configuration, through the real CLI."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from oe_depth_ros.bags.bagio import BagReader
from oe_depth_ros.cli import plugin_commands
from oe_depth_ros.metrics import evaluate_depth_map, valid_mask
from oe_depth_ros.ply import read_ply
from training.experiments.baselines import best_constant_abs_rel
from training.experiments.demo import (DemoSettings, _constant_errors, class_summary,
                                       drive_train_ids, select_checkpoint, versus_constant)
from training.experiments.demo_command import add_arguments, settings_from_args

STAGES = {"data", "train", "export", "kitti2bag", "process-bag", "report"}


def test_demo_fast_end_to_end(tmp_path):
    out = tmp_path / "demo"
    readme_panel = tmp_path / "images" / "demo_panel.png"
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--fast",
                           "--out", str(out), "--panel", str(readme_panel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # Every stage ran and was timed, in wall and CPU seconds, and so was the whole run.
    assert set(report["stage_seconds"]) == set(report["stage_cpu_seconds"]) == STAGES
    assert sum(report["stage_seconds"].values()) <= report["total_seconds"]
    # the recipe's sources -2 and +2: it trained on the splits of the frames that have
    # them, for the steps it ran (3)
    assert report["model_source"].startswith("trained here: synth_small_oxts, 3 steps at ")
    assert "splits/reach2/train_files.txt" in (out / "training" / "config.yaml").read_text()
    assert report["stage_cpu_seconds"]["train"] > 0 and report["total_cpu_seconds"] > 0
    # The export was verified against float64 on the pattern, the photograph and a frame.
    assert set(report["export"]["onnxruntime_vs_float64"]) == {"pattern", "photograph",
                                                               "verify-image"}
    pinned = report["export"]["pinned_fraction"]
    assert set(pinned) == {"pattern", "photograph", "verify-image"}
    assert all(0.0 <= f <= 1.0 for f in pinned.values())
    frames = report["frames"]
    assert frames == len(report["per_frame"]) > 0
    for row in ("model", "constant_baseline", "model_metric_scale", "model_camera_height"):
        assert 0 < report[row]["abs_rel"] < 10 and 0 <= report[row]["a1"] <= 1
    # the demo's recipe learns metres from the drives' motion: published as they are,
    # beside the camera-height fit of the same depth
    assert report["depth_units"] == {"scale_source": "oxts", "metres_per_unit": 1.0}
    text = (out / "report.md").read_text()
    assert ("| model, metric as published (the model's own metres (learned from oxts), no "
            "camera height, no ground truth) |") in text
    assert "| model, camera-height scale (1.65 m ground fit) |" in text
    # The output bag holds one of each output per input frame.
    with BagReader(out / "output.bag") as bag:
        topics = bag.topics()
        for topic in ("/oe_depth/depth/image", "/oe_depth/depth/camera_info",
                      "/oe_depth/points", "/oe_depth/depth/colored"):
            assert bag.message_count(topic) == frames, topic
        assert topics["/oe_depth/depth/image"] == "sensor_msgs/msg/Image"
    assert len(list((out / "panels").glob("*.png"))) == frames
    # the representative panel is the middle frame's, also where --panel asked for it
    middle = cv2.imread(str(out / "panels" / f"{frames // 2:06d}.png"))
    for path in (out / "panel.png", readme_panel):
        np.testing.assert_array_equal(cv2.imread(str(path)), middle)
    # errors near depth discontinuities and away from them split the evaluated pixels
    edges = report["depth_edges"]
    near, away, whole = (edges[k] for k in ("near_depth_edges", "away_from_depth_edges", "all"))
    assert near["n_pixels"] > 0 and away["n_pixels"] > 0
    assert near["n_pixels"] + away["n_pixels"] == whole["n_pixels"]
    pooled = (near["abs_rel"] * near["n_pixels"] + away["abs_rel"] * away["n_pixels"])
    assert pooled / whole["n_pixels"] == pytest.approx(whole["abs_rel"], rel=1e-9)
    assert "Near depth discontinuities" in (out / "report.md").read_text()
    # the world's labels split the evaluated pixels by class (void pixels in none of them)
    classes = edges["classes"]
    assert {"road", "car"} <= set(classes)
    assert sum(c["n_pixels"] for c in classes.values()) <= whole["n_pixels"]
    summed = sum(c["abs_rel"] * c["n_pixels"] for c in classes.values())
    assert summed <= whole["abs_rel"] * whole["n_pixels"] * (1 + 1e-9)
    assert class_summary(classes, whole["n_pixels"]) in (out / "report.md").read_text()
    cloud = read_ply(out / "cloud.ply")
    assert len(cloud) > 100 and np.all(np.isfinite(cloud["z"])) and np.all(cloud["z"] > 0)
    assert "| model, median-scaled |" in (out / "report.md").read_text()
    # The comparison with the constant follows from the two rows and is written out.
    comparison = report["versus_constant"]
    assert comparison["beats_constant"] == (report["model"]["abs_rel"]
                                            < report["constant_baseline"]["abs_rel"])
    opening = "The model beats" if comparison["beats_constant"] else "The model does NOT beat"
    assert comparison["summary"].startswith(opening)
    assert comparison["summary"] in (out / "report.md").read_text()
    # The exported checkpoint is the validation-selected one, and the report says which.
    validation = json.loads((out / "training" / "validation.json").read_text())
    chosen = report["checkpoint"]
    assert Path(chosen["file"]).name == "best.pt"
    # the demo's model is metric: chosen by the error of its own metres (trainer.BEST_BY)
    assert chosen["validation"] == min(validation, key=lambda r: r["abs_rel_metric"])
    assert f"step {chosen['validation']['step']}" in report["model_source"]
    # trained on every usable core by default (the demo runs alone), as the run recorded
    trained = yaml.safe_load((out / "training" / "config.yaml").read_text())
    cores = len(os.sched_getaffinity(0))
    assert trained["cpu_threads"] == report["train_threads"] == cores
    assert f"on {cores} torch thread(s)" in report["model_source"]


def test_demo_rejects_missing_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--out",
                           str(tmp_path / "d"), "--model", str(tmp_path / "nope.onnx"),
                           "--kitti", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "model file not found" in proc.stderr


def test_demo_rejects_fewer_than_one_thread(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--fast", "--out",
                           str(tmp_path / "d"), "--threads", "0"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "train_threads must be at least 1, got 0" in proc.stderr
    assert not (tmp_path / "d" / "data").exists()  # refused before rendering anything


def test_demo_refuses_frames_that_leave_less_than_one_batch(tmp_path):
    # --fast: 2 drives (1 for training), batches of 2. synth_small_oxts' sources reach
    # 2 frames either side: of 5 frames only frame 2 has them (train 1); of 6, frames 2-3
    # (one goes to val, train 1); of 7, frames 2-4 (train 2).
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--fast", "--out",
                           str(tmp_path / "d"), "--frames", "5"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert ("--frames 5 leaves 1 training frame(s) for synth_small_oxts, whose source frames "
            "reach 2 frame(s) either side, fewer than one batch of 2: give --frames 7 or more"
            in proc.stderr)
    assert not (tmp_path / "d" / "data").exists()  # refused before rendering anything
    fast = DemoSettings.fast(tmp_path)
    dataclasses.replace(fast, frames=7).check_inputs()
    # synth_small's sources are -1 and +1: frames 1-3 of 5, one to val, train 2
    dataclasses.replace(fast, frames=5, train_config="synth_small").check_inputs()
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    dataclasses.replace(fast, frames=5, model=model).check_inputs()  # nothing to train


def test_lidar_ground_truth_matches_dense_depth(synth_world, tmp_path):
    """Without dense GT the demo projects the LiDAR into camera 2, as on a real KITTI drive.

    The projected depths agree with the renderer's dense depth where both exist.
    """
    import shutil

    import cv2

    from training.experiments.demo import _ground_truth
    from oe_depth_ros.kitti.raw import KittiDrive

    drive = synth_world.drive_dirs[0]
    dense = cv2.imread(str(drive / "proj_depth/groundtruth/image_02/0000000002.png"),
                       cv2.IMREAD_UNCHANGED).astype(np.float32) / 256.0
    copy = tmp_path / drive.parent.name / drive.name
    shutil.copytree(drive.parent, copy.parent)
    shutil.rmtree(copy / "proj_depth")
    sparse = _ground_truth(KittiDrive(copy), 2, dense.shape)
    both = (sparse > 0) & (dense > 0)
    assert both.sum() > 500
    rel = np.abs(sparse[both] - dense[both]) / dense[both]
    assert np.median(rel) < 0.01


@pytest.mark.parametrize("transport", [[], ["--compressed"]], ids=["raw", "compressed"])
def test_demo_with_user_model_on_a_kitti_layout_drive(synth_world, tmp_path, transport):
    """--model and --kitti: no synthetic world, no training, the given drive and model.

    With --compressed the bag carries jpeg CompressedImage, which process-bag reads.
    """
    from oe_depth_ros.inference.export import export_onnx

    model = tmp_path / "m.onnx"
    export_onnx("diffnet_small", model, 64, 192)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--out", str(out),
                           "--model", str(model), "--kitti", str(synth_world.drive_dirs[1]),
                           *transport],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_seconds"]) == {"kitti2bag", "process-bag", "report"}
    assert report["frames"] == 8 and report["model_source"].startswith("user model")
    # a model without units is relative: the camera-height fit scales what is published
    assert report["published_scale"] == ("camera_height scale; the model is relative "
                                         "(scale source unknown)")
    assert not (out / "data").exists()
    from oe_depth_ros.bags.bagio import BagReader

    with BagReader(out / "input.bag") as reader:
        image_types = {t for t in reader.topics().values() if "Image" in t}
    assert image_types == {"sensor_msgs/msg/CompressedImage" if transport
                           else "sensor_msgs/msg/Image"}


def test_drive_train_ids_reads_the_world_labels_and_none_elsewhere(
        synth_world, tmp_path, monkeypatch) -> None:
    """The drive's labels come from the FSRE layout beside it; a bare drive has none."""
    from training.semantic_labels import read_train_ids

    drive = synth_world.drive_dirs[1]
    ids = drive_train_ids(drive, 3, (64, 192))
    assert ids is not None and ids.shape == (64, 192)
    label_png = (drive.parents[1] / "segmentation" / drive.parent.name / drive.name
                 / "image_02" / "0000000003.png")
    np.testing.assert_array_equal(ids, read_train_ids(label_png, (64, 192)))
    bare = tmp_path / "2011_09_26" / drive.name
    bare.mkdir(parents=True)
    assert drive_train_ids(bare, 3, (64, 192)) is None
    # a relative path is read from where it points; a drive at the file system's root has
    # no folder for the labels above it
    monkeypatch.chdir(drive.parent)
    np.testing.assert_array_equal(drive_train_ids(Path(drive.name), 3, (64, 192)), ids)
    assert drive_train_ids(Path("/"), 3, (64, 192)) is None


def test_class_summary_ranks_by_the_part_of_the_pooled_error() -> None:
    """car: 0.3 x 100 px = 30 before road: 0.05 x 500 px = 25, though road is larger."""
    classes = {"road": {"abs_rel": 0.05, "n_pixels": 500},
               "pole": {"abs_rel": 0.9, "n_pixels": 4},
               "car": {"abs_rel": 0.3, "n_pixels": 100}}
    text = class_summary(classes, 1000)
    assert text.endswith(": car 0.300 (10%), road 0.050 (50%), pole 0.900 (<1%).")


def test_demo_is_registered_outside_the_library() -> None:
    """`oe-depth demo` comes from the training package's entry point, under its installed name.

    That module is this checkout's training/experiments/demo_command.py; oe_depth_ros
    never imports training under either name.
    """
    from training.experiments import demo_command

    plugin = plugin_commands()["demo"]
    assert plugin.__name__ == "oe_depth_training.experiments.demo_command"
    assert plugin.__file__ is not None and Path(plugin.__file__).samefile(demo_command.__file__)
    root = Path(__file__).resolve().parents[1] / "oe_depth_ros"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("training", "oe_depth_training")
                           for n in names), path


def test_constant_baseline_is_the_abs_rel_minimizer() -> None:
    """The demo's constant row is the learning proof's best constant, on the same pixels.

    It is no worse than the median-scaled constant it replaced.
    """
    rng = np.random.default_rng(4)
    gt = rng.uniform(3, 70, size=(60, 200)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.3] = 0.0
    errors = _constant_errors(gt)
    assert errors["abs_rel"] == pytest.approx(best_constant_abs_rel(gt, valid_mask(gt)))
    median_scaled = evaluate_depth_map(gt, np.ones_like(gt))[0]["abs_rel"]
    assert errors["abs_rel"] <= median_scaled


@pytest.mark.parametrize("argv, want", [
    ([], dict(train_steps=DemoSettings.train_steps, frames=DemoSettings.frames)),
    (["--fast"], dict(train_steps=3, frames=8, drives=2)),
    (["--fast", "--frames", "5", "--seed", "2"], dict(train_steps=3, frames=5, seed=2)),
    (["--train-steps", "7", "--model", "m.onnx"], dict(train_steps=7, model=Path("m.onnx"))),
    (["--compressed"], dict(compressed="jpeg")), (["--compressed", "png"], dict(compressed="png")),
    ([], dict(compressed=None)),
    ([], dict(train_threads=None)), (["--threads", "1"], dict(train_threads=1, threads=1)),
])
def test_settings_from_arguments(argv: list[str], want: dict) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(argv))
    for key, value in want.items():
        assert getattr(settings, key) == value, key


def _run_dir(tmp_path: Path, files: tuple[str, ...]) -> Path:
    for name in files:
        (tmp_path / name).write_bytes(b"checkpoint")
    return tmp_path


def test_select_checkpoint_takes_the_epoch_of_lowest_validation_abs_rel(tmp_path) -> None:
    records = [{"epoch": 0, "step": 20, "abs_rel": 0.41, "photometric": 0.09},
               {"epoch": 1, "step": 40, "abs_rel": 0.27, "photometric": 0.11},
               {"epoch": 2, "step": 60, "abs_rel": 0.35, "photometric": 0.08}]
    chosen = select_checkpoint(_run_dir(tmp_path, ("best.pt", "last.pt")), records)
    assert chosen.checkpoint == tmp_path / "best.pt"
    assert chosen.validation["step"] == 40 and chosen.chosen_by == "abs_rel"
    assert "step 40" in chosen.describe() and "0.27" in chosen.describe()


def test_select_checkpoint_of_a_metric_model_by_unscaled_abs_rel(tmp_path) -> None:
    """Median-scaled best at step 40, unscaled best at step 60: a metric model takes 60."""
    records = [{"epoch": 0, "step": 20, "abs_rel": 0.30, "abs_rel_metric": 0.45},
               {"epoch": 1, "step": 40, "abs_rel": 0.16, "abs_rel_metric": 0.31},
               {"epoch": 2, "step": 60, "abs_rel": 0.18, "abs_rel_metric": 0.19}]
    chosen = select_checkpoint(_run_dir(tmp_path, ("best.pt", "last.pt")), records)
    assert chosen.validation["step"] == 60 and chosen.chosen_by == "abs_rel_metric"
    # the same epochs of a relative model (no unscaled figure): the median-scaled best
    relative = [{k: v for k, v in r.items() if k != "abs_rel_metric"} for r in records]
    assert select_checkpoint(tmp_path, relative).validation["step"] == 40


def test_select_checkpoint_without_ground_truth_uses_the_photometric_error(tmp_path) -> None:
    records = [{"epoch": 0, "step": 20, "photometric": 0.09},
               {"epoch": 1, "step": 40, "photometric": 0.07}]
    chosen = select_checkpoint(_run_dir(tmp_path, ("best.pt", "last.pt")), records)
    assert chosen.checkpoint.name == "best.pt" and chosen.validation["step"] == 40
    assert chosen.chosen_by == "photometric"


def test_select_checkpoint_ignores_what_an_earlier_run_left(tmp_path) -> None:
    """No validation in this run: last.pt, even beside an old best.pt and validation.json."""
    run = _run_dir(tmp_path, ("best.pt", "last.pt"))
    (run / "validation.json").write_text(json.dumps([{"epoch": 0, "step": 20, "abs_rel": 0.2}]))
    chosen = select_checkpoint(run, [])
    assert chosen.checkpoint.name == "last.pt" and chosen.validation is None
    assert "no validation" in chosen.describe()


def test_select_checkpoint_names_a_run_without_checkpoints(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="no checkpoint"):
        select_checkpoint(_run_dir(tmp_path, ()), [])


CONSTANT = {"abs_rel": 0.364, "sq_rel": 4.9, "rmse": 13.2, "rmse_log": 0.72, "a1": 0.340,
            "a2": 0.598, "a3": 0.702}


def test_versus_constant_model_better() -> None:
    """A lower Abs Rel beats the constant; each metric is judged in its own direction."""
    model = {"abs_rel": 0.273, "sq_rel": 3.1, "rmse": 10.3, "rmse_log": 0.48, "a1": 0.334,
             "a2": 0.699, "a3": 0.870}
    comparison = versus_constant(model, CONSTANT)
    assert comparison["beats_constant"] is True
    assert comparison["abs_rel_ratio"] == pytest.approx(0.75)
    assert comparison["worse_metrics"] == ["a1"]  # 0.334 < 0.340: fewer pixels within 1.25
    assert comparison["better_metrics"] == ["abs_rel", "sq_rel", "rmse", "rmse_log", "a2",
                                            "a3"]
    text = comparison["summary"]
    assert text.startswith("The model beats") and "0.75x" in text and "6 of 7" in text


def test_versus_constant_model_worse() -> None:
    """A model above the constant's Abs Rel is called out, even when other metrics win."""
    model = dict(CONSTANT, abs_rel=0.408, rmse=12.0, a3=0.75)
    comparison = versus_constant(model, CONSTANT)
    assert comparison["beats_constant"] is False
    assert comparison["better_metrics"] == ["rmse", "a3"]
    assert set(comparison["worse_metrics"]) == {"abs_rel", "sq_rel", "rmse_log", "a1", "a2"}
    text = comparison["summary"]
    assert "does NOT beat" in text and "1.12x" in text and "2 of 7" in text
    assert "--seed" in text  # the demo's own model: train it differently
    user_model = versus_constant(model, CONSTANT, trained_here=False)["summary"]
    assert "does NOT beat" in user_model and "--seed" not in user_model
    # equal Abs Rel is not a win
    assert versus_constant(dict(CONSTANT), CONSTANT)["beats_constant"] is False
