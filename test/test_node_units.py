# Copyright 2025 oe_depth_ros maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The node follows the model's units over real DDS (``scale.method: auto``, the default).

A metric model's depth is published unchanged (``scale.factor`` is not applied); the
same network without units, and no ``scale.relative_method``, does not start.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
onnx = pytest.importorskip("onnx")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from test_node import (  # noqa: E402,F401 - model is a fixture
    K_320, REPO, NodeProcess, Probe, _env, assert_same_depth, decode_depth, diag_values,
    image_msg, info_msg, make_image, model, node_command, send_until_outputs, stamp_of,
    warm_up,
)

from oe_depth_ros.units import DepthUnits  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def with_units(source: Path, out: Path, units: DepthUnits) -> Path:
    """A copy of an exported ONNX file whose metadata records ``units``."""
    graph = onnx.load(str(source))
    record = {k: str(v) for k, v in units.to_dict().items()}
    for prop in graph.metadata_props:
        prop.value = record.pop(prop.key, prop.value)
    for key, value in record.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(out))
    return out


def test_metric_depth_is_published_unchanged_and_a_relative_model_is_refused(
        model: Path, tmp_path: Path) -> None:  # noqa: F811
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.pipeline import DepthPipeline, PipelineConfig
    from oe_depth_ros.scale import FixedScale

    metric = with_units(model, tmp_path / "metric.onnx", DepthUnits("velocity", 1.0))
    node = NodeProcess(tmp_path / "m.log", "-r", "__ns:=/m", "-p", f"model_path:={metric}",
                       "-p", "backend:=onnxruntime", "-p", "threads:=1",
                       "-p", "scale.factor:=2.5", relative_method="none")
    probe = Probe()
    try:
        probe.subscribe("/m/depth/image", Image)
        probe.subscribe("/m/depth/camera_info", CameraInfo)
        probe.subscribe("/diagnostics", DiagnosticArray)
        assert probe.spin_until(lambda: probe.node.count_subscribers("/m/image") > 0, 90), \
            node.log()
        warm_up(probe, "m", node)
        rgb = make_image(96, 320, seed=5)
        stamp = stamp_of(3000.0)
        out = send_until_outputs(probe, "m", image_msg(rgb, stamp, "rgb8"),
                                 info_msg(K_320, 320, 96, stamp), ["depth/image"])
        unscaled = DepthPipeline(create_backend("onnxruntime", model, threads=1),
                                 PipelineConfig(), FixedScale(1.0)).process(rgb, K_320)
        assert_same_depth(decode_depth(out["depth/image"]), unscaled.depth)
        values = diag_values(probe, "m", time.monotonic())
        assert values["scale_source"] == "model:velocity" and float(values["scale"]) == 1.0
        assert values["depth_units"] == "metres (learned from velocity)"
        assert node.proc.poll() is None
    finally:
        probe.close()
        node.stop()
    result = subprocess.run(
        node_command("-p", f"model_path:={model}", "-p", "backend:=onnxruntime",
                     relative_method="none"),
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "scale.relative_method is none" in text and "Traceback" not in result.stderr
