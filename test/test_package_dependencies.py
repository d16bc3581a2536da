"""package.xml declares what the package and its tests import (rosdep), in step with the pins.

The mapping from Python modules to pip distributions and rosdep keys is the table in
docs/node.md ("Dependencies: rosdep keys"). Every third-party module imported by the
installed packages (``oe_depth_ros``, ``training``) must be a ROS package named in
package.xml as a run-time dependency, or have a row whose rosdep key is one; the tests'
imports may be test dependencies. A row's pip distribution must be pinned in
requirements*.txt, and "a dependency of X" must be true of the installed X.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIRS = ("oe_depth_ros", "training")
TEST_DIRS = ("test",)
#: The packages and the test helper modules (test/*.py that are not test files).
FIRST_PARTY = {"oe_depth_ros", "training"} | {
    p.stem for d in TEST_DIRS for p in (REPO / d).glob("*.py") if not p.stem.startswith("test_")}
RUNTIME_TAGS = {"depend", "exec_depend"}
TEST_TAGS = RUNTIME_TAGS | {"test_depend"}
TABLE_TITLE = "## Dependencies: rosdep keys"


@dataclass(frozen=True)
class Row:
    """One row of the docs table: a module, its pip distribution and its rosdep key."""

    module: str
    pip: str | None  # None: not from PyPI
    key: str | None  # None: no rosdep key
    via: str | None  # the pip distribution that requires ``pip`` (installed with it)


def ticked(cell: str) -> list[str]:
    """The `backticked` words of a markdown table cell."""
    return re.findall(r"`([^`]+)`", cell)


def docs_table(text: str) -> dict[str, Row]:
    """The rows of the dependency table in docs/node.md, by module."""
    section = text.split(TABLE_TITLE, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Row] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not ticked(cells[0]):
            continue
        module, pip, key = cells
        via = re.search(r"a dependency of `([^`]+)`", key)
        rows[ticked(module)[0]] = Row(
            module=ticked(module)[0], pip=(ticked(pip) or [None])[0],
            key=None if key.startswith("none") else ticked(key)[0],
            via=via.group(1) if via else None)
    return rows


def package_xml_dependencies(path: Path) -> dict[str, set[str]]:
    """Dependency keys of package.xml by tag (``exec_depend``, ``test_depend``, ...)."""
    deps: dict[str, set[str]] = {}
    for element in ET.parse(path).getroot():
        if element.tag.endswith("depend") and element.text:
            deps.setdefault(element.tag, set()).add(element.text.strip())
    return deps


def pinned_distributions(paths: list[Path]) -> set[str]:
    """Normalized names of the distributions pinned (``name==version``) in ``paths``."""
    names = set()
    for path in paths:
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.\-]+)==", line.strip())
            if match:
                names.add(normalized(match.group(1)))
    return names


def normalized(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(directories: tuple[str, ...]) -> dict[str, set[str]]:
    """Absolute imports outside the standard library and this repository: module -> files."""
    found: dict[str, set[str]] = {}
    for directory in directories:
        for path in sorted((REPO / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    root = module.split(".")[0]
                    # _typeshed: the standard library's typing-only module (type checkers)
                    if (root in sys.stdlib_module_names or root == "_typeshed"
                            or root in FIRST_PARTY or root.startswith("test_")):
                        continue
                    found.setdefault(module, set()).add(str(path.relative_to(REPO)))
    return found


def row_for(module: str, table: dict[str, Row]) -> Row | None:
    """The row of the longest dotted prefix of ``module`` (``torch.utils.tensorboard``)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        row = table.get(".".join(parts[:end]))
        if row is not None:
            return row
    return None


def undeclared(imports: dict[str, set[str]], table: dict[str, Row],
               declared: set[str]) -> list[str]:
    """Imports neither declared as a ROS package nor mapped to a declared rosdep key."""
    problems = []
    for module, files in sorted(imports.items()):
        if module.split(".")[0] in declared:
            continue  # a ROS package: its Python package has the package's name
        row = row_for(module, table)
        if row is None:
            problems.append(f"{module} (imported in {sorted(files)[0]}) has no row in the "
                            f"docs/node.md table and is not a package.xml dependency")
        elif row.key is not None and row.key not in declared:
            problems.append(f"{module}: rosdep key {row.key} is not in package.xml")
    return problems


@pytest.fixture(scope="module")
def table() -> dict[str, Row]:
    return docs_table((REPO / "docs" / "node.md").read_text())


@pytest.fixture(scope="module")
def deps() -> dict[str, set[str]]:
    return package_xml_dependencies(REPO / "package.xml")


def declared_for(deps: dict[str, set[str]], tags: set[str]) -> set[str]:
    return set().union(*(deps.get(tag, set()) for tag in tags))


def test_every_runtime_import_is_a_run_time_dependency(table, deps) -> None:
    imports = third_party_imports(RUNTIME_DIRS)
    assert {"numpy", "onnxruntime", "timm", "torch", "rclpy"} <= {
        m.split(".")[0] for m in imports}
    assert undeclared(imports, table, declared_for(deps, RUNTIME_TAGS)) == []


def test_every_test_import_is_a_dependency(table, deps) -> None:
    imports = third_party_imports(TEST_DIRS)
    assert {"pytest", "scipy", "mcap"} <= {m.split(".")[0] for m in imports}
    assert undeclared(imports, table, declared_for(deps, TEST_TAGS)) == []


def test_the_check_catches_a_missing_key_a_missing_row_and_accepts_ros_packages(table) -> None:
    imports = {"timm": {"oe_depth_ros/x.py"}, "rclpy.node": {"oe_depth_ros/node.py"},
               "torch.utils.tensorboard": {"training/trainer.py"}}
    everything = {"rclpy", "python3-timm-pip", "python3-tensorboard-pip"}
    assert undeclared(imports, table, everything) == []
    (missing_key,) = undeclared(imports, table, everything - {"python3-tensorboard-pip"})
    assert "python3-tensorboard-pip is not in package.xml" in missing_key
    (ros_package,) = undeclared(imports, table, everything - {"rclpy"})
    assert ros_package.startswith("rclpy.node (imported in oe_depth_ros/node.py) has no row")
    (no_row,) = undeclared({"requests": {"oe_depth_ros/y.py"}}, table, everything)
    assert "requests" in no_row and "no row" in no_row


def test_python_keys_in_package_xml_and_the_table_agree(table, deps) -> None:
    """Every non-ROS key of package.xml has a row, every row's key is declared."""
    declared = declared_for(deps, TEST_TAGS)
    keys = {row.key for row in table.values() if row.key is not None}
    assert keys <= declared, keys - declared
    python_keys = {k for k in declared if k.startswith("python3-") or k.endswith("-pip")}
    assert python_keys <= keys, python_keys - keys


def test_table_distributions_are_pinned_and_installed_with_what_the_table_says(table) -> None:
    pinned = pinned_distributions(sorted(REPO.glob("requirements*.txt")))
    for row in table.values():
        if row.pip is not None:
            assert normalized(row.pip) in pinned, f"{row.pip} is not pinned in requirements*.txt"
        if row.via is not None:
            assert row.pip is not None
            requires = importlib.metadata.requires(row.via) or []
            names = {normalized(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires}
            assert normalized(row.pip) in names, f"{row.via} does not require {row.pip}"


def test_each_row_names_the_distribution_that_provides_its_module(table) -> None:
    provided = importlib.metadata.packages_distributions()
    checked = 0
    for row in table.values():
        if row.pip is None or "." in row.module or row.module not in provided:
            continue
        distributions = {normalized(d) for d in provided[row.module]}
        assert normalized(row.pip) in distributions, (
            f"{row.module} is provided by {sorted(distributions)}, the table says {row.pip}")
        checked += 1
    assert checked >= 15
