"""What setup.py installs: training/ under a project-specific name, importing itself relatively.

The checkout runs training/ as ``training`` (``python -m training.train``); an install
holds the same files as ``oe_depth_training`` (docs/design.md, "The core, the experiments
and the installed name"). That works only while no training module imports
``training.*`` absolutely.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAINING_DIR = REPO / "training"
INSTALLED_NAME = "oe_depth_training"


def absolute_self_imports(path: Path) -> list[str]:
    """``line: module`` of each import in ``path`` that names training by either name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names
                  if n.split(".")[0] in ("training", INSTALLED_NAME)]
    return found


def test_self_import_finder_catches_absolute_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom . import losses\nfrom ..trainer import Trainer\n"
                      "def f():\n    from training.losses import SSIM\n"
                      "    import oe_depth_training.trainer\n")
    assert absolute_self_imports(module) == ["5: training.losses",
                                             "6: oe_depth_training.trainer"]


def test_training_imports_itself_relatively() -> None:
    """Under the installed name an absolute ``training.x`` import would not resolve."""
    offenders = {str(p.relative_to(REPO)): absolute_self_imports(p)
                 for p in sorted(TRAINING_DIR.rglob("*.py"))}
    offenders = {path: lines for path, lines in offenders.items() if lines}
    assert not offenders, f"use relative imports inside training/: {offenders}"


def _setup_distribution() -> dict[str, Any]:
    """packages, package_dir and entry points of the real setup.py (nothing is built)."""
    code = ("import json, sys, setuptools; from distutils.core import run_setup; "
            "d = run_setup('setup.py', stop_after='init'); "
            "json.dump({'packages': d.packages, 'package_dir': d.package_dir, "
            "'entry_points': d.entry_points}, sys.stdout)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return json.loads(out)


def test_distribution_claims_no_generic_top_level_name() -> None:
    dist = _setup_distribution()
    assert {p.split(".")[0] for p in dist["packages"]} == {"oe_depth_ros", INSTALLED_NAME}
    assert dist["package_dir"] == {INSTALLED_NAME: "training"}
    # Every package folder under training/ is installed, under the installed name.
    on_disk = {".".join((INSTALLED_NAME,) + p.parent.relative_to(TRAINING_DIR).parts)
               for p in TRAINING_DIR.rglob("__init__.py")}
    assert on_disk == {p for p in dist["packages"] if p.split(".")[0] == INSTALLED_NAME}
    # The demo entry point names a module that exists under that name.
    (demo,) = [e for e in dist["entry_points"]["oe_depth_ros.commands"]
               if e.split("=")[0].strip() == "demo"]
    target = demo.split("=")[1].strip()
    assert target == f"{INSTALLED_NAME}.experiments.demo_command"
    relative = Path(*target.split(".")[1:]).with_suffix(".py")
    assert (TRAINING_DIR / relative).is_file()
