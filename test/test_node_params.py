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
"""The node's parameter table: validation, the shipped parameter file, generated docs."""
from __future__ import annotations

import collections
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from oe_depth_ros import node_params
from oe_depth_ros.node_params import PARAMS, ParamError

REPO = Path(__file__).resolve().parents[1]


def test_every_default_validates_and_types_are_ros_types():
    assert node_params.validate_all(node_params.defaults()) == node_params.defaults()
    assert {p.type_name for p in PARAMS} <= {"bool", "int", "float", "string", "float[]"}
    names = [p.name for p in PARAMS]
    assert len(names) == len(set(names))
    for p in PARAMS:
        assert p.description.strip(), p.name
        if p.limits is not None:
            assert p.type_name in ("int", "float", "float[]")
            lo, hi = p.limits
            assert lo < hi
        if p.choices:
            assert p.default in p.choices


def test_backend_choices_match_the_backend_factory():
    from oe_depth_ros.inference.backends import BACKEND_NAMES

    assert node_params.spec("backend").choices == tuple(BACKEND_NAMES)
    assert node_params.spec("backend").read_only
    assert node_params.spec("model_path").read_only


@pytest.mark.parametrize("name,value,fragment", [
    ("max_range", 5000.0, "out of range"),
    ("max_range", "far", "must be a number"),
    ("points.decimation", 0, "out of range"),
    ("points.decimation", 2.5, "must be an integer"),
    ("backend", "cuda", "not one of"),
    ("colored.enabled", 1, "must be a bool"),
    ("camera_info.fallback_intrinsics", [0.5, 0.5, 0.5], "needs 4 values"),
    ("camera_info.fallback_intrinsics", [0.5, float("nan"), 0.5, 0.5], "out of range"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_bad_values_are_rejected_with_the_parameter_named(name, value, fragment):
    with pytest.raises(ParamError, match=fragment) as info:
        node_params.validate(name, value)
    assert name in str(info.value)


def test_cross_parameter_checks():
    with pytest.raises(ParamError, match="min_range .* less than max_range"):
        node_params.validate_all({"min_range": 50.0, "max_range": 40.0})
    with pytest.raises(ParamError, match="colored.min_range"):
        node_params.validate_all({"colored.min_range": 90.0})
    # An int is fine for a float parameter (YAML `80`), and comes back as float.
    assert node_params.validate("max_range", 80) == 80.0
    assert isinstance(node_params.validate("max_range", 80), float)


def test_pipeline_config_maps_every_pipeline_parameter():
    from oe_depth_ros.build import pipeline_config

    cfg = pipeline_config({
        "output_resolution": "network", "min_range": 0.5, "max_range": 60.0,
        "points.decimation": 3, "points.max_range": 30.0, "points.organized": True,
        "points.rgb_type": "uint32", "colored.enabled": False, "colored.min_range": 1.0,
        "colored.max_range": 50.0, "scale.method": "camera_height", "scale.factor": 2.0,
        "scale.camera_height": 1.5, "scale.window": 7, "scale.min_confidence": 0.25,
    })
    assert (cfg.output_resolution, cfg.min_range, cfg.max_range) == ("network", 0.5, 60.0)
    p = cfg.points
    want = (3, 30.0, True, "uint32")
    assert (p.decimation, cfg.cloud_max_range, p.organized, p.rgb_type) == want
    assert (cfg.colored.enabled, cfg.colored.min_range, cfg.colored.max_range) == (
        False, 1.0, 50.0)
    s = cfg.scale
    assert (s.method, s.factor, s.camera_height, s.window, s.min_confidence) == (
        "camera_height", 2.0, 1.5, 7, 0.25)
    # 0 means "use max_range" for the cloud limit.
    assert pipeline_config({}).cloud_max_range == 80.0


def test_fallback_intrinsics_in_pixels():
    from oe_depth_ros.intake import fallback_intrinsics

    k = fallback_intrinsics([0.58, 1.92, 0.5, 0.5], 1242, 375).tolist()
    assert k == [[0.58 * 1242, 0.0, 621.0], [0.0, 1.92 * 375, 187.5], [0.0, 0.0, 1.0]]


def test_shipped_parameter_file_lists_every_parameter_with_its_default():
    path = REPO / "config" / "oe_depth.yaml"
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["/**"]
    flat = node_params.flatten_params_file(data, source=str(path))
    assert set(flat) == {p.name for p in PARAMS}
    assert node_params.load_params_file(path) == node_params.defaults()


def test_params_file_sections_and_errors(tmp_path):
    data = {"/**": {"ros__parameters": {"max_range": 50.0, "points": {"decimation": 2}}},
            "/oe_depth/oe_depth_node": {"ros__parameters": {"max_range": 60.0}},
            "other_node": {"ros__parameters": {"max_range": 1.0}}}
    flat = node_params.flatten_params_file(data)
    assert flat == {"max_range": 60.0, "points.decimation": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"points": {"decimation": 0}}}}))
    with pytest.raises(ParamError, match=r"bad\.yaml: parameter points\.decimation"):
        node_params.load_params_file(bad)
    assert node_params.main(["--check", str(bad)]) == 1


def test_readme_tables_are_the_generated_ones():
    text = (REPO / "docs" / "node.md").read_text()
    for table in (node_params.markdown_topics(), node_params.markdown_params()):
        assert table.strip() in text, "docs/node.md is stale: regenerate with " \
            "python -m oe_depth_ros.node_params --markdown"
    # Every parameter row carries its default.
    for p in PARAMS:
        assert re.search(rf"\| `{re.escape(p.name)}` \|", text), p.name


def test_qos_override_names_and_parameter_files(tmp_path):
    assert node_params.qos_override("/oe_depth/image", "subscription", "reliability") == \
        "qos_overrides./oe_depth/image.subscription.reliability"
    for args, fragment in ((("image", "subscription", "depth"), "fully resolved"),
                           (("/a/image", "reader", "depth"), "subscription or publisher"),
                           (("/a/image", "publisher", "deadline"), "history, depth")):
        with pytest.raises(ParamError, match=fragment):
            node_params.qos_override(*args)
    good = tmp_path / "qos.yaml"
    good.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "max_range": 50.0,
        "qos_overrides": {"/cam/image": {"subscription": {"reliability": "reliable",
                                                          "depth": 1}}}}}}))
    assert node_params.load_params_file(good) == {"max_range": 50.0}
    bad = tmp_path / "qos_bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "qos_overrides": {"/cam/image": {"subscription": {"durability": "volatile"}}}}}}))
    with pytest.raises(ParamError, match=r"qos_bad\.yaml: qos_overrides\./cam/image"):
        node_params.load_params_file(bad)


def test_the_topic_table_states_the_node_qos_profiles():
    pytest.importorskip("rclpy")
    from oe_depth_ros import node

    def text(profile) -> str:
        return f"{profile.reliability.name.lower().replace('_', ' ')}, keep last {profile.depth}"

    assert text(node.INPUT_QOS) in node_params.INPUT_QOS_TEXT
    assert text(node.OUTPUT_QOS) in node_params.OUTPUT_QOS_TEXT
    diagnostics = next(t for t in node_params.TOPICS if t.name == node_params.DIAGNOSTICS_TOPIC)
    assert diagnostics.qos == text(node.DIAGNOSTICS_QOS)


#: Declared parameters that no pipeline dataclass holds: the backend's and the node's own.
NOT_PIPELINE = {"backend", "model_path", "model_config", "device", "threads", "image_transport",
                "max_input_pixels", "diagnostics_period", "log_throttle"}


def _dataclass_field(name: str):
    """(dataclass, field name) holding parameter ``name``, else None."""
    from oe_depth_ros.intake import CameraInfoConfig
    from oe_depth_ros.pipeline import ColoredConfig, PipelineConfig, PointsConfig
    from oe_depth_ros.scale import ScaleConfig

    sections = {"": PipelineConfig, "points": PointsConfig, "colored": ColoredConfig,
                "scale": ScaleConfig, "camera_info": CameraInfoConfig}
    section, _, field = name.rpartition(".")
    cls = sections.get(section)
    if cls is None or field not in {f.name for f in dataclasses.fields(cls)}:
        return None
    if dataclasses.is_dataclass(typing.get_type_hints(cls)[field]):
        return None
    return cls, field


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name)
def test_every_parameter_is_one_declaration_for_node_dataclass_file_and_table(p):
    """Dataclass default and accepted choices/limits, the shipped file and the table agree."""
    held = _dataclass_field(p.name)
    assert (held is None) == (p.name in NOT_PIPELINE), \
        f"{p.name}: declared, but no pipeline dataclass field (or NOT_PIPELINE is stale)"
    if held is not None:
        cls, field = held
        default = {f.name: f for f in dataclasses.fields(cls)}[field].default
        assert default == (tuple(p.default) if isinstance(p.default, list) else p.default)
        hint = typing.get_type_hints(cls)[field]
        if p.choices:
            assert set(typing.get_args(hint)) == set(p.allowed(offline=True)), p.name
            for choice in p.allowed(offline=True):
                assert getattr(cls(**{field: choice}), field) == choice
            with pytest.raises(ValueError, match=re.escape(p.name)):
                cls(**{field: "no_such_choice"})
        elif p.limits is not None and p.type_name in ("int", "float"):
            lo, hi = p.limits
            kind = int if p.type_name == "int" else float
            inside = [kind(lo), kind(hi)]
            outside = ([lo - 1, hi + 1] if kind is int
                       else [lo - 1e-3 * max(1.0, abs(lo)), hi * 1.01])
            for value in inside:  # both ends accepted, unless a combination forbids it
                try:
                    assert getattr(cls(**{field: value}), field) == value
                except ValueError as exc:
                    assert "must be less than" in str(exc), (p.name, value, exc)
            for value in outside:
                with pytest.raises(ValueError, match=re.escape(p.name)):
                    cls(**{field: value})
    # The shipped file: the default, the unit and the choices in its comment.
    path = REPO / "config" / "oe_depth.yaml"
    leaf = p.name.rsplit(".", 1)[-1]
    lines = [line for line in path.read_text().splitlines()
             if re.match(rf"\s*{re.escape(leaf)}:", line)]
    line = lines[[n for n in node_params.flatten_params_file(yaml.safe_load(path.read_text()))
                  if n.rsplit(".", 1)[-1] == leaf].index(p.name)]
    comment = line.partition("#")[2]
    if p.unit:
        assert f"[{p.unit}]" in comment, f"{path}: {p.name} should say [{p.unit}]"
    if p.choices:
        listed = re.findall(r"\w+(?: \| [\w:]+)+", comment)
        assert listed and set(listed[0].split(" | ")) == set(p.choices), (p.name, comment)
    for choice in p.offline_choices:
        assert f"(process-bag: {choice})" in comment, (p.name, comment)
        assert f"(process-bag: {choice})" in node_params.markdown_params()


def test_process_bag_choices_are_refused_by_the_node_with_the_reason(tmp_path):
    with pytest.raises(ParamError, match="lidar: oe-depth process-bag only"):
        node_params.validate("scale.method", "lidar")
    assert node_params.validate("scale.method", "lidar", offline=True) == "lidar"
    with pytest.raises(ParamError, match="not one of"):
        node_params.validate("scale.method", "sonar", offline=True)
    params = tmp_path / "lidar.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "scale": {"relative_method": "lidar"}}}}))
    with pytest.raises(ParamError, match="lidar.yaml: .*process-bag only"):
        node_params.load_params_file(params)
    assert node_params.load_params_file(params, offline=True) == {
        "scale.relative_method": "lidar"}


def test_dataclasses_check_declared_limits_and_keep_their_own_checks():
    from oe_depth_ros.intake import DEFAULT_MAX_PIXELS, CameraInfoConfig
    from oe_depth_ros.pipeline import PipelineConfig
    from oe_depth_ros.scale import ScaleConfig

    assert DEFAULT_MAX_PIXELS == node_params.spec("max_input_pixels").default
    with pytest.raises(ParamError, match="camera_info.fallback_intrinsics needs 4 values"):
        CameraInfoConfig(fallback_intrinsics=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="positive fx/W"):
        CameraInfoConfig(fallback_intrinsics=(0.0, 1.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="min_range .* less than max_range"):
        PipelineConfig(min_range=50.0, max_range=40.0)
    with pytest.raises(ValueError, match="scale.ground_rows"):
        ScaleConfig(ground_rows=(0.9, 0.1))
    with pytest.raises(ParamError, match="scale.window"):
        ScaleConfig(window=0)


# ----------------------------------------------------------- one check per entry point

#: The names the pipeline dataclasses hold (every parameter but NOT_PIPELINE and the
#: CameraInfo matching ones).
PIPELINE_NAMES = {p.name for p in PARAMS
                  if p.name not in NOT_PIPELINE and not p.name.startswith("camera_info.")}
COMBINATION = "<check_combination>"


@pytest.fixture
def checks(monkeypatch) -> "collections.Counter[str]":
    """Counts of the parameter layer's checks: per parameter name, and COMBINATION."""
    calls: collections.Counter[str] = collections.Counter()
    validate, combination = node_params.validate, node_params.check_combination

    def counted_validate(name, value, offline=False):
        calls[name] += 1
        return validate(name, value, offline)

    def counted_combination(merged):
        calls[COMBINATION] += 1
        return combination(merged)

    monkeypatch.setattr(node_params, "validate", counted_validate)
    monkeypatch.setattr(node_params, "check_combination", counted_combination)
    return calls


def test_code_that_builds_a_dataclass_has_each_field_checked_once(checks):
    from oe_depth_ros.intake import CameraInfoConfig
    from oe_depth_ros.pipeline import PipelineConfig, PointsConfig
    from oe_depth_ros.scale import ScaleConfig

    PipelineConfig(max_range=60.0, points=PointsConfig(decimation=2),
                   scale=ScaleConfig(method="fixed", factor=2.0))
    assert dict(checks) == {name: 1 for name in PIPELINE_NAMES}
    checks.clear()
    PipelineConfig.from_params({"max_range": 60, "points.decimation": 2, "scale.factor": 2.0,
                                "backend": "auto"})  # not the pipeline's: ignored
    assert dict(checks) == {"max_range": 1, "points.decimation": 1, "scale.factor": 1,
                            COMBINATION: 1}
    checks.clear()
    CameraInfoConfig(sync="approximate")
    assert dict(checks) == {p.name: 1 for p in PARAMS if p.name.startswith("camera_info.")}


def test_dataclasses_built_from_checked_values_are_not_checked_again(checks):
    from oe_depth_ros.build import pipeline_config
    from oe_depth_ros.intake import camera_info_config
    from oe_depth_ros.pipeline import PipelineConfig, PointsConfig

    values = {"max_range": 60.0, "points.decimation": 2, "camera_info.sync": "approximate"}
    config = pipeline_config(values)
    intake = camera_info_config(values)
    assert not checks
    assert config == PipelineConfig(max_range=60.0, points=PointsConfig(decimation=2))
    assert intake.sync == "approximate"
    # Outside the builder the dataclasses check again.
    with pytest.raises(ParamError, match="points.decimation"):
        PointsConfig(decimation=0)


def test_a_params_file_is_checked_once(checks, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "max_range": 60, "points": {"decimation": 2}, "scale": {"method": "fixed"}}}}))
    assert node_params.main(["--check", str(path)]) == 0
    assert dict(checks) == {"max_range": 1, "points.decimation": 1, "scale.method": 1,
                            COMBINATION: 1}


def test_a_nested_mapping_is_checked_once(checks):
    """``config.from_dict`` leaves the parameter fields to their dataclass's one check."""
    from oe_depth_ros.config import ConfigError, from_dict
    from oe_depth_ros.pipeline import PipelineConfig

    config = from_dict(PipelineConfig, {"output_resolution": "network", "max_range": 60,
                                        "points": {"rgb_type": "uint32"},
                                        "scale": {"method": "fixed", "ground_rows": [0.5, 1.0]}})
    assert dict(checks) == {name: 1 for name in PIPELINE_NAMES}
    assert (config.output_resolution, config.points.rgb_type, config.scale.ground_rows) == (
        "network", "uint32", (0.5, 1.0))
    assert isinstance(config.max_range, float) and config.max_range == 60.0
    with pytest.raises(ConfigError,
                       match=r"key 'points': parameter points.rgb_type = 'rgba' is not one of"):
        from_dict(PipelineConfig, {"points": {"rgb_type": "rgba"}})
    with pytest.raises(ConfigError, match="key 'ground_rows'"):
        from_dict(PipelineConfig, {"scale": {"ground_rows": "low"}})


def test_process_bag_parameters_are_checked_once(checks, tmp_path):
    """Parameter file, then --set, then the command's own flags: each value once."""
    from oe_depth_ros.build import pipeline_config
    from oe_depth_ros.commands.process_bag import node_parameters
    from oe_depth_ros.intake import camera_info_config

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "max_range": 60, "colored": {"max_range": 50.0}}}}))
    values = node_parameters(str(path), ["scale.method=lidar", "points.decimation=2"],
                             {"model_path": "m.onnx", "backend": None})
    config, intake = pipeline_config(values), camera_info_config(values)
    assert dict(checks) == {"max_range": 1, "colored.max_range": 1, "scale.method": 1,
                            "points.decimation": 1, "model_path": 1, COMBINATION: 1}
    assert (config.max_range, config.colored.max_range, config.scale.method,
            config.points.decimation, intake.sync) == (60.0, 50.0, "lidar", 2, "latest")


@pytest.mark.parametrize("sets,fragment", [
    (["points.decimation=0"], r"parameter points\.decimation = 0 is out of range"),
    (["scale.method=sonar"], r"parameter scale\.method = 'sonar' is not one of"),
    (["colored.min_range=90"], r"colored\.min_range \(90\.0\) must be less than colored\.max"),
    (["camera_info.fallback_intrinsics=[0, 1, 0.5, 0.5]"],
     r"camera_info\.fallback_intrinsics needs positive fx/W"),
])
def test_bad_values_are_refused_naming_the_parameter_on_every_entry_point(
        sets, fragment, tmp_path):
    """process-bag (--set, parameter file), the file check, and code building the dataclasses."""
    from oe_depth_ros.commands.process_bag import node_parameters
    from oe_depth_ros.config import ConfigError
    from oe_depth_ros.intake import CameraInfoConfig
    from oe_depth_ros.pipeline import PipelineConfig

    (name, raw), = (s.split("=", 1) for s in sets)
    value = yaml.safe_load(raw)
    with pytest.raises(ParamError, match=fragment):
        node_parameters(None, sets)
    path = tmp_path / "bad.yaml"
    nested: dict = {}
    *parents, leaf = name.split(".")
    node = nested
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    with pytest.raises(ParamError, match=fragment):  # a single value's error names the file
        node_parameters(str(path), [])
    with pytest.raises(ParamError, match=r"bad\.yaml: " + fragment):
        node_params.load_params_file(path)
    if name.startswith("camera_info."):
        with pytest.raises(ParamError, match=fragment):
            CameraInfoConfig(**{leaf: tuple(value)})
        return
    with pytest.raises(ConfigError, match=fragment):
        PipelineConfig.from_params({name: value})


def test_value_of_reads_a_checked_value_as_its_declared_type():
    values = node_params.validate_all({"threads": 2, "max_range": 60, "backend": "onnxruntime",
                                       "colored.enabled": False})
    assert node_params.value_of(values, "threads", int) == 2
    assert node_params.value_of(values, "max_range", float) == 60.0
    assert node_params.value_of(values, "backend", str) == "onnxruntime"
    assert node_params.value_of(values, "colored.enabled", bool) is False
    with pytest.raises(ParamError, match="backend must be of type int, got 'onnxruntime'"):
        node_params.value_of(values, "backend", int)
    with pytest.raises(ParamError, match="colored.enabled must be of type int, got False"):
        node_params.value_of(values, "colored.enabled", int)  # a bool is no int here
