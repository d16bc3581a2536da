"""The demo end to end in its fastest configuration, through the real CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from oe_depth_ros.bags.bagio import BagReader
from oe_depth_ros.ply import read_ply


def test_demo_fast_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--fast",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # Every stage ran and was timed.
    assert set(report["stage_seconds"]) == {"data", "train", "export", "kitti2bag",
                                            "process-bag", "report"}
    frames = report["frames"]
    assert frames == len(report["per_frame"]) > 0
    for row in ("model", "constant_baseline", "model_metric_scale"):
        assert 0 < report[row]["abs_rel"] < 10 and 0 <= report[row]["a1"] <= 1
    # The output bag holds one of each output per input frame.
    with BagReader(out / "output.bag") as bag:
        topics = bag.topics()
        for topic in ("/oe_depth/depth/image", "/oe_depth/depth/camera_info",
                      "/oe_depth/points", "/oe_depth/depth/colored"):
            assert bag.message_count(topic) == frames, topic
        assert topics["/oe_depth/depth/image"] == "sensor_msgs/msg/Image"
    assert len(list((out / "panels").glob("*.png"))) == frames
    cloud = read_ply(out / "cloud.ply")
    assert len(cloud) > 100 and np.all(np.isfinite(cloud["z"])) and np.all(cloud["z"] > 0)
    assert "| model, median-scaled |" in (out / "report.md").read_text()


def test_demo_rejects_missing_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--out",
                           str(tmp_path / "d"), "--model", str(tmp_path / "nope.onnx"),
                           "--kitti", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "model file not found" in proc.stderr


def test_lidar_ground_truth_matches_dense_depth(synth_world, tmp_path):
    """Without dense GT (a real KITTI drive), the demo projects the LiDAR into camera 2;
    the projected depths agree with the renderer's dense depth where both exist."""
    import shutil

    import cv2

    from oe_depth_ros.demo import _ground_truth
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


def test_demo_with_user_model_on_a_kitti_layout_drive(synth_world, tmp_path):
    """--model and --kitti: no synthetic world, no training, the given drive and model."""
    from oe_depth_ros.inference.export import export_onnx

    model = tmp_path / "m.onnx"
    export_onnx("diffnet_small", model, 64, 192)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "oe_depth_ros.cli", "demo", "--out", str(out),
                           "--model", str(model), "--kitti", str(synth_world.drive_dirs[1])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_seconds"]) == {"kitti2bag", "process-bag", "report"}
    assert report["frames"] == 8 and report["model_source"].startswith("user model")
    assert not (out / "data").exists()
