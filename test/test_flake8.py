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
"""flake8 over the package with the project's settings (setup.cfg's [flake8] section).

Where ament_flake8 is installed (ROS 2, the ROS CI workflow) the check runs through it,
and the codes of the plugins that ROS installs with ament_flake8 (builtins, blind
except, class newline, comprehensions, docstrings, import order, quotes) are ignored:
the project does not follow those conventions, and docstrings are checked by
test_pep257. Elsewhere plain flake8 (a pinned dependency) checks the same paths with
the same settings, so the default suite enforces the style on every machine.
"""
import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["oe_depth_ros", "training", "launch", "test", "bench", "setup.py"]


#: Code prefixes of the flake8 plugins that come with ament_flake8.
AMENT_PLUGIN_CODES = ["A", "B9", "CNL", "C4", "D", "I", "Q"]


def flake8_config(path: Path) -> Path:
    """Write setup.cfg's [flake8] section, ignoring the ament plugins' codes, to ``path``."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    section = dict(parser["flake8"])
    ignored = [c.strip() for c in section.get("extend-ignore", "").split(",") if c.strip()]
    section["extend-ignore"] = ",".join(ignored + AMENT_PLUGIN_CODES)
    out = configparser.ConfigParser()
    out["flake8"] = section
    with open(path, "w") as f:
        out.write(f)
    return path


def run_flake8(config: Path, paths: list[str]) -> tuple[int, list[str]]:
    """(exit status, reported errors) of ament_flake8 where installed, else of flake8."""
    if importlib.util.find_spec("ament_flake8") is not None:
        from ament_flake8.main import main_with_errors

        return main_with_errors(argv=["--config", str(config), *paths])
    proc = subprocess.run([sys.executable, "-m", "flake8", "--config", str(config), *paths],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = proc.stdout.splitlines()
    if proc.returncode and not errors:  # flake8 itself failed (e.g. not installed)
        errors = proc.stderr.splitlines()
    return proc.returncode, errors


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(tmp_path: Path) -> None:
    config = flake8_config(tmp_path / "flake8.ini")
    paths = [str(REPO / p) for p in CHECKED if (REPO / p).exists()]
    rc, errors = run_flake8(config, paths)
    assert rc == 0, f"Found {len(errors)} code style errors / warnings:\n" + "\n".join(errors)
