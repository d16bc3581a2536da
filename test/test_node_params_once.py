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
"""The node checks each parameter value once, at start-up and per change, and names bad ones.

A real ``DepthNode`` in this process (rclpy, the hand-built ONNX network of
test_intake on ONNX Runtime); ``node_params.validate`` and ``check_combination`` are
counted (test_node_params's ``checks`` fixture).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from test_intake import tiny_model  # noqa: E402,F401 - a fixture
from test_node_params import COMBINATION, checks  # noqa: E402,F401 - a fixture

from oe_depth_ros.node_params import PARAMS  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def test_the_node_checks_each_value_once_at_start_and_per_change(
        tiny_model: Path, checks) -> None:  # noqa: F811
    from oe_depth_ros.inference.backends import create_backend
    from oe_depth_ros.node import DepthNode, StartupError

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=20 + (os.getpid() * 13 + 7) % 180)
    backend = create_backend("onnxruntime", tiny_model, threads=1)
    node = DepthNode(backend=backend, context=context, namespace="/once",
                     parameter_overrides=[Parameter("scale.relative_method", value="fixed"),
                                          Parameter("max_range", value=60)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert dict(checks) == {**{p.name: 1 for p in PARAMS}, COMBINATION: 1}
        assert node._pipeline is not None and node._pipeline.config.max_range == 60.0
        checks.clear()
        result = node.set_parameters_atomically([Parameter("max_range", value=50.0),
                                                 Parameter("points.decimation", value=2)])
        assert result.successful, result.reason
        end = time.monotonic() + 10
        while node._pipeline.config.points.decimation != 2:
            assert time.monotonic() < end, "the change was not applied"
            executor.spin_once(timeout_sec=0.05)
        assert node._pipeline.config.max_range == 50.0
        assert dict(checks) == {"max_range": 1, "points.decimation": 1, COMBINATION: 1}
        # Bad values are refused with the parameter named (a value outside the declared
        # range by rclpy's descriptor check first); nothing changes.
        for params, fragment in (
                ([Parameter("points.decimation", value=0)], "points.decimation"),
                ([Parameter("scale.method", value="lidar")], "scale.method = 'lidar'"),
                ([Parameter("min_range", value=55.0)], "min_range (55.0) must be less than")):
            result = node.set_parameters_atomically(params)
            assert not result.successful and fragment in result.reason, result.reason
        assert node._pipeline.config.points.decimation == 2
    finally:
        executor.shutdown(timeout_sec=0.0)
        node.stop()
        node.destroy_node()
        rclpy.shutdown(context=context)
    with pytest.raises(StartupError, match="scale.method = 'lidar'.*process-bag only"):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=20 + (os.getpid() * 13 + 7) % 180)
        try:
            DepthNode(backend=backend, context=context, namespace="/once",
                      parameter_overrides=[Parameter("scale.method", value="lidar")])
        finally:
            rclpy.shutdown(context=context)
