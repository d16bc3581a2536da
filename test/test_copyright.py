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
"""ament_copyright: the ROS integration files carry the Apache-2.0 header (ROS CI).

Skipped where ament_copyright is not installed. The check covers the ROS node, its
launch files, tests and benchmark (the files that follow the ament_python layout's
conventions); the rest of the package is covered once it carries the header too.
"""
from pathlib import Path

import pytest

pytest.importorskip("ament_copyright.main", reason="ament_copyright is not installed")
from ament_copyright.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKED = [
    "oe_depth_ros/node.py", "oe_depth_ros/node_main.py", "oe_depth_ros/shutdown_signals.py",
    "oe_depth_ros/node_params.py",
    "oe_depth_ros/diagnostics.py",
    "launch", "bench/bench_node.py", "test/test_launch_files.py", "test/test_copyright.py",
    "test/test_flake8.py", "test/test_pep257.py", *sorted(
        str(p.relative_to(REPO)) for p in (REPO / "test").glob("test_node*.py")),
]


@pytest.mark.copyright
@pytest.mark.linter
def test_copyright() -> None:
    rc = main(argv=[str(REPO / p) for p in CHECKED])
    assert rc == 0, "Found errors (see the output above)"
