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
"""ament_pep257 docstring checks over the package (ROS CI).

Skipped where ament_pep257 is not installed. The project writes docstrings as PEP 257
describes (summary line ending in a period, a blank line, then the description) but
does not require a docstring on every test, nor the imperative mood, so those codes
are ignored on top of pydocstyle's pep257 convention.
"""
from pathlib import Path

import pytest

pytest.importorskip("ament_pep257.main", reason="ament_pep257 is not installed")
from ament_pep257.main import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["oe_depth_ros", "training", "launch", "test", "bench", "setup.py"]
IGNORED = ["D100", "D101", "D102", "D103", "D104", "D105", "D106", "D107",
           "D401", "D402", "D403"]


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257() -> None:
    paths = [str(REPO / p) for p in CHECKED if (REPO / p).exists()]
    rc = main(argv=[*paths, "--convention", "pep257", "--add-ignore", *IGNORED])
    assert rc == 0, "Found docstring style errors (see the output above)"
