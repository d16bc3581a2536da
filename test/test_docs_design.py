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
"""docs/design.md names only modules, functions and classes that exist.

Every dotted name in backticks (``devices.resolve_torch_device``,
``training.trainer.Trainer.compute_losses``, ``raw.KittiDrive`` under the heading of
``oe_depth_ros.kitti``) is imported and looked up attribute by attribute; every path in
backticks exists; the layer table places every module of ``oe_depth_ros`` and
``training`` and nothing that does not exist.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"

#: First components of dotted names that belong to other libraries (not checked here).
EXTERNAL = {"torch", "np", "numpy", "cv2", "sensor_msgs_py", "rclpy", "launch",
            "launch_ros", "onnxruntime", "tensorrt", "timm", "torchvision", "scipy"}
PROJECT_PACKAGES = ("oe_depth_ros", "training")

_SPAN = re.compile(r"`([^`]+)`")
_DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?=$|[\s(\[,])")
_FILE_SUFFIX = re.compile(r"\.(py|yaml|md|xml|rviz|txt|json|png|pt)$")
_LAYER_ENTRY = re.compile(r"`(\w+(?:\.\w+)*)`(?:\s*\(([^)]*)\))?")


def _import(name: str) -> object | None:
    """The module ``name``, or None when it (not one of its imports) does not exist."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise


def resolve_dotted(name: str) -> object:
    """Import the longest module prefix of ``name`` and look the rest up as attributes.

    Raises LookupError naming what is missing.
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = _import(".".join(parts[:cut]))
        if module is None:
            continue
        obj: object = module
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise LookupError(f"{'.'.join(parts[:cut])} has no {'.'.join(parts[cut:])}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"no module {parts[0]!r}")


def resolve_config_key(name: str) -> object:
    """A training config key written ``section.key`` (``loss.triplet_weight``): its field.

    Raises LookupError when the section or the key does not exist.
    """
    from training.train_config import TrainConfig

    obj: object = TrainConfig
    for part in name.split("."):
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)) or \
                part not in {f.name for f in dataclasses.fields(obj)}:
            raise LookupError(f"no training config key {name!r}")
        obj = typing.get_type_hints(obj)[part]
    return obj


def resolve_cited(name: str, context: str | None = None) -> object:
    """Resolve a name as design.md writes it: as is, under ``oe_depth_ros``, or the section's.

    ``context`` is the module named in the heading of the section (e.g.
    ``oe_depth_ros.kitti`` for ``raw.KittiDrive``).
    """
    # The project's own modules first: a bare ``metrics`` must not find another package's
    # top-level module (onnxruntime's quantization tools put one on sys.path).
    candidates = []
    if not name.startswith(PROJECT_PACKAGES):
        candidates.append(f"oe_depth_ros.{name}")
        if context:
            candidates.append(f"{context}.{name}")
    candidates.append(name)
    errors = []
    for candidate in candidates:
        try:
            return resolve_dotted(candidate)
        except LookupError as exc:
            errors.append(f"{candidate}: {exc}")
    try:
        return resolve_config_key(name)
    except LookupError as exc:
        errors.append(str(exc))
    raise LookupError("; ".join(errors))


def _without_code_blocks(text: str) -> str:
    """The text with fenced code blocks blanked out (offsets kept)."""
    return re.sub(r"^```.*?^```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text,
                  flags=re.S | re.M)


def cited_names(text: str) -> list[tuple[str, str | None]]:
    """(dotted name, section module) for every backticked dotted name outside code blocks.

    A span may run over a line break; the section module is the first project module
    named in backticks in the nearest heading above.
    """
    text = _without_code_blocks(text)
    headings = [(m.start(), next((s.strip() for s in _SPAN.findall(m.group(0))
                                  if s.strip().startswith(PROJECT_PACKAGES)), None))
                for m in re.finditer(r"^#+ .*$", text, flags=re.M)]
    found: list[tuple[str, str | None]] = []
    for match in _SPAN.finditer(text):
        span = " ".join(match.group(1).split())
        if "/" in span or _FILE_SUFFIX.search(span):
            continue
        context = None
        for start, module in headings:
            if start > match.start():
                break
            context = module
        dotted = _DOTTED.match(span)
        if dotted and dotted.group(1).split(".")[0] not in EXTERNAL:
            found.append((dotted.group(1), context))
    return found


def cited_paths(text: str) -> list[str]:
    """Backticked repository paths (no placeholders or wildcards) outside code blocks."""
    paths = []
    for span in _SPAN.findall(_without_code_blocks(text)):
        span = span.strip()
        if "/" in span and not re.search(r"[<>*\s:\"']", span):
            paths.append(span)
    return paths


def layer_modules(text: str) -> dict[str, str]:
    """Module (dotted, full) -> layer, from the modules column of the layer table."""
    placed: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"\d", cells[0]):
            continue
        for match in _LAYER_ENTRY.finditer(cells[1]):
            name, inner = match.group(1), match.group(2) or ""
            full = name if name.startswith(PROJECT_PACKAGES) else f"oe_depth_ros.{name}"
            subs = _SPAN.findall(inner)
            if full != "training":
                placed[full] = cells[0]
            for sub in subs:
                placed[f"{full}.{sub}"] = cells[0]
    return placed


def project_modules() -> set[str]:
    """Every module and subpackage of oe_depth_ros and training, as dotted names."""
    names = set()
    for package in PROJECT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if len(parts) > 1:
                names.add(".".join(parts))
    return names


def test_resolver_finds_real_names_and_refuses_made_up_ones():
    assert resolve_cited("devices.resolve_torch_device").__name__ == "resolve_torch_device"
    assert resolve_cited("training.trainer.Trainer.compute_losses").__name__ == "compute_losses"
    assert resolve_cited("raw.KittiDrive", "oe_depth_ros.kitti").__name__ == "KittiDrive"
    resolve_cited("loss.triplet_weight")  # a training config key
    resolve_cited("model.ego_motion")
    for made_up, context in [("devices.resolve_device", None),
                             ("training.trainer.Trainer.no_such_method", None),
                             ("raw.KittiDrive", None),
                             ("loss.no_such_weight", None),
                             ("no_such_module.function", "oe_depth_ros.kitti")]:
        with pytest.raises(LookupError):
            resolve_cited(made_up, context)
    text = ("## Models (`oe_depth_ros.model`)\n- `devices.resolve_device(name)` and "
            "`build_depth_net(config)`, `torch.save`, `checkpoint.load_depth_net`\n")
    assert cited_names(text) == [("oe_depth_ros.model", "oe_depth_ros.model"),
                                 ("devices.resolve_device", "oe_depth_ros.model"),
                                 ("checkpoint.load_depth_net", "oe_depth_ros.model")]


def test_layer_parser_reads_packages_and_their_modules():
    table = ("| layer | modules | may import |\n| --- | --- | --- |\n"
             "| 1 data | `kitti` (`raw`, `splits`), `bags.names`, `node` (the only one) | 0 |\n"
             "| 8 training | `training` (`losses`, `no_such_module`) | all |\n")
    placed = layer_modules(table)
    assert set(placed) == {"oe_depth_ros.kitti", "oe_depth_ros.kitti.raw",
                           "oe_depth_ros.kitti.splits", "oe_depth_ros.bags.names",
                           "oe_depth_ros.node", "training.losses", "training.no_such_module"}
    assert importlib.util.find_spec("training.no_such_module") is None


def test_every_name_cited_in_design_exists():
    names = cited_names(DESIGN.read_text())
    assert len(names) > 40, "the parser found too few names: has design.md changed form?"
    missing = []
    for name, context in names:
        try:
            resolve_cited(name, context)
        except LookupError as exc:
            missing.append(f"`{name}`: {exc}")
    assert not missing, "docs/design.md cites names that do not exist:\n" + "\n".join(missing)


def test_every_path_cited_in_design_exists():
    paths = cited_paths(DESIGN.read_text())
    assert paths, "the parser found no paths"
    missing = [p for p in paths
               if not (REPO / p).exists() and not (REPO / "oe_depth_ros" / p).exists()]
    assert not missing, f"docs/design.md cites paths that do not exist: {missing}"


def test_layer_table_places_every_module_and_only_real_ones():
    placed = layer_modules(DESIGN.read_text())
    unknown = sorted(m for m in placed if importlib.util.find_spec(m) is None)
    assert not unknown, f"the layer table names modules that do not exist: {unknown}"
    unplaced = sorted(project_modules() - set(placed))
    assert not unplaced, f"modules without a layer in docs/design.md: {unplaced}"
