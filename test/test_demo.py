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
